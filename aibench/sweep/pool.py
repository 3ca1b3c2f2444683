"""Inference scale-out: worker processes, each with its own copy of a benchmark's task, fed by one load
generator in the parent.

Each worker is a process started with ``spawn`` (a fresh interpreter: no forked torch or CUDA state). It
builds the benchmark's :class:`~aibench.loadgen.task.InferenceTask` itself from the benchmark id and its
parameters, on its own device and with its own thread count (1 by default), stages every sample in its own
memory, and then only ever receives sample indices. Parent and workers talk over ``multiprocessing`` pipes
in a small binary format (a tag byte, a sequence number, int64 indices; JSON for the few control replies):
nothing is unpickled from them.

In the parent, :class:`PoolSystem` is the :class:`~aibench.loadgen.sut.SystemUnderTest` the existing
LoadGen driver runs; it brings its own dispatcher (:class:`PoolDispatcher`, found by
:func:`aibench.loadgen.drive.dispatcher_for`) in place of the single-worker Batcher. The dispatcher keeps up
to ``DEPTH`` messages outstanding per worker (so a worker never waits for the parent between batches),
forms each worker's batches of up to the benchmark's ``batch`` samples, and, while much work is queued
(Offline), sends several batches' indices in one message so the parent's cost per sample stays tiny. One
collector thread waits on every worker's pipe and process sentinel at once: completions go to LoadGen as
they arrive; a worker that reports an error or dies ends the run promptly (its outstanding samples are
answered so LoadGen can finish), with the worker's exit code in the error. Nothing waits forever.

A synchronous :meth:`PoolSystem.issue` (the driver's calibration) splits its batch across the workers and
waits for all of them, so the calibrated rate is the pool's.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import threading
import time
import traceback
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from types import SimpleNamespace
from typing import Any

from aibench.errors import AibenchError, UnavailableError, UsageError

log = logging.getLogger(__name__)

# Parent -> worker
T_BATCH = b"B"  # seq (8 bytes) + int64 indices: answer these samples
T_CANCEL = b"C"  # + seq: answer messages numbered up to seq without computing (a run was aborted)
T_STATS = b"Q"  # reply with counters since the last query, then reset them
T_STOP = b"S"
# Worker -> parent
T_READY = b"R"  # + JSON: what the worker built
T_DONE = b"D"  # + seq
T_ERROR = b"E"  # + JSON {type, message, exit_code, traceback}; the worker then exits
T_STATS_REPLY = b"T"  # + JSON counters

DEPTH = 2  # messages outstanding per worker: one running, one waiting in its pipe
MAX_BATCHES_PER_MESSAGE = 8
START_TIMEOUT_S = 900.0  # building a big network on a busy machine, or torch.compile, takes minutes
REPLY_TIMEOUT_S = 600.0  # a synchronous batch (calibration) or a stats query
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


# --------------------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------------------

def worker_main(conn: Any, config_json: str, parent_pid: int | None = None) -> None:
    """Entry point of a worker process (spawned). Ctrl-C is the parent's business: the worker ignores
    SIGINT and ends when told to, or when its pipe closes; and it dies with the parent, however the parent
    ends, even in the middle of a batch (:func:`aibench.lifetime.die_with_parent`)."""
    import signal

    from aibench.lifetime import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)  # anything a workload prints goes to stderr, never into the parent's --json output
    cfg = json.loads(config_json)
    try:
        system, info, batch = _build(cfg)
    except BaseException as exc:
        _send_error(conn, exc)
        return
    conn.send_bytes(T_READY + json.dumps(info).encode())
    _serve(conn, system, batch, info)
    from aibench.lifetime import quick_exit

    quick_exit(0)  # told to stop (or the parent is gone): no teardown for the parent to wait on


def _build(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any], int]:
    import importlib

    import torch

    from aibench import registry
    from aibench.loadgen.sut import InProcessSystem
    from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    for module in cfg.get("modules") or ():
        importlib.import_module(module)
    bench = registry.get(cfg["bench_id"])
    given = dict(cfg["params"])
    if "device" in bench.params:
        given["device"] = cfg["device"]
    elif cfg["device"] != "cpu":
        raise UsageError(f"{bench.id} has no --device parameter: it cannot run on {cfg['device']}")
    params = bench.resolve(given)
    device = resolve_device(params.get("device", "cpu"))
    dtype = resolve_dtype(params["dtype"], device) if "dtype" in params else None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(int(cfg.get("seed", 0)))
    with refusing_unsupported(device, dtype):
        task = bench.factory(params, device=device, dtype=dtype)
        task.run_batch()  # one untimed batch: an unsupported dtype is refused before any load
    system = InProcessSystem(task, name=f"{bench.id}#worker{cfg['index']}")
    system.load(range(task.num_samples))
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info = {"index": cfg["index"], "pid": os.getpid(), "device": str(device), "threads": torch.get_num_threads(),
            "affinity": affinity, "num_samples": task.num_samples, "flops_per_sample": task.flops_per_sample,
            "flops_note": task.flops_note, "stage": task.stage, "data": task.data}
    return system, info, max(1, int(params.get("batch", 1) or 1))


def _serve(conn: Any, system: Any, batch: int, info: dict[str, Any]) -> None:
    import resource

    inbox: collections.deque[bytes] = collections.deque()
    cancel_upto = 0  # batch messages numbered up to this are answered without computing (an aborted run)
    counters = {"messages": 0, "batches": 0, "samples": 0, "busy_s": 0.0}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_mark = ru0.ru_utime + ru0.ru_stime
    cuda = str(info.get("device", "")).startswith("cuda")
    perf = time.perf_counter
    while True:
        try:
            msg = inbox.popleft() if inbox else conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        tag = msg[:1]
        if tag == T_STOP:
            return
        if tag == T_CANCEL:
            cancel_upto = max(cancel_upto, int.from_bytes(msg[1:9], "little"))
            continue
        if tag == T_STATS:
            reply = dict(counters)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu = ru.ru_utime + ru.ru_stime
            reply.update(pid=os.getpid(), cpu_s=cpu - cpu_mark, peak_rss_bytes=ru.ru_maxrss * 1024)
            cpu_mark = cpu
            if cuda:
                import torch

                reply["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            counters.update(messages=0, batches=0, samples=0, busy_s=0.0)
            conn.send_bytes(T_STATS_REPLY + json.dumps(reply).encode())
            continue
        if tag != T_BATCH:
            continue
        seq = msg[1:9]
        number = int.from_bytes(seq, "little")
        idx = array("q")
        idx.frombytes(msg[9:])
        indices = idx.tolist()
        t0 = perf()
        try:
            for pos in range(0, len(indices), batch):
                if number <= cancel_upto:
                    break
                system.issue(indices[pos:pos + batch])
                counters["batches"] += 1
                counters["samples"] += min(batch, len(indices) - pos)
                while conn.poll():  # a cancel ends this message early; other messages wait their turn
                    nxt = conn.recv_bytes()
                    if nxt[:1] == T_CANCEL:
                        cancel_upto = max(cancel_upto, int.from_bytes(nxt[1:9], "little"))
                    else:
                        inbox.append(nxt)
        except BaseException as exc:
            _send_error(conn, exc)
            return
        counters["busy_s"] += perf() - t0
        counters["messages"] += 1
        conn.send_bytes(T_DONE + seq)


def _send_error(conn: Any, exc: BaseException) -> None:
    text = str(exc).strip()
    doc = {"type": type(exc).__name__, "message": text.splitlines()[0][:2000] if text else type(exc).__name__,
           "exit_code": exc.exit_code if isinstance(exc, AibenchError) else None,
           "traceback": traceback.format_exc(limit=8)}
    try:
        conn.send_bytes(T_ERROR + json.dumps(doc).encode())
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------------------
# The pool (parent side)
# --------------------------------------------------------------------------------------------------------

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


class PoolSystem:
    """The pool as a :class:`~aibench.loadgen.sut.SystemUnderTest` over the workers ``which``."""

    def __init__(self, pool: WorkerPool, which: Sequence[int], batch: int, name: str) -> None:
        if not pool.started:
            raise RuntimeError("the worker pool is not started")
        self.pool = pool
        self.which = list(which)
        self.workers = [pool.workers[i] for i in self.which]
        self.batch = max(1, int(batch))
        self.name = name
        infos = [w.info or {} for w in self.workers]
        self.num_samples = min(int(i.get("num_samples") or 1) for i in infos)
        first = infos[0]
        # What the driver's derived metrics read from an in-process system's task.
        self.task = SimpleNamespace(flops_per_sample=first.get("flops_per_sample"),
                                    flops_note=first.get("flops_note") or "", device=None)

    def load(self, indices: Sequence[int]) -> None:
        """Every worker staged all its samples when it started."""

    def unload(self, indices: Sequence[int]) -> None:
        pass

    def issue(self, indices: Sequence[int]) -> None:
        """Answer one batch synchronously: split it evenly over the workers (at most ``batch`` each where it
        fits) and wait for all of them."""
        idx = list(indices)
        if not idx:
            return None
        n = len(self.workers)
        parts = min(n, len(idx))
        size = math.ceil(len(idx) / parts)
        sent = []
        for k in range(parts):
            chunk = idx[k * size:(k + 1) * size]
            if chunk:
                seq = self.pool.next_seq()
                send_batch(self.workers[k], seq, chunk)
                sent.append((self.workers[k], seq.to_bytes(8, "little")))
        for w, seq_bytes in sent:
            msg = self.pool._reply(w)
            while msg[:1] != T_DONE or msg[1:9] != seq_bytes:  # a late reply from an aborted run
                msg = self.pool._reply(w)
        return None

    def make_batcher(self, system: Any, batch: int, max_wait_us: float,
                     on_done: Callable[[list[Any], Sequence[Any] | None], None], latencies: Any = None,
                     on_error: Callable[[BaseException], None] | None = None, hold_on_abort: bool = False,
                     spin_us: float = 0.0) -> PoolDispatcher:
        """The dispatcher the LoadGen driver uses in place of a Batcher (see
        :func:`aibench.loadgen.drive.dispatcher_for`). ``batch`` (the driver's largest batch for the whole
        pool) is not used: each worker gets batches of the benchmark's own ``batch``."""
        return PoolDispatcher(self, max_wait_us, on_done, latencies, on_error, hold_on_abort)


