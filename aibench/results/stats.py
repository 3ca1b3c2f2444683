"""Summary statistics of raw samples. Pure Python + math: no numpy or torch needed to read results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# IQR/median above this marks a measurement as noisy; torch.utils.benchmark warns at the same 10%.
NOISY_IQR_RATIO = 0.10
PERCENTILES = (90.0, 95.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of an already sorted sequence."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def median_ci(sorted_values: Sequence[float], z: float = 1.959964) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median from order statistics.

    The ranks n/2 ± z·√n/2 (normal approximation to the binomial) bound the population median; with fewer
    than 6 samples the interval is the sample range.
    """
    n = len(sorted_values)
    if n < 6:
        return sorted_values[0], sorted_values[-1]
    half = z * math.sqrt(n) / 2.0
    lo = max(0, math.floor(n / 2.0 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2.0 + half) - 1)
    return sorted_values[lo], sorted_values[hi]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """n, min, max, mean, sd, median, quartiles, IQR, p90/p95/p99/p99.9, CI of the median, noise ratio."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples to summarize")
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    med = percentile(xs, 50)
    q1, q3 = percentile(xs, 25), percentile(xs, 75)
    ci_lo, ci_hi = median_ci(xs)
    out: dict[str, Any] = {
        "n": n,
        "min": xs[0],
        "max": xs[-1],
        "mean": mean,
        "sd": sd,
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
    }
    for p in PERCENTILES:
        out[f"p{p:g}".replace(".", "_")] = percentile(xs, p)
    out["median_ci95"] = [ci_lo, ci_hi]
    out["iqr_over_median"] = (q3 - q1) / med if med > 0 else None
    out["noisy"] = bool(out["iqr_over_median"] is not None and out["iqr_over_median"] > NOISY_IQR_RATIO)
    return out
