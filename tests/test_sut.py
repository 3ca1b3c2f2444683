"""The system-under-test contract: the drivers drive any implementation through it alone.

A fake remote system (its "server" thread answers each query later, in random order, multi-sample queries in
random parts, optionally batching several queries into one answer itself) is driven under every LoadGen
scenario and closed-loop users; every query must be answered exactly once and the figures must be sane.
Then the contract of the two real implementations: the in-process system (inline computation, abort and hold,
failures, stage distributions) and the worker-process pool.
"""

from __future__ import annotations

import collections
import heapq
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from aibench.loadgen.settings import LoadgenOptions
from aibench.sut import Capabilities, Completion, SutReport, SystemUnderTest
from aibench.sut.batcher import Answers, get_within

MIN_DELAY_S = 200e-6
MAX_DELAY_S = 1500e-6

_STOP = object()
_WAKE = object()


class FakeRemote(SystemUnderTest):
    """Answers from its own thread, each part of a query after a random delay in [MIN_DELAY_S, MAX_DELAY_S],
    in whatever order the delays give. ``batches_itself``: everything due at once is answered in one
    completion (runs of issue times in token order). ``fail_at``: the system fails once it has answered
    this many samples. Records what was submitted and answered in each test (one per :meth:`start`)."""

    def __init__(self, num_samples: int = 16, batches_itself: bool = False, fail_at: int | None = None,
                 seed: int = 0) -> None:
        self.name = "fake-remote"
        self.num_samples = num_samples
        self.capabilities = Capabilities(stages=("queue", "compute"), batches_itself=batches_itself,
                                         reports_bytes=True, remote=True)
        self.fail_at = fail_at
        self.rng = random.Random(seed)
        self.staged: set[int] = set()
        self.unstaged_use = 0
        self.tests: list[dict[str, list[Any]]] = []  # per start(): submitted and answered tokens
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers = Answers(lambda *_a: None)
        self.reset_report()

    def stage(self, indices: Sequence[int]) -> None:
        self.staged.update(indices)

    def unstage(self, indices: Sequence[int]) -> None:
        self.staged.difference_update(indices)

    def describe(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "stage": "dnn", "data": {"source": "synthetic"},
                "flops_per_sample": 1000.0, "flops_note": "", "device": "remote"}

    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        test: dict[str, list[Any]] = {"submitted": [], "answered": [], "malformed": []}
        self.tests.append(test)

        def recording(tokens: Sequence[Any], responses: Any, issued: Any) -> None:
            with self._lock:
                test["answered"].extend(tokens)
                if issued is not None and (sum(k for _t, k in issued) != len(tokens) or responses is None
                                           or len(responses) != len(tokens)):
                    test["malformed"].append((list(tokens), responses, issued))
            on_complete(tokens, responses, issued)

        self._answers = Answers(recording, hold_on_abort, on_error)
        self._inbox = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, args=(self._inbox, self._answers), daemon=True)
        self._thread.start()

    def submit(self, tokens: Sequence[Any], indices: Sequence[int]) -> None:
        t = time.perf_counter()
        with self._lock:
            self.tests[-1]["submitted"].extend(tokens)
            self.unstaged_use += sum(1 for i in indices if i not in self.staged)
        if self._answers.aborted:
            self._answers.drop(tokens)
            return
        self._inbox.put((list(tokens), list(indices), t))

    def flush(self) -> None:
        self._answers.flush()

    def abort(self, exc: BaseException | None = None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        self._answers.abort()
        self._inbox.put(_WAKE)

    def stop(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._inbox.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def report(self) -> SutReport:
        return SutReport(batches=self._batches, samples=self._samples, error=self._error,
                         stages={k: list(v) for k, v in self._stages.items()}, bytes_in=self._bytes_in)

    def reset_report(self) -> None:
        self._batches = 0
        self._samples = 0
        self._error: BaseException | None = None
        self._stages: dict[str, list[float]] = {"queue": [], "compute": []}
        self._bytes_in = 0

    def _serve(self, inbox: queue.SimpleQueue[Any], ans: Answers) -> None:
        pending: list[tuple[float, int, list[Any], list[int], float]] = []  # heap: (due, seq, tokens, idx, t)
        seq = 0
        while True:
            try:
                item = get_within(inbox, max(0.0, pending[0][0] - time.perf_counter())) if pending \
                    else inbox.get()
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if isinstance(item, tuple):
                tokens, indices, t = item
                cuts = sorted(self.rng.sample(range(1, len(tokens)), min(3, len(tokens) - 1))) if len(tokens) > 1 \
                    else []
                for lo, hi in zip([0, *cuts], [*cuts, len(tokens)], strict=True):  # parts, answered apart
                    seq += 1
                    due = time.perf_counter() + self.rng.uniform(MIN_DELAY_S, MAX_DELAY_S)
                    heapq.heappush(pending, (due, seq, tokens[lo:hi], indices[lo:hi], t))
            if ans.aborted:
                ans.drop([tok for p in pending for tok in p[2]])
                pending.clear()
                continue
            now = time.perf_counter()
            due = []
            while pending and pending[0][0] <= now:
                due.append(heapq.heappop(pending))
            self.rng.shuffle(due)
            groups = [due] if self.capabilities.batches_itself and due else [[p] for p in due]
            for g, group in enumerate(groups):
                tokens = [tok for p in group for tok in p[2]]
                responses = [2 * i for p in group for i in p[3]]
                issued = [(p[4], len(p[2])) for p in group]
                if self.fail_at is not None and self._samples + len(tokens) > self.fail_at:
                    exc = RuntimeError("the fake remote system broke on purpose")
                    if self._error is None:
                        self._error = exc
                    if ans.abort() and ans.on_error is not None:
                        ans.on_error(exc)
                    rest = [tok for later in groups[g + 1:] for p in later for tok in p[2]]  # due, not answered
                    ans.drop(tokens + rest + [tok for p in pending for tok in p[2]])
                    pending.clear()
                    break
                self._batches += 1
                self._samples += len(tokens)
                self._bytes_in += 4 * len(tokens)
                self._stages["queue"].append(now - min(p[4] for p in group))
                self._stages["compute"].append(0.0)
                ans.complete(tokens, responses, issued)
        ans.release([tok for p in pending for tok in p[2]])


def _result() -> Any:
    from aibench.results.schema import Result

    return Result(benchmark={"id": "component/fake-remote", "kind": "component", "name": "fake-remote"},
                  params={}, config_hash="x")


def _check_answered_once(sut: FakeRemote) -> None:
    assert sut.tests, "the system was never started"
    for test in sut.tests:
        assert collections.Counter(test["submitted"]) == collections.Counter(test["answered"])
        assert not test["malformed"]
    for test in sut.tests[1:]:  # LoadGen's tests (the first one is the calibration, which reuses tokens)
        assert test["submitted"] and len(set(test["answered"])) == len(test["answered"])
    assert sut.unstaged_use == 0  # every sample submitted was staged first


SCENARIOS = [("single-stream", {}), ("multi-stream", {"samples_per_query": 4, "min_queries": 100}),
             ("server", {"target_qps": 300.0, "latency_bound_ms": 50.0}), ("offline", {"expected_qps": 3000.0})]


@pytest.mark.parametrize("batches_itself", [False, True], ids=["answers-each", "batches-itself"])
@pytest.mark.parametrize(("scenario", "kw"), SCENARIOS, ids=[s for s, _ in SCENARIOS])
def test_fake_remote_system_under_every_loadgen_scenario(scenario: str, kw: dict[str, Any], batches_itself: bool,
                                                         tmp_path: Path) -> None:
    from aibench.loadgen.run import drive_system

    sut = FakeRemote(batches_itself=batches_itself)
    s = LoadgenOptions(scenario=scenario, duration_s=0.2, out_dir=tmp_path, **kw).resolve()
    result = _result()
    drive_system(sut, s, 4, result)
    _check_answered_once(sut)
    m = result.metrics
    assert m["samples_per_s"]["value"] > 0 and result.validity["result"] in ("VALID", "INVALID")
    assert m["latency_p50"]["value"] >= MIN_DELAY_S  # answered later, never at once
    lat = result.samples["latency"]
    assert lat["values"] and min(lat["values"]) >= MIN_DELAY_S and lat["seen"] == result.method["adapter"]["samples"]
    assert result.method["adapter"]["samples"] == len(sut.tests[-1]["submitted"])
    assert result.method["adapter"]["inline"] is False  # not an in-process system: never computed inline
    assert result.context["task"]["flops_per_sample"] == 1000.0 and m["gflops"]["value"] > 0
    h2d = result.meters["memory"]["host_to_device"]
    assert h2d["bytes_per_sample"] == pytest.approx(4.0) and "note" not in h2d  # the device is not the host
    rep = sut.report()
    assert len(rep.stages["queue"]) == rep.batches and min(rep.stages["queue"]) >= MIN_DELAY_S
    # the declared stages become the result's stage parts (distributions) and their shares
    assert list(result.parts["stage"]) == ["queue", "compute"]
    assert result.parts["stage"]["queue"]["seen"] == rep.batches
    assert m["share_queue"]["value"] == pytest.approx(1.0) and m["share_queue"]["of"] == "parts.stage.queue"
    if batches_itself and scenario == "server":
        assert result.method["adapter"]["mean_batch"] >= 1.0


def test_fake_remote_system_under_closed_loop_users(tmp_path: Path) -> None:
    from aibench.loadgen.run import drive_system

    sut = FakeRemote(batches_itself=True)
    # The users stop after 30 measured requests, not after a duration: a process that gets no CPU for the
    # 0.25 s of warm-up and window (seen on one core shared with six busy processes) answered nothing in it.
    s = LoadgenOptions(users=3, duration_s=0.2, out_dir=tmp_path).resolve().closed_loop_from({"queries": 30})
    result = _result()
    drive_system(sut, s, 4, result)
    _check_answered_once(sut)
    assert all(isinstance(tok, threading.Event) for tok in sut.tests[-1]["answered"])
    assert result.method["closed_loop"]["max_queries"] == 30
    assert result.metrics["queries_per_s"]["value"] > 0
    assert result.metrics["latency_p50"]["value"] >= MIN_DELAY_S
    closed = result.method["closed_loop"]
    assert closed["samples"] == len(sut.tests[-1]["submitted"]) and closed["batches"] >= 1


@pytest.mark.parametrize("scenario", ["server", "offline", "single-stream"])
def test_a_failing_remote_system_ends_the_test_promptly(scenario: str, tmp_path: Path) -> None:
    from aibench.loadgen.run import drive_system

    sut = FakeRemote(fail_at=200)  # past the calibration (at most 105 samples), inside the LoadGen test
    kw = {"server": {"target_qps": 300.0}, "offline": {"expected_qps": 3000.0}, "single-stream": {}}[scenario]
    s = LoadgenOptions(scenario=scenario, duration_s=30.0, out_dir=tmp_path, **kw).resolve()
    result = _result()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="broke on purpose"):
        drive_system(sut, s, 4, result)
    assert time.monotonic() - t0 < 20, "a 30 s test was not ended by the failure"
    _check_answered_once(sut)
    assert result.validity["valid"] is False and "failed" in result.validity["summary"]


# One consumer of a SimpleQueue on a CPU shared with a busy process (the scheduler preempts it every few ms, at
# random points): empty timed gets back to back, the queue's internal lock left free before each by a get that
# returned an item. A get still inside after 1 s has lost its 1 ns timeout for good (it would wait for the next
# put, and none comes): the watchdog counts it and puts an item to let the loop go on.
_TIMED_GETS = """
import multiprocessing, os, queue, sys, threading, time
from aibench.sut.batcher import get_within
raw = sys.argv[1] == "raw"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
end = time.monotonic() + float(sys.argv[2])
def spin():
    while time.monotonic() < end + 2:
        pass
busy = multiprocessing.get_context("fork").Process(target=spin)
busy.start()
q, done, inside, gets, stuck = queue.SimpleQueue(), threading.Event(), [0.0], [0], [0]
def watchdog():
    while not done.wait(0.1):
        since = inside[0]
        if since and time.monotonic() - since > 1.0:
            stuck[0] += 1
            inside[0] = 0.0
            q.put("unblock")
threading.Thread(target=watchdog, daemon=True).start()
while time.monotonic() < end:
    for _ in range(100):
        q.put(1)
        q.get()
        inside[0] = time.monotonic()
        try:
            q.get(timeout=1e-9) if raw else get_within(q, 1e-9)
        except queue.Empty:
            pass
        inside[0] = 0.0
        gets[0] += 1
done.set()
busy.terminate()
print(gets[0], stuck[0])
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_timed_get_returns_within_its_timeout_on_a_busy_cpu() -> None:
    """CPython's SimpleQueue.get(timeout) can block until the next put when it is preempted at one point
    (:func:`~aibench.sut.batcher.get_within`); the batching worker's wait for the batch delay and the fake
    remote's wait for its next answer then never end when every query is waiting on them (the closed-loop
    users stalled until killed). get_within never overstays: no get is left for the watchdog to unblock."""
    out = subprocess.run([sys.executable, "-c", _TIMED_GETS, "get_within", "0.5"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    gets, stuck = int(out[0]), int(out[1])
    assert gets > 100 and stuck == 0, f"{stuck} of {gets} timed gets blocked past their timeout"


# -- the in-process system ------------------------------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], Any, Any, int]] = []
        self.event = threading.Event()

    def __call__(self, tokens: Sequence[Any], responses: Any, issued: Any) -> None:
        self.calls.append((list(tokens), responses, issued, threading.get_ident()))
        self.event.set()

    def tokens(self) -> list[Any]:
        return [t for call in self.calls for t in call[0]]

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.tokens()) < n and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(self.tokens()) >= n, self.calls


def _in_process(model: Any = None, breakdown: bool = False, num_samples: int = 8) -> Any:
    import torch

    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.task import InferenceTask

    data = torch.arange(num_samples * 2, dtype=torch.float32).reshape(num_samples, 2)
    task = InferenceTask(model=model or (lambda x: x.sum(dim=1)), device=torch.device("cpu"),
                         num_samples=num_samples, load_sample=lambda i: data[i], postprocess=lambda y: y.tolist(),
                         flops_per_sample=2.0)
    sut = InProcessSystem(task, name="tiny", breakdown=breakdown)
    sut.stage(range(num_samples))
    return sut


def test_in_process_system_computes_a_lone_query_inline_when_allowed() -> None:
    sut = _in_process()
    assert sut.capabilities.inline_ok
    rec = _Recorder()
    sut.start(rec, max_batch=4, inline=True)
    sut.submit(["a"], [1])
    assert rec.tokens() == ["a"]  # answered before submit returned ...
    assert rec.calls[0][3] == threading.get_ident()  # ... on this thread
    assert rec.calls[0][1] == [5.0] and rec.calls[0][2][0][1] == 1
    assert sut.stop(timeout=5.0)
    assert sut.report().extra["inline"] == 1 and sut.report().batches == 1

    rec = _Recorder()
    sut.start(rec, max_batch=4)  # inline not allowed (Server, Offline): the worker computes
    sut.submit(["b"], [2])
    rec.wait_for(1)
    assert rec.calls[0][3] != threading.get_ident() and rec.calls[0][1] == [9.0]
    assert sut.stop(timeout=5.0)


def test_server_computes_inline_only_where_the_target_rate_leaves_the_issuing_thread_mostly_idle() -> None:
    from aibench.loadgen.drive import SERVER_INLINE_MAX_LOAD, inline_choice

    def scenario(name: str, qps: float | None = None) -> Any:
        return LoadgenOptions(scenario=name, target_qps=qps, latency_bound_ms=10.0 if qps else None).resolve()

    assert inline_choice(scenario("single-stream"), None)[0]
    assert inline_choice(scenario("multi-stream"), 1.0)[0]
    assert not inline_choice(scenario("offline"), 1e-9)[0]
    server = scenario("server", 20000.0)
    assert not inline_choice(server, None)[0]  # not calibrated: never
    ok, why = inline_choice(server, SERVER_INLINE_MAX_LOAD / 20000.0)
    assert ok and "load 0.50" in why
    ok, why = inline_choice(server, 1e-4)  # 0.1 ms a query at 20k QPS: load 2, the batching worker takes them
    assert not ok and "load 2.00" in why and "batching worker" in why
    ok, why = inline_choice(scenario("server", 10.0), 0.02)  # load 0.2, but 20 ms a query: batching protects
    assert not ok and "20 ms" in why


def test_a_query_that_finds_the_in_process_system_busy_is_queued_not_run_alongside() -> None:
    release = threading.Event()
    running: list[int] = []
    concurrent: list[int] = []

    def model(x: Any) -> Any:
        running.append(1)
        if len(running) > 1:
            concurrent.append(len(running))
        if x[0, 0].item() == 0.0:
            release.wait(5.0)  # sample 0 blocks until released
        running.pop()
        return x.sum(dim=1)

    sut = _in_process(model)
    rec = _Recorder()
    sut.start(rec, max_batch=4, inline=True)
    first = threading.Thread(target=sut.submit, args=(["slow"], [0]))
    first.start()
    while not running:
        time.sleep(0.001)
    sut.submit(["queued"], [1])  # busy: queued for the worker, submit returns at once
    assert "queued" not in rec.tokens()
    release.set()
    first.join(5.0)
    rec.wait_for(2)
    assert sut.stop(timeout=5.0)
    assert not concurrent, "two batches ran at once"
    by_token = {call[0][0]: call[3] for call in rec.calls}
    assert by_token["slow"] == first.ident and by_token["queued"] not in (first.ident, threading.get_ident())


def test_in_process_system_batches_by_the_one_rule_and_times_each_batch_with_breakdown() -> None:
    sut = _in_process(breakdown=True)
    assert sut.capabilities.stages == ("preprocess", "dnn", "postprocess")
    rec = _Recorder()
    sut.start(rec, max_batch=4, max_queue_delay_us=200_000)  # 0.2 s: the batch fills before it is due
    for i in range(4):
        sut.submit([f"t{i}"], [i])
    rec.wait_for(4)
    assert sut.stop(timeout=5.0)
    assert len(rec.calls) == 1 and rec.calls[0][0] == ["t0", "t1", "t2", "t3"]  # one full batch
    assert [k for _t, k in rec.calls[0][2]] == [1, 1, 1, 1]  # issue time of each query
    rep = sut.report()
    assert rep.batches == 1 and rep.samples == 4
    assert {k: len(v) for k, v in rep.stages.items()} == {"preprocess": 1, "dnn": 1, "postprocess": 1}
    assert rep.bytes_in == 0  # the device is the host: nothing copied
    sut.reset_report()
    assert sut.report().batches == 0 and sut.report().stages["dnn"] == []


def test_an_aborted_in_process_system_holds_answers_until_the_flush() -> None:
    sut = _in_process()
    rec = _Recorder()
    sut.start(rec, max_batch=4, hold_on_abort=True)
    sut.abort()
    sut.submit(["x"], [0])
    sut.submit(["y", "z"], [1, 2])
    time.sleep(0.05)
    assert rec.tokens() == []  # held (a LoadGen Server test must reach its outstanding-query limit)
    sut.flush()
    assert sorted(rec.tokens()) == ["x", "y", "z"] and all(c[1] is None and c[2] is None for c in rec.calls)
    sut.submit(["w"], [3])  # after the flush: answered at once
    assert rec.tokens()[-1] == "w"
    assert sut.stop(timeout=5.0) and sut.report().batches == 0


def test_a_failing_in_process_model_is_reported_once_and_never_called_again() -> None:
    calls = [0]

    def model(x: Any) -> Any:
        calls[0] += 1
        raise ValueError("model broke")

    sut = _in_process(model)
    rec = _Recorder()
    errors: list[BaseException] = []
    sut.start(rec, max_batch=2, on_error=errors.append)
    for i in range(5):
        sut.submit([i], [i])
    rec.wait_for(5)
    assert sut.stop(timeout=5.0)
    assert calls[0] == 1 and len(errors) == 1 and isinstance(sut.report().error, ValueError)
    assert sorted(rec.tokens()) == [0, 1, 2, 3, 4] and all(c[2] is None for c in rec.calls)


def test_in_process_system_describes_itself_for_the_result() -> None:
    info = _in_process().describe()
    assert info["flops_per_sample"] == 2.0 and info["device"] == "cpu" and info["num_samples"] == 8
    assert {"stage", "data", "flops_note"} <= set(info)


def test_a_stopped_system_can_be_started_again_but_not_twice() -> None:
    sut = _in_process()
    sut.start(_Recorder(), max_batch=1)
    with pytest.raises(RuntimeError, match="started twice"):
        sut.start(_Recorder(), max_batch=1)
    assert sut.stop(timeout=5.0)
    rec = _Recorder()
    sut.start(rec, max_batch=1)
    sut.submit(["again"], [0])
    rec.wait_for(1)
    assert sut.stop(timeout=5.0)


# -- the worker-process pool ----------------------------------------------------------------------------------

def test_the_worker_pool_is_a_system_under_test() -> None:
    from aibench import registry
    from aibench.loadgen.drive import calibrate
    from aibench.sut.pool import PoolSystem, WorkerConfig, WorkerPool

    registry.discover()
    bench = registry.get("component/pos")
    params = bench.resolve({"batch": 3, "num_samples": 6, "words": 7, "data": "synthetic"})
    pool = WorkerPool([WorkerConfig(i, "cpu", 1, bench.id, params) for i in range(2)]).start()
    try:
        sut = PoolSystem(pool, [0, 1], 3, name="pos x2")
        assert sut.capabilities.remote and not sut.capabilities.inline_ok
        info = sut.describe()
        assert info["num_samples"] == 6 and info["flops_per_sample"] and "stages_note" in info
        cal = calibrate(sut, 6, budget_s=0.05, max_rounds=3)
        assert cal.per_sample_s > 0 and cal.batch_sample_s > 0
        sut.reset_report()

        rec = _Recorder()
        sut.start(rec, max_batch=6, max_queue_delay_us=0.0)
        sut.submit(list(range(100, 140)), [i % 6 for i in range(40)])  # one big query (Offline-like)
        for i in range(10):  # and single-sample ones (Server-like)
            sut.submit([f"q{i}"], [i % 6])
        sut.flush()
        rec.wait_for(50, timeout=60.0)
        assert sut.stop(timeout=10.0)
        assert collections.Counter(rec.tokens()) == collections.Counter([*range(100, 140),
                                                                         *(f"q{i}" for i in range(10))])
        for tokens, _responses, issued, _thread in rec.calls:
            assert sum(k for _t, k in issued) == len(tokens)
        rep = sut.report()
        assert rep.samples == 50 and rep.batches >= 50 / 3 and rep.extra["messages"] >= 2

        rec = _Recorder()
        sut.start(rec, max_batch=6, hold_on_abort=True)
        sut.abort()
        sut.submit(["held"], [0])
        time.sleep(0.05)
        assert rec.tokens() == []
        sut.flush()
        assert rec.tokens() == ["held"] and rec.calls[0][2] is None
        assert sut.stop(timeout=10.0)
    finally:
        pool.close()


def test_a_worker_thread_whose_setup_fails_answers_every_query_and_reports_the_error() -> None:
    """worker_init failing on the batching thread (not the model): every query is still answered (without
    computing), the error is kept and on_error called, and stop() ends the thread."""
    sut = _in_process()

    def broken_init() -> None:
        raise RuntimeError("cannot set up this thread")

    sut.worker_init = broken_init  # type: ignore[method-assign]
    rec = _Recorder()
    errors: list[BaseException] = []
    sut.start(rec, max_batch=2, on_error=errors.append)  # inline not allowed: the worker thread computes
    for i in range(5):
        sut.submit([i], [i])
    rec.wait_for(5)
    assert sut.stop(timeout=5.0)
    assert sorted(rec.tokens()) == [0, 1, 2, 3, 4] and all(c[2] is None for c in rec.calls)
    assert len(errors) == 1 and isinstance(sut.report().error, RuntimeError)


def test_answers_dropped_after_the_release_are_given_not_held() -> None:
    from aibench.sut.batcher import Answers

    given: list[list[Any]] = []
    ans = Answers(lambda tokens, responses, issued: given.append(list(tokens)), hold_on_abort=True)
    ans.abort()
    ans.drop(["held"])
    assert given == []
    ans.release(["late-1"])  # the system stops without a flush
    assert given == [["held", "late-1"]]
    ans.drop(["late-2"])  # a worker's answer arriving after the stop: nobody will flush again
    assert given[-1] == ["late-2"]
