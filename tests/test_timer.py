"""The kernel timer driven by a fake clock: no real time passes, so the logic is tested exactly."""

from __future__ import annotations

import itertools
import random

from aibench.measure.timer import MIN_SAMPLES, HostBlockTimer, KernelTimer, TimerSettings


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_timer(durations, settings: TimerSettings) -> tuple[KernelTimer, FakeClock, list[int]]:
    clock = FakeClock()
    calls = [0]
    it = iter(durations)

    def fn() -> None:
        calls[0] += 1
        clock.t += next(it)

    return KernelTimer(fn, settings, HostBlockTimer(clock=clock), clock=clock), clock, calls


def test_constant_op_converges_and_reports_exact_time() -> None:
    settings = TimerSettings(warmup_s=0.01, warmup_iters=2, min_block_s=1e-3, min_time_s=0.05, max_time_s=10)
    timer, _, _ = make_timer(itertools.repeat(1e-5), settings)
    m = timer.measure()
    assert m.stop_reason == "ci_converged"
    assert m.number == 128  # smallest power of two with 128 x 10 us >= 1 ms
    assert abs(m.median - 1e-5) < 1e-12
    assert m.summary["noisy"] is False
    assert m.warmup_iters in (1000, 1001) and m.warmup_s >= 0.01  # 10 ms of warm-up at 10 us per call
    assert m.rounds >= settings.min_rounds and m.measure_s >= settings.min_time_s


def test_noisy_op_stops_at_the_time_budget_and_is_flagged() -> None:
    rng = random.Random(1)
    settings = TimerSettings(warmup_s=0, warmup_iters=1, min_block_s=0.0, min_time_s=0, max_time_s=1.0,
                             target_rel_ci=0.001)
    timer, _, _ = make_timer((rng.choice([0.01, 0.03]) for _ in itertools.count()), settings)
    m = timer.measure()
    assert m.stop_reason == "max_time"
    assert 0.9 <= m.measure_s <= 1.1
    assert m.summary["noisy"] is True


def test_slow_op_still_gets_minimum_samples() -> None:
    settings = TimerSettings(warmup_s=0, warmup_iters=1, max_time_s=0.5)
    timer, _, calls = make_timer(itertools.repeat(2.0), settings)
    m = timer.measure()
    assert m.rounds == MIN_SAMPLES and m.number == 1
    assert calls[0] == 1 + 1 + MIN_SAMPLES  # warm-up, calibration, samples


def test_max_rounds_bounds_the_run() -> None:
    settings = TimerSettings(warmup_s=0, warmup_iters=1, min_block_s=0, max_time_s=1e9, min_rounds=3,
                             max_rounds=7, target_rel_ci=1e-9)
    rng = random.Random(2)
    timer, _, _ = make_timer((rng.uniform(1, 2) for _ in itertools.count()), settings)
    m = timer.measure()
    assert m.rounds == 7 and m.stop_reason == "max_rounds"


def test_method_record_is_complete() -> None:
    timer, _, _ = make_timer(itertools.repeat(1e-3), TimerSettings(warmup_s=0, max_time_s=0.1))
    method = timer.measure().method()
    for key in ("timer", "timing", "calls_per_block", "rounds", "warmup_iters", "stop_reason", "settings"):
        assert key in method
    assert method["timing"] == "host-clock"
