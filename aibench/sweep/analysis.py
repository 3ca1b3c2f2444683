"""What a sweep derives from its points: speedup and parallel efficiency (with a 95% interval where the
points' samples give one, and a noisy flag), each point's spread, batch latency, and the knee.

Pure Python over :class:`~aibench.results.schema.Result` records (no torch), so a report can recompute the
same figures from files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from aibench.results.declaration import kept, values_of
from aibench.results.schema import Result, metric
from aibench.results.stats import NOISY_IQR_RATIO, median_ci

LATENCY_CHOICES = ("p50", "p90", "p95", "p97", "p99", "p99_9", "mean", "max", "batch")
BATCH_LATENCY = "batch_latency"
BATCH_LATENCY_NOTE = ("batch / samples_per_s: the time one batch takes at the measured rate (DjiNN's batch "
                      "latency), derived from LoadGen's throughput")


# The declarations of the figures a sweep derives (they are no benchmark's metrics).
_VALUE = {"statistic": "value", "of": None}
_RATIO = {"statistic": "ratio", "of": None}


def latency_metric_name(choice: str) -> str:
    """``p99`` -> ``latency_p99``; ``batch`` -> ``batch_latency``."""
    return BATCH_LATENCY if choice == "batch" else f"latency_{choice}"


def _value(r: Result | None, name: str) -> float | None:
    if r is None or r.status != "ok":
        return None
    return (r.metrics.get(name) or {}).get("value")


def _invalid(r: Result | None) -> bool:
    return r is not None and r.validity is not None and not r.validity.get("valid", True)


# How a metric relates to the raw samples it declares (``of``), read from its declaration, never its name.
# "median": the metric is their median (its 95% CI is the order-statistics interval of the median);
# "inverse-median": work / their median (the kernel timer's GFLOP/s; the CI is the median's, inverted);
# "rate": work / their mean (training's samples / sum of step times; its CI follows from the mean's);
# "spread": another statistic of them (a p99, a mean): they show the point's spread, but give no interval of
# the metric itself. The latencies of an Offline run are one query's, not repeated measurements: no basis.
Z95 = 1.959964
RATIO_CI_METHOD = ("ratio of the ends of the two points' 95% intervals (each point's interval from its own "
                   "samples: within-run spread only, not run-to-run variation)")


def _basis(r: Result, name: str) -> tuple[str, str] | None:
    """(what the metric declares it summarises, relation) of metric ``name`` in ``r``, or None when no kept
    samples stand behind it."""
    entry = r.metrics.get(name) if isinstance(r.metrics, dict) else None
    if not isinstance(entry, dict):
        return None
    of, statistic = entry.get("of"), entry.get("statistic")
    if values_of(r.samples, r.parts, of) is None:
        return None
    if of == "samples.latency" and r.load_scenario in (None, "offline"):
        return None
    if statistic in ("median", "p50"):
        return of, "median"
    if statistic == "rate":
        inverse = entry.get("inverse_of")
        return (of, "rate") if inverse == "mean" else (of, "inverse-median") if inverse in ("median", "p50") \
            else None
    return of, "spread"


def _summary(r: Result, series: str) -> dict[str, Any] | None:
    entry = kept(r.samples, r.parts, series)
    if entry is None:
        return None
    summary = entry.get("summary")
    if isinstance(summary, dict) and summary.get("n"):
        return summary
    values = entry.get("values")
    if isinstance(values, list) and values:
        from aibench.results.stats import summarize

        try:
            return summarize(values)
        except (TypeError, ValueError):
            return None
    return None


def point_spread(r: Result | None, name: str) -> dict[str, Any]:
    """How noisy one point's figure ``name`` is: ``spread`` (IQR / median of the samples it comes from, or
    None with ``basis`` saying why) and ``noisy`` (the result's own flag, else spread above 10%)."""
    if r is None or r.status != "ok":
        return {"spread": None, "noisy": None, "basis": "no result"}
    basis = _basis(r, name)
    summary = _summary(r, basis[0]) if basis else None
    if basis is None or summary is None:
        why = ("one figure per run (no samples behind it): repeat the sweep to see its run-to-run spread"
               if basis is None else f"no summary of its {_series_words(basis[0])}")
        return {"spread": None, "noisy": r.noisy, "basis": why}
    spread = summary.get("iqr_over_median")
    noisy = r.noisy if r.noisy is not None else (spread is not None and spread > NOISY_IQR_RATIO)
    return {"spread": spread, "noisy": bool(noisy), "n": summary.get("n"),
            "basis": f"IQR / median of the point's {_series_words(basis[0])}"}


def _series_words(of: str) -> str:
    """``samples.step_time`` -> "step time samples"; ``parts.stage.dnn`` -> "stage dnn values"."""
    head, _, rest = of.partition(".")
    return f"{rest.replace('_', ' ')} samples" if head == "samples" else f"{rest.replace('.', ' ')} values"


def metric_ci(r: Result | None, name: str) -> tuple[float, float] | None:
    """A 95% interval of ``r``'s figure ``name`` from its own samples, or None where there is none."""
    if r is None or r.status != "ok":
        return None
    basis = _basis(r, name)
    summary = _summary(r, basis[0]) if basis else None
    value = _value(r, name)
    if basis is None or summary is None or value is None:
        return None
    if basis[1] in ("median", "inverse-median"):
        ci = summary.get("median_ci95")
        if not (isinstance(ci, list) and len(ci) == 2):
            values = values_of(r.samples, r.parts, basis[0]) or []
            ci = list(median_ci(sorted(values))) if values else None
        if ci is None:
            return None
        lo, hi = float(ci[0]), float(ci[1])
        if not (0 < lo <= hi and math.isfinite(hi)):
            return None
        if basis[1] == "median":
            return lo, hi
        med = summary.get("median")  # work / median: the interval of the median, inverted
        return (value * med / hi, value * med / lo) if isinstance(med, int | float) and med > 0 else None
    if basis[1] == "rate":
        n, mean, sd = summary.get("n") or 0, summary.get("mean"), summary.get("sd")
        if n < 2 or not mean or sd is None:
            return None
        half = Z95 * sd / math.sqrt(n)
        if mean - half <= 0:
            return None
        return value * mean / (mean + half), value * mean / (mean - half)
    return None


def effective_batch(r: Result, params: dict[str, Any]) -> int | float | None:
    """The batch a point ran at when the swept value is not the batch (e.g. a server's max batch): the
    calibration's (what the run used, a benchmark's 0 resolved to its default), else a positive ``batch``."""
    cal = r.method.get("calibration") if isinstance(r.method, dict) else None
    b = cal.get("batch") if isinstance(cal, dict) else None
    if isinstance(b, int | float) and not isinstance(b, bool) and b > 0:
        return b
    b = params.get("batch")
    return b if isinstance(b, int | float) and not isinstance(b, bool) and b > 0 else None


def add_batch_latency(r: Result, batch: int | float | None) -> None:
    """``batch_latency`` (s) from the point's samples/s, or unavailable with the reason."""
    rate_entry = r.metrics.get("samples_per_s") or {}
    rate = rate_entry.get("value")
    if batch is None and r.status == "ok":
        r.metrics[BATCH_LATENCY] = metric(None, "s", "lower", unavailable="the point's batch is not recorded",
                                          **_VALUE)
    elif r.status != "ok":
        r.metrics[BATCH_LATENCY] = metric(None, "s", "lower", unavailable=f"the point {r.status}", **_VALUE)
    elif not rate:
        r.metrics[BATCH_LATENCY] = metric(None, "s", "lower", unavailable="no samples/s was measured", **_VALUE)
    else:
        extra = {"valid": False} if rate_entry.get("valid") is False else {}
        assert batch is not None
        r.metrics[BATCH_LATENCY] = metric(batch / rate, "s", "lower", note=BATCH_LATENCY_NOTE, **_VALUE, **extra)


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
        r.metrics["speedup"] = metric(None, "x", "higher", unavailable=why[:500], **_RATIO)
        r.metrics["efficiency"] = metric(None, "ratio", "higher", unavailable=why[:500], **_RATIO)
        return
    assert mine is not None and theirs is not None
    speedup = mine / theirs if direction == "higher" else theirs / mine
    scale = value / base_value
    efficiency = speedup / scale
    extra: dict[str, Any] = {"basis": name, "baseline": {"value": base_value, "figure": theirs,
                                                          "run_id": base.run_id if base else None}}
    if _invalid(r) or _invalid(base):
        extra["valid"] = False
    noisy = [x for x in (point_spread(r, name)["noisy"], point_spread(base, name)["noisy"]) if x is not None]
    if noisy:
        extra["noisy"] = any(noisy)
    interval = speedup_ci(r, base, name, direction)
    sp_extra: dict[str, Any] = dict(extra)
    ef_extra: dict[str, Any] = dict(extra)
    if interval is not None:
        sp_extra.update(ci95=list(interval), ci_method=RATIO_CI_METHOD)
        ef_extra.update(ci95=[interval[0] / scale, interval[1] / scale], ci_method=RATIO_CI_METHOD)
    else:
        sp_extra["ci_unavailable"] = ef_extra["ci_unavailable"] = _no_ci_reason(r, base, name)
    r.metrics["speedup"] = metric(speedup, "x", "higher", **_RATIO, **sp_extra)
    r.metrics["efficiency"] = metric(efficiency, "ratio", "higher", **_RATIO,
                                     note=f"speedup / ({unit_label} / first {unit_label}); 1.0 is linear", **ef_extra)


def _no_ci_reason(r: Result, base: Result | None, name: str) -> str:
    basis = _basis(r, name) or (_basis(base, name) if base is not None else None)
    if basis is None:
        return f"{name} is one figure per run, with no samples behind it: repeat the sweep to see its spread"
    if basis[1] == "spread":
        return (f"{name} is neither the median nor the mean of its samples: the points' spread (IQR / median of "
                f"their {_series_words(basis[0])}) shows how noisy they are")
    return f"the samples behind {name} give no interval (too few, or not positive)"


def speedup_ci(r: Result, base: Result | None, name: str, direction: str) -> tuple[float, float] | None:
    """95% interval of the speedup of ``r`` over ``base`` on ``name``: the ratio of the ends of the two points'
    own intervals (:func:`metric_ci`), so each end pairs the most favourable figure of one point with the least
    favourable of the other (conservative; it ignores run-to-run variation, which a single sweep cannot see).
    The baseline against itself is exactly 1 (where its figure has an interval at all)."""
    if base is None:
        return None
    mine, theirs = metric_ci(r, name), metric_ci(base, name)
    if mine is None or theirs is None:
        return None
    if r is base or r.run_id == base.run_id:
        return 1.0, 1.0
    if direction == "higher":
        return mine[0] / theirs[1], mine[1] / theirs[0]
    return theirs[0] / mine[1], theirs[1] / mine[0]


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
