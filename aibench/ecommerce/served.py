"""The store's three trained models as ``aibench serve`` models (``aibench serve --model-dir ecommerce=DIR``).

The services deployment (:mod:`aibench.ecommerce.services`) asks the model server for the AI parts of the
path, as AIBench asked TF Serving and a Flask FastText server. The Open Inference Protocol server takes one
FP32 input of rows and batches requests by rows, so each model is written as a row-wise function of float32
rows (every id is an integer far below 2**24, exact in float32):

- ``ecommerce-classifier``: the query's MAX_QUERY token ids (0 pads) -> the category probabilities (C);
- ``ecommerce-preference``: sex, age, purchasing power, then the MAX_QUERY token ids -> the category
  probabilities (C), then the 26 attributes' value probabilities (26 x 8);
- ``ecommerce-ranker``: one candidate's 11 ranker features -> its score (1).

The softmaxes are inside the served model, as the in-process path times them inside its model parts. Ids
outside their range are clamped (a token to the padding id, sex, age and power to their ranges), so a bad
row can neither fail a batch it shares with others nor index outside a table. :func:`model_specs` is light
(no torch: the server's event loop calls it); :func:`build` runs in the instance and loads the state_dicts
with ``weights_only=True`` (:func:`aibench.ecommerce.models.load`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aibench.ecommerce.store import ATTRIBUTE_VALUES, ATTRIBUTES, MAX_QUERY, models_config, read_info, store_id

FAMILY = "ecommerce"
CLASSIFIER, PREFERENCE, RANKER = "ecommerce-classifier", "ecommerce-preference", "ecommerce-ranker"
NAMES = (CLASSIFIER, PREFERENCE, RANKER)
RANKER_FEATURES = 11  # aibench.ecommerce.models.N_FEATURES (checked when the ranker is built)
USER_FIELDS = 3  # sex, age, purchasing power ahead of the tokens in a preference row


def model_specs(folder: str) -> list[Any]:
    """The three models of the store in ``folder`` (refused in one line, exit 4, when it is not a trained
    store)."""
    from aibench.service.models import ModelSpec

    info = read_info(Path(folder))
    config = models_config(info, store_id(info))
    try:
        cats = int(config["categories"])
    except (KeyError, TypeError, ValueError):
        from aibench.ecommerce.store import StoreError

        raise StoreError(f"{info.path.parent}/models/models.json has no category count") from None
    source = f"{FAMILY}={info.path.parent.resolve()}"
    attrs = len(ATTRIBUTES) * ATTRIBUTE_VALUES
    return [
        ModelSpec(CLASSIFIER, f"e-commerce category classifier: {MAX_QUERY} token ids -> {cats} category "
                  "probabilities", (MAX_QUERY,), (cats,), "float32", 64, source),
        ModelSpec(PREFERENCE, f"e-commerce user-preference network: sex, age, power and {MAX_QUERY} token ids "
                  f"-> {cats} category and {attrs} attribute-value probabilities", (USER_FIELDS + MAX_QUERY,),
                  (cats + attrs,), "float32", 64, source),
        ModelSpec(RANKER, f"e-commerce learning-to-rank model: {RANKER_FEATURES} features of a candidate -> "
                  "its score", (RANKER_FEATURES,), (1,), "float32", 8192, source),
    ]


@functools.lru_cache(maxsize=4)
def _models(folder: str) -> Any:
    from aibench.ecommerce.models import load

    info = read_info(Path(folder))
    return load(info, store_id(info))


def build(spec: Any, device: Any, dtype: Any) -> Any:
    """The served form of one model (in eval mode, on ``device``). Ids travel as float32: only float32
    compute keeps them exact, so another dtype is refused."""
    import torch

    from aibench.ecommerce.models import AGE_BANDS, N_FEATURES
    from aibench.errors import UnavailableError

    if dtype != torch.float32:
        raise UnavailableError(f"{spec.name} takes integer ids as float32 rows: serve it with --dtype float32")
    models = _models(spec.source.partition("=")[2])
    vocabulary = int(models.config["vocabulary"])

    def ids(x: Any, hi: int) -> Any:
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(0, hi)
        return x.long()

    if spec.name == CLASSIFIER:
        net = models.classifier.to(device)

        def classify(x: Any) -> Any:
            tokens = ids(x, vocabulary - 1)
            return torch.softmax(net(tokens), dim=1)

        return classify
    if spec.name == PREFERENCE:
        net = models.preference.to(device)

        def prefer(x: Any) -> Any:
            sex = ids(x[:, 0], 1)
            band = ((ids(x[:, 1], 1000) - 15) // 5).clamp(0, AGE_BANDS - 1)  # aibench.ecommerce.models.age_band
            power = ids(x[:, 2], 5)
            tokens = ids(x[:, USER_FIELDS:], vocabulary - 1)
            lc, la = net(sex, band, power, tokens)
            return torch.cat([torch.softmax(lc, dim=1), torch.softmax(la, dim=2).flatten(1)], dim=1)

        return prefer
    if spec.name == RANKER:
        if N_FEATURES != RANKER_FEATURES:  # pragma: no cover - the two constants must move together
            raise RuntimeError(f"the ranker has {N_FEATURES} features; served.RANKER_FEATURES says "
                               f"{RANKER_FEATURES}")
        net = models.ranker.to(device)

        def score(x: Any) -> Any:
            return net(x).unsqueeze(1)

        return score
    raise KeyError(spec.name)
