"""What a scenario/ecommerce run reports, light (no torch): the path's module names and
:func:`summarize_records`, which turns the served queries of a measured window into
``parts.module`` (every module's latency distribution), ``parts.stage`` (the AI / non-AI split) and the
figures.

What counts as AI (:data:`AI_PARTS`): the parts that run a learned model, i.e. the recommender's category
classifier and user-preference network and the ranker's scoring model. Everything else the path does is
non-AI: the planner, the recommender's user-database read, the searcher, the ranker's feature computation
and top-k selection, the product fetch. Waiting for a free worker (``queue``) is neither: it is reported as
its own part and left out of the split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aibench.workloads.scenario.ecommerce import QUALITY

MODULES = ("planner", "recommender", "searcher", "ranker", "fetch")
RECOMMENDER_PARTS = ("recommender/user_db", "recommender/classifier", "recommender/preference")
RANKER_PARTS = ("ranker/features", "ranker/model", "ranker/select")
# The parts that run a learned model (the AI share of the path); see the module docstring.
AI_PARTS = ("recommender/classifier", "recommender/preference", "ranker/model")
# The services deployment's hops (aibench.ecommerce.services), caller-callee: each one's communication time is
# the caller's round trip minus the callee's own work. INNER_HOPS are made by a module itself (inside its time).
HOPS = ("client-planner", "planner-recommender", "recommender-classifier", "recommender-preference",
        "planner-searcher", "planner-ranker", "ranker-model", "planner-fetch")
HOP_PARTS = tuple(f"communication/{h}" for h in HOPS)
INNER_HOPS = ("communication/recommender-classifier", "communication/recommender-preference",
              "communication/ranker-model")
# parts.module, in the path's order: the wait for a worker, the modules and their sub-parts, communication
# (services only: all hops per query, then each hop), the whole path
PARTS = ("queue", "planner", "recommender", *RECOMMENDER_PARTS, "searcher", "ranker", *RANKER_PARTS, "fetch",
         "communication", *HOP_PARTS, "whole_path")
# Parts that run only when the searcher found candidates
AFTER_HITS = frozenset({"ranker", *RANKER_PARTS, "fetch", "communication/planner-ranker", "communication/ranker-model",
                        "communication/planner-fetch"})
PART_NOTES = {
    "queue": "from submit until a worker took the query (waiting for a free worker; not a module)",
    "whole_path": "from submit to answer as the system saw it (queue + the five modules)",
    "planner": "the orchestration: the path's wall time not spent in the other four modules",
    "ranker/model": "the learned ranker's forward pass (AI)",
    "recommender/classifier": "the category classifier (AI)",
    "recommender/preference": "the user-preference network (AI)",
    "communication": "services: every hop's communication time in the query, summed (in neither AI nor non-AI)",
    "communication/client-planner": "services: the load driver's round trip to the planner minus the planner's work",
    "communication/recommender-classifier": "services: the recommender's round trip to the model server minus the "
                                            "server's queue and compute (inside the recommender's time)",
    "communication/recommender-preference": "services: as recommender-classifier, for the preference network",
    "communication/ranker-model": "services: the ranker's round trip to the model server minus the server's queue "
                                  "and compute (inside the ranker's time)",
}
for _hop in ("recommender", "searcher", "ranker", "fetch"):
    PART_NOTES.setdefault(f"communication/planner-{_hop}", f"services: the planner's round trip to the {_hop} "
                          f"minus the {_hop}'s work (HTTP, JSON, waiting for the {_hop}'s loop or a thread)")
AFTER_HITS_NOTE = "queries that found candidates only (a query without hits does not reach it)"




def _part(values: Sequence[float], note: str | None) -> dict[str, Any] | None:
    from aibench.results.parts import part_entry

    entry = part_entry(values, "s", "query", note)
    if entry is not None:
        entry["summary"]["p50"] = entry["summary"]["median"]  # average, p50, p90, p99, p99.9 side by side
    return entry


def summarize_records(records: Iterable[Any], window: tuple[float, float] | None = None,
                      quality: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any],
                                                                           dict[str, Any]]:
    """``(parts, metrics, info)`` of the served queries (:class:`aibench.ecommerce.system.Record`) submitted
    in ``window`` (perf_counter bounds; None: all). ``parts``: ``{"module": {...}, "stage": {"ai", "non_ai"}}``;
    ``metrics``: the counts, the AI/non-AI shares and the quality figures (a figure with nothing behind it
    says why); ``info``: counts, failures by module, the first distinct error messages, what counts as AI."""
    from aibench.results.schema import metric

    recs = [r for r in records if window is None or window[0] <= r.submitted < window[1]]
    values: dict[str, list[float]] = {name: [] for name in PARTS}
    ai: list[float] = []
    non_ai: list[float] = []
    comm: list[float] = []
    counts = {"ok": 0, "no_hits": 0, "failed": 0}
    failed_by: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in recs:
        counts[r.status] = counts.get(r.status, 0) + 1
        values["queue"].append(max(0.0, r.started - r.submitted))
        if r.status == "failed" or r.seconds is None:
            failed_by[r.module or "?"] = failed_by.get(r.module or "?", 0) + 1
            if r.error and (r.error in errors or len(errors) < 20):
                errors[r.error] = errors.get(r.error, 0) + 1
            continue
        values["whole_path"].append(r.ended - r.submitted)
        for name, v in r.seconds.items():
            if name in values and (r.status == "ok" or name not in AFTER_HITS):
                values[name].append(v)
        a = math.fsum(r.seconds.get(p, 0.0) for p in AI_PARTS)
        ai.append(a)
        inner = math.fsum(r.seconds.get(h, 0.0) for h in INNER_HOPS)  # a module's own hops: communication
        non_ai.append(max(0.0, math.fsum(r.seconds.get(m, 0.0) for m in MODULES) - a - inner))
        hops = [r.seconds[h] for h in HOP_PARTS if h in r.seconds]
        if hops:
            c = math.fsum(hops)
            comm.append(c)
            values["communication"].append(c)
    modules: dict[str, Any] = {}
    for name in PARTS:
        note = PART_NOTES.get(name) or (AFTER_HITS_NOTE if name in AFTER_HITS else None)
        entry = _part(values[name], note)
        if entry is not None:
            modules[name] = entry
    stages: dict[str, Any] = {}
    for name, xs, note in (("ai", ai, "per query: " + " + ".join(AI_PARTS)),
                           ("non_ai", non_ai, "per query: the five modules' time minus the AI parts (and, as "
                            "services, minus the recommender's and ranker's own hops to the model server)"),
                           ("communication", comm, "services: per query, every hop's communication time")):
        entry = _part(xs, note)
        if entry is not None:
            stages[name] = entry
    parts = {"module": modules, "stage": stages}

    m: dict[str, Any] = {}
    m["queries_ok"] = metric(counts["ok"], "queries", "higher")
    m["queries_no_hits"] = metric(counts["no_hits"], "queries", "lower")
    m["queries_failed"] = metric(counts["failed"], "queries", "lower")
    total_ai, total_non = math.fsum(ai), math.fsum(non_ai)
    whole = total_ai + total_non
    for name, part, total in (("share_ai", "ai", total_ai), ("share_non_ai", "non_ai", total_non)):
        m[name] = metric(total / whole if whole > 0 else None, "fraction", "lower",
                         None if whole > 0 else "no query was answered in the measured window",
                         seconds=total, statistic="ratio", of=f"parts.stage.{part}")
    for name, (model, key), _ in QUALITY:
        v = ((quality or {}).get(model) or {}).get(key) if isinstance(quality, Mapping) else None
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        m[name] = metric(float(v) if ok else None, "score", "higher",
                         None if ok else "the store's training record has no such figure")
    info = {"served": len(recs), **{f"queries_{k}": v for k, v in counts.items()},
            "failed_by_module": failed_by,
            "errors": [{"message": k, "count": v} for k, v in errors.items()],
            "ai_parts": list(AI_PARTS),
            "ai_note": "AI: the parts that run a learned model (the recommender's classifier and preference "
                       "network, the ranker's model); non-AI: planner, user database, searcher, the ranker's "
                       "features and top-k, fetch; the wait for a worker (parts.module.queue) and, as services, the "
                       "communication between processes (parts.module.communication) are in neither"}
    return parts, m, info
