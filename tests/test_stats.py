from __future__ import annotations

import statistics

import pytest

from aibench.results.stats import median_ci, percentile, summarize


def test_percentile_matches_linear_interpolation() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 4.0
    assert percentile(xs, 90) == pytest.approx(3.7)


def test_summary_fields() -> None:
    xs = [float(x) for x in range(1, 101)]
    s = summarize(xs)
    assert s["n"] == 100 and s["min"] == 1 and s["max"] == 100
    assert s["median"] == statistics.median(xs)
    assert s["sd"] == pytest.approx(statistics.stdev(xs))
    assert s["iqr"] == pytest.approx(s["q3"] - s["q1"])
    assert s["p99_9"] <= s["max"] and s["p90"] < s["p99"]
    lo, hi = s["median_ci95"]
    assert lo <= s["median"] <= hi
    assert s["noisy"] is True  # IQR is half the median here


def test_quiet_samples_are_not_noisy() -> None:
    s = summarize([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0])
    assert s["noisy"] is False and s["iqr_over_median"] < 0.1


def test_median_ci_narrows_with_more_samples() -> None:
    import random

    rng = random.Random(0)
    small = sorted(rng.gauss(10, 1) for _ in range(20))
    large = sorted(rng.gauss(10, 1) for _ in range(2000))
    w_small = median_ci(small)[1] - median_ci(small)[0]
    w_large = median_ci(large)[1] - median_ci(large)[0]
    assert w_large < w_small


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarize([])
