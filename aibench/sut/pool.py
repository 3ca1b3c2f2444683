"""Inference scale-out: a pool of worker processes, each with its own copy of a benchmark's task, as one
:class:`~aibench.sut.SystemUnderTest` fed by one load generator in this process.

:class:`WorkerPool` starts the workers (:mod:`aibench.sut.worker`: ``spawn``, each builds the task itself on
its own device and thread count and stages every sample) and stops them; one pool serves every point of a
sweep. :class:`PoolSystem` is the system under test over some of its workers: ``submit`` enqueues; a
dispatching thread forms each worker's batches with the one gather loop and batching rule
(:class:`~aibench.sut.batcher.Intake` over a :class:`~aibench.sut.batcher.BatchQueue`, batches of the
benchmark's ``batch``), keeps up to ``DEPTH`` messages outstanding per worker (so a worker never waits for
the parent between batches) and, while much work is queued (Offline), sends several batches' indices in one
message so the parent's cost per sample stays tiny. One collecting thread waits on every worker's pipe and
process sentinel at once: completions go to the driver as they arrive; a worker that reports an error or
dies ends the run promptly (its outstanding samples are answered so the driver can finish), with the
worker's exit code in the error. Nothing waits forever.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any

from aibench.errors import AibenchError, UnavailableError, UsageError
from aibench.sut import Capabilities, Completion, SutReport, SystemUnderTest, Token
from aibench.sut.batcher import Answers, BatchQueue, Intake
from aibench.sut.worker import T_BATCH, T_CANCEL, T_DONE, T_ERROR, T_READY, T_STATS, T_STATS_REPLY, T_STOP, worker_main

log = logging.getLogger(__name__)

DEPTH = 2  # messages outstanding per worker: one running, one waiting in its pipe
MAX_BATCHES_PER_MESSAGE = 8
START_TIMEOUT_S = 900.0  # building a big network on a busy machine, or torch.compile, takes minutes
REPLY_TIMEOUT_S = 600.0  # a stats query
POLL_S = 0.1


class WorkerError(RuntimeError):
    """A worker failed (its model raised) or died; the message names the worker, its device and exit code."""


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker builds. Plain data, sent to the child as JSON."""

    index: int
    device: str  # "cpu" or "cuda:N"
    threads: int  # intra-op threads in the worker
    bench_id: str
    params: dict[str, Any]  # resolved parameters; "device" is overridden with ``device``
    seed: int = 0
    modules: tuple[str, ...] = ()  # imported before the lookup (benchmarks outside aibench.workloads)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "device": self.device, "threads": self.threads,
                           "bench_id": self.bench_id, "params": self.params, "seed": self.seed,
                           "modules": list(self.modules)})


@dataclass
class _Worker:
    config: WorkerConfig
    process: Any
    conn: Any
    info: dict[str, Any] | None = None
    lost: str | None = None  # why the worker is gone, once it is
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, data: bytes) -> None:
        """One message; the lock keeps a cancel (from another thread) from interleaving with a batch."""
        with self.send_lock:
            self.conn.send_bytes(data)

    def describe(self) -> str:
        pid = self.process.pid if self.process is not None else "?"
        return f"worker {self.config.index} (pid {pid}, {self.config.device})"


def _error_from(w: _Worker, doc: dict[str, Any]) -> BaseException:
    """A worker's error as the parent's exception: refusals keep their class (and exit code)."""
    text = f"{w.describe()}: {doc.get('message')}"
    code = doc.get("exit_code")
    if code == UnavailableError.exit_code:
        return UnavailableError(text)
    if code == UsageError.exit_code:
        return UsageError(text)
    return WorkerError(f"{w.describe()}: {doc.get('type')}: {doc.get('message')}")


