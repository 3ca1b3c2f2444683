"""scenario/ecommerce's moving parts (imported when it runs): open the store and its models, build the path as a
system under test, and record the measured window's figures into the result on the way out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aibench.ecommerce.figures import summarize_records


@contextlib.contextmanager
def shop_system(params: dict[str, Any], result: Any) -> Iterator[tuple[Any, int]]:
    """Yield ``(ShopSystem, 1)``; a missing, half-written or untrained store is refused (one line, exit 4)
    before any load starts."""
    import torch

    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.system import ShopSystem

    store = Path(params["store"])
    path = ShopPath(store, window=int(params["window"]))  # StoreError: missing, half-written, untrained
    try:
        queries = path.sample(int(params["samples"]), seed=0)  # the same workload in every run of a store
        system = ShopSystem(path, queries, workers=int(params["workers"]), threads=torch.get_num_threads())
        quality = path.models.config.get("quality") if isinstance(path.models.config, dict) else None
        info = path.info
        result.context["store"] = {**info.to_json(), "models": {
            k: path.models.config.get(k) for k in ("pref_hidden", "dim", "ranker_hidden", "seed", "epochs")
            if k in path.models.config}}
        try:
            yield system, 1
        finally:
            record(system, result, quality)
    finally:
        path.close()


def record(system: Any, result: Any, quality: Any) -> None:
    """The measured window's parts and figures into ``result``: closed-loop users name their window (requests
    sent after the warm-up, up to the end); a LoadGen test's are all the system served after the calibration."""
    closed = (result.method.get("closed_loop") or {}) if isinstance(result.method, dict) else {}
    bounds = closed.get("window_perf_s")
    window = (float(bounds[0]), float(bounds[1])) if isinstance(bounds, list) and len(bounds) == 2 else None
    records = system.report().extra.get("records", [])
    parts, metrics, info = summarize_records(records, window, quality)
    for kind, group in parts.items():
        if group:
            result.parts.setdefault(kind, {}).update(group)
    result.metrics.update(metrics)
    info.update(workers=system.workers, window="closed-loop measured window (warm-up excluded)" if window
                else "every query served after the calibration", quality=quality)
    result.method["ecommerce"] = info
