"""The service's scheduler without processes: fake instances whose batches the test answers. Checks
Triton's batching rule as the service applies it (delay 0: what is queued when an instance frees; a
partial batch never waits behind a busy instance, a full one may; the delay counts from the oldest
request), requests split over batches and put back in order, failures confined to their batch, the byte
budget, and the statistics' bookkeeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from aibench.service.instances import InstanceLost, InstancePool, _Batch
from aibench.service.models import SPECS
from aibench.service.scheduler import ByteBudget, Scheduler, ServiceError
from aibench.service.stats import ModelStats


class FakeInstance:
    def __init__(self, index: int) -> None:
        self.index = index
        self.alive = True
        self.sent: list[tuple[_Batch, int, int, bytes]] = []  # (entry, key, rows, payload)

    @property
    def outstanding(self) -> int:
        return sum(1 for s in self.sent if not s[0].future.done())

    def send(self, key: int, payload: Any, dtype: str, shape: tuple[int, ...]) -> _Batch:
        if not self.alive:
            raise InstanceLost("gone")
        assert dtype == "float32"
        entry = _Batch(len(self.sent) + 1, asyncio.get_running_loop().create_future())
        self.sent.append((entry, key, shape[0], bytes(payload)))
        return entry

    def answer(self, k: int = 0) -> None:
        """Answer the k-th still-open batch as the null model would (row sums)."""
        entry, _key, rows, payload = [s for s in self.sent if not s[0].future.done()][k]
        x = np.frombuffer(payload, np.float32).reshape(rows, 4)
        now = time.monotonic_ns()
        entry.times = [now, now, now + 1000, now + 1000]

        class Out:
            pass

        out = Out()
        out.payload = bytearray(x.sum(axis=1, keepdims=True).astype(np.float32).tobytes())
        entry.future.set_result(out)


def make(n_instances: int = 1, max_batch: int = 4, delay_s: float = 0.0, models=("null",)):
    pool = InstancePool([], on_free=lambda: None, announce=lambda _t: None)
    fakes = [FakeInstance(i) for i in range(n_instances)]
    pool.instances = fakes  # type: ignore[assignment]
    specs = {m: SPECS[m] for m in models}
    stats = {m: ModelStats(m) for m in models}
    sched = Scheduler(specs, {m: max_batch for m in models}, {m: delay_s for m in models}, pool, stats)
    pool.on_free = sched.kick
    return sched, fakes, stats


def rows(n: int, start: float = 0.0) -> bytes:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) + start).tobytes()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_delay_zero_batches_what_queued_behind_a_busy_instance():
    async def main() -> None:
        sched, (inst,), stats = make(max_batch=8)
        a = sched.submit("null", 1, rows(1), time.monotonic_ns())
        assert len(inst.sent) == 1  # an idle instance takes the lone request at once
        queued = [sched.submit("null", 1, rows(1, 10 * k), time.monotonic_ns()) for k in range(3)]
        assert len(inst.sent) == 1  # a partial batch never waits behind a busy instance
        inst.answer()
        await settle()
        assert a.future.done() and len(inst.sent) == 2 and inst.sent[1][2] == 3  # the three, as one batch
        inst.answer()
        await settle()
        for k, r in enumerate(queued):
            assert np.frombuffer(r.future.result(), np.float32).tolist() == [6.0 + 40 * k]
            assert r.timing()["batch_size"] == 3
        assert {s: b.compute_infer.count for s, b in stats["null"].batches.items()} == {1: 1, 3: 1}
        assert stats["null"].inference_count == 4 and stats["null"].execution_count == 2
        assert stats["null"].inference["success"].count == 4 and sched.in_flight == 0

    asyncio.run(main())


def test_a_full_batch_may_wait_in_a_busy_instance_but_only_one():
    async def main() -> None:
        sched, (inst,), _stats = make(max_batch=4)
        sched.submit("null", 4, rows(4), time.monotonic_ns())
        sched.submit("null", 4, rows(4), time.monotonic_ns())  # full: goes to the busy instance too
        sched.submit("null", 4, rows(4), time.monotonic_ns())  # a third waits in the queue
        assert len(inst.sent) == 2 and inst.outstanding == 2
        inst.answer()
        await settle()
        assert len(inst.sent) == 3

    asyncio.run(main())


def test_a_large_request_is_split_and_put_back_in_order_with_other_requests_around_it():
    async def main() -> None:
        sched, (inst,), _stats = make(max_batch=4)
        small = sched.submit("null", 1, rows(1, 1000), time.monotonic_ns())
        big = sched.submit("null", 10, rows(10), time.monotonic_ns())
        while not big.future.done():
            inst.answer()
            await settle()
        want = np.arange(40, dtype=np.float32).reshape(10, 4).sum(1)
        assert np.array_equal(np.frombuffer(big.future.result(), np.float32), want)
        assert np.frombuffer(small.future.result(), np.float32)[0] == 1000 * 4 + 6
        assert [s[2] for s in inst.sent] == [1, 4, 4, 2]  # the lone request, then 10 rows in batches of 4
        assert big.timing()["batch_size"] == [4, 4, 2]

    asyncio.run(main())


def test_the_delay_counts_from_the_oldest_request_and_a_full_batch_does_not_wait():
    async def main() -> None:
        sched, (inst,), _stats = make(max_batch=4, delay_s=0.2)
        t0 = time.monotonic()
        r = sched.submit("null", 1, rows(1), time.monotonic_ns())
        await asyncio.sleep(0.05)
        sched.submit("null", 1, rows(1), time.monotonic_ns())
        assert not inst.sent  # waiting for a fuller batch
        while not inst.sent:
            await asyncio.sleep(0.01)
        waited = time.monotonic() - t0
        assert 0.15 < waited < 5  # from the first request's arrival, not the second's
        assert inst.sent[0][2] == 2
        inst.answer()
        await settle()
        assert r.future.done()
        sched.submit("null", 4, rows(4), time.monotonic_ns())
        assert len(inst.sent) == 2  # a full batch goes at once

    asyncio.run(main())


def test_oldest_due_batch_goes_first_across_models():
    async def main() -> None:
        sched, (inst,), _stats = make(max_batch=64, models=("null", "pos"))
        sched.submit("null", 1, rows(1), time.monotonic_ns())  # occupies the instance
        p = sched.submit("pos", 1, bytes(1200), time.monotonic_ns())
        sched.submit("null", 1, rows(1), time.monotonic_ns())
        inst.answer()
        await settle()
        assert inst.sent[1][1] == sched.keys["pos"]  # pos queued before the second null request
        assert not p.future.done()

    asyncio.run(main())


def test_a_lost_instance_fails_only_its_own_requests():
    async def main() -> None:
        sched, (a, b), stats = make(n_instances=2, max_batch=1)
        r1 = sched.submit("null", 1, rows(1), time.monotonic_ns())
        r2 = sched.submit("null", 1, rows(1), time.monotonic_ns())
        assert len(a.sent) == 1 and len(b.sent) == 1
        a.alive = False
        a.sent[0][0].future.set_exception(InstanceLost("instance 0 (pid 1, cpu) exited with code -9"))
        b.answer()
        await settle()
        with pytest.raises(ServiceError, match="exited with code -9; the request was not answered") as err:
            r1.future.result()
        assert err.value.status == 500
        assert np.frombuffer(r2.future.result(), np.float32)[0] == 6.0
        assert stats["null"].inference["fail"].count == 1 and stats["null"].inference["success"].count == 1
        r3 = sched.submit("null", 1, rows(1), time.monotonic_ns())  # the live instance takes the next
        assert len(b.sent) == 2 and not r3.future.done()

    asyncio.run(main())


def test_with_no_instance_left_requests_fail_with_503():
    async def main() -> None:
        sched, (inst,), _stats = make()
        inst.alive = False
        r = sched.submit("null", 1, rows(1), time.monotonic_ns())
        with pytest.raises(ServiceError) as err:
            r.future.result()
        assert err.value.status == 503

    asyncio.run(main())


def test_byte_budget():
    b = ByteBudget(100)
    assert b.try_reserve(60) and not b.try_reserve(41) and b.try_reserve(40) and not b.try_reserve(1)
    assert not b.try_reserve(-1)
    b.release(100)
    assert b.used == 0 and b.peak == 100
