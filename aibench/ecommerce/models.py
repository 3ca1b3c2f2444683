"""The scenario's models, the ranker's features, the forward index they read, and their safe files.

- :class:`CategoryClassifier`: query text -> category (a FastText-like bag of token embeddings and a linear
  layer; AIBench served FastText behind Flask).
- :class:`PreferenceNet`: user (sex, age band, purchasing power) and query -> category probabilities and,
  per attribute, a distribution over its values: the per-attribute preference weights (AIBench: DUPN on TF
  Serving). ``hidden`` sizes it (the model-size study grows it).
- :class:`Ranker`: a small MLP over :func:`ranker_features` of (user, query, candidate), trained listwise;
  its feature normalisation, the categories' typical log price and the tokens' IDF are buffers, so the
  state_dict is all it needs.

Models are saved as ``state_dict`` files (``torch.save``) beside a JSON description, and loaded with
``torch.load(weights_only=True)``: plain tensors, nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aibench.ecommerce.modules import pad as pad  # re-exported: light, the recommender service uses them
from aibench.ecommerce.modules import tokenize as tokenize
from aibench.ecommerce.store import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    MAX_TITLE,
    MODELS_DIR,
    MODELS_FORMAT,
    StoreError,
    StoreInfo,
    models_config,
)
from aibench.ecommerce.store import store_id as store_id  # re-exported (it lived here)

AGE_BANDS = 13  # 5-year bands from 15 (the first holds everyone younger, the last everyone 75 and older)
N_FEATURES = 11
FEATURES = ("match", "idf_match", "rating", "rel_price", "power", "price_x_power", "log_p_class",
            "log_p_pref", "attr_fit", "popular", "rel_price_sq")


def age_band(age: np.ndarray | int) -> np.ndarray:
    return np.clip((np.asarray(age) - 15) // 5, 0, AGE_BANDS - 1)


@dataclass
class Catalog:
    """The products as arrays: the ranker's forward index (loaded once, read by index)."""

    titles: np.ndarray  # (P, MAX_TITLE) int64, 0 pads
    price: np.ndarray
    rating_sum: np.ndarray
    category: np.ndarray
    attrs: np.ndarray  # (P, 26)
    cluster: np.ndarray

    @classmethod
    def load(cls, con: sqlite3.Connection) -> Catalog:
        cols = ", ".join(ATTRIBUTES)
        rows = con.execute(f"SELECT title, price, rating_sum, category, cluster, {cols} FROM products "
                           "ORDER BY id").fetchall()
        titles = pad([[int(t) for t in r[0].split()] for r in rows], MAX_TITLE)
        arr = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), 4 + len(ATTRIBUTES))
        return cls(titles=titles, price=arr[:, 0], rating_sum=arr[:, 1], category=arr[:, 2].astype(np.int64),
                   cluster=arr[:, 3].astype(np.int64), attrs=arr[:, 4:].astype(np.int64))


class CategoryClassifier(nn.Module):
    def __init__(self, vocabulary: int, categories: int, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(vocabulary, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, categories)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(tokens))