class WorkerPool:
    """Worker processes for one sweep (started once with the most workers any point uses; each point uses
    a subset). Not thread-safe: one run at a time drives it."""

    def __init__(self, configs: Sequence[WorkerConfig], start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.configs = list(configs)
        self.start_timeout_s = start_timeout_s
        self.workers: list[_Worker] = []
        self.started = False
        self.start_s: float | None = None
        self._seq = 0  # message numbers, increasing over the pool's life (a cancel names the last one)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def last_seq(self) -> int:
        return self._seq

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        t0 = time.perf_counter()
        try:
            for cfg in self.configs:
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=worker_main, args=(child, cfg.to_json(), os.getpid()),
                                   name=f"aibench-worker-{cfg.index}", daemon=True)
                proc.start()
                child.close()
                self.workers.append(_Worker(cfg, proc, parent))
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self.started = True
        self.start_s = time.perf_counter() - t0
        return self

    def _await_ready(self) -> None:
        waiting = {w.conn: w for w in self.workers}
        sentinels = {w.process.sentinel: w for w in self.workers}
        errors: list[BaseException] = []
        deadline = time.monotonic() + self.start_timeout_s
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(w.describe() for w in waiting.values())
                raise WorkerError(f"{names} did not start within {self.start_timeout_s:g} s")
            ready = mp_connection.wait([*waiting, *(s for s, w in sentinels.items() if w.conn in waiting)],
                                       timeout=min(left, 1.0))
            for obj in ready:
                if obj in waiting:
                    w = waiting.pop(obj)
                    try:
                        msg = obj.recv_bytes()
                    except (EOFError, OSError):
                        w.process.join(5)
                        errors.append(WorkerError(f"{w.describe()} exited with code {w.process.exitcode} while "
                                                  "starting"))
                        continue
                    if msg[:1] == T_READY:
                        w.info = json.loads(msg[1:])
                    elif msg[:1] == T_ERROR:
                        errors.append(_error_from(w, json.loads(msg[1:])))
                elif obj in sentinels:
                    w = sentinels[obj]
                    if w.conn in waiting and not w.conn.poll():
                        waiting.pop(w.conn)
                        w.process.join(5)
                        errors.append(WorkerError(f"{w.describe()} exited with code {w.process.exitcode} while "
                                                  "starting"))
        if errors:
            refusals = [e for e in errors if isinstance(e, AibenchError)]
            raise refusals[0] if refusals else errors[0]

    def healthy(self) -> bool:
        return self.started and all(w.lost is None and w.process.is_alive() for w in self.workers)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop every worker: ask, wait, then terminate and kill what is left."""
        for w in self.workers:
            try:
                w.send(T_STOP)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(2.0)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2.0)
            try:
                w.conn.close()
            except OSError:
                pass
        self.workers = []
        self.started = False

    # -- synchronous requests (no dispatcher running) ---------------------------------------------------
    def _reply(self, w: _Worker, timeout_s: float = REPLY_TIMEOUT_S) -> bytes:
        """The next message from ``w``; raises WorkerError if it errs, dies or says nothing in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            if w.conn.poll(POLL_S):
                try:
                    msg = w.conn.recv_bytes()
                except (EOFError, OSError):
                    msg = b""
                if msg[:1] == T_ERROR:
                    w.lost = "error"
                    raise _error_from(w, json.loads(msg[1:]))
                if msg:
                    return msg
            if not w.process.is_alive():
                w.process.join(1.0)
                w.lost = f"exited with code {w.process.exitcode}"
                raise WorkerError(f"{w.describe()} exited with code {w.process.exitcode}")
            if time.monotonic() > deadline:
                raise WorkerError(f"{w.describe()} did not answer within {timeout_s:g} s")

    def stats(self, which: Sequence[int]) -> list[dict[str, Any]]:
        """Counters of the given workers since their last query (and reset them)."""
        out = []
        for i in which:
            w = self.workers[i]
            w.send(T_STATS)
            msg = self._reply(w, 60.0)
            while msg[:1] != T_STATS_REPLY:  # a late completion of an aborted run
                msg = self._reply(w, 60.0)
            out.append({"worker": i, "device": w.config.device, **json.loads(msg[1:])})
        return out


def send_batch(w: _Worker, seq: int, indices: Sequence[int]) -> None:
    w.send(T_BATCH + seq.to_bytes(8, "little") + array("q", indices).tobytes())




