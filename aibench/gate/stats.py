"""The statistics behind ``compare`` and ``gate``: geometric means and seeded bootstrap intervals of ratios.

Everything here works on plain sequences of floats (numpy; scipy's :func:`scipy.stats.bootstrap` for the
BCa interval), so it can be tested on injected figures and re-applied to a saved stream of rounds. Nothing
here imports torch.

Why ratios in log space: a per-round ratio candidate/baseline is symmetric under log (×1.1 and ÷1.1 are
equally far from 1), the mean of the logs is the log of the geometric mean, and the geometric mean of the
per-round ratios equals the ratio of the geometric means of the two sides' figures — so the ``baseline``,
``candidate`` and ``ratio`` fields of a gate file are consistent with each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 9999
# A bootstrap over many raw samples is bounded in memory: resamples are drawn in batches of at most this many
# values (resamples × samples per batch).
_MAX_BATCH_VALUES = 4_000_000
# BCa (bias-corrected and accelerated) corrects the percentile interval for the skew a few outlier rounds
# bring; "percentile" is offered for comparison in the study.
CI_METHODS = ("BCa", "percentile")


def _positive(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    if arr.size == 0:
        raise ValueError(f"no {what}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{what} must be finite and positive")
    return arr


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of positive values."""
    arr = _positive(values, "values")
    return float(math.exp(float(np.mean(np.log(arr)))))


def geomean_ci(ratios: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0, method: str = "BCa",
               n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Bootstrap confidence interval of the geometric mean of per-round ratios (seeded, reproducible).

    The bootstrap resamples the rounds (each round's ratio is one paired observation) and takes the mean of
    the log ratios. With all ratios equal the interval is that single value; with one round it is undefined
    and raises ``ValueError``.
    """
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; one of {', '.join(CI_METHODS)}")
    logs = np.log(_positive(ratios, "ratios"))
    if logs.size < 2:
        raise ValueError("a confidence interval needs at least 2 rounds")
    if float(np.ptp(logs)) == 0.0:
        value = float(math.exp(float(logs[0])))
        return value, value
    from scipy.stats import bootstrap

    res = bootstrap((logs,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method=method,
                    vectorized=True, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa degenerates on (almost) constant data
        res = bootstrap((logs,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return math.exp(lo), math.exp(hi)


def ratio_of_quantiles_ci(baseline: Sequence[float], candidate: Sequence[float], q: float = 50.0,
                          confidence: float = CONFIDENCE, seed: int = 0,
                          n_resamples: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap interval of quantile_q(candidate) / quantile_q(baseline) from two independent
    sets of raw samples (each side resampled on its own; seeded).

    This is what ``compare`` can say from two stored runs: how precisely each *run* pinned its figure. It
    knows nothing of the variation between runs taken at different moments, which on a shared machine is
    usually larger (see ``aibench gate``).
    """
    b = _positive(baseline, "baseline samples")
    c = _positive(candidate, "candidate samples")
    rng = np.random.default_rng(seed)
    per_batch = max(1, _MAX_BATCH_VALUES // max(b.size, c.size))
    stats: list[np.ndarray] = []
    done = 0
    while done < n_resamples:
        n = min(per_batch, n_resamples - done)
        qb = np.percentile(rng.choice(b, size=(n, b.size), replace=True), q, axis=1)
        qc = np.percentile(rng.choice(c, size=(n, c.size), replace=True), q, axis=1)
        stats.append(qc / qb)
        done += n
    ratios = np.concatenate(stats)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(ratios, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def rounds_needed(ratios: Sequence[float], half_width: float, target_half_width: float) -> int | None:
    """Rough number of rounds at which a CI of log half-width ``half_width`` (seen with ``len(ratios)``
    rounds) would shrink to ``target_half_width`` (a CI narrows as 1/√rounds)."""
    if half_width <= 0 or target_half_width <= 0:
        return None
    return math.ceil(len(ratios) * (half_width / target_half_width) ** 2)
