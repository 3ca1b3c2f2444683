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
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aibench.results.stats import median_ci, summarize

Clock = Callable[[], float]
# (minor, major) page faults of this process so far. The timer reads it just before and after the timed rounds.
FaultCounter = Callable[[], tuple[int, int]]


def process_faults() -> tuple[int, int]:
    """Minor and major page faults of this process (every thread: a multi-threaded op faults in its workers)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_majflt


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


class TurnTaker(Protocol):
    """Turns given by a conductor (``aibench.measure.pace.Pacer``): the timer times blocks only in its turns."""

    turn_s: float

    def ready(self) -> None: ...

    def next(self) -> str: ...  # "warm", "turn" or "stop"

    def done(self, want_stop: bool) -> None: ...


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
# Page faults in the timed rounds mean the op is given fresh, zero-filled pages on every call: its time then
# depends on the allocator's state, not on the operation. A fault costs ~0.5 µs on bare metal and 5-25 µs on
# the project's 2-core KVM guests, so the cost is measured where the faults matter (FAULT_PROBE_PAGES fresh
# pages touched once, ~10 ms at most): a result whose faults would cost at least FAULTS_DOMINATE_SHARE of its
# median call is flagged noisy. FAULT_COST_FLOOR_S stands in when the probe cannot run.
FAULT_COST_FLOOR_S = 0.5e-6
FAULTS_DOMINATE_SHARE = 0.10
FAULT_PROBE_PAGES = 512
FAULT_PROBE_MIN_PER_CALL = 1.0  # below one fault per call the cost is not probed (the share is tiny anyway)
FaultCost = Callable[[], float | None]


def probe_fault_cost(pages: int = FAULT_PROBE_PAGES) -> float | None:
    """Seconds per minor page fault here, now: touch ``pages`` fresh anonymous pages once each."""
    import mmap

    size = mmap.PAGESIZE
    try:
        buf = mmap.mmap(-1, pages * size)
    except OSError:
        return None
    try:
        t0 = time.perf_counter()
        for off in range(0, pages * size, size):
            buf[off] = 1
        return (time.perf_counter() - t0) / pages
    finally:
        buf.close()


def faults_dominate(faults_per_call: float, median_s: float, cost_s: float = FAULT_COST_FLOOR_S) -> bool:
    """Whether ``faults_per_call`` page faults at ``cost_s`` each would take at least 10% of a call of
    ``median_s`` seconds."""
    return median_s > 0 and faults_per_call * cost_s >= FAULTS_DOMINATE_SHARE * median_s


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
    # Page faults (minor, major) over the timed rounds, None where they could not be counted; the measured cost
    # of one fault (None: not probed, there were too few faults to matter).
    faults: tuple[int, int] | None = None
    fault_cost_s: float | None = None
    summary: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.samples)

    @property
    def median(self) -> float:
        return self.summary["median"]

    @property
    def calls(self) -> int:
        return self.rounds * self.number

    def faults_per_call(self) -> tuple[float, float] | None:
        """(minor, major) page faults per timed call."""
        if self.faults is None or self.calls == 0:
            return None
        return self.faults[0] / self.calls, self.faults[1] / self.calls

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
            "page_faults": self.page_faults(),
            "settings": self.settings.to_json(),
        }

    def page_faults(self) -> dict[str, Any]:
        """The page faults of the timed rounds, per call, and whether they dominate the call's time."""
        per = self.faults_per_call()
        if per is None or self.faults is None:
            return {"counted": False, "reason": "no page-fault counter"}
        out: dict[str, Any] = {"counted": True, "source": "getrusage(RUSAGE_SELF) around the timed rounds",
                               "minor": self.faults[0], "major": self.faults[1], "calls": self.calls,
                               "minor_per_call": per[0], "major_per_call": per[1]}
        if self.fault_cost_s is not None:
            total = per[0] + per[1]
            out["fault_cost_s"] = self.fault_cost_s
            out["estimated_share"] = (total * self.fault_cost_s / self.median) if self.median > 0 else None
            out["dominant"] = faults_dominate(total, self.median, self.fault_cost_s)
        else:
            out["dominant"] = False
        return out


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
        faults: FaultCounter | None = process_faults,
        fault_cost: FaultCost = probe_fault_cost,
    ) -> None:
        self.fn = fn
        self.settings = settings or TimerSettings()
        self.clock = clock
        self.block_timer = block_timer or HostBlockTimer(clock=clock)
        self.faults = faults
        self.fault_cost = fault_cost

    def _block(self, number: int) -> float:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self.block_timer.time_block(self.fn, number)
        finally:
            if enabled:
                gc.enable()

    def _faults(self) -> tuple[int, int] | None:
        if self.faults is None:
            return None
        try:
            return self.faults()
        except OSError:
            return None

    def _turns(self, turns: TurnTaker, number: int, samples: list[float]) -> tuple[float, float | None]:
        """Time blocks in the turns granted until told to stop; returns the time spent in turns and the
        median's relative CI half-width."""
        s = self.settings
        spent = 0.0
        rel = None
        while True:
            what = turns.next()
            if what == "stop":
                return spent, rel
            t0 = self.clock()
            kept: list[float] = []
            while True:
                kept.append(self._block(number) / number)
                if self.clock() - t0 >= turns.turn_s:
                    break
            if what == "warm":  # the first turn after waiting: caches refilled, nothing kept
                turns.done(False)
                continue
            samples.extend(kept)
            spent += self.clock() - t0
            n = len(samples)
            want = n >= s.max_rounds
            if n >= max(MIN_SAMPLES, s.min_rounds) and spent >= min(s.min_time_s, s.max_time_s):
                rel = _rel_ci(samples)
                want = want or spent >= s.max_time_s or (rel is not None and rel <= s.target_rel_ci)
            turns.done(want)

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

    def measure(self, window: contextlib.AbstractContextManager[Any] | None = None,
                turns: TurnTaker | None = None) -> Measurement:
        """Warm up, calibrate, then time rounds. ``window`` (e.g. ``aibench.meters.window(...)``) is
        entered around exactly the timed rounds: warm-up and calibration stay outside it.

        With ``turns`` the blocks are timed only in the turns a conductor grants (``aibench gate`` running
        two processes in lockstep): each turn times blocks for ``turns.turn_s``, then reports whether the
        timer's own stopping rule (on the time spent in turns) is satisfied; the conductor says when to stop.
        """
        s = self.settings
        warm_iters, warm_s = self.warmup()
        number = self.calibrate()
        samples: list[float] = []
        stop_reason = "max_rounds"
        rel = None
        if turns is not None:
            turns.ready()
        with window if window is not None else contextlib.nullcontext():
            f0 = self._faults()
            start = self.clock()
            if turns is not None:
                measure_s, rel = self._turns(turns, number, samples)
                stop_reason = "paced"
            else:
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
            f1 = self._faults()
        if turns is not None and len(samples) < MIN_SAMPLES:
            raise RuntimeError(f"the paced measurement was stopped after {len(samples)} block(s); at least "
                               f"{MIN_SAMPLES} are needed")
        if rel is None and len(samples) >= MIN_SAMPLES:
            rel = _rel_ci(samples)
        if any(not math.isfinite(x) or x < 0 for x in samples):
            raise RuntimeError("the clock went backwards or produced a non-finite time")
        faults = (f1[0] - f0[0], f1[1] - f0[1]) if f0 is not None and f1 is not None else None
        cost = None
        calls = len(samples) * number
        if faults is not None and calls and sum(faults) / calls >= FAULT_PROBE_MIN_PER_CALL:
            cost = self.fault_cost() or FAULT_COST_FLOOR_S
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
            faults=faults,
            fault_cost_s=cost,
        )
