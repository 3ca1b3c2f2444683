"""Systems under test and the batching worker that drives them.

A :class:`SystemUnderTest` answers a batch of sample indices with one response per sample; that is all
the load generators (LoadGen, closed-loop users) need, so a remote service can implement it later (send
the batch, wait for the answers) without any change to the drivers. :class:`InProcessSystem` runs an
:class:`~aibench.loadgen.task.InferenceTask` in this process.

:class:`Batcher` is the one worker thread between a load generator and a system: callers only enqueue
(``submit`` is a ``SimpleQueue.put``), the worker takes up to ``batch`` samples, waiting at most
``max_wait_us`` for a batch to fill, runs the system and hands the finished tokens to ``on_done``. When
idle it first polls the queue for ``spin_us`` before blocking: a blocked thread takes 5-30 us to be woken
on these VMs, which would otherwise be added to every query that finds the worker idle (in SingleStream,
every query). Between polls it sleeps 0 s, which releases the GIL for LoadGen's issuing thread. (Measured
against ``os.sched_yield`` between polls, which wins a two-thread ping test: under LoadGen, SingleStream
p50 added +6 us with ``sleep(0)`` and +24-31 us with ``sched_yield``; a poll holding the GIL, +142 us.)
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from aibench.loadgen.task import InferenceTask, default_collate, iter_tensors

STAGES = ("preprocess", "dnn", "postprocess")


@runtime_checkable
class SystemUnderTest(Protocol):
    """What a load generator drives. ``load``/``unload`` stage samples (untimed); ``issue`` is timed."""

    name: str
    num_samples: int

    def load(self, indices: Sequence[int]) -> None: ...

    def unload(self, indices: Sequence[int]) -> None: ...

    def issue(self, indices: Sequence[int]) -> Sequence[Any] | None:
        """Answer one batch; return one response per index (or None when responses are not kept)."""
        ...


class InProcessSystem:
    """An InferenceTask run in this process: collate, pre-process, to device, model under
    ``torch.inference_mode()``, device synchronisation, post-process."""

    def __init__(self, task: InferenceTask, name: str = "in-process") -> None:
        import torch

        from aibench.measure.device import synchronizer

        self.task = task
        self.name = name
        self.num_samples = task.num_samples
        self._staged: dict[int, Any] = {}
        self._sync = synchronizer(task.device) if hasattr(task.device, "type") else None
        self._inference_mode = torch.inference_mode
        self._threads = torch.get_num_threads()  # the run's pinned count (set on the main thread)
        self._torch = torch
        self._stack_into_buffer = task.collate is default_collate
        self._pin = getattr(task.device, "type", "cpu") == "cuda"
        self._buffer: Any = None
        self.breakdown = False  # set by the runner; then issue() times each stage
        self.stages = STAGES
        self.stage_times = {s: array("d") for s in STAGES}  # seconds of each batch per stage (--breakdown)
        self.h2d_bytes = 0  # bytes of input tensors copied host -> device (0 when the device is the host)
        self._to_device = task.to_device if not self._pin else self._counting_to_device

    def worker_init(self) -> None:
        """Called on the batching worker's thread before its first batch: carry the thread count over."""
        import torch

        torch.set_num_threads(self._threads)

    def _stack(self, samples: list[Any]) -> Any:
        """``default_collate``, but stacking into one reused buffer (pinned for a CUDA device): a fresh
        multi-megabyte batch per call costs page faults. Safe because batches run one at a time and the
        device is synchronised after each; a model must not keep its input across calls."""
        torch = self._torch
        first = samples[0] if samples else None
        if (not isinstance(first, torch.Tensor) or first.device.type != "cpu"
                or not all(isinstance(x, torch.Tensor) for x in samples)):
            return default_collate(samples)
        shape = first.shape
        if any(x.shape != shape for x in samples):
            return default_collate(samples)
        n = len(samples)
        buf = self._buffer
        if buf is None or buf.shape[0] < n or buf.shape[1:] != shape or buf.dtype != first.dtype:
            buf = torch.empty((n, *shape), dtype=first.dtype, pin_memory=self._pin)
            self._buffer = buf
        out = buf[:n] if buf.shape[0] != n else buf
        torch.stack(samples, out=out)
        return out

    def load(self, indices: Sequence[int]) -> None:
        for i in indices:
            if i not in self._staged:
                self._staged[i] = self.task.load_sample(i)

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self._staged.pop(i, None)

    def reset_stage_times(self) -> None:
        self.stage_times = {s: array("d") for s in STAGES}
        self.h2d_bytes = 0

    def _counting_to_device(self, x: Any, device: Any) -> Any:
        self.h2d_bytes += _host_tensor_bytes(x)
        return self.task.to_device(x, device)

    def issue(self, indices: Sequence[int]) -> Sequence[Any] | None:
        if self.breakdown:
            return self._issue_timed(indices)
        t = self.task
        staged = self._staged
        samples = list(map(staged.__getitem__, indices))
        x = self._stack(samples) if self._stack_into_buffer else t.collate(samples)
        if t.preprocess is not None:
            x = t.preprocess(x)
        x = self._to_device(x, t.device)
        with self._inference_mode():
            y = t.model(x)
        if self._sync is not None:
            self._sync()
        if t.postprocess is not None:
            return t.postprocess(y)
        return None


    def _issue_timed(self, indices: Sequence[int]) -> Sequence[Any] | None:
        """``issue`` with a host clock read between stages (the device is synchronised before the DNN
        stage ends, so its time is the device's): the paper's Fig. 4 breakdown. Collation counts as
        pre-processing; moving inputs to the device counts as DNN."""
        t = self.task
        clock = time.perf_counter
        t0 = clock()
        samples = list(map(self._staged.__getitem__, indices))
        x = self._stack(samples) if self._stack_into_buffer else t.collate(samples)
        if t.preprocess is not None:
            x = t.preprocess(x)
        t1 = clock()
        x = self._to_device(x, t.device)
        with self._inference_mode():
            y = t.model(x)
        if self._sync is not None:
            self._sync()
        t2 = clock()
        out = t.postprocess(y) if t.postprocess is not None else None
        t3 = clock()
        st = self.stage_times
        st["preprocess"].append(t1 - t0)
        st["dnn"].append(t2 - t1)
        st["postprocess"].append(t3 - t2)
        return out


