"""What a sweep derives from its points: speedup and parallel efficiency, batch latency, and the knee.

Pure Python over :class:`~aibench.results.schema.Result` records (no torch), so a report can recompute the
same figures from files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aibench.results.schema import Result, metric

LATENCY_CHOICES = ("p50", "p90", "p95", "p97", "p99", "p99_9", "mean", "max", "batch")
BATCH_LATENCY = "batch_latency"
BATCH_LATENCY_NOTE = ("batch / samples_per_s: the time one batch takes at the measured rate (DjiNN's batch "
                      "latency), derived from LoadGen's throughput")


def latency_metric_name(choice: str) -> str:
    """``p99`` -> ``latency_p99``; ``batch`` -> ``batch_latency``."""
    return BATCH_LATENCY if choice == "batch" else f"latency_{choice}"


def _value(r: Result | None, name: str) -> float | None:
    if r is None or r.status != "ok":
        return None
    return (r.metrics.get(name) or {}).get("value")


def _invalid(r: Result | None) -> bool:
    return r is not None and r.validity is not None and not r.validity.get("valid", True)


def add_batch_latency(r: Result, batch: int | float) -> None:
    """``batch_latency`` (s) from the point's samples/s, or unavailable with the reason."""
    rate_entry = r.metrics.get("samples_per_s") or {}
    rate = rate_entry.get("value")
    if r.status != "ok":
        r.metrics[BATCH_LATENCY] = metric(None, "s", "lower", unavailable=f"the point {r.status}")
    elif not rate:
        r.metrics[BATCH_LATENCY] = metric(None, "s", "lower", unavailable="no samples/s was measured")
    else:
        extra = {"valid": False} if rate_entry.get("valid") is False else {}
        r.metrics[BATCH_LATENCY] = metric(batch / rate, "s", "lower", note=BATCH_LATENCY_NOTE, **extra)


def add_scaling(r: Result, value: float, base: Result | None, base_value: float, name: str,
                direction: str, unit_label: str, unavailable: str | None = None) -> None:
    """``speedup`` (x) and ``efficiency`` (speedup / (value / base value)) of ``r`` against the sweep's first
    point ``base`` on metric ``name``; unavailable, with the reason, when either point has no figure (or
    ``unavailable`` says why the figures do not apply to this benchmark)."""
    why = unavailable
    if why is None and r.status != "ok":
        why = f"this point {r.status}" + (f": {r.error['message']}" if r.error else "")
    elif why is None and base is None:
        why = f"the baseline point ({unit_label} {base_value:g}) was not measured"
    elif why is None and base.status != "ok":
        why = f"the baseline point ({unit_label} {base_value:g}) {base.status}"
    mine, theirs = _value(r, name), _value(base, name)
    if why is None and (mine is None or theirs is None or mine <= 0 or theirs <= 0):
        why = f"{name} is missing or not positive in this point or the baseline"
    if why is not None:
        r.metrics["speedup"] = metric(None, "x", "higher", unavailable=why[:500])
        r.metrics["efficiency"] = metric(None, "ratio", "higher", unavailable=why[:500])
        return
    assert mine is not None and theirs is not None
    speedup = mine / theirs if direction == "higher" else theirs / mine
    efficiency = speedup / (value / base_value)
    extra: dict[str, Any] = {"basis": name, "baseline": {"value": base_value, "figure": theirs,
                                                          "run_id": base.run_id if base else None}}
    if _invalid(r) or _invalid(base):
        extra["valid"] = False
    r.metrics["speedup"] = metric(speedup, "x", "higher", **extra)
    r.metrics["efficiency"] = metric(efficiency, "ratio", "higher",
                                     note=f"speedup / ({unit_label} / first {unit_label}); 1.0 is linear", **extra)


def find_knee(points: Sequence[tuple[float, Result | None]], throughput: str, latency: str,
              bound_ms: float) -> tuple[dict[str, Any] | None, str]:
    """The point with the highest ``throughput`` whose ``latency`` is within ``bound_ms`` (how DjiNN chose its
    batch sizes). Failed and INVALID points are not candidates. Returns (knee or None, a note)."""
    best: tuple[float, int, float, float] | None = None
    considered = excluded = 0
    for i, (value, r) in enumerate(points):
        if r is None or r.status != "ok" or _invalid(r):
            excluded += 1
            continue
        rate, lat = _value(r, throughput), _value(r, latency)
        if rate is None or lat is None:
            excluded += 1
            continue
        considered += 1
        if lat * 1e3 <= bound_ms and (best is None or rate > best[0]):
            best = (rate, i, value, lat)
    skipped = f"; {excluded} point(s) failed, INVALID or without figures were not candidates" if excluded else ""
    if best is None:
        return None, f"no point's {latency} is within {bound_ms:g} ms ({considered} considered{skipped})"
    rate, i, value, lat = best
    knee = {"value": value, "metric": throughput, "latency_metric": latency, "latency_bound_ms": bound_ms,
            "index": i, "throughput": rate, "latency_ms": lat * 1e3}
    return knee, (f"knee at {value:g}: {rate:.4g} {throughput} with {latency} {lat * 1e3:.3g} ms "
                  f"<= {bound_ms:g} ms ({considered} considered{skipped})")
