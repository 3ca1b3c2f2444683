"""Results from LoadGen's machine-readable detail log (``mlperf_log_detail.txt``, ``:::MLLOG {json}``
lines), never from its human summary. Pure Python: no torch, no LoadGen."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from aibench.results.schema import metric

DETAIL = "mlperf_log_detail.txt"
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def read_detail(path: str | Path) -> dict[str, Any]:
    """``{"values": {key: last value}, "errors": [...], "warnings": [...]}`` from a detail log (a missing
    or truncated log gives what could be read)."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    p = Path(path)
    if p.is_dir():
        p = p / DETAIL
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"values": values, "errors": errors, "warnings": warnings, "found": False}
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            rec = json.loads(line[len(":::MLLOG "):])
        except json.JSONDecodeError:
            continue  # a line cut short by an ended run
        key = rec.get("key")
        if not isinstance(key, str):
            continue
        values[key] = rec.get("value")
        meta = rec.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {rec.get('value')}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {rec.get('value')}")
    return {"values": values, "errors": errors, "warnings": warnings, "found": True}


def _ns_to_s(x: Any) -> float | None:
    return None if x is None else float(x) / 1e9


def validity(log: dict[str, Any], scenario: str) -> dict[str, Any]:
    """VALID/INVALID with one entry per constraint and LoadGen's recommendation."""
    v = log["values"]
    verdict = v.get("result_validity")
    constraints: dict[str, Any] = {
        "min_duration": {"met": v.get("result_min_duration_met"),
                         "required_ms": v.get("effective_min_duration_ms")},
        "min_queries": {"met": v.get("result_min_queries_met"),
                        "required": v.get("effective_min_query_count"),
                        "processed": v.get("result_query_count")},
        "early_stopping": {"met": v.get("early_stopping_met"),
                           "detail": (v.get("early_stopping_result") or "").strip() or None},
    }
    if scenario == "server":
        pct = v.get("effective_target_latency_percentile")
        observed = v.get(f"result_{float(pct) * 100:.2f}_percentile_latency_ns") if pct is not None else None
        constraints["latency_bound"] = {
            "met": v.get("result_perf_constraints_met"),
            "percentile": None if pct is None else float(pct) * 100,
            "bound_ms": None if v.get("effective_target_latency_ns") is None
            else v["effective_target_latency_ns"] / 1e6,
            "observed_ms": None if observed is None else observed / 1e6,
            "overlatency_queries": v.get("result_overlatency_query_count"),
        }
    reasons = []
    labels = {"min_duration": "minimum duration not met", "min_queries": "minimum query count not met",
              "early_stopping": "early stopping not met", "latency_bound": "latency bound not met"}
    for name, c in constraints.items():
        if c["met"] is False:
            reasons.append(labels[name])
    if log["errors"]:
        reasons.append(f"LoadGen logged {len(log['errors'])} error(s)")
    if verdict is None:
        reasons.append("LoadGen wrote no verdict (the run did not finish)")
    valid = verdict == "VALID"
    out: dict[str, Any] = {
        "valid": valid,
        "result": verdict or "INCOMPLETE",
        "constraints": constraints,
        "reasons": reasons,
        "recommendation": (v.get("result_invalid_reason") or "").strip() or None,
        "errors": log["errors"],
        "warnings": log["warnings"],
        "source": DETAIL,
    }
    if not valid:
        why = "; ".join(reasons) or "LoadGen said INVALID"
        rec = f" LoadGen recommends: {out['recommendation']}" if out["recommendation"] else ""
        out["summary"] = f"INVALID: {why}.{rec}"
    else:
        out["summary"] = "VALID"
    return out


