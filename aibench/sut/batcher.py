"""The one dynamic batcher: which queued samples go together into the next batch, and when.

:class:`BatchQueue` is the rule alone, with no thread and no clock of its own (the caller passes the time),
so it is tested with a fake clock and shared by every system that batches: the in-process worker thread,
the worker-process pool's dispatcher and the DNN service.

The rule is Triton's dynamic batcher: a batch goes as soon as ``max_batch`` samples are queued, or when the
*oldest* queued sample has waited ``max_queue_delay_s`` since it was queued, whichever comes first. The
delay counts from when the sample was queued, not from when a worker came to look (TorchServe counts from
the worker's poll, so a request can wait longer than its setting: pytorch/serve#2478). A delay of 0 takes
whatever is queued at that moment. Samples leave in arrival order.

Samples arrive in chunks (one LoadGen query: one sample in SingleStream and Server, eight in MultiStream,
an entire Offline run of millions in one). Chunks are kept as they came and batches are sliced out of them:
a huge chunk is never copied wholesale, nor deleted from the front.

:class:`Intake` is the one gather loop on top of it: what ``submit`` hands over from any thread, fed into
the queue on the thread that owns it, which blocks until a batch is due (the batching worker below and the
worker-process pool's dispatcher both use it). :class:`BatchingSystem` is the one batching worker: a
:class:`~aibench.sut.SystemUnderTest` whose ``submit`` only enqueues, and whose worker thread forms
batches by the rule and computes each with the subclass's ``execute(indices)`` (the in-process system;
the local side of a split network). :class:`Answers` is what every system here does with its answers
after an abort (answer at once, or hold until the flush); the worker-process pool uses it too.

Measured history of the hand-off and the polling (docs/loadgen.md, "Overhead").
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aibench.sut import Capabilities, Completion, SutReport, SystemUnderTest, Token


@dataclass
class Batch:
    """Samples taken together: their completion tokens and sample indices, and ``groups``: (time queued,
    count) for each run of samples that were queued together, in order (for per-sample latencies)."""

    tokens: Sequence[Any]
    indices: Sequence[int]
    groups: list[tuple[float, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


class BatchQueue:
    """Queued samples and the batching rule. Not thread-safe: one thread (a batcher's worker, a
    dispatcher, an event loop) owns it."""

    def __init__(self, max_batch: int, max_queue_delay_s: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not max_queue_delay_s >= 0:  # also refuses NaN
            raise ValueError("max_queue_delay_s must be >= 0")
        self.max_batch = int(max_batch)
        self.max_queue_delay_s = float(max_queue_delay_s)
        # [tokens, indices, time queued, read position]
        self._chunks: collections.deque[list[Any]] = collections.deque()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, tokens: Sequence[Any], indices: Sequence[int], queued_at: float) -> None:
        """Queue one chunk (``tokens[i]`` completes ``indices[i]``), queued at ``queued_at``."""
        if len(indices):
            self._chunks.append([tokens, indices, queued_at, 0])
            self._n += len(indices)

    @property
    def oldest(self) -> float | None:
        """When the oldest sample still queued was queued (None when empty)."""
        return self._chunks[0][2] if self._chunks else None

    def wait_s(self, now: float) -> float | None:
        """How long from ``now`` until a batch is due: 0 when one is due now, None when nothing is queued
        (wait for work)."""
        if not self._n:
            return None
        if self._n >= self.max_batch:
            return 0.0
        return max(0.0, self._chunks[0][2] + self.max_queue_delay_s - now)

    def due(self, now: float) -> bool:
        """A batch should go now: a full one is queued, or the oldest sample's delay is spent."""
        return self.wait_s(now) == 0.0

    def take(self, limit: int | None = None) -> Batch:
        """The next batch: up to ``limit`` (default ``max_batch``) samples, oldest first. Taking does not
        check :meth:`due`: a caller that flushes, or a dispatcher that sends several batches in one
        message, takes when it decides to."""
        want = self.max_batch if limit is None else max(1, int(limit))
        chunks = self._chunks
        if not chunks:
            return Batch([], [])
        ctoks, cidx, queued, pos = chunks[0]
        avail = len(cidx) - pos
        if avail >= want or len(chunks) == 1:  # slice one chunk (or take it whole, uncopied)
            k = min(want, avail)
            if pos == 0 and k == len(cidx):
                batch = Batch(ctoks, cidx, [(queued, k)])
            else:
                batch = Batch(ctoks[pos:pos + k], cidx[pos:pos + k], [(queued, k)])
            if pos + k >= len(cidx):
                chunks.popleft()
            else:
                chunks[0][3] = pos + k
            self._n -= k
            return batch
        tokens: list[Any] = []
        indices: list[int] = []
        groups: list[tuple[float, int]] = []
        need = want
        while need and chunks:  # several small chunks (Server, MultiStream): gather up to the limit
            chunk = chunks[0]
            ctoks, cidx, queued, pos = chunk
            k = min(len(cidx) - pos, need)
            tokens.extend(ctoks[pos:pos + k])
            indices.extend(cidx[pos:pos + k])
            groups.append((queued, k))
            need -= k
            if pos + k >= len(cidx):
                chunks.popleft()
            else:
                chunk[3] = pos + k
        self._n -= len(indices)
        return Batch(tokens, indices, groups)

    def drain(self) -> list[Any]:
        """Remove everything queued; return the tokens (to be answered without computing: an abort)."""
        out: list[Any] = []
        for ctoks, _cidx, _queued, pos in self._chunks:
            out.extend(ctoks[pos:])
        self._chunks.clear()
        self._n = 0
        return out


