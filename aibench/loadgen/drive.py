"""Driving any :class:`~aibench.sut.SystemUnderTest` under MLPerf LoadGen (closed-loop users:
:mod:`aibench.loadgen.users`), through the contract alone.

One LoadGen test per call, in its own fresh folder (LoadGen's logs land there, and its ``audit.config`` is
looked for there and nowhere else). LoadGen's callbacks are the system's own methods (``submit``, ``flush``,
``stage``, ``unstage``): nothing of the driver sits between LoadGen's issue and the system. The system's
completions go to :class:`Completer`, which answers LoadGen and keeps the driver's record (per-sample
latency from the issue times the completion carries). In SingleStream and MultiStream LoadGen waits for each
query anyway, so the driver lets the system compute a query inline on LoadGen's thread when it is idle
(``start(inline=True)``; :class:`~aibench.sut.batcher.BatchingSystem`); in Server too where the target rate
leaves LoadGen's issuing thread mostly idle (:func:`inline_choice`). The calibration submits and waits, so
it works for any asynchronous system.

The test runs on a helper thread so that the main thread stays able to take Ctrl-C (and SIGTERM, handled the
same: :mod:`aibench.lifetime`); a failing model or Ctrl-C switches the system to abort mode, which makes
LoadGen finish promptly, and the partial logs are kept.

LoadGen has no way to cancel a test: a Server test issues its queries at their scheduled times and ends only
once more than ``server_max_async_queries`` are outstanding, which at a low target rate takes tens of seconds
(64 queries at 2 QPS: 32 s). So after Ctrl-C the driver waits at most :data:`ABORT_GRACE_S` for LoadGen (and
the batching worker) to finish; if they have not, it reads the partial logs as they are and returns an
interrupted outcome, leaving a clean-up thread (:func:`aibench.lifetime.abandon`) that waits for LoadGen to
end on its own, then stops the worker and frees LoadGen's objects. The console command ends the process at
once (``os._exit``); a program using aibench as a library waits for the clean-up at exit, and a later test in
the same process waits for it first (LoadGen is one per process).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench import lifetime
from aibench.loadgen import logparse
from aibench.loadgen.settings import Scenario, Sizing, check_memory, test_settings
from aibench.sut import Issued, SystemUnderTest

# After Ctrl-C, how long the driver waits for LoadGen and the batching worker to finish before leaving
# without them (the whole exit then stays within about 2 s).
ABORT_GRACE_S = 1.0
# LoadGen waits for each query before it issues the next: a query that finds the system idle may be computed
# on LoadGen's own thread (no hand-off to a worker thread).
INLINE_SCENARIOS = ("single-stream", "multi-stream")
# Server: a query that finds the system idle is computed on LoadGen's issuing thread too when the calibrated
# one-sample time c is short for the target rate: load target_qps x c at most this. A query scheduled while
# one is computed is then issued late by less than c (an M/D/1 queue on the issuing thread: mean wait
# load x c / 2(1 - load) <= c / 2), where a hand-off to the worker thread costs ~100 us on a 2-vCPU VM
# (docs/loadgen.md, "Overhead"). Above it the batching worker takes every query: batches form under load.
# And only for a short computation: queries that fall due during an inline one are issued after it and each
# computed alone, where the worker would batch them; past 1 ms a query the ~100 us hand-off is under a tenth
# of the latency, and the worker's batching of a backlog protects the tail.
SERVER_INLINE_MAX_LOAD = 0.5
SERVER_INLINE_MAX_ONE_SAMPLE_S = 1e-3


def inline_choice(s: Scenario, one_sample_s: float | None) -> tuple[bool, str]:
    """Whether the driver lets a system compute an idle query on LoadGen's thread, and why."""
    if s.scenario in INLINE_SCENARIOS:
        return True, f"{s.scenario}: LoadGen waits for each query"
    if s.scenario != "server" or not s.target_qps:
        return False, f"{s.scenario}: the batching worker computes every query"
    if one_sample_s is None:
        return False, "server: no calibrated one-sample time"
    if one_sample_s > SERVER_INLINE_MAX_ONE_SAMPLE_S:
        return False, (f"server: calibrated one-sample time {one_sample_s * 1e3:.3g} ms > "
                       f"{SERVER_INLINE_MAX_ONE_SAMPLE_S * 1e3:g} ms: queries go to the batching worker")
    load = s.target_qps * one_sample_s
    what = f"server: target {s.target_qps:g} QPS x calibrated one-sample time {one_sample_s * 1e6:.1f} us"
    if load <= SERVER_INLINE_MAX_LOAD:
        return True, f"{what} = load {load:.2f} <= {SERVER_INLINE_MAX_LOAD}"
    return False, f"{what} = load {load:.2f} > {SERVER_INLINE_MAX_LOAD}: queries go to the batching worker"


