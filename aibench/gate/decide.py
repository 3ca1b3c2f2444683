"""Verdicts and outcomes: the decision rule of ``aibench gate`` (and the verdict column of ``compare``).

The rule, from ``reference/measurement.md`` (the only design that held false alarms near 1% on the shared
2-core machines): pair baseline and candidate in each round, take the per-round ratio candidate/baseline,
and decide on the geometric mean of the ratios and its 95% bootstrap confidence interval:

* ``worse`` (outcome *regression*): the geometric mean is worse than the threshold **and** the interval
  excludes 1 on the worse side;
* ``better`` (outcome *improved*): the mirror image;
* ``same`` (outcome *pass*): the whole interval lies within ±threshold (an equivalence test: the data show
  any change is smaller than the threshold);
* ``inconclusive``: anything else — too noisy to decide at this threshold; the reason says how wide the
  interval was and roughly how many rounds would have narrowed it enough.

Direction comes from the metric: for "lower is better" (times, latencies) a ratio above 1 is worse, for
"higher is better" (throughput) a ratio below 1 is worse. Thresholds are symmetric in log space: 5% means
worse when the figure is more than 1.05× worse, better when more than 1.05× better.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aibench.gate import stats
from aibench.results.declaration import is_tail

VERDICTS = ("better", "worse", "same", "inconclusive", "refused")
OUTCOMES = ("pass", "improved", "regression", "inconclusive", "error")
VERDICT_OUTCOME = {"same": "pass", "better": "improved", "worse": "regression", "inconclusive": "inconclusive",
                   "refused": "error"}

# Exit codes of `aibench gate`, one per outcome. They sit outside aibench's own codes (0 1 2 3 4 70 130).
# "improved" exits 0 by default so a speed-up does not fail CI; `--improved distinct` gives it its own 13.
EXIT_PASS = 0
EXIT_REGRESSION = 10
EXIT_INCONCLUSIVE = 11
EXIT_ERROR = 12
EXIT_IMPROVED = 13

DEFAULT_THRESHOLD = 0.05  # dedicated hardware
RUNNER_THRESHOLDS = {"dedicated": 0.05, "shared": 0.10}
# Tail figures (p99, p99.9, max) move more from run to run than medians: their threshold is wider.
TAIL_FACTOR = 2.0
MIN_ROUNDS = 3  # fewer paired rounds cannot support an interval worth the name


def threshold_for(metric: str, base: float, overrides: Mapping[str, float] | None = None,
                  statistic: str | None = None) -> float:
    """The threshold of one metric: an explicit per-metric override (by name), else ``base``, × TAIL_FACTOR
    when the metric declares a tail statistic (``"statistic"``: p99, p99_9, max; see
    :mod:`aibench.results.declaration`). The name is never read for what the metric is."""
    if overrides and metric in overrides:
        return overrides[metric]
    return base * TAIL_FACTOR if is_tail(statistic) else base


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` → 0.05. Raises ValueError with a readable message otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"threshold {text!r} is not a number (give 5% or 0.05)") from None
    if not math.isfinite(value) or value <= 0 or value >= 1:
        raise ValueError(f"threshold {text!r} must be between 0 and 1 as a fraction (0.05) or 0% and 100% (5%)")
    return value


def _badness(ratio: float, direction: str) -> float:
    """How many times worse the candidate is (>1 worse, <1 better), whatever the metric's direction."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")
    return ratio if direction == "lower" else 1.0 / ratio


def _pct(badness: float) -> str:
    if badness >= 1:
        return f"{(badness - 1) * 100:.1f}% worse"
    return f"{(1 / badness - 1) * 100:.1f}% better"


@dataclass(frozen=True)
class Decision:
    """The verdict on one metric. ``ratio`` and ``ci`` are candidate/baseline (not direction-adjusted)."""

    verdict: str
    ratio: float | None
    ci: tuple[float, float] | None
    threshold: float
    reason: str
    rounds: int = 0

    @property
    def outcome(self) -> str:
        return VERDICT_OUTCOME[self.verdict]


