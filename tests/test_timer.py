"""The kernel timer driven by a fake clock: no real time passes, so the logic is tested exactly."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from aibench.measure.pace import PACE_ENV, Order, PaceError, Pacer, pinned_cpu
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


class FakeTurns:
    """A conductor that grants the turns in ``script`` and records what the timer answered."""

    def __init__(self, script: list[str], turn_s: float = 0.01) -> None:
        self.script = list(script)
        self.turn_s = turn_s
        self.answers: list[bool] = []
        self.was_ready = False

    def ready(self) -> None:
        self.was_ready = True

    def next(self) -> str:
        return self.script.pop(0) if self.script else "stop"

    def done(self, want_stop: bool) -> None:
        self.answers.append(want_stop)


def test_paced_measurement_times_only_in_its_turns() -> None:
    settings = TimerSettings(warmup_s=0, warmup_iters=1, min_block_s=1e-3, min_time_s=0.02, max_time_s=0.05,
                             min_rounds=3)
    timer, _, _ = make_timer(itertools.repeat(1e-3), settings)
    turns = FakeTurns(["warm", "turn", "turn", "turn", "turn", "turn", "turn", "stop"])
    m = timer.measure(turns=turns)
    assert turns.was_ready and m.stop_reason == "paced"
    # 6 turns of 10 ms at 1 ms per block: 60 blocks kept; the warm turn's 10 are not.
    assert m.rounds == 60 and abs(m.measure_s - 0.06) < 1e-9
    # Not satisfied before 20 ms of turns; satisfied from then on (the CI of a constant op is 0).
    assert turns.answers == [False, False, True, True, True, True, True]


def test_paced_measurement_stopped_too_early_is_an_error() -> None:
    timer, _, _ = make_timer(itertools.repeat(1e-3), TimerSettings(warmup_s=0, warmup_iters=1))
    with pytest.raises(RuntimeError, match="paced measurement was stopped after 0 block"):
        timer.measure(turns=FakeTurns(["stop"]))


def _pipes() -> tuple[Pacer, int, int]:
    """A pacer wired to two pipes; returns it, the fd the test writes orders to and the fd it reads from."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    pacer = Pacer.from_env({PACE_ENV: f"{to_r},{from_w}"})
    assert pacer is not None
    return pacer, to_w, from_r


def test_pacer_protocol_over_pipes() -> None:
    pacer, to_w, from_r = _pipes()
    os.write(to_w, b"pace 1 0.05\nwarm\nturn\nstop\n")
    order = pacer.hello()
    assert order == Order(1, 0.05) and pacer.turn_s == 0.05
    pacer.ready()
    assert [pacer.next(), pacer.next(), pacer.next()] == ["warm", "turn", "stop"]
    pacer.done(True)
    assert os.read(from_r, 100) == b"hello 1\nready\ndone 1\n"
    os.close(to_w)  # the gate went away: every further order is "stop"
    assert pacer.next() == "stop" and pacer.closed
    os.close(from_r)


def test_pacer_solo_bad_orders_and_environment() -> None:
    pacer, to_w, from_r = _pipes()
    os.write(to_w, b"solo\n")
    assert pacer.hello() is None
    os.write(to_w, b"pace x 0.02\n")
    with pytest.raises(PaceError):
        pacer.hello()
    os.write(to_w, b"jump\n")
    with pytest.raises(PaceError):
        pacer.next()
    pacer.close()
    for fd in (to_w, from_r):
        os.close(fd)
    assert Pacer.from_env({}) is None and Pacer.from_env({PACE_ENV: "3"}) is None
    assert Pacer.from_env({PACE_ENV: "999,998"}) is None  # not open here


def test_pinned_cpu_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with pinned_cpu(cpu) as got:
        assert got == cpu and os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pinned_cpu(None) as got:
        assert got is None and os.sched_getaffinity(0) == before


def test_kernel_result_records_faults_and_is_flagged_when_they_dominate() -> None:
    """Through the kernel runner: an op that maps and touches fresh pages on every call (what glibc's malloc
    does to a conv's temporaries past its thresholds) is flagged noisy, with its faults per call recorded."""
    import mmap

    import torch

    from aibench.display import _status
    from aibench.measure.kernel import Op, _measure
    from aibench.results.schema import Result

    pages = 64

    def fresh_pages() -> None:
        buf = mmap.mmap(-1, pages * mmap.PAGESIZE)
        for off in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
            buf[off] = 1
        buf.close()

    result = Result(benchmark={"id": "micro/faults", "kind": "micro", "name": "faults", "source": "tests"},
                    params={}, config_hash="0" * 16)
    op = Op(fn=fresh_pages, flops=None, bytes=None, flops_note="n/a", bytes_note="n/a")
    settings = TimerSettings(warmup_s=0, warmup_iters=1, min_time_s=0.02, max_time_s=0.1, min_rounds=3)
    _measure(op, torch.device("cpu"), torch.float32, result, settings)
    pf = result.method["page_faults"]
    assert pf["counted"] and pf["minor_per_call"] >= pages and pf["fault_cost_s"] > 0
    assert pf["dominant"] is True and result.noisy is True
    assert "page faults per call" in _status(result)