_STOP = object()
_FLUSH = object()
_WAKE = object()

T = TypeVar("T")


def get_within(q: queue.SimpleQueue[T], timeout: float) -> T:
    """``q.get(timeout=timeout)`` for the queue's one consumer, but never blocked past the timeout by CPython.

    CPython's ``SimpleQueue.get`` (the C one; 3.11 to at least 3.13) that first finds the queue empty takes
    its internal lock without waiting, then recomputes the time left; if the deadline has already passed by
    then (the thread was preempted there for longer than ``timeout``: a loaded machine, a short remaining
    delay), the time left is negative, which its lock wait takes as "forever": the get blocks until the next
    ``put``, however long that is. That happens only when the internal lock is free on entry, which it is
    after every get that returned an item. Measured on a CPU shared with one busy process: about 10 such
    lost timeouts per second of back-to-back ``get(timeout=1e-9)``; with this function, none.

    A ``get_nowait`` that finds the queue empty leaves that lock held by this consumer, so the timed get
    that follows waits on the lock itself, which only a ``put`` releases (after appending): it returns an
    item or raises ``queue.Empty`` within its timeout. (A signal interrupting that wait just at its deadline
    could still lose it; the consumers here are worker threads, which run no signal handlers, and an abort
    puts a wake-up in the queue.)"""
    try:
        return q.get_nowait()
    except queue.Empty:
        return q.get(timeout=timeout)


class Intake:
    """The one gather loop of every batching system: what ``submit`` hands over from any thread (a
    ``SimpleQueue.put``, the cheapest hand-off there is), fed into a :class:`BatchQueue` on the one thread that
    owns it (a batching worker, the pool's dispatcher), which :meth:`next_due` blocks until a batch is due by
    the rule. After an abort what is queued is answered without computing (:class:`Answers`), at once or held.

    **Polling**: an idle owner polls for ``spin_s`` before blocking (a blocked thread is slow to wake);
    between polls it sleeps 0 s, which releases the GIL for the submitting thread (measured against the
    alternatives: docs/loadgen.md, "Overhead")."""

    __slots__ = ("ans", "bq", "flushing", "q", "spin_s")

    def __init__(self, bq: BatchQueue, ans: Answers, spin_s: float = 0.0) -> None:
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.bq = bq
        self.ans = ans
        self.spin_s = spin_s
        self.flushing = False  # the driver flushed: a batch goes without waiting for the delay

    # -- any thread --------------------------------------------------------------------------------------
    def put(self, tokens: Sequence[Token], indices: Sequence[int], queued_at: float) -> None:
        self.q.put((tokens, indices, queued_at))

    def flush(self) -> None:
        self.q.put(_FLUSH)

    def wake(self) -> None:
        """Look again (after an abort)."""
        self.q.put(_WAKE)

    def stop(self) -> None:
        self.q.put(_STOP)

    def idle(self) -> bool:
        """Nothing handed over and nothing queued (a hint when read from another thread)."""
        return self.q.empty() and not len(self.bq)

    # -- the owning thread -------------------------------------------------------------------------------
    def _take(self, item: Any) -> bool:
        """One handed-over item; False on stop."""
        if item.__class__ is tuple:
            self.bq.add(*item)
        elif item is _STOP:
            return False
        elif item is _FLUSH:
            self.flushing = True
        return True

    def next_due(self) -> bool:
        """Block until a batch is due (full, the oldest sample's delay spent, or flushing); the caller then
        takes it from ``bq``. False once stopped: the caller answers ``bq.drain()`` and ends."""
        q, bq, ans, take = self.q, self.bq, self.ans, self._take
        perf = time.perf_counter
        empty, get_nowait, add = q.empty, q.get_nowait, bq.add
        while True:
            if not len(bq):  # idle: wait for work
                if self.spin_s > 0 and empty():  # poll (mostly without the GIL) before sleeping on the queue
                    end = perf() + self.spin_s
                    sleep = time.sleep
                    while empty() and perf() < end:
                        sleep(0)
                if not take(q.get()):
                    return False
            while not empty():  # take everything else that is handed over (per query: keep it lean)
                item = get_nowait()
                if item.__class__ is tuple:
                    add(item[0], item[1], item[2])
                elif not take(item):
                    return False
            if ans.aborted:  # never compute again; answer at once, or hold until the flush
                ans.drop(bq.drain())
                continue
            if not len(bq):
                continue
            if not self.flushing:
                wait = bq.wait_s(perf())
                if wait:  # not due yet: wait for more work until the oldest sample's deadline
                    try:
                        item = get_within(q, wait)
                    except queue.Empty:
                        continue
                    if not take(item):
                        return False
                    continue
            return True


