"""Training workloads (runner "training"): generated from the registry, every one takes a few training and
forward-only steps on its tiny shapes; time to quality on real digits and generated stories; seeds; the
init/setup/run split; the loop's arithmetic under a fake clock; divergence; the task API's model override."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest

from aibench import registry
from aibench.measure.training import TRAINING_METRICS, TrainingTask, training_loop
from aibench.results.schema import json_schema
from aibench.runner import RunOptions, execute, plan

TRAINING = [b for b in registry.all_benchmarks() if b.runner == "training"]
CASES = [(b.id, mode) for b in TRAINING for mode in ("train", "infer")]
DECLARED = {m.name for m in TRAINING_METRICS}


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


needs_digits = pytest.mark.skipif(not _has_sklearn(), reason="real digits need scikit-learn (the test extra)")


def _run(bench_id: str, seed: int = 0, budget: float | None = None, **given: Any) -> Any:
    bench = registry.get(bench_id)
    (run,) = plan(bench, {**bench.tiny, **given})
    return execute(run, RunOptions(seed=seed, threads=1, ttq_budget_s=budget))


def test_the_eight_fathom_workloads_and_the_reference_are_registered() -> None:
    names = {b.name for b in TRAINING}
    assert {f"fathom-{n}" for n in ("alexnet", "vgg", "residual", "autoenc", "memnet", "seq2seq", "speech",
                                     "deepq", "lenet")} <= names
    tonic = {b.name for b in registry.all_benchmarks() if b.runner == "loadgen"}
    assert not names & tonic


@pytest.mark.parametrize("bench_id, mode", CASES)
def test_training_workload_tiny_run(bench_id: str, mode: str) -> None:
    result = _run(bench_id, mode=mode)
    assert result.status == "ok", result.error
    doc = result.to_dict()
    jsonschema.validate(doc, json_schema())
    json.dumps(doc, allow_nan=False)
    # The same metric names in every result (CPU or GPU, train or infer), each a value or a reason.
    assert set(result.metrics) == DECLARED
    for name, entry in result.metrics.items():
        assert entry["value"] is not None or entry["unavailable"], name
        assert entry["statistic"] == registry.get(bench_id).metric(name).statistic, name
    sps = result.metrics["samples_per_s"]  # samples / sum of step times = work per step / mean step time
    assert sps["inverse_of"] == "mean" and sps["value"] == pytest.approx(
        sps["work"] / result.samples["step_time"]["summary"]["mean"])
    rate = result.metrics["samples_per_s"]["value"]
    assert rate > 0 and math.isfinite(rate)
    steps = result.params["steps"]
    assert result.samples["step_time"]["summary"]["n"] == steps == result.method["steps"]
    assert len(result.samples["warmup_step_time"]["values"]) == result.params["warmup_steps"]
    assert result.metrics["step_time_median"]["value"] <= result.metrics["step_time_p99"]["value"]
    for phase in ("time_setup", "time_run"):
        assert result.metrics[phase]["value"] > 0
    init = result.metrics["time_init"]
    assert (init["value"] or 0) > 0 or init["unavailable"]
    assert result.metrics["time_to_target"]["unavailable"]  # not a --ttq run
    assert result.meters["work"] == {"count": steps * result.method["samples_per_step"], "per": "sample"}
    if mode == "train":
        losses = result.samples["loss"]["values"]
        assert len(losses) == steps + result.params["warmup_steps"]
        assert all(math.isfinite(x) for x in losses)
        warm = result.params["warmup_steps"]
        timed_tail = losses[warm:][-10:]  # the curve is per step here: few steps
        assert result.metrics["loss_final"]["value"] == pytest.approx(sum(timed_tail) / len(timed_tail))
        assert result.validity is None
    else:
        assert "loss" not in result.samples and result.metrics["loss_final"]["value"] is None


@needs_digits
def test_lenet_reaches_its_target_on_real_digits() -> None:
    """The MLPerf-style headline: time to the stated test accuracy, on real (not synthetic) digits."""
    bench = registry.get("component/fathom-lenet")
    (run,) = plan(bench, {"ttq": True})
    result = execute(run, RunOptions(threads=1, ttq_budget_s=120))
    assert result.status == "ok", result.error
    jsonschema.validate(result.to_dict(), json_schema())
    m = result.metrics
    assert result.primary_metric == "time_to_target"
    assert m["target_reached"]["value"] == 1.0, result.context["ttq"]
    assert result.context["task"]["data"]["source"] == "real"
    target = result.context["quality"]["target"]
    assert target == 0.97 and m["quality"]["value"] >= target
    evals = result.context["ttq"]["evaluations"]
    assert evals[-1]["step"] == m["steps_to_target"]["value"] and evals[-1]["value"] >= target
    assert all(e["value"] < target for e in evals[:-1])
    assert 0 < m["time_to_target"]["value"] <= m["time_run"]["value"] + 1e-9
    assert m["epochs_to_target"]["value"] == m["steps_to_target"]["value"] / result.context["task"]["epoch_steps"]
    assert m["epoch_time"]["value"] > 0


@needs_digits
@pytest.mark.parametrize("bench_id", ["component/fathom-autoenc", "component/fathom-memnet"])
def test_vae_and_memory_network_reach_their_targets(bench_id: str) -> None:
    bench = registry.get(bench_id)
    (run,) = plan(bench, {"ttq": True})
    result = execute(run, RunOptions(threads=1, ttq_budget_s=60))
    assert result.metrics["target_reached"]["value"] == 1.0, result.context["ttq"]["evaluations"][-3:]
    q = result.context["quality"]
    value = result.metrics["quality"]["value"]
    assert value <= q["target"] if q["direction"] == "lower" else value >= q["target"]


@needs_digits
def test_a_target_not_met_within_the_budget_says_so() -> None:
    result = _run("component/fathom-lenet", budget=0.2, ttq=True, target=0.9999, eval_every=2)
    m = result.metrics
    assert result.status == "ok" and m["target_reached"]["value"] == 0.0
    assert m["time_to_target"]["value"] is None and "not met (budget)" in m["time_to_target"]["unavailable"]
    assert result.context["ttq"]["budget_s"] == 0.2 and m["quality"]["value"] is not None


def test_seed_makes_initialisation_and_data_order_repeatable() -> None:
    # memnet: gradient noise and shuffled epochs both draw on the seeded generators
    a = _run("component/fathom-memnet", seed=3, steps=6)
    b = _run("component/fathom-memnet", seed=3, steps=6)
    c = _run("component/fathom-memnet", seed=4, steps=6)
    assert a.samples["loss"]["values"] == b.samples["loss"]["values"]
    assert a.samples["loss"]["values"] != c.samples["loss"]["values"]
    assert a.method["seed"] == 3 and a.method["deterministic"]["enforced"] is False


def test_deterministic_algorithms_are_enforced_and_recorded() -> None:
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    a = _run("component/fathom-lenet", data="synthetic", deterministic=True)
    b = _run("component/fathom-lenet", data="synthetic", deterministic=True)
    assert a.method["deterministic"]["requested"] and a.method["deterministic"]["enforced"]
    assert a.samples["loss"]["values"] == b.samples["loss"]["values"]
    assert torch.are_deterministic_algorithms_enabled() == before


def test_refusals_are_one_line_with_their_exit_codes(cli: Any, tmp_path: Any) -> None:
    code, _, err = cli("run", "component", "fathom-alexnet", "--ttq", "--out", str(tmp_path))
    assert code == 2 and "throughput only" in err and "Traceback" not in err
    code, _, err = cli("run", "component/fathom-lenet", "--ttq", "--mode", "infer", "--out", str(tmp_path))
    assert code == 2 and "--mode train" in err
    code, _, err = cli("run", "component/fathom-lenet", "--ttq", "--data", "synthetic", "--out", str(tmp_path))
    assert code == 2 and "real data" in err
    code, _, err = cli("run", "component/fathom-lenet", "--mode", "eval", "--out", str(tmp_path))
    assert code == 2 and "train, infer" in err
    assert not list(tmp_path.glob("*.json"))


def test_init_setup_run_split_in_a_fresh_process(tmp_path: Any) -> None:
    """In a fresh process, init is measured (process start to the runner) and the phases add up to at most
    the wall time from process start."""
    proc = subprocess.run(
        [sys.executable, "-m", "aibench", "-q", "run", "component", "fathom-memnet", "--steps", "3",
         "--warmup-steps", "1", "--stories", "32", "--batch", "8", "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    m = doc["metrics"]
    init, setup, warm, run, wall = (m[k]["value"] for k in ("time_init", "time_setup", "time_warmup", "time_run",
                                                             "time_wall"))
    assert init > 0.05  # Python and torch start-up alone take longer than this
    assert init + setup + warm + run <= wall + 0.05
    assert doc["context"]["phases"]["process_age_source"].startswith("/proc/self/stat")


def _fake_task(losses: list[float], batch: int = 4) -> TrainingTask:
    import torch

    model = torch.nn.Linear(2, 1)
    state = {"i": 0}

    def forward_loss(m: Any, x: Any) -> Any:
        value = losses[min(state["i"], len(losses) - 1)]
        state["i"] += 1
        return (m(x) * 0).sum() + value

    return TrainingTask(model=model, forward_loss=forward_loss, forward=lambda m, x: m(x),
                        next_batch=lambda i: torch.ones(batch, 2), make_optimizer=lambda p: torch.optim.SGD(p, 0.1),
                        samples_per_batch=batch, device=torch.device("cpu"), epoch_steps=2)


def test_loop_arithmetic_under_a_fake_clock() -> None:
    ticks = iter(range(1000))
    log = training_loop(_fake_task([1.0, 2.0, 3.0, 4.0, 5.0]), 4, warmup_steps=1, clock=lambda: float(next(ticks)))
    assert log.warmup_times == [1.0] and log.step_times == [1.0] * 4
    assert log.samples == 16 and log.samples_per_s == 4.0
    assert log.losses == [1.0, 2.0, 3.0, 4.0, 5.0] and log.diverged_at is None


def test_model_override_trains_the_task_model_through_a_wrapper() -> None:
    """Contract 3: a caller wraps task.model (as DDP does) and the loop trains it through the wrapper."""
    import torch

    bench = registry.get("component/fathom-memnet")
    params = bench.resolve(dict(bench.tiny))
    task = bench.factory(params, device=torch.device("cpu"), seed=0)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.module = inner  # the attribute name DDP uses: task code may reach through it
            self.calls = 0

        def forward(self, *args: Any) -> Any:
            self.calls += 1
            return self.module(*args)

    wrapper = Wrapper(task.model)
    before = [p.detach().clone() for p in task.model.parameters()]
    log = training_loop(task, 3, model=wrapper)
    assert wrapper.calls == 3 and len(log.losses) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters(), strict=True))


@pytest.fixture
def diverging_bench() -> Iterator[registry.Benchmark]:
    from aibench.spec import Param

    registry.discover()
    bench = registry.Benchmark(
        kind="component", name="tiny-diverge", description="a loss that becomes NaN", source="aibench tests",
        runner="training", factory=lambda params, device, seed: _fake_task([1.0, 0.5, float("nan")]),
        params=registry.ParamSet((Param("steps", int, 4, "steps"), Param("warmup_steps", int, 1, "warm-up"),
                                  Param("device", str, "cpu", "device"))),
        metrics=TRAINING_METRICS, primary_metric="samples_per_s")
    registry.register(bench)
    try:
        yield bench
    finally:
        registry._REGISTRY.pop(bench.id, None)


def test_a_diverged_training_run_is_marked_invalid(diverging_bench: registry.Benchmark) -> None:
    (run,) = plan(diverging_bench, {})
    result = execute(run, RunOptions())
    assert result.status == "ok" and result.validity["valid"] is False
    assert "step 3" in result.validity["summary"]
    assert result.samples["loss"]["values"] == [1.0, 0.5] and result.samples["loss"]["truncated_at_step"] == 3
    assert result.metrics["loss_final"]["value"] is None
    assert all(e.get("valid") is False for e in result.metrics.values())
    json.dumps(result.to_dict(), allow_nan=False)


def test_loss_final_excludes_the_warm_up_steps() -> None:
    """The curve a user saw: warm-up 6.90, then 31.2, 6.79, 6.17. loss_final used to average all four (12.77)."""
    from aibench.measure.training import LoopLog, _loss_final

    log = LoopLog(mode="train", timing="test", warmup_times=[0.1], step_times=[0.1, 0.1, 0.1],
                  losses=[6.90, 31.2, 6.79, 6.17])
    entry = _loss_final(log)
    assert entry["value"] == pytest.approx((31.2 + 6.79 + 6.17) / 3)
    assert entry["steps"] == [2, 4] and "warm-up" in entry["note"]
    long = LoopLog(mode="train", timing="test", warmup_times=[0.1] * 2, step_times=[0.1] * 12,
                   losses=[100.0, 100.0] + [float(i) for i in range(12)])
    assert _loss_final(long)["value"] == pytest.approx(sum(range(2, 12)) / 10)  # the last 10 timed steps
    only_warmup = LoopLog(mode="train", timing="test", warmup_times=[0.1], losses=[5.0])
    assert _loss_final(only_warmup)["value"] is None and "warm-up" in _loss_final(only_warmup)["unavailable"]


def test_epoch_time_is_measured_only_over_whole_epochs() -> None:
    # memnet tiny: 32 stories, batch 8 → 4 steps per epoch; timed steps 2..9 hold one whole epoch (5..8)
    whole = _run("component/fathom-memnet", steps=8)
    assert whole.metrics["epoch_time"]["epochs"] == 1 and whole.metrics["epoch_time"]["steps_per_epoch"] == 4
    expected = sum(whole.samples["step_time"]["values"][3:7])
    assert whole.metrics["epoch_time"]["value"] == pytest.approx(expected)
    part = _run("component/fathom-memnet", steps=2)
    assert part.metrics["epoch_time"]["value"] is None and "no complete epoch" in part.metrics["epoch_time"][
        "unavailable"]
    synthetic = _run("component/fathom-alexnet")
    assert "no epoch" in synthetic.metrics["epoch_time"]["unavailable"]


def test_generated_babi_answers_are_the_last_location_of_the_asked_person() -> None:
    from aibench.datasets import babi

    stories = babi.generate(200, np.random.default_rng(7))
    for st in stories:
        who = st.question[-1]
        moves = [s for s in st.sentences if s[0] == who]
        assert moves and moves[-1][-1] == st.answer and st.sentences[st.support] == moves[-1]
    train, test = babi.task1(50, 40, max_sentences=6)
    again, _ = babi.task1(50, 40, max_sentences=6)
    assert np.array_equal(train.stories, again.stories)  # a fixed data set, not tied to --seed
    assert train.stories.shape == (50, 6, train.info["sentence"]) and len(test) == 40
    word = {i: w for i, w in enumerate(train.vocab)}
    k = 0
    who = word[int(train.queries[k, 2])]
    rows = [[word[int(i)] for i in row if i] for row in train.stories[k] if row.any()]
    assert [r for r in rows if r[0] == who][-1][-1] == word[int(train.answers[k])]


def test_replay_windows_never_cross_the_write_point() -> None:
    import torch

    from aibench.workloads.fathom._tasks import Replay

    r = Replay(16, torch.device("cpu"))
    for t in range(40):  # wraps around twice; frame value = insertion time mod 256
        r.insert(torch.full((84, 84), t % 256, dtype=torch.uint8), torch.tensor(0), torch.tensor(0.0),
                 torch.tensor(0.0))
    gen = torch.Generator().manual_seed(0)
    s, _, _, _, s2 = r.sample(256, gen)
    seq = torch.cat([s, s2[:, -1:]], dim=1)[:, :, 0, 0] * 255  # the 5 frame times of each window
    steps = seq[:, 1:] - seq[:, :-1]
    assert torch.all(steps.round() == 1)  # 5 consecutive insertions: no window spans the ring's seam
    assert seq.min() >= 40 - 16  # only frames still in memory


def _ddp_rank(rank: int, port: int, out: Any) -> None:
    import os

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        bench = registry.get("component/fathom-memnet")
        task = bench.factory(bench.resolve(dict(bench.tiny)), device=torch.device("cpu"), seed=rank)
        log = training_loop(task, 3, warmup_steps=1, model=DistributedDataParallel(task.model))
        out.put((rank, [p.detach().numpy().tobytes() for p in task.model.parameters()], log.losses))
    finally:
        dist.destroy_process_group()


def test_data_parallel_replicas_stay_equal() -> None:
    """Contract 3 end to end: two gloo ranks, different seeds (different batches), DDP over task.model through
    the loop's model override; gradient hooks (memnet's clipping and noise) must leave the replicas equal."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ddp_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, (w, losses)) for r, w, losses in (out.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (w0, l0), (w1, l1) = got[0], got[1]
    assert l0 != l1  # each rank trained on its own batches
    assert w0 == w1


def test_cuda_step_clock_pairs_events_within_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (no GPU here): intervals are taken between consecutive events of one segment, never
    across a pause (an evaluation) that starts a new segment."""
    import itertools

    import torch

    from aibench.measure.training import _CudaStepClock

    now = itertools.count()

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.t = 0.0

        def record(self, stream: Any = None) -> None:
            self.t = float(next(now)) * 1e3  # ms, like CUDA events

        def elapsed_time(self, other: FakeEvent) -> float:
            return other.t - self.t

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    clock = _CudaStepClock(torch.device("cuda", 0))
    clock.start()
    clock.mark()
    clock.mark()
    for _ in range(5):
        next(now)  # a pause: time passes outside the steps
    clock.start()
    clock.mark()
    assert clock.collect() == [1.0, 1.0, 1.0]
    assert clock.collect() == []
