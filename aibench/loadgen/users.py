"""Closed-loop users (AIBench's query generator; LoadGen has no closed loop), driving any
:class:`~aibench.sut.SystemUnderTest` through its contract alone.

Each of ``--users`` threads thinks for an exponential time (mean ``--think-time-ms``, seeded per user), sends
one sample, waits for its answer and repeats. A benchmark may set the warm-up, a count of measured requests
after which the users stop, and a constant think time
(:meth:`~aibench.loadgen.settings.Scenario.closed_loop_from`). Ctrl-C (or SIGTERM) aborts the system and ends the users
within the driver's grace (:data:`aibench.loadgen.drive.ABORT_GRACE_S`), as a LoadGen test does.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from aibench import lifetime
from aibench.loadgen.drive import (
    ABORT_GRACE_S,
    STOP_TIMEOUT_S,
    LatencyLog,
    Outcome,
    later,
    on_ctrl_c,
    record_stop,
    wait_interruptible,
)
from aibench.loadgen.settings import Scenario
from aibench.sut import SystemUnderTest


def run_users(sut: SystemUnderTest, s: Scenario, batch: int, seed: int) -> Outcome:
    """Closed-loop users: each of ``s.users`` threads thinks for an exponential time (mean
    ``s.think_time_ms``, seeded per user), sends one sample, waits for its answer, and repeats. The first
    ``warmup`` seconds are excluded; latencies are of requests sent in the measured window, throughput
    counts answers received in it."""
    from aibench.results.schema import metric
    from aibench.results.stats import percentile

    sut.stage(range(sut.num_samples))
    stop = threading.Event()
    aborted = threading.Event()  # the system failed, or Ctrl-C: the users leave at once

    def on_complete(tokens: Sequence[Any], _responses: Any, _issued: Any) -> None:
        for ev in tokens:
            ev.set()

    def on_error(_exc: BaseException) -> None:
        aborted.set()
        stop.set()

    before = sut.report()
    sut.start(on_complete, max_batch=batch, max_queue_delay_us=s.max_wait_us, spin_us=s.spin_us,
              on_error=on_error)
    warmup = s.warmup_s if s.warmup_s is not None else min(max(0.1 * s.duration_s, 0.05), 10.0)
    think = (s.think_time_ms or 0.0) / 1e3
    constant = s.think == "constant"
    users = int(s.users or 1)
    records: list[list[tuple[float, float]]] = [[] for _ in range(users)]
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    # with max_queries, the window ends when the last measured request is sent (set then); else after duration
    bounds = [t_measure + s.duration_s if s.max_queries is None else float("inf")]
    sent = [0]
    count_lock = threading.Lock()

    def user(u: int) -> None:
        rng = random.Random(seed * 1_000_003 + u)
        mine = records[u]
        perf = time.perf_counter
        first = True
        while not stop.is_set():
            if think > 0:  # constant: the first wait is uniform in [0, think) so the users do not move in step
                stop.wait((rng.uniform(0.0, think) if first else think) if constant
                          else rng.expovariate(1.0 / think))
            first = False
            t0 = perf()
            if s.max_queries is not None and t0 >= t_measure:
                with count_lock:
                    sent[0] += 1
                    if sent[0] > s.max_queries and bounds[0] == float("inf"):
                        bounds[0] = t0
            if t0 >= bounds[0] or stop.is_set():
                if s.max_queries is not None:
                    stop.set()  # the count is reached: the others stop thinking too
                break
            ev = threading.Event()
            sut.submit([ev], [rng.randrange(sut.num_samples)])
            ev.wait()
            if aborted.is_set():
                break
            mine.append((t0, perf()))

    threads = [threading.Thread(target=user, args=(u,), name=f"aibench-user-{u}", daemon=True)
               for u in range(users)]
    ctrl_c: list[float] = []

    def interrupt() -> None:
        if not ctrl_c:
            ctrl_c.append(time.monotonic())
        aborted.set()
        stop.set()
        sut.abort()

    with on_ctrl_c(interrupt):
        for t in threads:
            t.start()
        finished = wait_interruptible(threads, ctrl_c)
        stop.set()
        stopped = None
        if finished:
            stopped = sut.stop(timeout=ABORT_GRACE_S if ctrl_c else STOP_TIMEOUT_S)
            if ctrl_c:
                finished = stopped
    if not finished:  # a user waits on a batch that is still running: stop the system once it is done

        def finish() -> None:
            for t in threads:
                t.join()
            sut.stop()

        lifetime.abandon(later(finish, "aibench-users-finish"), "closed-loop users")
    interrupted = bool(ctrl_c)
    rep = sut.report()
    error = rep.error
    if isinstance(error, KeyboardInterrupt):
        interrupted, error = True, None
    t_end = bounds[0]
    if t_end == float("inf"):  # ended before the count (interrupted, or the system failed): up to the last answer
        t_end = max((t1 for rec in records for _, t1 in rec), default=t_measure)
    lat = sorted(t1 - t0 for rec in records for t0, t1 in rec if t_measure <= t0 < t_end)
    done_in_window = sum(1 for rec in records for _, t1 in rec if t_measure <= t1 <= t_end)
    window = s.duration_s if s.max_queries is None else max(t_end - t_measure, 1e-9)
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
    batches, samples = rep.batches - before.batches, rep.samples - before.samples
    adapter = {"batches": batches, "samples": samples, "mean_batch": samples / batches if batches else None,
               "max_batch": batch, "max_wait_us": s.max_wait_us, "warmup_s": warmup, "measured_s": window,
               "requests_in_window": len(lat), "answers_in_window": done_in_window,
               "think": s.think, "max_queries": s.max_queries,
               # perf_counter readings (this process) bounding the window, so an in-process system can keep
               # only the requests sent in it
               "window_perf_s": [t_measure, t_end]}
    record_stop(adapter, sut, stopped, interrupted)
    return Outcome(None, {}, None, m, log_lat, error, interrupted, adapter=adapter)