class Answers:
    """Where one test's answers go: ``on_complete``, and what happens to answers once the system is
    aborted (a failure or the driver's abort). Then every answer is given without computing
    (``responses`` and ``issued`` None): at once, or, with ``hold_on_abort``, held until :meth:`flush`.
    Thread-safe: completions, aborts and the flush may come from different threads."""

    __slots__ = ("_held", "_lock", "aborted", "flushed", "hold", "on_complete", "on_error")

    def __init__(self, on_complete: Completion, hold_on_abort: bool = False,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.on_complete = on_complete
        self.hold = hold_on_abort
        self.on_error = on_error
        self.aborted = False
        self.flushed = False
        self._held: list[Token] = []
        self._lock = threading.Lock()

    def abort(self) -> bool:
        """Switch to abort mode; True the first time."""
        with self._lock:
            first = not self.aborted
            self.aborted = True
        return first

    def complete(self, tokens: Sequence[Token], responses: Sequence[Any] | None, issued: Any) -> None:
        """Computed answers (given without computing once aborted)."""
        if self.aborted:
            self.drop(tokens)
        else:
            self.on_complete(tokens, responses, issued)

    def drop(self, tokens: Sequence[Token]) -> None:
        """Answer ``tokens`` without computing: at once, or held until the flush."""
        if not len(tokens):
            return
        if self.hold and not self.flushed:
            with self._lock:
                if not self.flushed:
                    self._held.extend(tokens)
                    return
        self.on_complete(list(tokens), None, None)

    def flush(self) -> None:
        """The driver issues nothing more: give what is held, and hold nothing from now on."""
        with self._lock:
            self.flushed = True
            held, self._held = self._held, []
        if held:
            self.on_complete(held, None, None)

    def release(self, tokens: Sequence[Token]) -> None:
        """The system stops: answer ``tokens`` and everything held, whatever the hold, and hold nothing from
        now on (a late answer after the stop is given, not held where no flush will come)."""
        with self._lock:
            self.flushed = True
            held, self._held = self._held, []
        held.extend(tokens)
        if held:
            self.on_complete(held, None, None)


class BatchingSystem(SystemUnderTest):
    """A system under test that batches on one worker thread: ``submit`` enqueues (a ``SimpleQueue.put``),
    the worker forms batches by :class:`BatchQueue`'s rule and computes each with :meth:`execute`, one at
    a time, and hands the answers to the driver's completion.

    Subclasses provide :meth:`execute`, :meth:`stage`, :meth:`unstage`, :meth:`describe`, and may record
    stage durations (``self.stage_times[name].append(seconds)``, for the stages they declare) and bytes
    (``self.bytes_in``/``bytes_out``) while computing.

    **Inline**: when the driver allows it (``start(inline=True)``: it waits for each query anyway, as in
    SingleStream and MultiStream) and the system declares ``inline_ok``, a query that finds the system idle
    (nothing queued, nothing computing) is computed on the submitting thread and answered before ``submit``
    returns: no thread hand-off (what that saves: docs/loadgen.md, "Overhead"). A query that finds
    it busy is queued as usual. One lock keeps computations one at a time, whichever thread runs them. The
    worker does not poll while inline is on: every query that could find it idle runs inline.

    **Polling**: otherwise an idle worker polls for ``spin_us`` before blocking (:class:`Intake`).

    **Faults**: an exception in :meth:`execute` is kept (``report().error``), ``on_error`` is called once,
    and the system switches to abort mode (:class:`Answers`): it never computes again.
    """

    def __init__(self, name: str, num_samples: int, capabilities: Capabilities) -> None:
        self.name = name
        self.num_samples = num_samples
        self.capabilities = capabilities
        self._run = threading.Lock()  # held while computing, on whichever thread
        self._thread_state = threading.local()  # .inited: worker_init ran on this thread (ids are recycled)
        self._thread: threading.Thread | None = None
        self._answers = Answers(_nowhere)
        self._intake = Intake(BatchQueue(1), self._answers)
        self._inline = False
        self._max_batch = 1
        self._on_error: Callable[[BaseException], None] | None = None
        self.reset_report()

    # -- to implement -----------------------------------------------------------------------------------
    def execute(self, indices: Sequence[int]) -> Sequence[Any] | None:
        """Compute one batch now, on the calling thread; one response per index (or None)."""
        raise NotImplementedError

    def worker_init(self) -> None:
        """Called once on each thread before it first computes (the worker; a submitting thread inline)."""

    # -- the contract -----------------------------------------------------------------------------------
    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"{self.name}: started twice (stop it first)")
        self._max_batch = max(1, int(max_batch))
        self._answers = Answers(on_complete, hold_on_abort, on_error)
        self._on_error = on_error
        self._inline = bool(inline and self.capabilities.inline_ok)
        spin_s = 0.0 if self._inline else max(0.0, spin_us) / 1e6
        self._intake = Intake(BatchQueue(self._max_batch, max(0.0, max_queue_delay_us) / 1e6), self._answers,
                              spin_s)
        self._thread = threading.Thread(target=self._work, args=(self._intake,), name="aibench-batcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, tokens: Sequence[Token], indices: Sequence[int]) -> None:
        t = time.perf_counter()
        ans = self._answers
        if ans.aborted:  # answered at once (or held), no hop through the worker
            ans.drop(tokens)
            return
        if self._inline and len(indices) <= self._max_batch and self._run.acquire(False):
            if self._intake.idle():  # idle: nothing to batch it with, nothing before it
                self._compute_inline(tokens, indices, t, ans)
                return
            self._run.release()
        self._intake.put(tokens, indices, t)

    def flush(self) -> None:
        self._answers.flush()
        self._intake.flush()

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        self._answers.abort()
        self._intake.wake()

    def stop(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is None:
            return True
        self._intake.stop()
        t.join(timeout)
        return not t.is_alive()

    def report(self) -> SutReport:
        return SutReport(batches=self._batches, samples=self._samples, error=self._error,
                         stages={k: list(v) for k, v in self.stage_times.items()}, bytes_in=self.bytes_in,
                         bytes_out=self.bytes_out, extra={"inline": self._inline_batches})

    def reset_report(self) -> None:
        self._batches = 0
        self._samples = 0
        self._inline_batches = 0
        self._error: BaseException | None = None
        self.stage_times: dict[str, array[float]] = {name: array("d") for name in self.capabilities.stages}
        self.bytes_in: int | None = 0 if self.capabilities.reports_bytes else None
        self.bytes_out: int | None = None

    # -- computing --------------------------------------------------------------------------------------
    def _fail(self, exc: BaseException, ans: Answers) -> None:
        if self._error is None:
            self._error = exc
        if ans.abort() and ans.on_error is not None:
            ans.on_error(exc)

    def _compute_inline(self, tokens: Sequence[Token], indices: Sequence[int], t: float, ans: Answers) -> None:
        """On the submitting thread, with the compute lock held (released here)."""
        failed: Exception | None = None
        try:
            self._init_thread()
            responses = self.execute(indices)
            self._batches += 1
            self._inline_batches += 1
            self._samples += len(indices)
        except Exception as exc:  # the model failed; a KeyboardInterrupt is the caller's own (main thread)
            failed = exc
        finally:
            self._run.release()
        if failed is not None:
            self._fail(failed, ans)
            ans.drop(tokens)
        elif ans.aborted:
            ans.drop(tokens)
        else:
            ans.on_complete(tokens, responses, ((t, len(indices)),))

    def _init_thread(self) -> None:
        if not getattr(self._thread_state, "inited", False):
            self.worker_init()
            self._thread_state.inited = True

    def _work(self, intake: Intake) -> None:
        bq, ans = intake.bq, intake.ans
        try:
            self._init_thread()
            self._batches_loop(intake)
        except BaseException as exc:  # worker_init or the answering failed: never leave a query unanswered
            self._fail(exc, ans)
            while intake.next_due():  # aborted: whatever comes is answered without computing until the stop
                ans.drop(bq.take().tokens)
        ans.release(bq.drain())

    def _batches_loop(self, intake: Intake) -> None:
        bq, ans, run, execute = intake.bq, intake.ans, self._run, self.execute
        on_complete = ans.on_complete
        while intake.next_due():
            batch = bq.take()
            failed: BaseException | None = None
            with run:
                try:
                    responses = execute(batch.indices)
                    self._batches += 1
                    self._samples += len(batch.indices)
                except BaseException as exc:  # the model failed: record it and end the run promptly
                    failed = exc
            if failed is not None:
                self._fail(failed, ans)
                ans.drop(batch.tokens)
            elif ans.aborted:
                ans.drop(batch.tokens)
            else:
                on_complete(batch.tokens, responses, batch.groups)


def _nowhere(_tokens: Sequence[Token], _responses: Any, _issued: Any) -> None:
    """The completion of a system that was never started."""