class PoolSystem(SystemUnderTest):
    """The pool's workers ``which`` as one system under test. Each worker computes batches of ``batch``
    samples (the benchmark's own, which every worker was built with: the driver's ``max_batch``, the whole
    pool's, is not used); the driver's ``max_queue_delay_us`` is the batching rule's delay. Workers staged
    every sample when they started, so staging here does nothing."""

    capabilities = Capabilities(remote=True)

    def __init__(self, pool: WorkerPool, which: Sequence[int], batch: int, name: str) -> None:
        if not pool.started:
            raise RuntimeError("the worker pool is not started")
        self.pool = pool
        self.which = list(which)
        self.workers = [pool.workers[i] for i in self.which]
        self.batch = max(1, int(batch))
        self.name = name
        self.infos = [w.info or {} for w in self.workers]
        self.num_samples = min(int(i.get("num_samples") or 1) for i in self.infos)
        self._dispatch_thread: threading.Thread | None = None
        self._collect_thread: threading.Thread | None = None
        self._answers = Answers(lambda *_a: None)
        self._intake = Intake(BatchQueue(self.batch), self._answers)
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)
        self._dead: set[int] = set()
        self.reset_report()

    def describe(self) -> dict[str, Any]:
        first = self.infos[0]
        devices = sorted({str(i.get("device")) for i in self.infos})
        return {"num_samples": self.num_samples, "stage": first.get("stage"), "data": first.get("data"),
                "flops_per_sample": first.get("flops_per_sample"), "flops_note": first.get("flops_note") or "",
                "device": devices[0] if len(devices) == 1 else devices,
                "stages_note": "stages are not timed across worker processes"}

    def stage(self, indices: Sequence[int]) -> None:
        """Every worker staged all its samples when it started."""

    def unstage(self, indices: Sequence[int]) -> None:
        pass

    # -- a test ------------------------------------------------------------------------------------------
    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        if any(t is not None and t.is_alive() for t in (self._dispatch_thread, self._collect_thread)):
            raise RuntimeError(f"{self.name}: started twice (stop it first)")
        # Reset the workers' counters (no thread uses the pipes yet): their stats then cover this test only,
        # not the calibration before it.
        self.pool.stats(self.which)
        self._answers = Answers(on_complete, hold_on_abort, on_error)
        self._intake = Intake(BatchQueue(self.batch, max(0.0, max_queue_delay_us) / 1e6), self._answers)
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)
        self._outstanding: list[collections.deque[tuple[int, Sequence[Token], list[tuple[float, int]], int]]] = [
            collections.deque() for _ in self.workers]
        self._dead: set[int] = set()
        self._stopping = threading.Event()
        self._dispatch_thread = threading.Thread(target=self._dispatch, args=(self._intake,),
                                                 name="aibench-pool-dispatch", daemon=True)
        self._collect_thread = threading.Thread(target=self._collect, args=(self._answers,),
                                                name="aibench-pool-collect", daemon=True)
        self._collect_thread.start()
        self._dispatch_thread.start()

    def submit(self, tokens: Sequence[Token], indices: Sequence[int]) -> None:
        if self._answers.aborted:
            self._answers.drop(tokens)
            return
        self._intake.put(tokens, indices, time.perf_counter())

    def flush(self) -> None:
        self._answers.flush()
        self._intake.flush()

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        first = self._answers.abort()
        self._intake.wake()
        with self._slots:
            self._slots.notify_all()
        if first:  # let the workers drop the batches they hold (every message sent so far)
            upto = self.pool.last_seq().to_bytes(8, "little")
            for i, w in enumerate(self.workers):
                if i not in self._dead:
                    try:
                        w.send(T_CANCEL + upto)
                    except (OSError, ValueError):
                        pass

    def stop(self, timeout: float | None = None) -> bool:
        if self._dispatch_thread is None or self._collect_thread is None:
            return True
        self._intake.stop()
        self._dispatch_thread.join(timeout)
        self._stopping.set()
        self._collect_thread.join(timeout)
        return not (self._dispatch_thread.is_alive() or self._collect_thread.is_alive())

    def report(self) -> SutReport:
        return SutReport(batches=self._batches, samples=self._samples, error=self._error,
                         extra={"messages": self._messages})

    def reset_report(self) -> None:
        self._batches = 0
        self._samples = 0
        self._messages = 0
        self._error: BaseException | None = None

    # -- faults ------------------------------------------------------------------------------------------
    def _lose(self, i: int, exc: BaseException, ans: Answers) -> None:
        """Worker ``i`` is gone: answer what it held and end the run."""
        with self._slots:
            if i in self._dead:
                return
            self._dead.add(i)
            lost = [t for _seq, toks, _groups, _n in self._outstanding[i] for t in toks]
            self._outstanding[i].clear()
            self._slots.notify_all()
        self.workers[i].lost = str(exc)
        first = self._answers.aborted is False
        self.abort(exc)
        if first and ans.on_error is not None:
            ans.on_error(exc)
        ans.drop(lost)

    # -- threads -----------------------------------------------------------------------------------------
    def _pick(self, full: bool) -> int | None:
        """An idle worker; or, when a full batch is waiting, one with room for a second message (so it never
        waits for the parent between batches). A part batch is never queued behind a busy worker: it waits
        for a worker to free up, and grows meanwhile."""
        best, load = None, DEPTH if full else 1
        for i, out in enumerate(self._outstanding):
            if i not in self._dead and len(out) < load:
                best, load = i, len(out)
        return best

    def _dispatch(self, intake: Intake) -> None:
        batch, bq, ans = self.batch, intake.bq, intake.ans
        while intake.next_due():
            full = len(bq) >= batch
            with self._slots:
                w = self._pick(full)
                if w is None:
                    self._slots.wait(POLL_S)  # a completion frees a worker; meanwhile more work may queue
                    w = self._pick(len(bq) >= batch)
            if w is None:
                continue
            # One message: one batch or, while much is queued (Offline), several batches' indices at once,
            # keeping enough back that every worker still gets its share to the end.
            live = max(1, len(self.workers) - len(self._dead))
            per_msg = batch * max(1, min(MAX_BATCHES_PER_MESSAGE, len(bq) // (batch * live * DEPTH * 2)))
            b = bq.take(per_msg)
            seq = self.pool.next_seq()
            with self._lock:
                lost = w in self._dead  # it died since it was picked: _lose has answered all it held
                if not lost:
                    self._outstanding[w].append((seq, b.tokens, b.groups, len(b)))
            if lost:  # never appended to a dead worker's list (nobody would answer it): answer here
                ans.drop(b.tokens)
                continue
            try:
                send_batch(self.workers[w], seq, b.indices)
            except (OSError, ValueError) as exc:
                self._lose(w, WorkerError(f"{self.workers[w].describe()}: its pipe broke ({exc})"), ans)
        ans.release(bq.drain())

    def _collect(self, ans: Answers) -> None:
        conns = {w.conn: i for i, w in enumerate(self.workers)}
        sentinels = {w.process.sentinel: i for i, w in enumerate(self.workers)}
        while True:
            if self._stopping.is_set():
                with self._lock:
                    busy = any(self._outstanding[i] for i in range(len(self.workers)) if i not in self._dead)
                if not busy:
                    return
            watch = [c for c, i in conns.items() if i not in self._dead]
            watch += [s for s, i in sentinels.items() if i not in self._dead]
            if not watch:
                if self._stopping.is_set():
                    return
                time.sleep(POLL_S)
                continue
            for obj in mp_connection.wait(watch, timeout=POLL_S):
                i = conns.get(obj)
                if i is None:
                    i = sentinels[obj]
                    w = self.workers[i]
                    while i not in self._dead and w.conn.poll():  # what it said before it went
                        self._handle(i, w.conn, ans)
                    if i not in self._dead:
                        w.process.join(1.0)
                        self._lose(i, WorkerError(f"{w.describe()} exited with code {w.process.exitcode}"), ans)
                    continue
                if i not in self._dead:
                    self._handle(i, obj, ans)

    def _handle(self, i: int, conn: Any, ans: Answers) -> None:
        w = self.workers[i]
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            w.process.join(1.0)
            self._lose(i, WorkerError(f"{w.describe()} exited with code {w.process.exitcode}"), ans)
            return
        tag = msg[:1]
        if tag == T_DONE:
            seq = int.from_bytes(msg[1:9], "little")
            with self._slots:
                out = self._outstanding[i]
                if not out or out[0][0] != seq:
                    return  # answered already (the run was aborted and the worker was lost)
                _seq, toks, groups, n = out.popleft()
                self._slots.notify()
            self._messages += 1
            self._batches += math.ceil(n / self.batch)
            self._samples += n
            ans.complete(toks, None, groups)
        elif tag == T_ERROR:
            self._lose(i, _error_from(w, json.loads(msg[1:])), ans)
        elif tag == T_STATS_REPLY:
            pass  # not asked for during a run


