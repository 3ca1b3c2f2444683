"""The ``training`` runner's contract, light (no torch): the task API, the metrics, the typed options and
the runner's registration. The loop and the runner are :mod:`aibench.measure.training`, imported only when a
training benchmark is measured.

The task API (contract between workloads and anything that drives them, e.g. a DistributedDataParallel
sweep): a benchmark with ``runner="training"`` has a factory ``factory(params, device=..., seed=...) ->
TrainingTask``. The factory builds the model, the data (pre-staged on ``device``) and everything else the
step needs; it knows nothing about timing. A :class:`TrainingTask` holds

- ``model``: the ``nn.Module`` whose parameters are trained;
- ``forward_loss(model, batch) -> Tensor``: the scalar loss of one batch, computed with the ``model``
  passed in, never with ``task.model`` directly, so a caller may pass a wrapper (``DDP(task.model)``);
- ``forward(model, batch)``: the forward-only (inference) work of one batch, same convention;
- ``next_batch(step) -> batch``: the batch of global step ``step`` (0-based), already on the device. It is
  called inside the timed step (selecting a batch from staged tensors is part of a training step; for
  DQN it also acts in the environment and fills the replay buffer, as the original does per step);
- ``make_optimizer(parameters) -> Optimizer`` and an optional ``grad_hook(model)`` (clipping, gradient
  noise, ...) run between ``backward()`` and ``optimizer.step()``;
- ``after_step(step)`` (optional): per-step bookkeeping such as DQN's target-network copy;
- ``samples_per_batch``; ``epoch_steps`` (steps per pass over a real training set, None without one);
- ``quality`` (optional :class:`Quality`): an evaluation on held-out data and a target, for time to quality;
- ``data``, ``info``, ``throughput_only`` (why there is no quality target), ``notes``: recorded as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aibench import meters
from aibench.errors import UsageError
from aibench.registry import MetricSpec, RunnerCli, RunnerSpec, register_runner

MODES = ("train", "infer")
# A --ttq run without --max-time trains for at most this long (the CLI's --max-time default, 2 s, is the
# kernel timer's budget and far too short to train anything).
DEFAULT_TTQ_BUDGET_S = 600.0

STEP_TIME = "samples.step_time"  # the timed steps' times
TRAINING_METRICS = (
    MetricSpec("samples_per_s", "samples/s", "higher", "samples per second over the timed steps (warm-up "
               "excluded): samples / sum of step times", "rate", STEP_TIME, "mean"),
    MetricSpec("step_time_median", "s", "lower", "median time of one timed step", "median", STEP_TIME),
    MetricSpec("step_time_iqr", "s", "lower", "interquartile range of the step time", "iqr", STEP_TIME),
    MetricSpec("step_time_p99", "s", "lower", "99th percentile of the step time", "p99", STEP_TIME),
    MetricSpec("epoch_time", "s", "lower", "mean time of the complete epochs among the timed steps (only where "
               "the workload has a real data set and the run covered a whole epoch)", "mean"),
    MetricSpec("loss_final", "loss", "lower", "mean training loss of the last (up to) 10 timed steps "
               "(warm-up excluded)", "mean"),
    MetricSpec("time_init", "s", "lower", "init: process start to the runner, plus device initialisation "
               "(Python, framework, CUDA context): the Minsky paper's INIT"),
    MetricSpec("time_setup", "s", "lower", "setup: model, optimizer and data built and staged on the device"),
    MetricSpec("time_warmup", "s", "lower", "the warm-up steps (excluded from the step statistics)"),
    MetricSpec("time_run", "s", "lower", "run: the timed steps (with --ttq: first step to stop, evaluations "
               "included)"),
    MetricSpec("time_wall", "s", "lower", "process start to the end of the run"),
    MetricSpec("time_to_target", "s", "lower", "--ttq: training time from the first step to the evaluation "
               "that met the target, evaluations included (MLPerf Training's rule)"),
    MetricSpec("steps_to_target", "steps", "lower", "--ttq: training steps until the target was met", "count"),
    MetricSpec("epochs_to_target", "epochs", "lower", "--ttq: steps_to_target / steps per epoch"),
    MetricSpec("target_reached", "bool", "higher", "--ttq: 1 if the target was met within --max-time, else 0"),
    MetricSpec("quality", "quality", "higher", "--ttq: the last evaluated quality (its name, unit and "
               "direction are in context.quality)"),
    MetricSpec("energy_to_target", "J", "lower", "--ttq: energy of the device(s) from the first step to the "
               "target (unavailable without an energy counter)"),
    *meters.metric_specs("sample", "the timed steps"),
)


def training_metrics(quality_unit: str = "quality", quality_direction: str = "higher",
                     quality_name: str = "") -> tuple[MetricSpec, ...]:
    """:data:`TRAINING_METRICS` with the ``quality`` metric declared in the workload's own unit and direction
    (accuracy: a fraction, higher; reconstruction error: lower)."""
    what = f"--ttq: the last evaluated {quality_name or 'quality'} (name, target and note in context.quality)"
    return tuple(replace(m, unit=quality_unit, direction=quality_direction, help=what) if m.name == "quality" else m
                 for m in TRAINING_METRICS)


@dataclass
class Quality:
    """A held-out evaluation and the target a time-to-quality run trains to.

    ``evaluate(model) -> float`` is called with the model in eval mode under ``torch.inference_mode`` (the
    loop switches modes); it must not change the model. ``direction`` says whether higher is better.
    """

    name: str
    unit: str
    direction: str
    target: float
    evaluate: Callable[[Any], float]
    every_steps: int
    note: str = ""

    def met(self, value: float) -> bool:
        return value >= self.target if self.direction == "higher" else value <= self.target


@dataclass
class TrainingTask:
    """One training workload, ready to step. See the module docstring for the contract."""

    model: Any
    forward_loss: Callable[[Any, Any], Any]
    forward: Callable[[Any, Any], Any]
    next_batch: Callable[[int], Any]
    make_optimizer: Callable[[Iterable[Any]], Any]
    samples_per_batch: int
    device: Any
    grad_hook: Callable[[Any], None] | None = None
    after_step: Callable[[int], None] | None = None
    epoch_steps: int | None = None
    quality: Quality | None = None
    throughput_only: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_mode(params: dict[str, Any], has_quality: bool, why_not: str | None) -> None:
    """Parameter combinations a training benchmark refuses before anything runs."""
    if not params.get("ttq"):
        return
    if params.get("mode", "train") != "train":
        raise UsageError("--ttq trains to a target: it needs --mode train")
    if not has_quality:
        raise UsageError(f"--ttq is not offered here: {why_not}")
    if params.get("data") == "synthetic":
        raise UsageError("--ttq trains to a target on real data: it cannot be combined with --data synthetic")


@dataclass(frozen=True)
class TrainingOptions:
    """The training runner's options (``RunOptions.runner_options["training"]``): ``ttq_budget_s`` is the
    --ttq time budget (the CLI sets it from an explicit --max-time; None: DEFAULT_TTQ_BUDGET_S)."""

    ttq_budget_s: float | None = None
    explicit: tuple[str, ...] = ()

    def resolve(self) -> TrainingOptions:
        if self.ttq_budget_s is not None and not self.ttq_budget_s > 0:
            raise UsageError(f"the --ttq time budget must be positive, got {self.ttq_budget_s}")
        return self

    def config(self) -> dict[str, Any]:
        """What enters a sweep's definition: nothing (the budget only says how long, not what is measured)."""
        return {}


