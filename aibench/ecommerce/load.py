"""scenario/ecommerce's moving parts (imported when it runs): open the store and its models, build the path as a
system under test, start the streaming updater when asked, and record the measured window's figures into the
result on the way out."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aibench.ecommerce.figures import summarize_records
from aibench.results.schema import metric


@contextlib.contextmanager
def shop_system(params: dict[str, Any], result: Any) -> Iterator[tuple[Any, int]]:
    """Yield ``(ShopSystem, 1)``; a missing, half-written or untrained store, or a model-size study's set not
    trained, is refused (one line, exit 4) before any load starts."""
    import torch

    from aibench.ecommerce.models import model_sizes, resolve
    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.store import read_info
    from aibench.ecommerce.system import ShopSystem

    store = Path(params["store"])
    name = resolve(read_info(store), int(params.get("pref_hidden") or 0))  # StoreError: no such set
    path = ShopPath(store, window=int(params["window"]), models=name)  # StoreError: missing, half-written, ...
    updater = None
    try:
        queries = path.sample(int(params["samples"]), seed=0)  # the same workload in every run of a store
        system = ShopSystem(path, queries, workers=int(params["workers"]), threads=torch.get_num_threads())
        quality = path.models.config.get("quality") if isinstance(path.models.config, dict) else None
        info = path.info
        result.context["store"] = {**info.to_json(), "models": {
            **{k: path.models.config.get(k) for k in ("pref_hidden", "dim", "ranker_hidden", "seed", "epochs")
               if k in path.models.config},
            "folder": name, "sizes": model_sizes(path.models)}}
        every = float(params.get("update_every_s") or 0.0)
        if every > 0:
            from aibench.ecommerce.stream import StreamingUpdater

            updater = StreamingUpdater(path, every_s=every, sessions=int(params["update_sessions"]),
                                       steps=int(params["update_steps"]))
        cpu0 = time.process_time()

        def recorder(res: Any, partial: str | None) -> None:
            stopped = updater.stop() if updater is not None else True
            cpu = time.process_time() - cpu0
            record(system, res, quality, cpu=cpu, torch_threads=torch.get_num_threads(), updater=updater,
                   updater_stopped=stopped, partial=partial)

        system.recorder = recorder  # the driver calls it once, also before an interrupted record is written
        if updater is not None:
            updater.start()
        try:
            yield system, 1
        finally:
            system.record(result)  # when no driver did (a no-op once it has)
    finally:
        if updater is not None:
            updater.stop()
        path.close()


def record(system: Any, result: Any, quality: Any, *, cpu: float | None = None, torch_threads: int = 1,
           updater: Any = None, updater_stopped: bool = True, services: bool = False,
           partial: str | None = None) -> None:
    """The measured window's parts and figures into ``result``: closed-loop users name their window (requests
    sent after the warm-up, up to the end); a LoadGen test's are all the system served after the calibration.
    ``cpu``: the process's CPU seconds while the system served (for the harness's share). ``services``: the
    path ran in module processes, so this process's CPU says nothing of it. ``partial``: the run was
    interrupted; ``method.ecommerce.partial`` says the figures cover it up to then."""
    closed = (result.method.get("closed_loop") or {}) if isinstance(result.method, dict) else {}
    bounds = closed.get("window_perf_s")
    window = (float(bounds[0]), float(bounds[1])) if isinstance(bounds, list) and len(bounds) == 2 else None
    records = system.report().extra.get("records", [])
    parts, metrics, info = summarize_records(records, window, quality)
    updates = list(updater.updates) if updater is not None else []
    if updates:
        parts["module"].update(_update_parts(records, window, updates))
    for kind, group in parts.items():
        if group:
            result.parts.setdefault(kind, {}).update(group)
    metrics.update(_cpu_metrics(records, cpu, torch_threads, updates, services))
    metrics.update(_update_metrics(updater, updates, window))
    result.metrics.update(metrics)
    info.update(workers=system.workers, window="closed-loop measured window (warm-up excluded)" if window
                else "every query served after the calibration", quality=quality)
    if updater is not None:
        info["updates"] = _update_info(updater, updates, window, updater_stopped)
    if partial:
        info["partial"] = partial
    result.method["ecommerce"] = info


# --- the harness's CPU share --------------------------------------------------------------------------------

def _cpu_metrics(records: Sequence[Any], cpu: float | None, torch_threads: int,
                 updates: Sequence[Any], services: bool = False) -> dict[str, Any]:
    """``harness_cpu_share``: the share of the process's CPU, from the system's start to its end (warm-up
    included), spent outside the path's modules and the updater: the query generator (the users or LoadGen),
    the harness, the hand-off to the workers. ``path_cpu_ms``: the path's CPU per query, over the same span."""
    path_cpu = math.fsum(getattr(r, "cpu", 0.0) for r in records)
    upd_cpu = math.fsum(u.cpu_s for u in updates)
    m: dict[str, Any] = {}
    elsewhere = ("the path ran in the module processes (--deploy services): their CPU time is in "
                 "method.ecommerce.deployment, not in a serving thread of this process")
    m["path_cpu_ms"] = metric(1e3 * path_cpu / len(records) if records and not services else None, "ms", "lower",
                              elsewhere if services else None if records else "no query was served",
                              note="the serving thread's CPU time in the path per query (time.thread_time), "
                                   "every query served, warm-up included")
    why = None
    share = None
    if services:
        why = elsewhere
    elif cpu is None or cpu <= 0 or not records:
        why = "no query was served, or the process's CPU time could not be read"
    elif torch_threads > 1:
        why = (f"torch ran {torch_threads} intra-op threads, whose CPU a serving thread's time misses (it would "
               "count as the harness's): measure with --threads 1")
    else:
        share = max(0.0, (cpu - path_cpu - upd_cpu) / cpu)
    m["harness_cpu_share"] = metric(share, "fraction", "lower", why,
                                    note="1 - (the path's CPU + the updater's) / the process's CPU, from the "
                                         "system's start to its end: the query generator's and harness's share",
                                    process_cpu_s=cpu, path_cpu_s=path_cpu, updater_cpu_s=upd_cpu)
    return m