def judge(ratio: float, ci: tuple[float, float] | None, direction: str, threshold: float,
          confidence: float = stats.CONFIDENCE) -> tuple[str, str]:
    """Verdict and reason for a ratio candidate/baseline and its interval (or None when there is none)."""
    tol = 1.0 + threshold
    bad = _badness(ratio, direction)
    thr = f"{threshold * 100:g}%"
    if ci is None:
        if bad > tol:
            return "worse", f"{_pct(bad)}, past the {thr} threshold (no confidence interval)"
        if bad < 1.0 / tol:
            return "better", f"{_pct(bad)}, past the {thr} threshold (no confidence interval)"
        return "same", f"{_pct(bad)}, within ±{thr} (no confidence interval)"
    b_lo, b_hi = sorted((_badness(ci[0], direction), _badness(ci[1], direction)))
    level = f"{confidence * 100:g}%"
    span = f"{level} CI of the ratio [{ci[0]:.3f}, {ci[1]:.3f}]"
    if bad > tol and b_lo > 1.0:
        return "worse", f"{_pct(bad)}, past the {thr} threshold; the {span} excludes 1"
    if bad < 1.0 / tol and b_hi < 1.0:
        return "better", f"{_pct(bad)}, past the {thr} threshold; the {span} excludes 1"
    if b_lo >= 1.0 / tol and b_hi <= tol:
        return "same", f"{_pct(bad)}; the {span} lies within ±{thr}"
    half = (math.log(b_hi) - math.log(b_lo)) / 2.0
    return "inconclusive", (f"{_pct(bad)}; the {span} (±{(math.exp(half) - 1) * 100:.1f}%) is too wide to "
                            f"decide at ±{thr}")


def decide_rounds(ratios: Sequence[float], direction: str, threshold: float, confidence: float = stats.CONFIDENCE,
                  seed: int = 0, method: str = "trimmed-t", trim: float = stats.TRIM) -> Decision:
    """The gate's decision on one metric from its per-round ratios candidate/baseline.

    Applied unchanged by ``scripts/gate_study.py`` to the saved stream of rounds, so the study measures
    exactly this rule.
    """
    n = len(ratios)
    if n < MIN_ROUNDS:
        gm = stats.trimmed_geomean(ratios, trim) if n else None
        return Decision("inconclusive", gm, None, threshold,
                        f"only {n} paired round(s); at least {MIN_ROUNDS} are needed to decide", n)
    gm = stats.trimmed_geomean(ratios, trim)
    ci = stats.geomean_ci(ratios, confidence=confidence, seed=seed, method=method, trim=trim)
    verdict, reason = judge(gm, ci, direction, threshold, confidence)
    if verdict == "inconclusive":
        b_lo, b_hi = sorted((_badness(ci[0], direction), _badness(ci[1], direction)))
        # The interval would have to fit within ±threshold around the estimate: half-width ≲ the distance
        # from the estimate to the nearer threshold (or, for a figure beyond the threshold, to 1).
        lb = math.log(_badness(gm, direction))
        room = math.log(1.0 + threshold) - abs(lb) if abs(lb) < math.log(1.0 + threshold) else abs(lb)
        need = stats.rounds_needed(ratios, (math.log(b_hi) - math.log(b_lo)) / 2.0, room) if room > 0 else None
        if need is not None and need > n:
            reason += f"; about {need} rounds would be needed at this noise"
    return Decision(verdict, gm, ci, threshold, reason, n)


# -- more rounds when the interval straddles the threshold -----------------------------------------------------
# The gate looks at the data after the first K rounds (``--rounds``), then after every further ``step`` rounds,
# up to ``--max-rounds``: a schedule of L looks fixed before the first round. The error rate α = 1 − C is split
# over the looks (Bonferroni with unequal shares): the first look, which decides most gates, tests at
# 1 − α/2, each later look at 1 − α/(2(L − 1)); with a single look, at C. Whatever look a false verdict would
# come from, the chance of one over the whole gate stays below α. A metric keeps the verdict of the first
# look that decides it; the gate stops when every metric is decided, when the schedule ends, or when the
# next batch would not fit in ``--budget-s``. Stopping early for the budget only drops looks, which keeps
# the bound. (Why not α/L at every look: on the study's recorded A/A ratios a first look at 99% left 17% of
# gates undecided after 10 rounds, at 97.5% 6%; under load the budget often allows no second look.)
DEFAULT_MAX_ROUNDS_FACTOR = 3  # --max-rounds defaults to 3 × --rounds
DEFAULT_BUDGET_S = 150.0


