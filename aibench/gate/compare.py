"""``aibench compare BASELINE CANDIDATE``: match stored results and put their figures side by side.

Results are matched by benchmark id and config hash (equal hashes ⇔ the same measured work); a benchmark
whose configurations differ between the sides, a result of another schema version and a failed run are
*refused* with the reason rather than compared. For each matched configuration and metric the ratio
candidate/baseline gets a confidence interval where the data allow one:

* one run per side with raw samples kept (the kernel timer's per-call times, LoadGen's latencies, a part's
  values): a seeded bootstrap of the ratio of the quantile the metric *declares* it is of those samples
  (``"statistic": "p99", "of": "samples.latency"``; a rate such as GFLOP/s declares the median time it is
  the inverse of), each side resampled on its own. A metric's name is never read for its meaning
  (:mod:`aibench.results.declaration`);
* three or more runs per side: a bootstrap over the runs' values (the figure is their median).

Both intervals describe the noise *inside* the stored runs. Runs taken at different moments on a shared
machine differ by far more (16–30% process to process on the project's 2-core machines), so a comparison
always carries that warning and points to ``aibench gate``, which interleaves both sides in one job.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from aibench.errors import ResultIOError, UsageError
from aibench.gate import decide, stats
from aibench.gate.pairs import COMPARISON_SCHEMA, Pair, document
from aibench.gate.render import ratio_words
from aibench.results.declaration import quantile_basis, values_of
from aibench.results.files import scan
from aibench.results.schema import SCHEMA_VERSION, Result
from aibench.results.validate import ResultFileError

SHARED_MACHINE_WARNING = (
    "runs taken at different times on a shared machine are noisy: process-to-process spread of 16-30% was "
    "measured on 2-core CI machines, and these intervals only cover the noise inside each stored run; to "
    "decide, use 'aibench gate', which runs baseline and candidate interleaved in one job")


def sample_source(entry: dict[str, Any] | None) -> tuple[str, float, bool] | None:
    """Which raw samples back a metric entry, by its declaration: (``of``, quantile in %, inverse?) or None.

    ``{"statistic": "median", "of": "samples.time"}`` ← the median of the per-call times;
    ``{"statistic": "p99_9", "of": "samples.latency"}`` ← their p99.9; ``{"statistic": "rate", "of":
    "samples.time", "inverse_of": "median"}`` (GFLOP/s) ← the inverse of the median time; ``{"statistic":
    "p99", "of": "parts.stage.dnn"}`` ← the p99 of the DNN stage's batch times. Anything else (a mean, a max,
    a LoadGen rate, a share) has no bootstrap of its own here.
    """
    return quantile_basis(entry)


@dataclass
class Side:
    """What was read from one side's files and folders."""

    label: str
    results: list[Result] = field(default_factory=list)
    # aibench results of another schema version: (file, benchmark id or None, config hash or None, version)
    other_version: list[tuple[str, str | None, str | None, Any]] = field(default_factory=list)
    note: str | None = None  # what was skipped in folders (foreign, damaged, unreadable files), one line


def load_side(paths: Sequence[str | Path], label: str | None = None) -> Side:
    """Read result files (named, or found under folders) with the one reader (:func:`aibench.results.files.scan`).

    Inside folders, aibench's own sweep records and comparison/gate files are passed over silently (they sit
    beside results as a matter of course); foreign JSON (LoadGen's logs), damaged files and anything that
    is not a regular file are skipped and summed up in one note. A file named directly must be a result
    (exit 4 otherwise). A result of another schema version is kept aside so its pair can be refused with
    the reason."""
    found = scan(paths)
    not_results = found.named_non_results()
    if not_results:
        raise ResultFileError(not_results[0], "a sweep record or comparison file, not a result: compare reads "
                                              "result files (name the folder that holds them)", "foreign")
    side = Side(label or ", ".join(str(p) for p in paths), results=found.results, note=found.note())
    for exc in found.other_versions:
        d = exc.detail
        side.other_version.append((exc.path, d.get("benchmark"), d.get("config_hash"), d.get("version")))
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


# Resamples of the bootstrap. Each costs O(1) (see quantile_ratio_ci), so there can be many.
N_RESAMPLES = 10_000
CI_METHOD = ("percentile bootstrap of the quantile ratio, each side resampled on its own; the resampled "
             "order statistics are drawn from their exact distribution (Beta), so the cost does not grow with "
             "the number of samples")