class PreferenceNet(nn.Module):
    def __init__(self, vocabulary: int, categories: int, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.sex = nn.Embedding(2, 8)
        self.age = nn.Embedding(AGE_BANDS, 8)
        self.power = nn.Embedding(6, 8)
        self.query = nn.EmbeddingBag(vocabulary, dim, mode="mean", padding_idx=0)
        self.body = nn.Sequential(nn.Linear(24 + dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.categories = nn.Linear(hidden, categories)
        # Attribute preferences are the user's own (DUPN's user representation): this head reads the user
        # alone; fed the query too, it learned the queries' noise and lost to the value frequencies.
        self.attributes = nn.Sequential(nn.Linear(24, hidden), nn.ReLU(),
                                        nn.Linear(hidden, len(ATTRIBUTES) * ATTRIBUTE_VALUES))

    def forward(self, sex: torch.Tensor, band: torch.Tensor, power: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        user = torch.cat([self.sex(sex), self.age(band), self.power(power)], dim=1)
        h = self.body(torch.cat([user, self.query(tokens)], dim=1))
        return self.categories(h), self.attributes(user).view(-1, len(ATTRIBUTES), ATTRIBUTE_VALUES)


class Ranker(nn.Module):
    def __init__(self, vocabulary: int, categories: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("feat_mean", torch.zeros(N_FEATURES))
        self.register_buffer("feat_std", torch.ones(N_FEATURES))
        self.register_buffer("cat_logprice", torch.zeros(categories))
        self.register_buffer("idf", torch.ones(vocabulary))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.feat_mean) / self.feat_std).squeeze(-1)


def ranker_features(query: np.ndarray, q_len: np.ndarray, cand: np.ndarray, catalog: Catalog,
                    power: np.ndarray, p_class: np.ndarray, p_cat: np.ndarray, p_attr: np.ndarray,
                    cat_logprice: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Features of B groups of K candidates: ``query`` (B, MAX_QUERY) tokens (0 pads), ``q_len`` (B,),
    ``cand`` (B, K) product ids, ``power`` (B,) users' purchasing power, ``p_class`` (B, C) the classifier's
    category probabilities, ``p_cat`` (B, C) and ``p_attr`` (B, 26, 8) the preference network's. Returns
    (B, K, N_FEATURES) float32. Training and the online path both call this, so they see the same features.
    """
    titles = catalog.titles[cand]  # (B, K, T)
    hit = (titles[:, :, :, None] == query[:, None, None, :]).any(axis=2) & (query > 0)[:, None, :]
    q_idf = idf[query] * (query > 0)
    match = hit.sum(axis=2) / np.maximum(q_len, 1)[:, None]
    idf_match = (hit * q_idf[:, None, :]).sum(axis=2) / np.maximum(q_idf.sum(axis=1), 1e-9)[:, None]
    cat = catalog.category[cand]
    rel_price = (np.log(np.maximum(catalog.price[cand], 0.01)) - cat_logprice[cat]) / 0.5
    pw = np.broadcast_to(((power - 3) / 2.0)[:, None], cand.shape)
    rows = np.arange(len(cand))[:, None]
    lp_class = np.log(p_class[rows, cat] + 1e-6)
    lp_pref = np.log(p_cat[rows, cat] + 1e-6)
    attrs = catalog.attrs[cand]  # (B, K, 26)
    pa = p_attr[rows[:, :, None], np.arange(len(ATTRIBUTES))[None, None, :], attrs]  # (B, K, 26)
    attr_fit = np.log(pa * ATTRIBUTE_VALUES + 1e-6).mean(axis=2)
    popular = np.log1p(catalog.rating_sum[cand]) / 5.0
    feats = np.stack([match, idf_match, popular, rel_price, pw, rel_price * pw, lp_class, lp_pref, attr_fit,
                      (2 - catalog.cluster[cand]) / 2.0, rel_price ** 2], axis=-1)
    return feats.astype(np.float32)


# --- files ---------------------------------------------------------------------------------------------

@dataclass
class Models:
    classifier: CategoryClassifier
    preference: PreferenceNet
    ranker: Ranker
    config: dict[str, Any]

    def eval(self) -> Models:
        for m in (self.classifier, self.preference, self.ranker):
            m.eval()
        return self


def build(config: dict[str, Any]) -> Models:
    V, C = int(config["vocabulary"]), int(config["categories"])
    return Models(classifier=CategoryClassifier(V, C, int(config["dim"])),
                  preference=PreferenceNet(V, C, int(config["dim"]), int(config["pref_hidden"])),
                  ranker=Ranker(V, C, int(config["ranker_hidden"])), config=config)


def models_dir(info: StoreInfo, name: str = MODELS_DIR) -> Path:
    return info.path.parent / name


def size_variant(pref_hidden: int) -> str:
    """The folder of a model-size study's set (``train --size-study``): ``models-pref<H>``."""
    return f"{MODELS_DIR}-pref{int(pref_hidden)}"


def model_sizes(models: Models) -> dict[str, dict[str, int]]:
    """Each model's parameter count and the bytes of its state_dict's tensors (buffers included): the model
    size of the paper's 184 -> 253 MB study."""
    out: dict[str, dict[str, int]] = {}
    for name in ("classifier", "preference", "ranker"):
        m = getattr(models, name)
        out[name] = {"parameters": sum(p.numel() for p in m.parameters()),
                     "bytes": sum(t.numel() * t.element_size() for t in m.state_dict().values())}
    return out


def resolve(info: StoreInfo, pref_hidden: int = 0) -> str:
    """The models folder a run serves: ``models/`` for 0 or when its preference network has ``pref_hidden``
    units; else the size study's ``models-pref<H>/``, refused (exit 4) with the command that trains it."""
    if pref_hidden <= 0:
        return MODELS_DIR
    try:
        default = json.loads((models_dir(info) / "models.json").read_text())
    except (OSError, ValueError):
        default = None
    if isinstance(default, dict) and default.get("pref_hidden") == pref_hidden:
        return MODELS_DIR
    name = size_variant(pref_hidden)
    if not (models_dir(info, name) / "models.json").is_file():
        raise StoreError(f"no models with a {pref_hidden}-unit preference network in {info.path.parent} (run "
                         f"'aibench scenario ecommerce train --store {info.path.parent} --pref-hidden "
                         f"{pref_hidden} --size-study')")
    return name


def save(models: Models, info: StoreInfo, name: str = MODELS_DIR) -> Path:
    """Write the three state_dicts and ``models.json`` into a fresh folder, then swap it in for
    ``name`` (default ``models/``; a reader sees the old set or the new one, never a mix)."""
    final = models_dir(info, name)
    tmp = final.parent / f".{name}.partial-{os.getpid()}"
    old = final.parent / f".{name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in ("classifier", "preference", "ranker"):
            torch.save(getattr(models, name).state_dict(), tmp / f"{name}.pt")
        (tmp / "models.json").write_text(json.dumps({"format": MODELS_FORMAT, **models.config}, indent=2))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        raise StoreError(f"cannot write the models in {final.parent}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():  # interrupted between the two renames: keep the old set
            os.replace(old, final)
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(info: StoreInfo, store_id: str, name: str = MODELS_DIR) -> Models:
    """The trained models of a store (``name``: its models folder); refused (exit 4) when missing, damaged or
    trained on another store."""
    folder = models_dir(info, name)
    config = models_config(info, store_id, name)
    try:
        models = build(config)
        for name in ("classifier", "preference", "ranker"):
            state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
            getattr(models, name).load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise StoreError(f"cannot load the models in {folder}: {str(exc).splitlines()[0]}") from None
    return models.eval()