# --- streaming updates --------------------------------------------------------------------------------------

def _update_parts(records: Sequence[Any], window: tuple[float, float] | None,
                  updates: Sequence[Any]) -> dict[str, Any]:
    """``update`` (each update's seconds) and the user-seen latency of the window's answered queries split by
    whether an update ran while they were in the system."""
    from aibench.results.parts import part_entry

    spans = [(u.started, u.ended) for u in updates]
    during: list[float] = []
    between: list[float] = []
    for r in records:
        if r.seconds is None or (window is not None and not window[0] <= r.submitted < window[1]):
            continue
        overlaps = any(a < r.ended and r.submitted < b for a, b in spans)
        (during if overlaps else between).append(r.ended - r.submitted)
    out: dict[str, Any] = {}
    for name, values, per, note in (
            ("update", [u.seconds for u in updates], "update", "each streaming update of the run (warm-up "
             "included): read the next sessions, featurise them, fine-tune a copy of the ranker, swap it in"),
            ("whole_path/during_update", during, "query", "submit to answer of the queries in the system while "
             "an update ran"),
            ("whole_path/between_updates", between, "query", "submit to answer of the other queries")):
        entry = part_entry(values, "s", per, note)
        if entry is not None:
            entry["summary"]["p50"] = entry["summary"]["median"]
            out[name] = entry
    return out


def _update_metrics(updater: Any, updates: Sequence[Any], window: tuple[float, float] | None) -> dict[str, Any]:
    off = "no streaming updates in this run (--update-every-s 0)"
    if updater is None:
        return {"updates": metric(None, "updates", "higher", off),
                "ranker_ndcg10_streamed": metric(None, "score", "higher", off)}
    in_window = [u for u in updates if window is None or window[0] <= u.started < window[1]]
    swapped = [u for u in updates if u.ndcg10 is not None]
    last = swapped[-1].ndcg10 if swapped else None
    return {"updates": metric(len(in_window), "updates", "higher", None,
                              note="updates that started in the measured window" if window else
                              "updates while the system served"),
            "ranker_ndcg10_streamed": metric(last, "score", "higher",
                                             None if last is not None else "no update swapped a ranker in",
                                             note="the last swapped-in ranker's NDCG@10 on the updater's held-out "
                                                  "lists")}


def _update_info(updater: Any, updates: Sequence[Any], window: tuple[float, float] | None,
                 stopped: bool) -> dict[str, Any]:
    origin = window[0] if window is not None else None
    rows = []
    for u in updates:
        row = u.to_json()
        row["at_window_s"] = None if origin is None else round(u.started - origin, 6)  # < 0: during the warm-up
        del row["started"], row["ended"]
        rows.append(row)
    return {"every_s": updater.every_s, "sessions": updater.sessions, "steps": updater.steps,
            "eval_lists": updater.eval_size, "ndcg10_start": updater.ndcg10_start,
            "what": "each update fine-tunes a copy of the ranker on the next sessions of the store's log "
                    "(training queries only) and swaps the set in with one reference assignment; the classifier "
                    "and the preference network stay as trained",
            "error": None if updater.error is None else f"{type(updater.error).__name__}: {updater.error}",
            "stopped": stopped, "list": rows}
