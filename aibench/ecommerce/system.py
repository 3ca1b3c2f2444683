"""The in-process search path as a system under test: any load driver (closed-loop users, LoadGen) drives it.

:class:`ShopSystem` wraps one :class:`~aibench.ecommerce.path.ShopPath`: ``submit`` only queues a query; a
pool of ``workers`` threads (each with its own read-only SQLite connection, as the path keeps one per
thread) serves the queue in arrival order, one query at a time. Sample ``i`` is the ``i``-th of the queries
drawn from the store's sessions (:meth:`ShopPath.sample`).

Every served query is recorded: when it was submitted, when a worker took it, when it was answered, its
outcome (``ok``, ``no_hits``, ``failed``), each module's seconds and, when a module raised
(:class:`~aibench.ecommerce.path.ModuleFailure`), which one and why, and the serving thread's CPU seconds in
the path (the run's harness CPU share is the process's CPU less these). A failed query is answered (the user
sees an error page) and counted; the run goes on. Only a fault of this wrapper itself fails the system.
:func:`summarize_records` turns the records of a measured window into the result's ``parts.module`` and
figures (:mod:`aibench.ecommerce.load`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aibench.ecommerce.path import ModuleFailure, Query, ShopPath
from aibench.sut import Capabilities, Completion, SutReport, SystemUnderTest, Token
from aibench.sut.batcher import Answers

KEEP_ERRORS = 20  # distinct failure messages kept in the report (all are counted)


@dataclass(frozen=True)
class Record:
    """One served query: perf_counter times of its submit, start (a worker took it) and end; its outcome;
    each module's seconds (None when it failed); the failed module and its message."""

    submitted: float
    started: float
    ended: float
    status: str  # ok | no_hits | failed
    seconds: dict[str, float] | None
    module: str | None = None
    error: str | None = None
    cpu: float = 0.0  # the serving thread's CPU seconds in the path (time.thread_time around handle)


class ShopSystem(SystemUnderTest):
    """The in-process path served by a pool of ``workers`` threads (see the module docstring)."""

    def __init__(self, path: ShopPath, queries: Sequence[Query], workers: int = 1,
                 name: str = "scenario/ecommerce", threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if not queries:
            raise ValueError("no queries to serve")
        self.name = name
        self.path = path
        self.queries = list(queries)
        self.num_samples = len(self.queries)
        self.workers = workers
        self.capabilities = Capabilities()
        import torch

        self._torch = torch
        self._threads = threads if threads is not None else torch.get_num_threads()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool: list[threading.Thread] = []
        self._answers: Answers | None = None
        self._lock = threading.Lock()
        # The run's own figures (per-module parts, quality, CPU, updates, deployment): set by the scenario,
        # called once by the driver however the run ends (an interrupted record keeps them, marked partial).
        self.recorder: Callable[[Any, str | None], None] | None = None
        self.reset_report()

    def record(self, result: Any, partial: str | None = None) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder(result, partial)

    # -- staging: the queries are in memory already -----------------------------------------------------
    def stage(self, indices: Sequence[int]) -> None:
        return None

    def unstage(self, indices: Sequence[int]) -> None:
        return None

    # -- a test --------------------------------------------------------------------------------------------
    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        self._answers = ans = Answers(on_complete, hold_on_abort, on_error)
        self._queue = q = queue.SimpleQueue()
        self._pool = [threading.Thread(target=self._work, args=(q, ans), name=f"aibench-shop-{i}", daemon=True)
                      for i in range(self.workers)]
        for t in self._pool:
            t.start()

    def submit(self, tokens: Sequence[Token], indices: Sequence[int]) -> None:
        ans = self._answers
        if ans is None or ans.aborted:
            if ans is not None:
                ans.drop(tokens)
            return
        t = time.perf_counter()
        put = self._queue.put
        if len(indices) == 1:
            put((tokens, indices, t))
            return
        for token, index in zip(tokens, indices, strict=True):  # a many-sample query (Offline): one item each,
            put(([token], [index], t))                         # so every worker takes a share

    def flush(self) -> None:
        if self._answers is not None:
            self._answers.flush()

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        if self._answers is not None:
            self._answers.abort()
        for _ in self._pool:  # wake idle workers: each drains what is queued without serving it
            self._queue.put(_WAKE)

    def stop(self, timeout: float | None = None) -> bool:
        for _ in self._pool:
            self._queue.put(None)
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._pool:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        alive = [t for t in self._pool if t.is_alive()]
        leftover: list[Any] = []
        while True:  # anything queued after the stop is answered without being served
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item is not _WAKE:
                leftover.extend(item[0])
        if leftover and self._answers is not None:
            self._answers.release(leftover)
        return not alive

    # -- what happened -------------------------------------------------------------------------------------
    def report(self) -> SutReport:
        with self._lock:
            records = list(self.records)
        return SutReport(batches=len(records), samples=len(records), error=self._error,
                         extra={"records": records, "workers": self.workers})

    def reset_report(self) -> None:
        with self._lock:
            self.records: list[Record] = []
        self._error: BaseException | None = None

    def describe(self) -> dict[str, Any]:
        info = self.path.info
        return {"num_samples": self.num_samples, "stage": "app",
                "data": f"(user, query) pairs drawn from the store's sessions ({info.path})",
                "flops_per_sample": None,
                "flops_note": "the path is mostly search and database work: its FLOPs are not counted",
                "device": "cpu"}

    # -- serving -------------------------------------------------------------------------------------------
    def _work(self, q: queue.SimpleQueue[Any], ans: Answers) -> None:
        self._torch.set_num_threads(self._threads)  # OpenMP's count is per thread: carry the run's over
        perf = time.perf_counter
        cpu = time.thread_time
        handle = self.path.handle
        queries = self.queries
        while True:
            item = q.get()
            if item is None:
                return
            if item is _WAKE:
                continue
            tokens, indices, submitted = item
            if ans.aborted:
                ans.drop(tokens)
                continue
            try:
                statuses = []
                for i in indices:
                    started, c0 = perf(), cpu()
                    try:
                        page, seconds = handle(queries[i])
                        rec = Record(submitted, started, perf(), page.status, seconds, cpu=cpu() - c0)
                    except ModuleFailure as exc:
                        rec = Record(submitted, started, perf(), "failed", None, exc.module, str(exc), cpu() - c0)
                    with self._lock:
                        self.records.append(rec)
                    statuses.append(rec.status)
                ans.complete(tokens, statuses, [(submitted, len(indices))])
            except Exception as exc:  # a fault of this wrapper (not of a module): the system fails
                if self._error is None:
                    self._error = exc
                if ans.abort() and ans.on_error is not None:
                    ans.on_error(exc)
                ans.drop(tokens)


_WAKE = object()
