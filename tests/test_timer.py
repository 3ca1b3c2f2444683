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


class FakeFaults:
    """A page-fault counter that the fake op advances: ``per_call`` minor faults per call."""

    def __init__(self) -> None:
        self.minor = 0
        self.major = 0

    def __call__(self) -> tuple[int, int]:
        return self.minor, self.major


def _faulting_timer(per_call: int, major_per_call: int, call_s: float) -> KernelTimer:
    clock = FakeClock()
    faults = FakeFaults()

    def fn() -> None:
        clock.t += call_s
        faults.minor += per_call
        faults.major += major_per_call

    settings = TimerSettings(warmup_s=0.01, warmup_iters=2, min_block_s=1e-3, min_time_s=0.05, max_time_s=1)
    return KernelTimer(fn, settings, HostBlockTimer(clock=clock), clock=clock, faults=faults,
                       fault_cost=lambda: 10e-6)


def test_page_faults_are_counted_per_timed_call_and_flagged_when_they_dominate() -> None:
    m = _faulting_timer(2400, 1, 1e-3).measure()
    pf = m.method()["page_faults"]
    # Warm-up and calibration fault too, but only the timed rounds count.
    assert pf["counted"] is True and pf["minor_per_call"] == 2400 and pf["major_per_call"] == 1
    assert pf["minor"] == 2400 * m.calls and pf["calls"] == m.calls
    assert pf["fault_cost_s"] == 10e-6 and pf["estimated_share"] > 20  # 2401 x 10 us against a 1 ms call
    assert pf["dominant"] is True
    quiet = _faulting_timer(0, 0, 1e-3).measure().method()["page_faults"]
    assert quiet["minor_per_call"] == 0 and quiet["dominant"] is False and "fault_cost_s" not in quiet
    # 100 faults per call are nothing beside a 1 s call (1 ms at 10 us each: 0.1%).
    assert _faulting_timer(100, 0, 1.0).measure().method()["page_faults"]["dominant"] is False


def test_faults_dominate_rule_and_missing_counter() -> None:
    from aibench.measure.timer import faults_dominate, probe_fault_cost

    assert faults_dominate(201, 1e-3) is True  # 201 x 0.5 us > 100 us = 10% of 1 ms
    assert faults_dominate(199, 1e-3) is False
    assert faults_dominate(11, 1e-3, cost_s=10e-6) is True
    assert faults_dominate(5, 0.0) is False
    assert (probe_fault_cost(16) or 0) > 0  # a real probe of 16 fresh pages

    def broken() -> tuple[int, int]:
        raise OSError("no getrusage here")

    timer, _, _ = make_timer(itertools.repeat(1e-3), TimerSettings(warmup_s=0, max_time_s=0.05))
    timer.faults = broken
    pf = timer.measure().method()["page_faults"]
    assert pf == {"counted": False, "reason": "no page-fault counter"}


def test_fix_allocator_sets_glibc_thresholds_and_records_them() -> None:
    from aibench.measure.kernel import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, fix_allocator

    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    rec = fix_allocator(mallopt, env={})
    assert rec == {"setting": "fixed", "malloc": "glibc",
                   "mallopt": {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 1 << 30}}
    assert sorted(calls) == sorted([(M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30)])
    refused = fix_allocator(lambda p, v: 0 if p == M_TRIM_THRESHOLD else 1, env={})
    assert refused["setting"] == "partly fixed" and "M_TRIM_THRESHOLD" in refused["reason"]
    calls.clear()
    off = fix_allocator(mallopt, env={"AIBENCH_ALLOCATOR": "default"})
    assert off["setting"] == "default" and calls == []
    odd = fix_allocator(mallopt, env={"AIBENCH_ALLOCATOR": "jemalloc"})
    assert odd["setting"] == "default" and "neither" in odd["reason"] and calls == []