def metrics(log: dict[str, Any], scenario: str, samples_per_query: int, wall_s: float | None,
            queries_done: int | None, valid: bool) -> dict[str, dict[str, Any]]:
    """Latency percentiles, early-stopping estimate, samples/s and queries/s with and without LoadGen's
    overhead. ``wall_s``/``queries_done`` (the adapter's first issue to last completion) supply the
    with-overhead rate where LoadGen logs none (MultiStream)."""
    v = log["values"]
    out: dict[str, dict[str, Any]] = {}
    extra = {} if valid else {"valid": False}
    per_query = scenario == "multi-stream"

    def lat(key_pq: str, key: str) -> float | None:
        return _ns_to_s(v.get(key_pq) if per_query and key_pq in v else v.get(key))

    none_reason = "LoadGen logged no latency (the run did not finish)"
    for pct in PERCENTILES:
        name = "latency_p" + pct.rstrip("0").rstrip(".").replace(".", "_")
        val = lat(f"result_{pct}_percentile_per_query_latency_ns", f"result_{pct}_percentile_latency_ns")
        out[name] = metric(val, "s", "lower", None if val is not None else none_reason, **extra)
    for stat in ("min", "max", "mean"):
        val = lat(f"result_{stat}_query_latency_ns", f"result_{stat}_latency_ns")
        out[f"latency_{stat}"] = metric(val, "s", "lower", None if val is not None else none_reason, **extra)

    es_key = {"single-stream": "early_stopping_latency_ss", "multi-stream": "early_stopping_latency_ms"}.get(scenario)
    es = _ns_to_s(v.get(es_key)) if es_key else None
    if es is not None and es > 0:
        pct = v.get("effective_target_latency_percentile")
        out["latency_early_stopping"] = metric(es, "s", "lower", None, **extra,
                                               percentile=None if pct is None else float(pct) * 100,
                                               **estimate_rank(v.get("result_query_count"), pct,
                                                               v.get("early_stopping_result")))
    else:
        why = ("LoadGen computes no early-stopping latency estimate for this scenario" if es_key is None
               else "LoadGen's early-stopping estimate is not available (too few queries)")
        out["latency_early_stopping"] = metric(None, "s", "lower", why, **extra)

    qps = qps_free = None
    note = ""
    free_note = ""
    if scenario == "single-stream":
        qps, qps_free = v.get("result_qps_with_loadgen_overhead"), v.get("result_qps_without_loadgen_overhead")
    elif scenario == "server":
        qps = v.get("result_completed_samples_per_sec")
        free_note = "queries overlap in Server: LoadGen reports no rate without its overhead"
    elif scenario == "offline":
        sps = v.get("result_samples_per_second")
        qps = None if sps is None else sps / max(1, v.get("effective_samples_per_query") or 1)
        free_note = "Offline is one query: LoadGen reports no rate without its overhead"
    else:  # multi-stream: LoadGen logs per-query latency only
        mean = v.get("result_mean_query_latency_ns") or v.get("result_mean_latency_ns")
        qps_free = 1e9 / mean if mean else None
        if wall_s and queries_done:
            qps = queries_done / wall_s
            note = "measured by aibench's adapter: first issue to last completion"
        free_note = "1 / mean per-query latency (LoadGen's SingleStream definition)"
    spq = samples_per_query if scenario != "offline" else (v.get("effective_samples_per_query") or 1)
    missing = "LoadGen logged no rate (the run did not finish)"

    def rate(x: float | None, unit: str, why: str, how: str) -> dict[str, Any]:
        if x is None:
            return metric(None, unit, "higher", why, **extra)
        return metric(float(x), unit, "higher", None, **extra, **({"note": how} if how else {}))

    out["queries_per_s"] = rate(qps, "queries/s", missing, note)
    out["samples_per_s"] = rate(None if qps is None else qps * spq, "samples/s", missing, note)
    free_why = free_note if scenario in ("server", "offline") else missing
    out["queries_per_s_no_overhead"] = rate(qps_free, "queries/s", free_why,
                                            free_note if scenario == "multi-stream" else "")
    out["samples_per_s_no_overhead"] = rate(None if qps_free is None else qps_free * spq, "samples/s", free_why,
                                            free_note if scenario == "multi-stream" else "")
    return out


