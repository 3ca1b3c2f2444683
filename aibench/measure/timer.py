"""The kernel timer: warm-up, blocks long enough to hide timer overhead, adaptive stopping.

Modelled on ``torch.utils.benchmark.Timer.blocked_autorange``/``adaptive_autorange``, with two additions a
harness needs: a time budget (``max_time_s``) and a stopping rule on the width of the median's confidence
interval. It knows nothing of torch: the block timer (host clock + device sync, or CUDA events) is passed
in, so tests drive it with a fake clock.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aibench.results.stats import median_ci, summarize

Clock = Callable[[], float]


class BlockTimer(Protocol):
    """Times ``number`` back-to-back calls of ``fn`` and returns the elapsed seconds."""

    name: str

    def time_block(self, fn: Callable[[], Any], number: int) -> float: ...


@dataclass
class HostBlockTimer:
    """Host clock around the block, with ``sync`` (e.g. ``torch.cuda.synchronize``) on both sides so
    queued device work is neither counted before nor missed after."""

    clock: Clock = time.perf_counter
    sync: Callable[[], None] | None = None
    name: str = "host-clock"

    def time_block(self, fn: Callable[[], Any], number: int) -> float:
        sync = self.sync
        if sync is not None:
            sync()
        t0 = self.clock()
        for _ in range(number):
            fn()
        if sync is not None:
            sync()
        return self.clock() - t0


@dataclass(frozen=True)
class TimerSettings:
    """How long and how finely to measure.

    ``max_time_s`` bounds the measuring rounds (warm-up is bounded separately by ``warmup_s``). The run
    stops early once at least ``min_rounds`` blocks and ``min_time_s`` were spent and the 95% CI of the
    median is within ``target_rel_ci`` of it (half-width / median). At least ``MIN_SAMPLES`` blocks are
    always timed. ``min_time_s`` (torch's ``min_run_time``) keeps one lucky burst from being the answer.
    """

    warmup_s: float = 0.1
    warmup_iters: int = 2
    min_block_s: float = 1e-3
    min_time_s: float = 0.2
    max_time_s: float = 2.0
    min_rounds: int = 10
    max_rounds: int = 10_000
    target_rel_ci: float = 0.01

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


MIN_SAMPLES = 3
MAX_BLOCK_NUMBER = 1 << 24


@dataclass
class Measurement:
    """Plain data: per-call times (one per block) and how they were obtained."""

    samples: list[float]
    number: int
    warmup_iters: int
    warmup_s: float
    rounds: int
    measure_s: float
    stop_reason: str
    rel_ci: float | None
    timing: str
    settings: TimerSettings
    summary: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.samples)

    @property
    def median(self) -> float:
        return self.summary["median"]

    def method(self) -> dict[str, Any]:
        return {
            "timer": "aibench.kernel_timer",
            "timing": self.timing,
            "statistic": "median of per-call times, one per block",
            "calls_per_block": self.number,
            "rounds": self.rounds,
            "warmup_iters": self.warmup_iters,
            "warmup_s": self.warmup_s,
            "measure_s": self.measure_s,
            "stop_reason": self.stop_reason,
            "median_rel_ci95": self.rel_ci,
            "gc_disabled_in_blocks": True,
            "settings": self.settings.to_json(),
        }


def _rel_ci(samples: list[float]) -> float | None:
    xs = sorted(samples)
    med = xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])
    if med <= 0:
        return None
    lo, hi = median_ci(xs)
    return (hi - lo) / (2.0 * med)


class KernelTimer:
    """Measure one callable. ``clock`` drives the budget; ``block_timer`` times the blocks."""

    def __init__(
        self,
        fn: Callable[[], Any],
        settings: TimerSettings | None = None,
        block_timer: BlockTimer | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.fn = fn
        self.settings = settings or TimerSettings()
        self.clock = clock
        self.block_timer = block_timer or HostBlockTimer(clock=clock)

    def _block(self, number: int) -> float:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self.block_timer.time_block(self.fn, number)
        finally:
            if enabled:
                gc.enable()

    def warmup(self) -> tuple[int, float]:
        s = self.settings
        start = self.clock()
        iters = 0
        while iters < s.warmup_iters or self.clock() - start < s.warmup_s:
            self._block(1)
            iters += 1
        return iters, self.clock() - start

    def calibrate(self) -> int:
        """Smallest power-of-two call count whose block lasts at least ``min_block_s``."""
        number = 1
        while number < MAX_BLOCK_NUMBER:
            if self._block(number) >= self.settings.min_block_s:
                break
            number *= 2
        return number

    def measure(self, window: contextlib.AbstractContextManager[Any] | None = None) -> Measurement:
        """Warm up, calibrate, then time rounds. ``window`` (e.g. ``aibench.meters.window(...)``) is
        entered around exactly the timed rounds: warm-up and calibration stay outside it."""
        s = self.settings
        warm_iters, warm_s = self.warmup()
        number = self.calibrate()
        samples: list[float] = []
        stop_reason = "max_rounds"
        rel = None
        with window if window is not None else contextlib.nullcontext():
            start = self.clock()
            while len(samples) < s.max_rounds:
                samples.append(self._block(number) / number)
                n = len(samples)
                if n < MIN_SAMPLES:
                    continue
                elapsed = self.clock() - start
                if n >= s.min_rounds and elapsed >= min(s.min_time_s, s.max_time_s):
                    rel = _rel_ci(samples)
                    if rel is not None and rel <= s.target_rel_ci:
                        stop_reason = "ci_converged"
                        break
                if elapsed >= s.max_time_s:
                    stop_reason = "max_time"
                    break
            measure_s = self.clock() - start
        if rel is None and len(samples) >= MIN_SAMPLES:
            rel = _rel_ci(samples)
        if any(not math.isfinite(x) or x < 0 for x in samples):
            raise RuntimeError("the clock went backwards or produced a non-finite time")
        return Measurement(
            samples=samples,
            number=number,
            warmup_iters=warm_iters,
            warmup_s=warm_s,
            rounds=len(samples),
            measure_s=measure_s,
            stop_reason=stop_reason,
            rel_ci=rel,
            timing=self.block_timer.name,
            settings=s,
        )
