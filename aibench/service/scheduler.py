"""Requests → dynamic batches → free instances, on the event loop.

Each model has one :class:`~aibench.sut.batcher.BatchQueue` (the one batching rule: a batch goes when
``max_batch`` rows are queued or when the *oldest* queued row has waited ``max_queue_delay``; with a delay
of 0, whatever is queued when an instance is free). A request of ``k`` rows is queued as ``k`` samples, so
rows of several requests share a batch and a request larger than ``max_batch`` is split over several
batches (every model is row-wise: see :mod:`aibench.service.models`); its output is put back together in
order. Whenever an instance is free, the model whose due batch is oldest goes first. A *full* batch may also
go to an instance that is still computing (at most one waiting in its socket, see
:mod:`aibench.service.instances`), so the instance never idles while the server hands it the next batch; a
partial batch never does: it waits and may still grow.

A request that names rows of the model's *resident inputs* (``aibench serve --resident-inputs``) carries
int32 row numbers instead of float32 rows; it is batched in a queue of its own (a batch is all tensors or all
row numbers) and its batch goes to the instance as row numbers, which the instance gathers on its device.

A request's bytes are not copied when its batch is exactly that request (the common case of a client that
sends whole batches); otherwise the rows are gathered into one buffer for the instance.

:class:`ByteBudget` bounds the memory that requests in the server may hold (their input and output), so a
flood of large requests is refused (503) instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aibench.service.instances import Instance, InstanceLost, InstancePool
from aibench.service.models import ModelSpec
from aibench.service.stats import ModelStats
from aibench.sut.batcher import Batch, BatchQueue


class ServiceError(RuntimeError):
    """A request accepted but not answered: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class ByteBudget:
    """Bytes that requests in the server may hold at once; a reservation either fits or is refused."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self.peak = 0

    def try_reserve(self, n: int) -> bool:
        if n < 0 or self.used + n > self.limit:
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)


@dataclass(eq=False)
class Request:
    """One query: ``rows`` rows of float32 input in ``data``; ``future`` gets the output bytes."""

    model: str
    rows: int
    data: Any  # bytes-like, rows × row_bytes
    future: asyncio.Future[Any]
    t_received: int  # monotonic_ns when the server had it whole
    t_queued: int = 0
    done_rows: int = 0
    out: Any = None  # bytearray when the output comes in several batches
    queue_ns: int | None = None
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    batches: list[int] = field(default_factory=list)  # sizes of the batches that computed it
    resident: bool = False  # ``data`` holds int32 row numbers of the model's resident inputs

    def timing(self) -> dict[str, Any]:
        """What the server spent on this request (the response's parameters)."""
        return {"queue_ns": self.queue_ns or 0, "compute_input_ns": self.input_ns,
                "compute_infer_ns": self.infer_ns, "compute_output_ns": self.output_ns,
                "batch_size": self.batches[0] if len(self.batches) == 1 else list(self.batches)}


QueueKey = tuple[str, bool]  # (model, resident)


class Scheduler:
    def __init__(self, specs: dict[str, ModelSpec], max_batch: dict[str, int], delay_s: dict[str, float],
                 pool: InstancePool, stats: dict[str, ModelStats], resident: frozenset[str] = frozenset()) -> None:
        self.specs = specs
        self.keys = {name: i for i, name in enumerate(specs)}
        # one queue per model, and one more for the requests naming its resident inputs (when it has them)
        self.queues: dict[QueueKey, BatchQueue] = {
            (name, res): BatchQueue(max_batch[name], delay_s[name])
            for name in specs for res in ((False, True) if name in resident else (False,))}
        self.pool = pool
        self.stats = stats
        self.flushing = False
        self.in_flight = 0  # requests submitted and not yet finished
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- requests ------------------------------------------------------------------------------------------
    def submit(self, model: str, rows: int, data: Any, t_received: int, resident: bool = False) -> Request:
        """Queue a request; its ``future`` resolves to the output bytes (rows × output row bytes) or raises
        :class:`ServiceError`. ``resident``: ``data`` is ``rows`` int32 row numbers of the model's resident
        inputs (only for a model that has them)."""
        loop = asyncio.get_running_loop()
        req = Request(model, rows, data, loop.create_future(), t_received, resident=resident)
        if self.pool.live == 0:
            req.future.set_exception(ServiceError("no instance is running: the server cannot compute", 503))
            return req
        req.t_queued = time.monotonic_ns()
        self.in_flight += 1
        self._idle.clear()
        req.future.add_done_callback(self._finished)
        self.queues[(model, resident)].add([req] * rows, range(rows), time.perf_counter())
        self.kick()
        return req

    def _finished(self, fut: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def flush(self) -> None:
        """From now on every queued row is due (draining: nothing waits for a fuller batch)."""
        self.flushing = True
        self.kick()

    # -- dispatch ------------------------------------------------------------------------------------------
    def kick(self) -> None:
        """Start every batch that is due while an instance is free; else wake up when the next is due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pool.live == 0:
            self._fail_queued(ServiceError("no instance is running: the server cannot compute", 503))
            return
        while True:
            now = time.perf_counter()
            best: QueueKey | None = None
            best_oldest = 0.0
            soonest: float | None = None
            for key, q in self.queues.items():
                wait = q.wait_s(now)
                if wait is None:
                    continue
                if wait > 0 and not self.flushing:
                    soonest = wait if soonest is None else min(soonest, wait)
                    continue
                oldest = q.oldest or now
                if best is None or oldest < best_oldest:
                    best, best_oldest = key, oldest
            if best is None:
                if soonest is not None:
                    self._timer = asyncio.get_running_loop().call_later(soonest, self.kick)
                return
            q = self.queues[best]
            inst = self.pool.take(full=len(q) >= q.max_batch)
            if inst is None:
                return  # an instance that frees up kicks again
            self._dispatch(inst, best, q.take())

    def _fail_queued(self, exc: ServiceError) -> None:
        for q in self.queues.values():
            for req in {id(r): r for r in q.drain()}.values():
                if not req.future.done():
                    self._fail(req, exc)

    def _fail(self, req: Request, exc: ServiceError) -> None:
        if not req.future.done():
            self.stats[req.model].record_failure(time.monotonic_ns() - req.t_received)
            req.future.set_exception(exc)

    def _dispatch(self, inst: Instance, queue: QueueKey, batch: Batch) -> None:
        """Send ``batch`` to ``inst`` now (so the instance's room is taken before the next decision);
        :meth:`_complete` runs when its output arrives."""
        model, resident = queue
        spec = self.specs[model]
        t_start = time.monotonic_ns()
        # Runs of rows that belong to one request: (request, first row, rows).
        segments: list[tuple[Request, int, int]] = []
        pos = 0
        for _queued, count in batch.groups:
            segments.append((batch.tokens[pos], int(batch.indices[pos]), count))
            pos += count
        rows = len(batch)
        rb = 4 if resident else spec.row_bytes  # an int32 row number, or the row itself
        first, start, count = segments[0]
        if len(segments) == 1 and start == 0 and count == first.rows:
            payload: Any = first.data  # the request is the batch: no copy
        else:
            buf = bytearray(rows * rb)
            at = 0
            for req, start, count in segments:
                buf[at:at + count * rb] = memoryview(req.data)[start * rb:(start + count) * rb]
                at += count * rb
            payload = buf
        try:
            entry = inst.send(self.keys[model], payload, "int32" if resident else "float32",
                              (rows,) if resident else (rows, *spec.input_shape))
        except InstanceLost as exc:
            self._fail_segments(segments, exc)
            return
        entry.future.add_done_callback(lambda fut: self._complete(fut, entry, model, rows, segments, t_start))

    def _fail_segments(self, segments: list[tuple[Request, int, int]], exc: BaseException) -> None:
        text = f"{exc}; the request was not answered" if isinstance(exc, InstanceLost) else str(exc)
        for req, _s, _c in segments:
            self._fail(req, ServiceError(text, 500))

    def _complete(self, fut: asyncio.Future[Any], entry: Any, model: str, rows: int,
                  segments: list[tuple[Request, int, int]], t_start: int) -> None:
        try:
            self._finish_batch(fut, entry, model, rows, segments, t_start)
        finally:
            self.kick()  # the instance has room again (or is gone): the next batch may go

    def _finish_batch(self, fut: asyncio.Future[Any], entry: Any, model: str, rows: int,
                      segments: list[tuple[Request, int, int]], t_start: int) -> None:
        exc = fut.exception()
        if exc is not None:
            self._fail_segments(segments, exc)
            return
        out = fut.result()
        spec = self.specs[model]
        _w_begin, w_input, w_infer, _w_output = entry.times
        t_end = time.monotonic_ns()
        # The batch began when it left the queue, or, if it waited in the instance's socket behind the
        # batch before it, when the instance finished that one. From then: compute_input until the input
        # was on the device (forming, sending, receiving), compute_infer the forward pass, compute_output
        # until the output was back here. The worker's stamps are CLOCK_MONOTONIC, as ours.
        t_begin = max(t_start, entry.prev_done)
        t_input = min(max(w_input, t_begin), t_end)
        t_infer = min(max(w_infer, t_input), t_end)
        input_ns, infer_ns, output_ns = t_input - t_begin, t_infer - t_input, t_end - t_infer
        self.stats[model].record_batch(rows, input_ns, infer_ns, output_ns)
        orb = spec.out_row_bytes
        out_view = memoryview(out.payload)
        at = 0  # the segment's first row in the batch
        for req, start, count in segments:
            part = out_view[at * orb:(at + count) * orb]
            at += count
            if req.future.done():
                continue  # failed already (another of its batches), or its client is gone
            if req.queue_ns is None:
                req.queue_ns = t_begin - req.t_queued
            req.input_ns += input_ns
            req.infer_ns += infer_ns
            req.output_ns += output_ns
            req.batches.append(rows)
            if count == req.rows:
                result: Any = part
            else:
                if req.out is None:
                    req.out = bytearray(req.rows * orb)
                req.out[start * orb:(start + count) * orb] = part
                result = req.out
            req.done_rows += count
            if req.done_rows == req.rows:
                self.stats[model].record_success(time.monotonic_ns() - req.t_received, req.queue_ns, req.input_ns,
                                                 req.infer_ns, req.output_ns)
                req.future.set_result(result)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