def effective_settings(log: dict[str, Any]) -> dict[str, Any]:
    v = log["values"]
    return {k.removeprefix("effective_"): val for k, val in v.items() if k.startswith("effective_")}


def requested_settings(log: dict[str, Any]) -> dict[str, Any]:
    v = log["values"]
    return {k.removeprefix("requested_"): val for k, val in v.items() if k.startswith("requested_")}


PRIMARY = {"single-stream": "latency_early_stopping", "multi-stream": "latency_early_stopping",
           "server": "samples_per_s", "offline": "samples_per_s", "closed-loop": "queries_per_s"}


# LoadGen's early stopping (loadgen/results.cc, early_stopping.cc): with n queries, target percentile p and
# confidence 0.99, the estimate is the t-th highest latency, t the largest i with n >= h(i) + i, where h(i)
# is the fewest queries within the latency such that seeing at most i over it (each with chance 1 - p) has
# odds <= 1 - 0.99. Below h(2) + 2 queries t is 1: the estimate is simply the maximum.
EARLY_STOPPING_CONFIDENCE = 0.99


def _binomial_cdf(k: int, n: int, q: float) -> float:
    """P(X <= k) for X ~ Binomial(n, q), in log space (n up to millions without overflow)."""
    total = 0.0
    for x in range(k + 1):
        log_term = (math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
                    + x * math.log(q) + (n - x) * math.log1p(-q))
        total += math.exp(log_term)
    return total


@lru_cache(maxsize=4096)
def early_stopping_min_passing(t: int, percentile: float, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """h(t): the fewest queries within the latency such that t over it still pass early stopping."""
    q = 1.0 - percentile

    def passes(h: int) -> bool:
        return _binomial_cdf(t, h + t, q) <= 1.0 - confidence

    hi = 1
    while not passes(hi):
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:  # the smallest passing h in [lo, hi]
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def queries_for_rank(rank: int, percentile: float) -> int:
    """The fewest queries with which the early-stopping estimate is the ``rank``-th highest latency or a
    lower one (1: an estimate at all; 2: no longer the maximum)."""
    return early_stopping_min_passing(rank, percentile) + rank


def estimate_rank(queries: Any, percentile: Any, detail: Any = None) -> dict[str, Any]:
    """Fields for the ``latency_early_stopping`` entry saying which latency the estimate is, so a reader sees
    when it is just the maximum of a few queries (``estimate_is_max``; tables show ``mark``). Whether it is
    the maximum follows from the rule above; the rank, where LoadGen's own result text gives it ("Would
    discard N highest latency queries")."""
    if not isinstance(queries, int) or isinstance(queries, bool) or not isinstance(percentile, (int, float)) \
            or not 0 < percentile < 1 or queries < queries_for_rank(1, float(percentile)):
        return {}
    pct = f"p{float(percentile) * 100:g}"
    needed = queries_for_rank(2, float(percentile))
    if queries < needed:
        return {"queries": queries, "estimate_rank": 1, "estimate_is_max": True, "mark": f"max of {queries}",
                "note": f"the maximum of the {queries} query latencies: at 99% confidence LoadGen's {pct} "
                        f"estimate drops the highest latencies only from {needed} queries on (run more with "
                        "--min-queries, --duration-s or --profile ci)"}
    out: dict[str, Any] = {"queries": queries, "estimate_is_max": False}
    m = re.search(r"Would discard (\d+) highest latency quer", str(detail or ""))
    if m:
        rank = int(m.group(1)) + 1
        out["estimate_rank"] = rank
        out["note"] = (f"LoadGen's {pct} estimate at 99% confidence: the {_ordinal(rank)} highest of the "
                       f"{queries} query latencies")
    else:
        out["note"] = f"LoadGen's {pct} estimate at 99% confidence, below the highest of the {queries} latencies"
    return out


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