def _as_positive(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"no {what}")
    if not np.all(np.isfinite(arr)) or float(arr.min()) <= 0:
        raise ValueError(f"{what} must be finite and positive")
    return arr


def bootstrap_quantiles(values: Sequence[float], q: float, n_resamples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """The q-quantile (numpy's linear interpolation) of ``n_resamples`` bootstrap resamples of ``values``,
    drawn exactly but without building a resample.

    A resample of n values drawn with replacement is X_(⌈nU_j⌉) for n uniform U_j, and that map is monotone,
    so the k-th smallest resampled value is X_(⌈nU_(k)⌉) with U_(k) ~ Beta(k, n−k+1); the next one,
    U_(k+1) = U_(k) + (1−U_(k))·B with B ~ Beta(1, n−k). The quantile at position (n−1)q/100 interpolates
    between the k-th and (k+1)-th. So each resample costs two random numbers, and only the order statistics
    actually drawn are sorted (a partition of the data, O(n)): a million samples take milliseconds where
    building resamples took minutes (94 s for 2,000 resamples of 1 M samples).
    """
    x = _as_positive(values, "samples")
    n = x.size
    pos = (n - 1) * q / 100.0
    k0 = min(math.floor(pos), n - 1)  # 0-based rank of the lower order statistic
    frac = pos - k0
    k = k0 + 1  # its 1-based rank
    u_lo = rng.beta(k, n - k + 1, size=n_resamples)
    if frac > 0 and k < n:
        b = -np.expm1(np.log1p(-rng.random(n_resamples)) / (n - k))  # Beta(1, n-k), accurate for large n-k
        u_hi = u_lo + (1.0 - u_lo) * b
    else:
        u_hi = u_lo
    i_lo = np.clip(np.ceil(n * u_lo).astype(np.int64) - 1, 0, n - 1)
    i_hi = np.clip(np.ceil(n * u_hi).astype(np.int64) - 1, 0, n - 1)
    first, last = int(i_lo.min()), int(i_hi.max())
    window = np.sort(np.partition(x, [first, last])[first:last + 1])
    lo, hi = window[i_lo - first], window[i_hi - first]
    return lo + frac * (hi - lo)


def quantile_ratio_ci(baseline: Sequence[float], candidate: Sequence[float], q: float = 50.0,
                      confidence: float = stats.CONFIDENCE, seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap interval of quantile_q(candidate) / quantile_q(baseline) from two independent sets
    of values (raw samples of two runs, or the figures of several runs per side), seeded. The cost is
    O(n + n_resamples) per side (:func:`bootstrap_quantiles`).

    This says how precisely each *run* pinned its figure; it knows nothing of the variation between runs
    taken at different moments, which on a shared machine is usually larger (see ``aibench gate``).
    """
    rng = np.random.default_rng(seed)
    qb = bootstrap_quantiles(baseline, q, n_resamples, rng)
    qc = bootstrap_quantiles(candidate, q, n_resamples, rng)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(qc / qb, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def _ci(base: Sequence[Result], cand: Sequence[Result], metric: str, confidence: float,
        seed: int) -> tuple[tuple[float, float] | None, str]:
    """An interval for the ratio and how it was obtained (or None and why not)."""
    if len(base) >= 3 and len(cand) >= 3:
        b = [float(r.metrics[metric]["value"]) for r in base]
        c = [float(r.metrics[metric]["value"]) for r in cand]
        if min(b) > 0 and min(c) > 0:
            return quantile_ratio_ci(b, c, 50.0, confidence, seed), "bootstrap over runs"
    if len(base) == 1 and len(cand) == 1:
        src = sample_source(base[0].metrics.get(metric))
        if src is not None and src == sample_source(cand[0].metrics.get(metric)):
            of, q, inverse = src
            vb = values_of(base[0].samples, base[0].parts, of)
            vc = values_of(cand[0].samples, cand[0].parts, of)
            if vb and vc and len(vb) >= 2 and len(vc) >= 2:
                try:
                    lo, hi = quantile_ratio_ci(vb, vc, q, confidence, seed)
                except ValueError:
                    return None, "raw samples not positive"
                if inverse:
                    lo, hi = 1.0 / hi, 1.0 / lo
                return (lo, hi), f"bootstrap of raw '{of}' values within each run"
        elif src is not None:
            return None, "the two sides declare this metric differently"
    return None, "no raw samples behind this metric"


def _spec(results: Sequence[Result], metric: str) -> tuple[str, str]:
    for r in results:
        entry = r.metrics.get(metric)
        if entry:
            return entry.get("unit", ""), entry.get("direction", "lower")
    return "", "lower"


def _statistic(results: Sequence[Result], metric: str) -> str | None:
    """The statistic the first result that has the metric declares it is (the baseline's, when it has it)."""
    for r in results:
        entry = r.metrics.get(metric)
        if entry:
            return entry.get("statistic")
    return None


def profile_of(r: Result) -> str | None:
    """The LoadGen profile a result was measured with (``method.profile``: quick, ci, official), or None.

    The profile sets durations, query counts and seeds but not the measured work, so it is not in the config
    hash: a quick run and an official run of one configuration share a hash, yet their figures (an early-
    stopping estimate over 64 queries against one over 600 s) are not comparable.
    """
    p = r.method.get("profile")
    return p if isinstance(p, str) else None


def _key_text(key: tuple[str, str | None]) -> str:
    return key[0] + (f" (profile {key[1]})" if key[1] else "")


def compare_sides(base: Side, cand: Side, metrics: Iterable[str] = (), threshold: float =
                  decide.DEFAULT_THRESHOLD, thresholds: dict[str, float] | None = None,
                  confidence: float = stats.CONFIDENCE, seed: int = 0) -> tuple[list[Pair], list[str]]:
    """Match, refuse and compare; return the pairs and the warnings.

    Results are matched by benchmark id, config hash and LoadGen profile; a configuration whose hash, or
    whose profile, differs between the sides is refused with the difference."""
    extra_metrics = list(dict.fromkeys(metrics))
    warnings: list[str] = []
    pairs: list[Pair] = []
    Key = tuple[str, str | None]  # (config hash, LoadGen profile)

    def group(side: Side) -> dict[str, dict[Key, list[Result]]]:
        out: dict[str, dict[Key, list[Result]]] = {}
        for r in side.results:
            out.setdefault(r.id, {}).setdefault((r.config_hash, profile_of(r)), []).append(r)
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
        for key in [k for k in hb if k in hc]:
            rb, rc = hb[key], hc[key]
            primary = rb[0].primary_metric or rc[0].primary_metric
            wanted = [m for m in dict.fromkeys([primary, *extra_metrics]) if m]
            for m in wanted:
                if m != primary and all(m not in r.metrics for r in [*rb, *rc]):
                    warnings.append(f"{bench_id}: no metric {m!r} in its results")
                    continue
                pairs.append(_pair(bench_id, key[0], rb, rc, m, threshold, thresholds, confidence, seed))
        lone_b = [k for k in hb if k not in hc]
        lone_c = [k for k in hc if k not in hb]
        # The same configuration measured with different LoadGen profiles: refused, saying so.
        for kb in list(lone_b):
            kc = next((k for k in lone_c if k[0] == kb[0]), None)
            if kc is None:
                continue
            lone_b.remove(kb)
            lone_c.remove(kc)
            b = hb[kb][0]
            m = b.primary_metric or ""
            unit, direction = _spec([b], m)
            pairs.append(Pair(
                benchmark=bench_id, config_hash=kb[0], metric=m, unit=unit, direction=direction,
                baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                reason=(f"LoadGen profile differs (baseline {kb[1] or 'none'}, candidate {kc[1] or 'none'}): the "
                        "same configuration, but run for different durations and query counts, so the figures "
                        "are not comparable; compare runs of one profile"),
                params=b.params, extra={"profiles": {"baseline": kb[1], "candidate": kc[1]}}))
        if len(lone_b) == 1 and len(lone_c) == 1:
            b, c = hb[lone_b[0]][0], hc[lone_c[0]][0]
            what = _diff(b.params, c.params) or _diff(b.config, c.config) or "harness settings differ"
            m = b.primary_metric or ""
            unit, direction = _spec([b, c], m)
            pairs.append(Pair(
                benchmark=bench_id, config_hash=lone_b[0][0], metric=m, unit=unit, direction=direction,
                baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                reason=(f"config hash differs (baseline {lone_b[0][0]}, candidate {lone_c[0][0]}): {what}; "
                        "results with different hashes measured different work"),
                params=b.params, extra={"candidate_config_hash": lone_c[0][0]}))
        else:
            for which, lone, other in (("baseline", lone_b, hc), ("candidate", lone_c, hb)):
                for k in lone:
                    r = (hb if which == "baseline" else hc)[k][0]
                    m = r.primary_metric or ""
                    unit, direction = _spec([r], m)
                    pairs.append(Pair(
                        benchmark=bench_id, config_hash=k[0], metric=m, unit=unit, direction=direction,
                        baseline=None, candidate=None, ratio=None, ci=None, verdict="refused",
                        reason=(f"no {'candidate' if which == 'baseline' else 'baseline'} result with config "
                                f"hash {_key_text(k)} (the other side has "
                                f"{', '.join(sorted(_key_text(o) for o in other))})"),
                        params=r.params))

    warnings.extend(_context_warnings(base, cand))
    typos = [m for m in extra_metrics if m not in seen_metrics]
    if typos and (gb.keys() & gc.keys()):
        raise UsageError(f"no compared result has a metric {typos[0]!r}; known: {', '.join(sorted(seen_metrics))}")
    return pairs, warnings


def _reason(verdict: str, ratio: float, ci: tuple[float, float] | None, direction: str, unit: str,
            threshold: float, confidence: float) -> str:
    """The verdict in words, starting with what the ratio is: "0.457×, 54% less time; …"."""
    words = ratio_words(ratio, direction, unit)
    thr = f"±{threshold * 100:g}%"
    if ci is None:
        return {"worse": f"{words}: worse by more than the {thr} threshold (no confidence interval)",
                "better": f"{words}: better by more than the {thr} threshold (no confidence interval)",
                }.get(verdict, f"{words}: within {thr} (no confidence interval)")
    span = f"the {confidence * 100:g}% CI of the ratio [{ci[0]:.3f}, {ci[1]:.3f}]"
    if verdict in ("worse", "better"):
        return f"{words}: {verdict} by more than the {thr} threshold, and {span} excludes 1"
    if verdict == "same":
        return f"{words}; {span} lies within {thr}"
    half = (math.log(max(ci)) - math.log(min(ci))) / 2.0
    return f"{words}; {span} (±{(math.exp(half) - 1) * 100:.1f}%) is too wide to decide at {thr}"


def _pair(bench_id: str, h: str, rb: list[Result], rc: list[Result], m: str, threshold: float,
          thresholds: dict[str, float] | None, confidence: float, seed: int) -> Pair:
    unit, direction = _spec([*rb, *rc], m)
    statistic = _statistic([*rb, *rc], m)
    thr = decide.threshold_for(m, threshold, thresholds, statistic)
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
    verdict, _ = decide.judge(base.ratio, ci, direction, thr, confidence)
    base.verdict = verdict
    reason = _reason(verdict, base.ratio, ci, direction, unit, thr, confidence)
    base.reason = f"{reason} ({how})" if ci is not None else reason
    invalid = [w for w, rs in (("baseline", rb), ("candidate", rc))
               if any((r.metrics.get(m) or {}).get("valid") is False for r in rs)]
    if invalid:
        base.reason += f"; the {' and '.join(invalid)} figure comes from an INVALID LoadGen run"
    base.extra["runs"] = {"baseline": len(rb), "candidate": len(rc)}
    base.extra["statistic"] = statistic
    if ci is not None:
        base.extra["ci_method"] = CI_METHOD
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
    for which, side in (("baseline", base), ("candidate", cand)):
        if side.note:
            out.append(f"{which} ({side.label}): {side.note}")

    def hosts(side: Side) -> set[str]:
        return {str((r.machine.get("machine") or {}).get("hostname")) for r in side.results
                if (r.machine.get("machine") or {}).get("hostname")}

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
    for side in (base, cand):
        if not side.results and not side.other_version:
            raise ResultIOError(f"no aibench result files in {side.label}" + (f"; {side.note}" if side.note else ""))
    pairs, warnings = compare_sides(base, cand, metrics, threshold, thresholds, confidence, seed)
    if not pairs:
        ids_b = sorted({r.id for r in base.results})
        ids_c = sorted({r.id for r in cand.results})
        raise ResultIOError(f"nothing to compare: no benchmark appears on both sides (baseline has "
                            f"{', '.join(ids_b) or 'none'}; candidate has {', '.join(ids_c) or 'none'})")
    return document(COMPARISON_SCHEMA, base.label, cand.label, pairs, warnings)
