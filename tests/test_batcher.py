"""The one dynamic batcher's rule, with a fake clock: max batch, the delay counted from the oldest queued
sample (Triton's rule), delay 0, chunk slicing and gathering, drain."""

from __future__ import annotations

import pytest

from aibench.sut.batcher import BatchQueue


def test_empty_queue_waits_for_work():
    q = BatchQueue(4, 0.010)
    assert len(q) == 0 and q.wait_s(0.0) is None and not q.due(0.0) and q.oldest is None
    assert len(q.take()) == 0


def test_full_batch_is_due_at_once():
    q = BatchQueue(4, 1.0)
    for i in range(4):
        q.add([f"t{i}"], [i], queued_at=10.0 + i)
    assert q.due(10.0) and q.wait_s(10.0) == 0.0
    b = q.take()
    assert list(b.indices) == [0, 1, 2, 3] and list(b.tokens) == ["t0", "t1", "t2", "t3"]
    assert b.groups == [(10.0, 1), (11.0, 1), (12.0, 1), (13.0, 1)]
    assert len(q) == 0


def test_delay_counts_from_the_oldest_queued_sample():
    q = BatchQueue(8, 0.010)
    q.add(["a"], [0], queued_at=100.000)
    q.add(["b"], [1], queued_at=100.008)  # a later arrival does not restart the clock
    assert q.wait_s(100.008) == pytest.approx(0.002)
    assert not q.due(100.009)
    assert q.due(100.010)
    assert list(q.take().indices) == [0, 1]
    q.add(["c"], [2], queued_at=100.020)  # after a batch left, the next oldest sets the deadline
    assert q.wait_s(100.025) == pytest.approx(0.005)


def test_zero_delay_takes_whatever_is_queued():
    q = BatchQueue(16, 0.0)
    q.add(["a", "b"], [0, 1], queued_at=1.0)
    assert q.due(1.0)
    assert list(q.take().indices) == [0, 1]


def test_a_huge_chunk_is_sliced_not_copied_and_taken_whole_when_it_fits():
    q = BatchQueue(3, 0.0)
    toks, idx = list(range(7)), list(range(100, 107))
    q.add(toks, idx, queued_at=0.0)
    assert [list(q.take().indices) for _ in range(3)] == [[100, 101, 102], [103, 104, 105], [106]]
    whole = list(range(3))
    q.add(whole, whole, queued_at=1.0)
    b = q.take()
    assert b.indices is whole and b.tokens is whole  # the whole chunk, not a copy


def test_small_chunks_are_gathered_and_a_chunk_may_be_split():
    q = BatchQueue(5, 0.0)
    q.add(["a", "b"], [0, 1], 1.0)
    q.add(["c", "d", "e"], [2, 3, 4], 2.0)
    q.add(["f", "g"], [5, 6], 3.0)
    b = q.take()
    assert list(b.indices) == [0, 1, 2, 3, 4] and b.groups == [(1.0, 2), (2.0, 3)]
    q.add(["h"], [7], 4.0)
    b = q.take(limit=2)
    assert list(b.indices) == [5, 6] and b.groups == [(3.0, 2)]
    assert q.oldest == 4.0 and len(q) == 1


def test_limit_lets_a_dispatcher_take_several_batches_at_once():
    q = BatchQueue(2, 0.0)
    q.add(list("abcdef"), list(range(6)), 0.0)
    assert len(q.take(limit=6)) == 6


def test_drain_returns_every_waiting_token():
    q = BatchQueue(2, 0.5)
    q.add(list("abc"), [0, 1, 2], 0.0)
    q.take()
    q.add(["d"], [3], 1.0)
    assert q.drain() == ["c", "d"] and len(q) == 0 and q.wait_s(2.0) is None


@pytest.mark.parametrize("bad", [(0, 0.0), (4, -1.0), (4, float("nan"))])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        BatchQueue(*bad)


# -- the one gather loop (Intake): what every batching system's owning thread runs -------------------------

def _intake(max_batch: int, delay_s: float, hold: bool = False):
    from aibench.sut.batcher import Answers, Intake

    answered: list[tuple[list, object]] = []
    ans = Answers(lambda tokens, responses, issued: answered.append((list(tokens), issued)), hold_on_abort=hold)
    return Intake(BatchQueue(max_batch, delay_s), ans), answered


def test_intake_hands_over_a_full_batch_without_waiting_for_the_delay():
    intake, _ = _intake(4, 3600.0)  # an hour's delay: only fullness can make this batch due
    for i in range(4):
        intake.put([f"t{i}"], [i], queued_at=float(i))
    assert intake.next_due()
    assert list(intake.bq.take().indices) == [0, 1, 2, 3]


def test_intake_flush_sends_a_part_batch_at_once_and_stop_ends_the_loop():
    intake, _ = _intake(8, 3600.0)
    intake.put(["a", "b"], [0, 1], queued_at=0.0)
    intake.flush()
    assert intake.next_due() and intake.flushing
    assert list(intake.bq.take().indices) == [0, 1]
    intake.put(["c"], [2], queued_at=1.0)
    intake.stop()
    assert not intake.next_due()  # stopped: the owner answers what is left (bq.drain())
    assert intake.bq.drain() == ["c"]


def test_intake_after_an_abort_answers_without_computing_and_holds_until_the_flush():
    import threading
    import time

    intake, answered = _intake(2, 0.0, hold=True)
    intake.ans.abort()
    ended: list[bool] = []
    owner = threading.Thread(target=lambda: ended.append(intake.next_due()))
    owner.start()
    intake.put(["x", "y", "z"], [0, 1, 2], queued_at=0.0)
    deadline = time.monotonic() + 5.0
    while len(intake.bq) + intake.q.qsize() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert answered == []  # dropped by the owner, and held (a LoadGen Server test must reach its limit)
    intake.stop()
    owner.join(5.0)
    assert ended == [False] and len(intake.bq) == 0  # never due: nothing is computed after an abort
    intake.ans.flush()
    assert answered == [(["x", "y", "z"], None)]


def test_intake_idle_is_what_lets_a_lone_query_run_inline():
    intake, _ = _intake(2, 0.0)
    assert intake.idle()
    intake.put(["a"], [0], queued_at=0.0)
    assert not intake.idle()
    intake.flush()
    assert intake.next_due() and not intake.idle()  # taken into the queue, not yet computed
    intake.bq.take()
    assert intake.idle()
