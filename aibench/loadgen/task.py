"""The contract between a component benchmark and the load generator.

A component benchmark's factory returns an :class:`InferenceTask`: *what* to compute per batch. The
system-under-test adapter owns *how* it is driven: LoadGen callbacks, batching, moving data to the device,
``torch.inference_mode()``, synchronisation, completing samples, and (with ``--breakdown``) timing each
stage. Workloads know nothing about timing, LoadGen or files.

The timed path for one batch of sample indices is::

    raw   = [load_sample(i) for i in batch]          # already in memory (QSL staging, untimed)
    x     = collate(raw)                             # host
    x     = preprocess(x)            if preprocess   # host, timed: the application's pre-processing
    x     = to_device(x, device)
    y     = model(x)                                 # under inference_mode, then device sync
    resp  = postprocess(y)           if postprocess  # timed: the application's post-processing
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def default_collate(samples: Sequence[Any]) -> Any:
    """Stack equally shaped tensors into a batch; anything else stays a list (e.g. raw audio clips)."""
    import torch

    if samples and all(isinstance(s, torch.Tensor) for s in samples):
        shapes = {tuple(s.shape) for s in samples}
        if len(shapes) == 1:
            return torch.stack(list(samples))
    return list(samples)


def default_to_device(batch: Any, device: Any) -> Any:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(default_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: default_to_device(v, device) for k, v in batch.items()}
    return batch


@dataclass
class InferenceTask:
    """What a component benchmark hands the load generator.

    ``num_samples`` distinct samples make up the query sample library; ``load_sample(i)`` returns sample
    ``i`` ready for ``collate`` and is called only while staging (untimed). ``model`` is already on
    ``device`` in eval mode. ``flops_per_sample`` is counted (not guessed) or None with
    ``flops_note`` saying why. ``data`` records where inputs came from, e.g.
    ``{"source": "synthetic", "note": "seeded N(0,1) images"}`` or ``{"source": "real", "name": ...}``.
    ``stage`` is ``dnn`` (network alone) or ``app`` (with the application's pre/post-processing).
    """

    model: Callable[[Any], Any]
    device: Any
    num_samples: int
    load_sample: Callable[[int], Any]
    collate: Callable[[Sequence[Any]], Any] = default_collate
    preprocess: Callable[[Any], Any] | None = None
    to_device: Callable[[Any, Any], Any] = default_to_device
    postprocess: Callable[[Any], Sequence[Any]] | None = None
    flops_per_sample: float | None = None
    flops_note: str = ""
    stage: str = "dnn"
    data: dict[str, Any] = field(default_factory=lambda: {"source": "synthetic"})