def look_step(first: int) -> int:
    """Rounds added between two looks: half the first look's rounds (at least 2, so the side order stays
    balanced within each batch)."""
    return max(2, first // 2)


def look_schedule(first: int, max_rounds: int, step: int | None = None) -> list[int]:
    """The round counts at which the gate decides: ``first``, ``first + step``, …, ``max_rounds``."""
    if first < 1 or max_rounds < first:
        raise ValueError(f"max rounds {max_rounds} must be at least the first look's {first}")
    step = look_step(first) if step is None else step
    looks = list(range(first, max_rounds + 1, step))
    if looks[-1] != max_rounds:
        looks.append(max_rounds)
    return looks


def look_confidence(confidence: float, looks: int, index: int = 0) -> float:
    """The confidence of look ``index`` (0: the first) of a schedule of ``looks`` looks, so that all looks
    together keep ``confidence``: half the error rate at the first look, the other half shared by the rest."""
    alpha = 1.0 - confidence
    if looks <= 1:
        return confidence
    if index == 0:
        return 1.0 - alpha / 2.0
    return 1.0 - alpha / (2.0 * (looks - 1))


@dataclass(frozen=True)
class Sequential:
    """What a sequential gate decided on one metric, and after how many rounds."""

    decision: Decision
    rounds_used: int
    looks_taken: int


def decide_sequential(ratios: Sequence[float], direction: str, threshold: float, looks: Sequence[int],
                      confidence: float = stats.CONFIDENCE, seed: int = 0, method: str = "trimmed-t",
                      trim: float = stats.TRIM) -> Sequential:
    """The gate's sequential rule on one metric's stream of per-round ratios: decide at each look of the
    schedule that the stream reaches, at the corrected confidence; the first decisive look wins.

    ``scripts/gate_study.py`` applies it to recorded ratios; the gate applies the same rule to every metric
    at once (:meth:`aibench.gate.gate.Gate.run`).
    """
    d = Decision("inconclusive", None, None, threshold, "no rounds", 0)
    taken = 0
    for i, n in enumerate(looks):
        if n > len(ratios):
            break
        taken += 1
        d = decide_rounds(ratios[:n], direction, threshold, look_confidence(confidence, len(looks), i), seed,
                          method, trim)
        if d.verdict != "inconclusive":
            return Sequential(d, n, taken)
    if taken == 0:
        d = decide_rounds(ratios, direction, threshold, look_confidence(confidence, len(looks), 0), seed, method,
                          trim)
    return Sequential(d, d.rounds, taken)


def overall(outcomes: Iterable[str]) -> str:
    """One outcome for the whole gate: error > regression > inconclusive > improved > pass."""
    seen = set(outcomes)
    for o in ("error", "regression", "inconclusive", "improved"):
        if o in seen:
            return o
    return "pass"


def exit_code(outcome: str, inconclusive: str = "fail", improved: str = "pass") -> int:
    """The process exit code of a gate outcome. ``inconclusive="pass"`` makes an inconclusive gate exit 0;
    ``improved="distinct"`` makes an improved one exit 13 instead of 0."""
    if outcome == "pass":
        return EXIT_PASS
    if outcome == "improved":
        return EXIT_IMPROVED if improved == "distinct" else EXIT_PASS
    if outcome == "regression":
        return EXIT_REGRESSION
    if outcome == "inconclusive":
        return EXIT_PASS if inconclusive == "pass" else EXIT_INCONCLUSIVE
    return EXIT_ERROR