_STOP = object()
_FLUSH = object()


class PoolDispatcher:
    """Between a load generator and the pool: the :class:`~aibench.loadgen.sut.Batcher` interface (``submit``,
    ``flush``, ``abort``, ``start``, ``stop``, ``threads``, ``error``, ``aborted``, counters), with a
    dispatching thread and a collecting thread instead of one worker thread."""

    def __init__(self, system: PoolSystem, max_wait_us: float,
                 on_done: Callable[[list[Any], Sequence[Any] | None], None], latencies: Any = None,
                 on_error: Callable[[BaseException], None] | None = None, hold_on_abort: bool = False) -> None:
        self.system = system
        self.workers = system.workers
        self.batch = system.batch
        self.max_wait_s = max(0.0, max_wait_us) / 1e6
        self.on_done = on_done
        self.on_error = on_error
        self.latencies = latencies
        self.hold_on_abort = hold_on_abort
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.aborted = threading.Event()
        self.flushed = threading.Event()
        self._complete_at_once = False
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)
        self._outstanding: list[collections.deque[tuple[int, list[Any], list[tuple[float, int]], int]]] = [
            collections.deque() for _ in self.workers]
        self._dead: set[int] = set()
        self._held: list[Any] = []
        self._stopping = threading.Event()
        self.batches = 0
        self.samples = 0
        self.messages = 0
        self.first_issue: float | None = None
        self.last_done: float | None = None
        self._dispatch_thread = threading.Thread(target=self._dispatch, name="aibench-pool-dispatch", daemon=True)
        self._collect_thread = threading.Thread(target=self._collect, name="aibench-pool-collect", daemon=True)

    # -- the Batcher interface ---------------------------------------------------------------------------
    def submit(self, tokens: Sequence[Any], indices: Sequence[int]) -> None:
        if self._complete_at_once:
            self.on_done(list(tokens), None)
            return
        self.q.put((tokens, indices, time.perf_counter()))

    def flush(self) -> None:
        self.flushed.set()
        if self.aborted.is_set():
            self._complete_at_once = True
            with self._lock:
                held, self._held = self._held, []
            if held:
                self.on_done(held, None)
        self.q.put(_FLUSH)

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        first = not self.aborted.is_set()
        self.aborted.set()
        self._complete_at_once = not self.hold_on_abort or self.flushed.is_set()
        self.q.put(_FLUSH)
        with self._slots:
            self._slots.notify_all()
        if first:  # let the workers drop the batches they hold (every message sent so far)
            upto = self.system.pool.last_seq().to_bytes(8, "little")
            for i, w in enumerate(self.workers):
                if i not in self._dead:
                    try:
                        w.send(T_CANCEL + upto)
                    except (OSError, ValueError):
                        pass

    def start(self) -> PoolDispatcher:
        # Reset the workers' counters (no thread uses the pipes yet): their stats then cover this test only,
        # not the calibration before it.
        self.system.pool.stats(self.system.which)
        self._collect_thread.start()
        self._dispatch_thread.start()
        return self

    @property
    def worker_ident(self) -> int | None:
        return self._collect_thread.ident  # where completions are made

    @property
    def threads(self) -> list[threading.Thread]:
        return [self._dispatch_thread, self._collect_thread]

    def stop(self, timeout: float = 30.0) -> None:
        self.q.put(_STOP)
        self._dispatch_thread.join(timeout)
        self._stopping.set()
        self._collect_thread.join(timeout)

    # -- completion --------------------------------------------------------------------------------------
    def _finish(self, tokens: list[Any]) -> None:
        """Answer ``tokens`` (without responses: the pool does not ship outputs back), or hold them while an
        aborted Server run has not yet been flushed."""
        if not tokens:
            return
        if self.aborted.is_set() and self.hold_on_abort and not self.flushed.is_set():
            with self._lock:
                if not self.flushed.is_set():
                    self._held.extend(tokens)
                    return
        self.on_done(tokens, None)

    def _lose(self, i: int, exc: BaseException) -> None:
        """Worker ``i`` is gone: answer what it held and end the run."""
        with self._slots:
            if i in self._dead:
                return
            self._dead.add(i)
            lost = [t for _seq, toks, _groups, _n in self._outstanding[i] for t in toks]
            self._outstanding[i].clear()
            self._slots.notify_all()
        self.workers[i].lost = str(exc)
        self.abort(exc)
        if self.on_error is not None:
            self.on_error(exc)
        self._finish(lost)

    # -- threads -----------------------------------------------------------------------------------------
    def _pick(self, full: bool) -> int | None:
        """An idle worker; or, when a full batch is waiting, one with room for a second message (so it never
        waits for the parent between batches). A part batch is never queued behind a busy worker: it waits
        for a worker to free up, and grows meanwhile, as it would in the single-worker Batcher."""
        best, load = None, DEPTH if full else 1
        for i, out in enumerate(self._outstanding):
            if i not in self._dead and len(out) < load:
                best, load = i, len(out)
        return best

    def _dispatch(self) -> None:
        q = self.q
        batch = self.batch
        perf = time.perf_counter
        pending: collections.deque[list[Any]] = collections.deque()
        npend = 0
        stopping = False

        def take(item: Any) -> None:
            nonlocal npend, stopping
            if item is _STOP:
                stopping = True
            elif item is not _FLUSH and item[1]:
                pending.append([item[0], item[1], item[2], 0])
                npend += len(item[1])
                if self.first_issue is None:
                    self.first_issue = item[2]

        while not stopping:
            if npend == 0:
                take(q.get())
            while not stopping:
                try:
                    take(q.get_nowait())
                except queue.Empty:
                    break
            if self.max_wait_s > 0 and 0 < npend < batch and not stopping and not self.aborted.is_set():
                deadline = perf() + self.max_wait_s
                while npend < batch and not stopping:
                    left = deadline - perf()
                    if left <= 0:
                        break
                    try:
                        take(q.get(timeout=left))
                    except queue.Empty:
                        break
            if self.aborted.is_set():
                toks = [t for chunk in pending for t in chunk[0][chunk[3]:]]
                pending.clear()
                npend = 0
                self._finish(toks)
                continue
            if npend == 0:
                continue
            with self._slots:
                w = self._pick(full=npend >= batch)
                if w is None:
                    self._slots.wait(POLL_S)  # a completion frees a worker; meanwhile more work may queue
                    w = self._pick(full=npend >= batch)
            if w is None:
                continue
            # One message: one batch or, while much is queued (Offline), several batches' indices at once,
            # keeping enough back that every worker still gets its share to the end.
            live = max(1, len(self.workers) - len(self._dead))
            per_msg = batch * max(1, min(MAX_BATCHES_PER_MESSAGE, npend // (batch * live * DEPTH * 2)))
            bt: list[Any] = []
            bi: list[int] = []
            groups: list[tuple[float, int]] = []
            need = per_msg
            while need and pending:
                chunk = pending[0]
                ctoks, cidx, ct, pos = chunk
                k = min(len(cidx) - pos, need)
                bt.extend(ctoks[pos:pos + k])
                bi.extend(cidx[pos:pos + k])
                groups.append((ct, k))
                need -= k
                if pos + k >= len(cidx):
                    pending.popleft()
                else:
                    chunk[3] = pos + k
            npend -= len(bi)
            seq = self.system.pool.next_seq()
            with self._lock:
                self._outstanding[w].append((seq, bt, groups, len(bi)))
            try:
                send_batch(self.workers[w], seq, bi)
            except (OSError, ValueError) as exc:
                self._lose(w, WorkerError(f"{self.workers[w].describe()}: its pipe broke ({exc})"))
        toks = [t for chunk in pending for t in chunk[0][chunk[3]:]]
        self._finish(toks)

    def _collect(self) -> None:
        conns = {w.conn: i for i, w in enumerate(self.workers)}
        sentinels = {w.process.sentinel: i for i, w in enumerate(self.workers)}
        perf = time.perf_counter
        lat = self.latencies
        batch = self.batch
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
                        self._handle(i, w.conn, perf, lat, batch)
                    if i not in self._dead:
                        w.process.join(1.0)
                        self._lose(i, WorkerError(f"{w.describe()} exited with code {w.process.exitcode}"))
                    continue
                if i not in self._dead:
                    self._handle(i, obj, perf, lat, batch)

    def _handle(self, i: int, conn: Any, perf: Callable[[], float], lat: Any, batch: int) -> None:
        w = self.workers[i]
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            w.process.join(1.0)
            self._lose(i, WorkerError(f"{w.describe()} exited with code {w.process.exitcode}"))
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
            done = perf()
            self._finish(toks)
            self.messages += 1
            self.batches += math.ceil(n / batch)
            self.samples += n
            self.last_done = done
            if lat is not None and not self.aborted.is_set():
                for t_issue, k in groups:
                    lat.add_group(t_issue, k, done)
        elif tag == T_ERROR:
            self._lose(i, _error_from(w, json.loads(msg[1:])))
        elif tag == T_STATS_REPLY:
            pass  # not asked for during a run