def _host_tensor_bytes(x: Any) -> int:
    """Bytes of the host tensors in a batch (a tensor, or lists/tuples/dicts of them)."""
    return sum(int(t.nbytes) for t in iter_tensors(x) if t.device.type == "cpu")


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


_STOP = object()
_FLUSH = object()


class Batcher:
    """One worker thread: batches enqueued samples and runs them on a system.

    ``submit(tokens, indices)`` enqueues samples (tokens are whatever the caller completes them by: LoadGen
    ids, or request handles). ``on_done(tokens, responses)`` is called from the worker. An exception in the
    system is kept in ``error`` and switches the worker to abort mode: from then on samples are completed
    at once without running the system (``hold_on_abort`` instead holds them until :meth:`flush`, which a
    Server run needs so that LoadGen hits its outstanding-query limit and ends early).
    """

    def __init__(self, system: SystemUnderTest, batch: int, max_wait_us: float,
                 on_done: Callable[[list[Any], Sequence[Any] | None], None],
                 latencies: LatencyLog | None = None, on_error: Callable[[BaseException], None] | None = None,
                 hold_on_abort: bool = False, spin_us: float = 0.0) -> None:
        self.system = system
        self.batch = max(1, int(batch))
        self.max_wait_s = max_wait_us / 1e6
        self.on_done = on_done
        self.on_error = on_error
        self.latencies = latencies
        self.hold_on_abort = hold_on_abort
        self.spin_s = max(0.0, spin_us) / 1e6
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.aborted = threading.Event()
        self._complete_at_once = False
        self.flushed = threading.Event()
        self.batches = 0
        self.samples = 0
        self.first_issue: float | None = None
        self.last_done: float | None = None
        self._thread = threading.Thread(target=self._run, name="aibench-batcher", daemon=True)

    # -- called by load generators (any thread) --------------------------------------------------------
    def submit(self, tokens: Sequence[Any], indices: Sequence[int]) -> None:
        if self._complete_at_once:  # aborted: answer on the caller's thread, no hop through the worker
            self.on_done(list(tokens), None)
            return
        self.q.put((tokens, indices, time.perf_counter()))

    def flush(self) -> None:
        self.flushed.set()
        if self.aborted.is_set():
            self._complete_at_once = True
        self.q.put(_FLUSH)

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self.aborted.set()
        self._complete_at_once = not self.hold_on_abort
        self.q.put(_FLUSH)  # wake the worker

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def worker_ident(self) -> int | None:
        return self._thread.ident

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads it runs (the driver leaves without them if they outlast an interruption's grace)."""
        return [self._thread]

    def stop(self, timeout: float = 30.0) -> None:
        self.q.put(_STOP)
        self._thread.join(timeout)

    # -- the worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        init = getattr(self.system, "worker_init", None)
        if init is not None:
            init()
        q = self.q
        batch = self.batch
        max_wait = self.max_wait_s
        perf = time.perf_counter
        sleep = time.sleep
        lat = self.latencies
        # Pending chunks as LoadGen handed them over: [tokens, indices, issue time, read position]. Batches
        # are sliced out of them (never copied wholesale, never deleted from the front: a whole Offline query
        # arrives as one chunk).
        pending: collections.deque[list[Any]] = collections.deque()
        npend = 0
        held: list[Any] = []
        stopping = False
        while not stopping:
            if npend == 0:
                if self.spin_s > 0:  # poll (mostly without the GIL) before sleeping on the queue
                    spin_end = perf() + self.spin_s
                    empty = q.empty
                    while empty() and perf() < spin_end:
                        sleep(0)
                item = q.get()
                if item is _STOP:
                    break
                if item is not _FLUSH and item[1]:
                    pending.append([item[0], item[1], item[2], 0])
                    npend += len(item[1])
                    if self.first_issue is None:
                        self.first_issue = item[2]
            # Fill the batch: take what is queued; wait up to max_wait for the rest.
            deadline = None
            while npend < batch:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    if max_wait <= 0 or npend == 0:
                        break
                    if deadline is None:
                        deadline = perf() + max_wait
                    left = deadline - perf()
                    if left <= 0:
                        break
                    try:
                        item = q.get(timeout=left)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                if item is not _FLUSH and item[1]:
                    pending.append([item[0], item[1], item[2], 0])
                    npend += len(item[1])
            if self.aborted.is_set():
                # Abort mode: never run the system again; complete at once, or hold until LoadGen has
                # stopped issuing (Server), then complete.
                for chunk in pending:
                    held.extend(chunk[0][chunk[3]:])
                pending.clear()
                npend = 0
                if held and (self.flushed.is_set() or not self.hold_on_abort):
                    self.on_done(held, None)
                    held = []
                continue
            if npend == 0:
                continue
            chunk = pending[0]
            ctoks, cidx, ct, pos = chunk
            avail = len(cidx) - pos
            if avail >= batch or len(pending) == 1:  # one chunk: slice (or take it whole)
                k = min(batch, avail)
                if pos == 0 and k == len(cidx):
                    bt, bi = ctoks, cidx
                else:
                    bt, bi = ctoks[pos:pos + k], cidx[pos:pos + k]
                groups: list[tuple[float, int]] = [(ct, k)]
                if pos + k >= len(cidx):
                    pending.popleft()
                else:
                    chunk[3] = pos + k
            else:  # several small chunks (Server, MultiStream): gather up to a batch
                bt, bi, groups = [], [], []
                need = batch
                while need and pending:
                    chunk = pending[0]
                    ctoks, cidx, ct, pos = chunk
                    avail = len(cidx) - pos
                    k = min(avail, need)
                    bt.extend(ctoks[pos:pos + k])
                    bi.extend(cidx[pos:pos + k])
                    groups.append((ct, k))
                    need -= k
                    if k == avail:
                        pending.popleft()
                    else:
                        chunk[3] = pos + k
            npend -= len(bi)
            try:
                responses = self.system.issue(bi)
            except BaseException as exc:  # the model failed: record it and end the run promptly
                self.abort(exc)
                if self.on_error is not None:
                    self.on_error(exc)
                held.extend(bt)
                continue
            done = perf()
            self.on_done(bt, responses)
            self.batches += 1
            self.samples += len(bi)
            self.last_done = done
            if lat is not None:
                for t_issue, n in groups:
                    lat.add_group(t_issue, n, done)
        for chunk in pending:
            held.extend(chunk[0][chunk[3]:])
        if held:
            self.on_done(held, None)
