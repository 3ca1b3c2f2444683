"""Driving a :class:`~aibench.loadgen.sut.SystemUnderTest` under MLPerf LoadGen, and with closed-loop users.

One LoadGen test per call, in its own fresh folder (LoadGen's logs land there, and its ``audit.config`` is
looked for there and nowhere else). The test runs on a helper thread so that the main thread stays able
to take Ctrl-C (and SIGTERM, handled the same: :mod:`aibench.lifetime`); a failing model or Ctrl-C switches
the batcher to abort mode, which makes LoadGen finish promptly (see :class:`~aibench.loadgen.sut.Batcher`),
and the partial logs are kept.

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

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench import lifetime
from aibench.loadgen import logparse
from aibench.loadgen.settings import Scenario, Sizing, check_memory, test_settings
from aibench.loadgen.sut import Batcher, LatencyLog, SystemUnderTest

# After Ctrl-C, how long the driver waits for LoadGen and the batching worker to finish before leaving
# without them (the whole exit then stays within about 2 s).
ABORT_GRACE_S = 1.0


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


def calibrate(system: SystemUnderTest, batch: int, budget_s: float = 0.3, max_rounds: int = 20) -> Calibration:
    """Run one-sample and full batches for about ``budget_s`` (after one untimed call each) and take their
    medians (at least two timed rounds each, however long they take)."""
    n = max(1, min(system.num_samples, batch))
    system.load(range(n))
    full = [i % n for i in range(batch)]

    def timed(indices: list[int], budget: float) -> tuple[float, float, int]:
        system.issue(indices)  # warm-up call, not counted (first calls allocate, pick kernels, ...)
        times: list[float] = []
        end = time.perf_counter() + budget
        while len(times) < 2 or (len(times) < max_rounds and time.perf_counter() < end):
            t0 = time.perf_counter()
            system.issue(indices)
            times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2], times[0], len(times)

    one, fastest, r1 = timed([0], budget_s / 2)
    at_batch, _, r2 = timed(full, budget_s / 2) if batch > 1 else (one, one, 0)
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


def _wait_interruptible(threads: list[threading.Thread], interrupted_at: list[float],
                        poll: Callable[[], None] | None = None) -> bool:
    """Join ``threads``; once an interruption was noted (``interrupted_at``), wait at most ABORT_GRACE_S
    more. True when they all ended."""
    for t in threads:
        while t.is_alive():
            t.join(0.1)
            if poll is not None:
                poll()
            if interrupted_at and time.monotonic() - interrupted_at[0] > ABORT_GRACE_S:
                return not any(x.is_alive() for x in threads)
    return True


def _batcher_threads(batcher: Any) -> list[threading.Thread]:
    return list(getattr(batcher, "threads", ()))


def _later(fn: Callable[[], None], name: str) -> threading.Thread:
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
    """Completes samples with LoadGen. On the worker thread it reuses a pool of QuerySampleResponse objects
    (QuerySamplesComplete copies them before returning; building new ones costs ~0.3 us per sample, a third
    of LoadGen's whole Offline budget per sample); on any other thread (abort) it builds fresh ones."""

    def __init__(self, lg: Any) -> None:
        self.complete = lg.QuerySamplesComplete
        self.response = lg.QuerySampleResponse
        self.pool: list[Any] = []
        self.owner: int | None = None

    def __call__(self, tokens: list[Any], _responses: Any) -> None:
        n = len(tokens)
        if threading.get_ident() != self.owner:
            self.complete([self.response(t, 0, 0) for t in tokens])
            return
        pool = self.pool
        if len(pool) < n:
            pool.extend(self.response(0, 0, 0) for _ in range(n - len(pool)))
        out = pool if n == len(pool) else pool[:n]
        for r, t in zip(out, tokens, strict=True):
            r.id = t
        self.complete(out)


def dispatcher_for(system: SystemUnderTest) -> Callable[..., Any]:
    """The batching worker between a load generator and ``system``: a :class:`Batcher`, unless the system
    brings its own (``make_batcher``, same arguments and interface), as a pool of worker processes does to
    keep every worker busy (aibench.sweep.pool)."""
    return getattr(system, "make_batcher", None) or Batcher


def run_loadgen(system: SystemUnderTest, s: Scenario, batch: int, sizing: Sizing, log_dir: Path) -> Outcome:
    """One LoadGen performance test of ``system`` in the fresh folder ``log_dir``."""
    import mlperf_loadgen as lg

    lifetime.wait_abandoned()  # an earlier, interrupted test may still hold LoadGen
    memory = check_memory(sizing, s)
    log_dir.mkdir(parents=True, exist_ok=False)
    latencies = LatencyLog()
    on_done = Completer(lg)
    is_server = s.scenario == "server"
    limit = server_async_limit(s, batch) if is_server else 0
    batcher = dispatcher_for(system)(system, batch, s.max_wait_us, on_done, latencies, hold_on_abort=is_server,
                                     spin_us=s.spin_us).start()
    on_done.owner = batcher.worker_ident
    sut = lg.ConstructFastSUT(batcher.submit, batcher.flush)
    qsl = lg.ConstructQSL(system.num_samples, system.num_samples, system.load, system.unload)
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
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings, str(log_dir / "audit.config"))
        except BaseException as exc:  # pragma: no cover - LoadGen itself failing
            failure.append(exc)

    thread = threading.Thread(target=start, name="aibench-loadgen", daemon=True)
    ctrl_c: list[float] = []

    def interrupt() -> None:
        if not ctrl_c:
            ctrl_c.append(time.monotonic())
        batcher.abort()

    t0 = time.perf_counter()
    with on_ctrl_c(interrupt):
        thread.start()
        finished = _wait_interruptible([thread], ctrl_c)
        if finished:
            batcher.stop(timeout=ABORT_GRACE_S if ctrl_c else 30.0)
            if ctrl_c:
                finished = not any(t.is_alive() for t in _batcher_threads(batcher))
    def finish() -> None:
        thread.join()
        batcher.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)

    if finished:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    else:  # LoadGen cannot be cancelled: leave it to end on its own, then stop the worker and free the SUT
        lifetime.abandon(_later(finish, "aibench-loadgen-finish"), "a LoadGen test")
    interrupted = bool(ctrl_c)
    wall = time.perf_counter() - t0
    error = batcher.error if batcher.error is not None else (failure[0] if failure else None)
    if isinstance(error, KeyboardInterrupt):
        interrupted, error = True, None
    log = logparse.read_detail(log_dir)
    valid = logparse.validity(log, s.scenario)
    served = (batcher.last_done - batcher.first_issue) if batcher.first_issue and batcher.last_done else None
    queries = batcher.samples // max(1, s.samples_per_query) if s.scenario != "offline" else 1
    m = logparse.metrics(log, s.scenario, s.samples_per_query, served, queries, valid["valid"])
    adapter = {"batches": batcher.batches, "samples": batcher.samples,
               "mean_batch": batcher.samples / batcher.batches if batcher.batches else None,
               "max_batch": batch, "max_wait_us": s.max_wait_us, "spin_us": s.spin_us, "test_wall_s": wall,
               "server_max_async_queries": limit if is_server else None}
    return Outcome(log_dir, log, valid, m, latencies, error, interrupted, logparse.effective_settings(log),
                   logparse.requested_settings(log), adapter, memory)