class LatencyLog:
    """Per-sample latencies with bounded memory: every ``stride``-th value is kept, and the stride doubles
    (keeping every other stored value) whenever ``cap`` values are held. Deterministic, so two runs of the
    same schedule keep the same positions; the full-run percentiles come from LoadGen, not from this."""

    def __init__(self, cap: int = 10_000) -> None:
        self.cap = cap
        self.values: list[float] = []
        self.stride = 1
        self.seen = 0

    def add(self, issued: Sequence[float], done: float) -> None:
        n = len(issued)
        off = (-self.seen) % self.stride
        self.seen += n
        if off < n:
            self.values.extend([done - t for t in issued[off::self.stride]])
            while len(self.values) >= 2 * self.cap:
                self.values = self.values[::2]
                self.stride *= 2

    def add_group(self, issued: float, n: int, done: float) -> None:
        """``n`` samples issued together at ``issued`` and completed at ``done``."""
        off = (-self.seen) % self.stride
        self.seen += n
        if off < n:
            self.values.extend([done - issued] * len(range(off, n, self.stride)))
            while len(self.values) >= 2 * self.cap:
                self.values = self.values[::2]
                self.stride *= 2

    def kept(self) -> list[float]:
        if len(self.values) <= self.cap:
            return list(self.values)
        step = len(self.values) / self.cap
        return [self.values[int(i * step)] for i in range(self.cap)]


@dataclass
class Calibration:
    """Untimed warm-up that also sizes LoadGen's expected rates."""

    per_sample_s: float
    batch_sample_s: float
    batch: int
    rounds: int
    min_sample_s: float | None = None  # the fastest one-sample call: no query can be answered faster

    def to_dict(self) -> dict[str, Any]:
        return {"one_sample_latency_s": self.per_sample_s, "min_one_sample_latency_s": self.min_sample_s,
                "time_per_sample_at_batch_s": self.batch_sample_s, "batch": self.batch, "rounds": self.rounds,
                "note": "untimed warm-up before LoadGen starts; sizes expected QPS/latency, not reported"}