def cli_options(values: Mapping[str, Any], measure: Any, given: frozenset[str]) -> TrainingOptions:
    """The training runner's options from ``aibench run``/``sweep``: it adds no option of its own; an explicit
    --max-time is the --ttq time budget."""
    return TrainingOptions(ttq_budget_s=measure.max_time if "max_time" in given else None)


def _is_on(word: str | None) -> bool:
    return word is not None and word.lower() not in ("0", "false", "no", "off")


def primary(bench: Any, params: dict[str, Any] | None = None, options: Any = None) -> str:
    """A --ttq run's headline is its time to target; otherwise the benchmark's own primary metric."""
    return "time_to_target" if params and params.get("ttq") else bench.primary_metric


def primary_from_args(bench: Any, option: Callable[[str], str | None]) -> str:
    """:func:`primary` from a command line (``option(flag)`` is the word after ``flag``, "" for a bare flag,
    None when absent)."""
    ttq = option("--ttq")
    return "time_to_target" if ttq is not None and (ttq == "" or _is_on(ttq)) else bench.primary_metric


def check_data_parallel(params: dict[str, Any]) -> None:
    """What DistributedDataParallel ranks refuse: forward-only steps, and --ttq (evaluated on one rank)."""
    if params.get("mode", "train") != "train":
        raise UsageError("a distributed sweep trains with DistributedDataParallel: --mode train (inference "
                         "scales out with load-generated benchmarks)")
    if params.get("ttq"):
        raise UsageError("--ttq evaluates on one rank between steps, which DistributedDataParallel cannot "
                         "follow; sweep throughput (without --ttq)")


CLI = RunnerCli(build=cli_options)

TRAINING = register_runner(RunnerSpec(
    name="training", contract="aibench.measure.train_task:TrainingTask",
    measure="aibench.measure.training:run_training", capabilities=frozenset({"trains"}),
    metrics=TRAINING_METRICS, options="training", options_type="aibench.measure.train_task:TrainingOptions",
    cli_options="aibench.measure.train_task:CLI", primary="aibench.measure.train_task:primary",
    primary_from_args="aibench.measure.train_task:primary_from_args",
    check_distributed="aibench.measure.train_task:check_data_parallel",
    describe="training loop: steps timed one by one, init/setup/warm-up/run, optional time to quality"))