def run_users(system: SystemUnderTest, s: Scenario, batch: int, seed: int) -> Outcome:
    """Closed-loop users: each of ``s.users`` threads thinks for an exponential time (mean
    ``s.think_time_ms``, seeded per user), sends one sample, waits for its answer, and repeats. The first
    ``warmup`` seconds are excluded; latencies are of requests sent in the measured window, throughput
    counts answers received in it."""
    from aibench.results.schema import metric
    from aibench.results.stats import percentile

    system.load(range(system.num_samples))

    def on_done(tokens: list[Any], _responses: Any) -> None:
        for ev in tokens:
            ev.set()

    batcher = dispatcher_for(system)(system, batch, s.max_wait_us, on_done, spin_us=s.spin_us).start()
    warmup = min(max(0.1 * s.duration_s, 0.05), 10.0)
    think = (s.think_time_ms or 0.0) / 1e3
    users = int(s.users or 1)
    records: list[list[tuple[float, float]]] = [[] for _ in range(users)]
    stop = threading.Event()
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + s.duration_s

    def user(u: int) -> None:
        rng = random.Random(seed * 1_000_003 + u)
        mine = records[u]
        perf = time.perf_counter
        while not stop.is_set():
            if think > 0:
                stop.wait(rng.expovariate(1.0 / think))
            t0 = perf()
            if t0 >= t_end or stop.is_set():
                break
            ev = threading.Event()
            batcher.submit([ev], [rng.randrange(system.num_samples)])
            ev.wait()
            if batcher.aborted.is_set():
                break
            mine.append((t0, perf()))

    threads = [threading.Thread(target=user, args=(u,), name=f"aibench-user-{u}", daemon=True)
               for u in range(users)]
    ctrl_c: list[float] = []

    def interrupt() -> None:
        if not ctrl_c:
            ctrl_c.append(time.monotonic())
        stop.set()
        batcher.abort()

    def poll() -> None:
        if batcher.aborted.is_set():
            stop.set()

    with on_ctrl_c(interrupt):
        for t in threads:
            t.start()
        finished = _wait_interruptible(threads, ctrl_c, poll)
        stop.set()
        if finished:
            batcher.stop(timeout=ABORT_GRACE_S if ctrl_c else 30.0)
            if ctrl_c:
                finished = not any(t.is_alive() for t in _batcher_threads(batcher))
    if not finished:  # a user waits on a batch that is still running: stop the worker once it is done

        def finish() -> None:
            for t in threads:
                t.join()
            batcher.stop()

        lifetime.abandon(_later(finish, "aibench-users-finish"), "closed-loop users")
    interrupted = bool(ctrl_c)
    error = batcher.error
    if isinstance(error, KeyboardInterrupt):
        interrupted, error = True, None
    lat = sorted(t1 - t0 for rec in records for t0, t1 in rec if t_measure <= t0 < t_end)
    done_in_window = sum(1 for rec in records for _, t1 in rec if t_measure <= t1 <= t_end)
    window = s.duration_s
    log_lat = LatencyLog()
    for rec in records:
        for t0, t1 in rec:
            if t_measure <= t0 < t_end:
                log_lat.add([t0], t1)
    m: dict[str, dict[str, Any]] = {}
    none = "no request was answered in the measured window"
    for p, name in ((50, "latency_p50"), (90, "latency_p90"), (95, "latency_p95"), (97, "latency_p97"),
                    (99, "latency_p99"), (99.9, "latency_p99_9")):
        m[name] = metric(percentile(lat, p) if lat else None, "s", "lower", None if lat else none)
    m["latency_min"] = metric(lat[0] if lat else None, "s", "lower", None if lat else none)
    m["latency_max"] = metric(lat[-1] if lat else None, "s", "lower", None if lat else none)
    m["latency_mean"] = metric(sum(lat) / len(lat) if lat else None, "s", "lower", None if lat else none)
    m["latency_early_stopping"] = metric(None, "s", "lower", "closed-loop users are not run by LoadGen: "
                                         "no early-stopping estimate")
    qps = done_in_window / window
    m["queries_per_s"] = metric(qps, "queries/s", "higher", None, note="answers received in the measured window")
    m["samples_per_s"] = metric(qps, "samples/s", "higher", None, note="one sample per request")
    why = "closed-loop users time requests themselves: there is no load-generator overhead to remove"
    m["queries_per_s_no_overhead"] = metric(None, "queries/s", "higher", why)
    m["samples_per_s_no_overhead"] = metric(None, "samples/s", "higher", why)
    adapter = {"batches": batcher.batches, "samples": batcher.samples,
               "mean_batch": batcher.samples / batcher.batches if batcher.batches else None,
               "max_batch": batch, "max_wait_us": s.max_wait_us, "warmup_s": warmup, "measured_s": window,
               "requests_in_window": len(lat), "answers_in_window": done_in_window}
    return Outcome(None, {}, None, m, log_lat, error, interrupted, adapter=adapter)
