"""``aibench compare BASELINE CANDIDATE``: match stored results and put their figures side by side.

Results are matched by benchmark id and config hash (equal hashes ⇔ the same measured work); a benchmark
whose configurations differ between the sides, a result of another schema version and a failed run are
*refused* with the reason rather than compared. For each matched configuration and metric the ratio
candidate/baseline gets a confidence interval where the data allow one:

* one run per side with raw samples kept (the kernel timer's per-call times, LoadGen's latencies): a seeded
  bootstrap of the ratio of the samples' quantile behind the metric (median for ``time_median``, p99 for
  ``latency_p99``, …), each side resampled on its own;
* three or more runs per side: a bootstrap over the runs' values (the figure is their median).

Both intervals describe the noise *inside* the stored runs. Runs taken at different moments on a shared
machine differ by far more (16–30% process to process on the project's 2-core machines), so a comparison
always carries that warning and points to ``aibench gate``, which interleaves both sides in one job.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aibench.errors import ResultIOError, UsageError
from aibench.gate import decide, stats
from aibench.gate.pairs import COMPARISON_SCHEMA, Pair, document
from aibench.results.schema import SCHEMA_NAME, SCHEMA_VERSION, Result
from aibench.results.store import MAX_RESULT_BYTES, iter_result_files

SHARED_MACHINE_WARNING = (
    "runs taken at different times on a shared machine are noisy: process-to-process spread of 16-30% was "
    "measured on 2-core CI machines, and these intervals only cover the noise inside each stored run; to "
    "decide, use 'aibench gate', which runs baseline and candidate interleaved in one job")

# Rate metrics of the kernel runner are work / time_median: their interval is the inverse of time's.
_RATE_OF_TIME = ("gflops", "gbps")
_QUANTILE = re.compile(r"^(?P<key>[a-z]+)_(?:(?P<median>median)|p(?P<p>\d+(?:_\d+)?))$")


def sample_source(metric: str) -> tuple[str, float, bool] | None:
    """Which raw samples back a metric: (samples key, quantile in %, inverse?) or None.

    ``time_median`` ← the median of ``samples["time"]``; ``latency_p99_9`` ← p99.9 of
    ``samples["latency"]``; ``gflops``/``gbps`` ← the inverse of the median of ``samples["time"]``.
    """
    if metric in _RATE_OF_TIME:
        return "time", 50.0, True
    m = _QUANTILE.match(metric)
    if not m:
        return None
    q = 50.0 if m["median"] else float(m["p"].replace("_", "."))
    if not 0 < q < 100:
        return None
    return m["key"], q, False


@dataclass
class Side:
    """What was read from one side's files and folders."""

    label: str
    results: list[Result] = field(default_factory=list)
    # aibench results of another schema version: (file, benchmark id or None, config hash or None, version)
    other_version: list[tuple[str, str | None, str | None, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def load_side(paths: Sequence[str | Path], label: str | None = None) -> Side:
    """Read result files (named, or found under folders). Inside folders, JSON that is not an aibench
    result — sweep records, comparison and gate files, LoadGen's logs — is skipped (counted, one note). A
    file named directly must be a result (exit 4 otherwise). A result of another schema version is kept
    aside so its pair can be refused with the reason."""
    side = Side(label or ", ".join(str(p) for p in paths))
    named = {Path(p) for p in paths if not Path(p).is_dir()}
    for f in iter_result_files(paths):
        try:
            if f.stat().st_size > MAX_RESULT_BYTES:
                raise ResultIOError(f"{f}: too large to be an aibench result file")
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if f in named:
                raise ResultIOError(f"{f}: not valid JSON ({exc})") from None
            side.skipped.append(str(f))
            continue
        except OSError as exc:
            raise ResultIOError(f"{f}: cannot read ({exc.strerror or exc})") from None
        if isinstance(data, dict) and data.get("schema") == SCHEMA_NAME and data.get("schema_version") != \
                SCHEMA_VERSION:
            bench = data.get("benchmark")
            bench_id = bench.get("id") if isinstance(bench, dict) else None
            side.other_version.append((str(f), bench_id, data.get("config_hash"), data.get("schema_version")))
            continue
        try:
            side.results.append(Result.from_dict(data, source=str(f)))
        except ResultIOError:
            if f in named:
                raise
            side.skipped.append(str(f))
    return side


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    return ", ".join(f"{k}={a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in keys[:6]) + \
        (" …" if len(keys) > 6 else "")


def _value(results: Sequence[Result], metric: str) -> tuple[float | None, str | None]:
    """The figure of a metric over one side's runs of a configuration (median of the runs), or None and why."""
    vals = []
    for r in results:
        entry = r.metrics.get(metric)
        if entry is None:
            return None, f"metric {metric!r} is not in the result"
        if entry.get("value") is None:
            return None, f"{metric} unavailable: {entry.get('unavailable') or 'no value'}"
        vals.append(float(entry["value"]))
    return float(statistics.median(vals)), None


def _ci(base: Sequence[Result], cand: Sequence[Result], metric: str, confidence: float,
        seed: int) -> tuple[tuple[float, float] | None, str]:
    """An interval for the ratio and how it was obtained (or None and why not)."""
    if len(base) >= 3 and len(cand) >= 3:
        b = [float(r.metrics[metric]["value"]) for r in base]
        c = [float(r.metrics[metric]["value"]) for r in cand]
        if min(b) > 0 and min(c) > 0:
            return stats.ratio_of_quantiles_ci(b, c, 50.0, confidence, seed), "bootstrap over runs"
    src = sample_source(metric)
    if len(base) == 1 and len(cand) == 1 and src is not None:
        key, q, inverse = src
        sb, sc = base[0].samples.get(key), cand[0].samples.get(key)
        if sb and sc and len(sb.get("values") or []) >= 2 and len(sc.get("values") or []) >= 2:
            try:
                lo, hi = stats.ratio_of_quantiles_ci(sb["values"], sc["values"], q, confidence, seed)
            except ValueError:
                return None, "raw samples not positive"
            if inverse:
                lo, hi = 1.0 / hi, 1.0 / lo
            return (lo, hi), f"bootstrap of raw '{key}' samples within each run"
    return None, "no raw samples behind this metric"


def _spec(results: Sequence[Result], metric: str) -> tuple[str, str]:
    for r in results:
        entry = r.metrics.get(metric)
        if entry:
            return entry.get("unit", ""), entry.get("direction", "lower")
    return "", "lower"


def compare_sides(base: Side, cand: Side, metrics: Iterable[str] = (), threshold: float =
                  decide.DEFAULT_THRESHOLD, thresholds: dict[str, float] | None = None,
                  confidence: float = stats.CONFIDENCE, seed: int = 0) -> tuple[list[Pair], list[str]]:
    """Match, refuse and compare; return the pairs and the warnings."""
    extra_metrics = list(dict.fromkeys(metrics))
    warnings: list[str] = []
    pairs: list[Pair] = []

    def group(side: Side) -> dict[str, dict[str, list[Result]]]:
        out: dict[str, dict[str, list[Result]]] = {}
        for r in side.results:
            out.setdefault(r.id, {}).setdefault(r.config_hash, []).append(r)
        return out

    gb, gc = group(base), group(cand)

    # Results of another schema version: refused, with the versions, wherever they would have paired.
    for which, side in (("baseline", base), ("candidate", cand)):
        for path, bench_id, chash, version in side.other_version:
            pairs.append(Pair(
                benchmark=bench_id or "?", config_hash=chash or "?", metric="?", unit="", direction="lower",
                baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                reason=(f"{which} file {path} has result schema version {version!r}; this aibench reads "
                        f"version {SCHEMA_VERSION}: not comparable")))

    only_base = sorted(set(gb) - set(gc))
    only_cand = sorted(set(gc) - set(gb))
    if only_base:
        warnings.append(f"only in the baseline (not compared): {', '.join(only_base)}")
    if only_cand:
        warnings.append(f"only in the candidate (not compared): {', '.join(only_cand)}")

    seen_metrics: set[str] = set()
    for bench_id in sorted(set(gb) & set(gc)):
        hb, hc = gb[bench_id], gc[bench_id]
        seen_metrics.update(m for rs in (*hb.values(), *hc.values()) for r in rs for m in r.metrics)
        common = [h for h in hb if h in hc]
        for h in common:
            rb, rc = hb[h], hc[h]
            primary = rb[0].primary_metric or rc[0].primary_metric
            wanted = [m for m in dict.fromkeys([primary, *extra_metrics]) if m]
            for m in wanted:
                if m != primary and all(m not in r.metrics for r in [*rb, *rc]):
                    warnings.append(f"{bench_id}: no metric {m!r} in its results")
                    continue
                pairs.append(_pair(bench_id, h, rb, rc, m, threshold, thresholds, confidence, seed))
        lone_b = [h for h in hb if h not in hc]
        lone_c = [h for h in hc if h not in hb]
        if len(lone_b) == 1 and len(lone_c) == 1:
            b, c = hb[lone_b[0]][0], hc[lone_c[0]][0]
            what = _diff(b.params, c.params) or _diff(b.config, c.config) or "harness settings differ"
            m = b.primary_metric or ""
            unit, direction = _spec([b, c], m)
            pairs.append(Pair(
                benchmark=bench_id, config_hash=lone_b[0], metric=m, unit=unit, direction=direction,
                baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                reason=(f"config hash differs (baseline {lone_b[0]}, candidate {lone_c[0]}): {what}; "
                        "results with different hashes measured different work"),
                params=b.params, extra={"candidate_config_hash": lone_c[0]}))
        else:
            for which, lone, other in (("baseline", lone_b, hc), ("candidate", lone_c, hb)):
                for h in lone:
                    r = (hb if which == "baseline" else hc)[h][0]
                    m = r.primary_metric or ""
                    unit, direction = _spec([r], m)
                    pairs.append(Pair(
                        benchmark=bench_id, config_hash=h, metric=m, unit=unit, direction=direction,
                        baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                        reason=(f"no {'candidate' if which == 'baseline' else 'baseline'} result with config "
                                f"hash {h} (the other side has {', '.join(sorted(other))})"),
                        params=r.params))

    warnings.extend(_context_warnings(base, cand))
    typos = [m for m in extra_metrics if m not in seen_metrics]
    if typos and (gb.keys() & gc.keys()):
        raise UsageError(f"no compared result has a metric {typos[0]!r}; known: {', '.join(sorted(seen_metrics))}")
    return pairs, warnings


def _pair(bench_id: str, h: str, rb: list[Result], rc: list[Result], m: str, threshold: float,
          thresholds: dict[str, float] | None, confidence: float, seed: int) -> Pair:
    unit, direction = _spec([*rb, *rc], m)
    thr = decide.threshold_for(m, threshold, thresholds)
    base = Pair(benchmark=bench_id, config_hash=h, metric=m, unit=unit, direction=direction, baseline=None,
                candidate=None, ratio=None, ci=None, verdict="refused", reason=None, threshold=thr,
                confidence=confidence, params=rb[0].params)
    failed = [(w, r) for w, rs in (("baseline", rb), ("candidate", rc)) for r in rs if r.status != "ok"]
    if failed:
        w, r = failed[0]
        msg = (r.error or {}).get("message", "")
        base.reason = f"the {w} run has status {r.status}" + (f": {msg}" if msg else "")
        return base
    vb, why_b = _value(rb, m)
    vc, why_c = _value(rc, m)
    base.baseline, base.candidate = vb, vc
    if vb is None or vc is None:
        base.reason = f"baseline: {why_b}" if vb is None else f"candidate: {why_c}"
        return base
    if vb <= 0 or vc <= 0 or not (math.isfinite(vb) and math.isfinite(vc)):
        base.reason = f"values must be positive to form a ratio (baseline {vb}, candidate {vc})"
        return base
    base.ratio = vc / vb
    ci, how = _ci(rb, rc, m, confidence, seed)
    base.ci = ci
    verdict, reason = decide.judge(base.ratio, ci, direction, thr, confidence)
    base.verdict = verdict
    base.reason = f"{reason} ({how})" if ci is not None else reason
    invalid = [w for w, rs in (("baseline", rb), ("candidate", rc))
               if any((r.metrics.get(m) or {}).get("valid") is False for r in rs)]
    if invalid:
        base.reason += f"; the {' and '.join(invalid)} figure comes from an INVALID LoadGen run"
    base.extra["runs"] = {"baseline": len(rb), "candidate": len(rc)}
    return base


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _context_warnings(base: Side, cand: Side) -> list[str]:
    out = [SHARED_MACHINE_WARNING]
    for side in (base, cand):
        if side.skipped:
            out.append(f"{side.label}: skipped {len(side.skipped)} JSON file(s) that are not aibench results "
                       "(sweep records, comparison files, LoadGen logs, …)")

    def hosts(side: Side) -> set[str]:
        return {str((r.system.get("machine") or {}).get("hostname")) for r in side.results
                if (r.system.get("machine") or {}).get("hostname")}

    hb, hc = hosts(base), hosts(cand)
    if hb and hc and hb != hc:
        out.append(f"baseline and candidate ran on different machines ({', '.join(sorted(hb))} vs "
                   f"{', '.join(sorted(hc))}): a ratio mixes code and machine")
    tb = [t for t in (_parse_time(r.started_at) for r in base.results) if t]
    tc = [t for t in (_parse_time(r.started_at) for r in cand.results) if t]
    if tb and tc:
        gap = abs((min(tc) - min(tb)).total_seconds())
        if gap >= 60:
            span = f"{gap / 3600:.1f} h" if gap >= 3600 else f"{gap / 60:.0f} min"
            out.append(f"the two sides were measured about {span} apart")
    return out


def compare_paths(baseline: Sequence[str | Path], candidate: Sequence[str | Path], metrics: Iterable[str] = (),
                  threshold: float = decide.DEFAULT_THRESHOLD, thresholds: dict[str, float] | None = None,
                  confidence: float = stats.CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Everything ``aibench compare`` does short of printing: the comparison document (contract 2)."""
    base = load_side(baseline)
    cand = load_side(candidate)
    if not base.results and not base.other_version:
        raise ResultIOError(f"no aibench result files in {base.label}")
    if not cand.results and not cand.other_version:
        raise ResultIOError(f"no aibench result files in {cand.label}")
    pairs, warnings = compare_sides(base, cand, metrics, threshold, thresholds, confidence, seed)
    if not pairs:
        warnings.insert(0, "no benchmark appears on both sides: nothing to compare")
    return document(COMPARISON_SCHEMA, base.label, cand.label, pairs, warnings)
