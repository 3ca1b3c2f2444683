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
# "trimmed-t": Tukey–McLaughlin / Yuen interval of the trimmed mean (Student t on the winsorized variance,
# h − 1 degrees of freedom): the paired trimmed-mean t-test, calibrated even for a handful of rounds.
# "BCa" (bias-corrected and accelerated) and "percentile": bootstrap intervals of the same statistic; with
# few rounds they are too narrow (at K = 10 they missed the true value ~9% of the time instead of 5%).
CI_METHODS = ("trimmed-t", "BCa", "percentile")
# Share of rounds trimmed from *each* end of the sorted log ratios before averaging. On a shared machine a
# round in which only one side was hit by another job's burst gives a wild ratio (×0.5 … ×2); the trimmed
# mean ignores a few such rounds where the plain mean (and its bootstrap interval) follows them into false
# alarms. With fewer than 5 rounds nothing is trimmed (int(0.2 × 4) = 0).
TRIM = 0.2


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


def _trimmed_mean(x: np.ndarray, trim: float, axis: int = -1) -> np.ndarray:
    """Mean after cutting ``int(trim × n)`` values from each end (scipy's trim_mean); ``trim`` 0: the mean."""
    if trim <= 0:
        return np.mean(x, axis=axis)
    from scipy.stats import trim_mean

    return trim_mean(x, trim, axis=axis)


def trimmed_geomean(values: Sequence[float], trim: float = TRIM) -> float:
    """Geometric mean after trimming ``trim`` of the values from each end (in log space)."""
    if not 0 <= trim < 0.5:
        raise ValueError("trim must be in [0, 0.5)")
    logs = np.log(_positive(values, "values"))
    return float(math.exp(float(_trimmed_mean(logs, trim))))


def trimmed_t_interval(logs: np.ndarray, trim: float, confidence: float) -> tuple[float, float]:
    """Yuen's confidence interval of the trimmed mean: t quantile with h − 1 degrees of freedom times
    sqrt(SS_w / (h (h − 1))), SS_w the sum of squares of the winsorized values about their mean, h the
    number of values kept (Wilcox, *Introduction to Robust Estimation and Hypothesis Testing*, 3.6)."""
    from scipy.stats import t as student_t

    x = np.sort(np.asarray(logs, dtype=float))
    n = x.size
    g = int(trim * n)
    h = n - 2 * g
    if h < 2:
        raise ValueError("too few rounds left after trimming for an interval")
    w = np.clip(x, x[g], x[n - g - 1])
    ss_w = float(np.sum((w - w.mean()) ** 2))
    se = math.sqrt(ss_w / (h * (h - 1)))
    centre = float(np.mean(x[g:n - g]))
    q = float(student_t.ppf(0.5 + confidence / 2.0, h - 1))
    return centre - q * se, centre + q * se


def geomean_ci(ratios: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0, method: str = "trimmed-t",
               n_resamples: int = N_RESAMPLES, trim: float = 0.0) -> tuple[float, float]:
    """Confidence interval of the (trimmed) geometric mean of per-round ratios.

    Each round's ratio is one paired observation; the statistic is the (trimmed) mean of the log ratios.
    ``trimmed-t`` is Yuen's t interval; ``BCa``/``percentile`` resample the rounds (seeded). With all
    ratios equal the interval is that single value; with one round it is undefined (``ValueError``).
    """
    if not 0 <= trim < 0.5:
        raise ValueError("trim must be in [0, 0.5)")
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; one of {', '.join(CI_METHODS)}")
    logs = np.log(_positive(ratios, "ratios"))
    if logs.size < 2:
        raise ValueError("a confidence interval needs at least 2 rounds")
    if float(np.ptp(logs)) == 0.0:
        value = float(math.exp(float(logs[0])))
        return value, value
    if method == "trimmed-t":
        lo, hi = trimmed_t_interval(logs, trim, confidence)
        return math.exp(lo), math.exp(hi)
    import warnings

    from scipy.stats import bootstrap

    def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return _trimmed_mean(x, trim, axis=axis)

    with warnings.catch_warnings():  # BCa warns (and returns NaN) on degenerate resamples: handled below
        warnings.simplefilter("ignore")
        res = bootstrap((logs,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                        method=method, vectorized=True, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa degenerates on (almost) constant data
        res = bootstrap((logs,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return math.exp(lo), math.exp(hi)


def rounds_needed(ratios: Sequence[float], half_width: float, target_half_width: float) -> int | None:
    """Rough number of rounds at which a CI of log half-width ``half_width`` (seen with ``len(ratios)``
    rounds) would shrink to ``target_half_width`` (a CI narrows as 1/√rounds)."""
    if half_width <= 0 or target_half_width <= 0:
        return None
    return math.ceil(len(ratios) * (half_width / target_half_width) ** 2)
