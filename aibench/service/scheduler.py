"""Requests → dynamic batches → free instances, on the event loop.

Each model has one :class:`~aibench.sut.batcher.BatchQueue` (the one batching rule: a batch goes when
``max_batch`` rows are queued or when the *oldest* queued row has waited ``max_queue_delay``; with a delay
of 0, whatever is queued when an instance is free). A request of ``k`` rows is queued as ``k`` samples, so
rows of several requests share a batch and a request larger than ``max_batch`` is split over several
batches (every model is row-wise: see :mod:`aibench.service.models`); its output is put back together in
order. Whenever an instance is free, the model whose due batch is oldest goes first.

A request's bytes are not copied when its batch is exactly that request (the common case of a client that
sends whole batches); otherwise the rows are gathered into one buffer for the instance.

:class:`ByteBudget` bounds the memory that requests in the server may hold (their input and output), so a
flood of large requests is refused (503) instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibench.service.instances import BatchFailed, Instance, InstanceLost, InstancePool
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
    t_received: int  # perf_counter_ns when the server had it whole
    t_queued: int = 0
    done_rows: int = 0
    out: Any = None  # bytearray when the output comes in several batches
    queue_ns: int | None = None
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    batches: list[int] = field(default_factory=list)  # sizes of the batches that computed it

    def timing(self) -> dict[str, Any]:
        """What the server spent on this request (the response's parameters)."""
        return {"queue_ns": self.queue_ns or 0, "compute_input_ns": self.input_ns,
                "compute_infer_ns": self.infer_ns, "compute_output_ns": self.output_ns,
                "batch_size": self.batches[0] if len(self.batches) == 1 else list(self.batches)}


class Scheduler:
    def __init__(self, specs: dict[str, ModelSpec], max_batch: dict[str, int], delay_s: dict[str, float],
                 pool: InstancePool, stats: dict[str, ModelStats]) -> None:
        self.specs = specs
        self.keys = {name: i for i, name in enumerate(specs)}
        self.queues = {name: BatchQueue(max_batch[name], delay_s[name]) for name in specs}
        self.pool = pool
        self.stats = stats
        self.flushing = False
        self.in_flight = 0  # requests submitted and not yet finished
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.on_unavailable: Callable[[], None] | None = None

    # -- requests ------------------------------------------------------------------------------------------
    def submit(self, model: str, rows: int, data: Any, t_received: int) -> Request:
        """Queue a request; its ``future`` resolves to the output bytes (rows × output row bytes) or raises
        :class:`ServiceError`."""
        loop = asyncio.get_running_loop()
        req = Request(model, rows, data, loop.create_future(), t_received)
        if self.pool.live == 0:
            req.future.set_exception(ServiceError("no instance is running: the server cannot compute", 503))
            return req
        req.t_queued = time.perf_counter_ns()
        self.in_flight += 1
        self._idle.clear()
        req.future.add_done_callback(self._finished)
        self.queues[model].add([req] * rows, range(rows), time.perf_counter())
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
            if self.on_unavailable is not None:
                self.on_unavailable()
            return
        while True:
            now = time.perf_counter()
            best: str | None = None
            best_oldest = 0.0
            soonest: float | None = None
            for name, q in self.queues.items():
                wait = q.wait_s(now)
                if wait is None:
                    continue
                if wait > 0 and not self.flushing:
                    soonest = wait if soonest is None else min(soonest, wait)
                    continue
                oldest = q.oldest or now
                if best is None or oldest < best_oldest:
                    best, best_oldest = name, oldest
            if best is None:
                if soonest is not None:
                    self._timer = asyncio.get_running_loop().call_later(soonest, self.kick)
                return
            inst = self.pool.take()
            if inst is None:
                return  # a free instance kicks again
            batch = self.queues[best].take()
            task = asyncio.get_running_loop().create_task(self._execute(inst, best, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fail_queued(self, exc: ServiceError) -> None:
        for q in self.queues.values():
            for req in {id(r): r for r in q.drain()}.values():
                if not req.future.done():
                    self._fail(req, exc)

    def _fail(self, req: Request, exc: ServiceError) -> None:
        if not req.future.done():
            self.stats[req.model].record_failure(time.perf_counter_ns() - req.t_received)
            req.future.set_exception(exc)

    async def _execute(self, inst: Instance, model: str, batch: Batch) -> None:
        spec = self.specs[model]
        t_start = time.perf_counter_ns()
        # Runs of rows that belong to one request: (request, first row, rows).
        segments: list[tuple[Request, int, int]] = []
        pos = 0
        for _queued, count in batch.groups:
            segments.append((batch.tokens[pos], int(batch.indices[pos]), count))
            pos += count
        rows = len(batch)
        rb = spec.row_bytes
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
        for req, _s, _c in segments:
            if req.queue_ns is None:
                req.queue_ns = t_start - req.t_queued
        try:
            try:
                out, (w_in, w_infer, _w_out), t_sent = await inst.run(self.keys[model], rows, payload, spec.input_shape)
            finally:
                self.pool.release(inst)
        except InstanceLost as exc:
            for req, _s, _c in segments:
                self._fail(req, ServiceError(f"{exc}; the request was not answered", 500))
            return
        except BatchFailed as exc:
            for req, _s, _c in segments:
                self._fail(req, ServiceError(str(exc), 500))
            return
        total = time.perf_counter_ns() - t_start
        # compute_input: forming the batch and sending it, then the instance moving it to the device;
        # compute_infer: the forward pass; compute_output: everything else (the output to the host, back over
        # the socket), so that the three add up to the batch's whole time from leaving the queue.
        input_ns = min(total, (t_sent - t_start) + w_in)
        infer_ns = w_infer
        infer_ns = min(infer_ns, total - input_ns)
        output_ns = total - input_ns - infer_ns
        self.stats[model].record_batch(rows, input_ns, infer_ns, output_ns)
        orb = spec.out_row_bytes
        out_view = memoryview(out.payload)
        at = 0  # the segment's first row in the batch
        for req, start, count in segments:
            part = out_view[at * orb:(at + count) * orb]
            at += count
            if req.future.done():
                continue  # failed already (another of its batches), or its client is gone
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
                self.stats[model].record_success(time.perf_counter_ns() - req.t_received, req.queue_ns or 0,
                                                 req.input_ns, req.infer_ns, req.output_ns)
                req.future.set_result(result)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