class _Waiter:
    """The calibration's completion: counts answers until the submitted query is whole (a system may answer
    it in parts, from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = 0
        self.done = threading.Event()

    def arm(self, n: int) -> None:
        with self._lock:
            self._left = n
            self.done.clear()

    def __call__(self, tokens: Sequence[Any], _responses: Any, _issued: Any) -> None:
        with self._lock:
            self._left -= len(tokens)
            if self._left <= 0:
                self.done.set()


def calibrate(sut: SystemUnderTest, batch: int, budget_s: float = 0.3, max_rounds: int = 20) -> Calibration:
    """Submit one-sample and full-batch queries, each after the last was answered, for about ``budget_s``
    (after one untimed query each), and take their medians (at least two timed rounds each, however long they
    take). The system computes them inline where it can (the calibration waits anyway)."""
    n = max(1, min(sut.num_samples, batch))
    sut.stage(range(n))
    full = [i % n for i in range(batch)]
    waiter = _Waiter()
    perf = time.perf_counter

    def once(indices: list[int]) -> float:
        waiter.arm(len(indices))
        t0 = perf()
        sut.submit(list(range(len(indices))), indices)
        waiter.done.wait()
        dt = perf() - t0
        error = sut.report().error
        if error is not None:
            raise error
        return dt

    def timed(indices: list[int], budget: float) -> tuple[float, float, int]:
        once(indices)  # warm-up, not counted (first calls allocate, pick kernels, ...)
        times: list[float] = []
        end = perf() + budget
        while len(times) < 2 or (len(times) < max_rounds and perf() < end):
            times.append(once(indices))
        times.sort()
        return times[len(times) // 2], times[0], len(times)

    sut.start(waiter, max_batch=batch, inline=True)
    try:
        one, fastest, r1 = timed([0], budget_s / 2)
        at_batch, _, r2 = timed(full, budget_s / 2) if batch > 1 else (one, one, 0)
    except BaseException:
        sut.abort()
        sut.stop(timeout=ABORT_GRACE_S)
        raise
    sut.stop()
    return Calibration(per_sample_s=one, batch_sample_s=at_batch / batch, batch=batch, rounds=r1 + r2,
                       min_sample_s=fastest)


@dataclass
class Outcome:
    """What one driven test produced."""

    log_dir: Path | None
    log: dict[str, Any]
    validity: dict[str, Any] | None
    metrics: dict[str, dict[str, Any]]
    latencies: LatencyLog
    error: BaseException | None = None
    interrupted: bool = False
    effective: dict[str, Any] = field(default_factory=dict)
    requested: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


# While a test runs, Ctrl-C and SIGTERM call the abort callback instead of raising KeyboardInterrupt at an
# arbitrary point, so that LoadGen is never torn down under its own feet.
on_ctrl_c = lifetime.on_interrupt


def wait_interruptible(threads: list[threading.Thread], interrupted_at: list[float]) -> bool:
    """Join ``threads``; once an interruption was noted (``interrupted_at``), wait at most ABORT_GRACE_S
    more. True when they all ended."""
    for t in threads:
        while t.is_alive():
            t.join(0.1)
            if interrupted_at and time.monotonic() - interrupted_at[0] > ABORT_GRACE_S:
                return not any(x.is_alive() for x in threads)
    return True


def later(fn: Callable[[], None], name: str) -> threading.Thread:
    """Run ``fn`` on a daemon thread: the clean-up of a test the driver left behind after an interruption."""
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    return t


def server_async_limit(s: Scenario, batch: int) -> int:
    """LoadGen's outstanding-query limit for Server: far above what a run that meets its latency bound can
    have outstanding (Little's law: target QPS x bound), so it only ends runs that are hopeless anyway, or
    that aibench aborts (a failed model or Ctrl-C: the batcher then holds the queries until LoadGen stops)."""
    assert s.target_qps is not None and s.latency_bound_ms is not None
    return max(64, 4 * batch, math.ceil(20 * s.target_qps * s.latency_bound_ms / 1e3))


class Completer:
    """A system's completion under LoadGen: answers LoadGen (from any thread) and keeps the driver's record:
    per-sample latency from the issue times the completion carries, samples computed, first issue and last
    completion. Each thread reuses its own pool of QuerySampleResponse objects (QuerySamplesComplete copies
    them before returning; building new ones costs ~0.3 us per sample, a third of LoadGen's whole Offline
    budget per sample)."""

    def __init__(self, lg: Any, latencies: LatencyLog) -> None:
        self._complete = lg.QuerySamplesComplete
        self._response = lg.QuerySampleResponse
        self._local = threading.local()
        self._lock = threading.Lock()
        self.latencies = latencies
        self.samples = 0
        self.first_issue: float | None = None
        self.last_done: float | None = None

    def __call__(self, tokens: Sequence[Any], _responses: Any, issued: Issued | None) -> None:
        done = time.perf_counter()
        n = len(tokens)
        local = self._local
        pool = getattr(local, "pool", None)
        if pool is None:
            pool = local.pool = []
        if len(pool) < n:
            pool.extend(self._response(0, 0, 0) for _ in range(n - len(pool)))
        out = pool if n == len(pool) else pool[:n]
        for r, t in zip(out, tokens, strict=True):
            r.id = t
        self._complete(out)
        if issued is None:  # answered without computing (an abort): not a latency
            return
        with self._lock:
            self.samples += n
            first = issued[0][0]
            if self.first_issue is None or first < self.first_issue:
                self.first_issue = first
            if self.last_done is None or done > self.last_done:
                self.last_done = done
            add = self.latencies.add_group
            for t_issue, k in issued:
                add(t_issue, k, done)


# After a test that ended normally, how long the driver waits for the system under test to stop.
STOP_TIMEOUT_S = 30.0


def record_stop(adapter: dict[str, Any], sut: SystemUnderTest, stopped: bool | None, interrupted: bool) -> None:
    """Record in a test's ``adapter`` record whether the system stopped when the driver was done
    (``stopped``; None: not asked, the test being left to end after an interruption). A system that did not
    stop within :data:`STOP_TIMEOUT_S` after a test that ended normally is a fault the user must see: its
    threads still run and may still compute during what follows (the next test, the meters' window). It is
    recorded as ``stop_fault`` and logged as a warning."""
    adapter["stopped"] = stopped
    if stopped is False and not interrupted:
        fault = (f"the system under test ({sut.name}) did not stop within "
                 f"{STOP_TIMEOUT_S:g} s after the test ended: its threads are still running and may disturb "
                 "what follows")
        adapter["stop_fault"] = fault
        logging.getLogger(__name__).warning(fault)


def run_loadgen(sut: SystemUnderTest, s: Scenario, batch: int, sizing: Sizing, log_dir: Path,
                inline: bool | None = None, one_sample_s: float | None = None) -> Outcome:
    """One LoadGen performance test of ``sut`` in the fresh folder ``log_dir``. ``inline``: let the system
    compute a query on LoadGen's thread when idle (default: :func:`inline_choice` from the calibrated
    ``one_sample_s``)."""
    import mlperf_loadgen as lg

    lifetime.wait_abandoned()  # an earlier, interrupted test may still hold LoadGen
    memory = check_memory(sizing, s)
    log_dir.mkdir(parents=True, exist_ok=False)
    latencies = LatencyLog()
    completer = Completer(lg, latencies)
    is_server = s.scenario == "server"
    limit = server_async_limit(s, batch) if is_server else 0
    if inline is None:
        inline, inline_why = inline_choice(s, one_sample_s)
    else:
        inline_why = "set by the caller"
    inline = bool(inline and sut.capabilities.inline_ok)
    if not sut.capabilities.inline_ok:
        inline_why = "the system computes elsewhere (not inline_ok)"
    batches_before = sut.report().batches
    sut.start(completer, max_batch=batch, max_queue_delay_us=s.max_wait_us, spin_us=s.spin_us,
              hold_on_abort=is_server, inline=inline)
    lg_sut = lg.ConstructFastSUT(sut.submit, sut.flush)
    qsl = lg.ConstructQSL(sut.num_samples, sut.num_samples, sut.stage, sut.unstage)
    settings = test_settings(lg, s, sizing, max_async_queries=limit)
    log_settings = lg.LogSettings()
    log_settings.enable_trace = False
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.log_output.copy_detail_to_stdout = False
    log_settings.log_output.prefix_with_datetime = False
    failure: list[BaseException] = []

    def start() -> None:
        try:
            lg.StartTestWithLogSettings(lg_sut, qsl, settings, log_settings, str(log_dir / "audit.config"))
        except BaseException as exc:  # pragma: no cover - LoadGen itself failing
            failure.append(exc)

    thread = threading.Thread(target=start, name="aibench-loadgen", daemon=True)
    ctrl_c: list[float] = []

    def interrupt() -> None:
        if not ctrl_c:
            ctrl_c.append(time.monotonic())
        sut.abort()

    t0 = time.perf_counter()
    with on_ctrl_c(interrupt):
        thread.start()
        finished = wait_interruptible([thread], ctrl_c)
        stopped = None
        if finished:
            stopped = sut.stop(timeout=ABORT_GRACE_S if ctrl_c else STOP_TIMEOUT_S)
            if ctrl_c:
                finished = stopped

    def finish() -> None:
        thread.join()
        sut.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(lg_sut)

    if finished:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(lg_sut)
    else:  # LoadGen cannot be cancelled: leave it to end on its own, then stop the system and free LoadGen's
        lifetime.abandon(later(finish, "aibench-loadgen-finish"), "a LoadGen test")
    interrupted = bool(ctrl_c)
    wall = time.perf_counter() - t0
    rep = sut.report()
    error = rep.error if rep.error is not None else (failure[0] if failure else None)
    if isinstance(error, KeyboardInterrupt):
        interrupted, error = True, None
    log = logparse.read_detail(log_dir)
    valid = logparse.validity(log, s.scenario)
    c = completer
    served = (c.last_done - c.first_issue) if c.first_issue is not None and c.last_done is not None else None
    queries = c.samples // max(1, s.samples_per_query) if s.scenario != "offline" else 1
    m = logparse.metrics(log, s.scenario, s.samples_per_query, served, queries, valid["valid"])
    batches = rep.batches - batches_before
    adapter = {"batches": batches, "samples": c.samples, "mean_batch": c.samples / batches if batches else None,
               "max_batch": batch, "max_wait_us": s.max_wait_us, "spin_us": s.spin_us,
               "inline": inline, "inline_why": inline_why, "test_wall_s": wall,
               "server_max_async_queries": limit if is_server else None}
    record_stop(adapter, sut, stopped, interrupted)
    return Outcome(log_dir, log, valid, m, latencies, error, interrupted, logparse.effective_settings(log),
                   logparse.requested_settings(log), adapter, memory)
