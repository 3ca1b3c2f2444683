"""The ``training`` runner: training steps (or forward-only steps) of a workload, timed one by one, with the
wall time split into init / setup / warm-up / run and, optionally, time to a quality target.

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

:func:`training_loop` runs warm-up steps then timed steps of a task, and takes ``model=`` (e.g. a DDP
wrapper of ``task.model``) and ``optimizer=`` overrides; it returns a :class:`LoopLog` of plain numbers.
:func:`run_training` is the runner registered as ``training`` in :data:`aibench.runner.RUNNERS`.

Timing. On CPU each step ends with a ``perf_counter`` read (CPU work is synchronous). On CUDA a CUDA event
is recorded after each step and the intervals are read once the steps are done, so the host never waits
for the device inside the run (a per-step synchronisation would drain the launch queue that a plain
training loop keeps full); the run's total is the host clock with the device synchronised before both
reads. Losses are kept as detached device tensors and read after the run (no ``.item()`` per step).
Imports torch only inside functions.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aibench import meters
from aibench.errors import UnavailableError, UsageError
from aibench.registry import MetricSpec
from aibench.results.schema import metric
from aibench.results.stats import summarize

if TYPE_CHECKING:
    from aibench.registry import Benchmark
    from aibench.results.schema import Result

MODES = ("train", "infer")
# A --ttq run without --max-time trains for at most this long (the CLI's --max-time default, 2 s, is the
# kernel timer's budget and far too short to train anything).
DEFAULT_TTQ_BUDGET_S = 600.0
LOSS_CURVE_MAX_POINTS = 10_000  # beyond this many steps the loss curve is kept as means of blocks of steps
FIRST_RUN = ("samples_per_s", "step_time_median", "step_time_p99", "loss_final", "time_init", "time_setup",
             "time_run", "epoch_time")
FIRST_TTQ = ("time_to_target", "steps_to_target", "target_reached", "quality", "samples_per_s", "time_init",
             "time_setup", "energy_to_target")

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


# --- the task API ------------------------------------------------------------------------------------

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


@dataclass
class LoopLog:
    """What a loop measured: plain numbers, no tensors."""

    mode: str
    timing: str
    warmup_times: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # every step, warm-up included (train mode)
    warmup_s: float = 0.0
    run_s: float = 0.0
    samples: int = 0  # samples in the timed steps
    steps_total: int = 0  # warm-up + timed
    stop_reason: str = "steps"
    diverged_at: int | None = None  # 0-based step of the first non-finite loss
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    eval_s: float = 0.0
    reached: bool | None = None
    time_to_target: float | None = None
    steps_to_target: int | None = None
    budget_s: float | None = None

    @property
    def samples_per_s(self) -> float | None:
        busy = math.fsum(self.step_times)
        return self.samples / busy if busy > 0 and self.samples else None


# --- step timing -------------------------------------------------------------------------------------

class _HostStepClock:
    """Per-step intervals on the host clock (CPU work is synchronous: no device to wait for)."""

    name = "host-clock (perf_counter after each step)"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.times: list[float] = []
        self._prev = 0.0

    def start(self) -> None:
        self._prev = self.clock()

    def mark(self) -> None:
        now = self.clock()
        self.times.append(now - self._prev)
        self._prev = now

    def collect(self) -> list[float]:
        out, self.times = self.times, []
        return out


class _CudaStepClock:
    """Per-step intervals between CUDA events recorded after each step, read after the steps (no host wait
    inside the run)."""

    name = "cuda-events (one event after each step, read after the run)"

    def __init__(self, device: Any) -> None:
        self.device = device
        self._events: list[list[Any]] = []

    def _event(self) -> Any:
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))  # the run's device, whichever device is current
        return ev

    def start(self) -> None:
        self._events.append([self._event()])  # a new segment: intervals never span a pause (evaluation)

    def mark(self) -> None:
        self._events[-1].append(self._event())

    def collect(self) -> list[float]:
        import torch

        torch.cuda.synchronize(self.device)
        out = [a.elapsed_time(b) / 1e3 for seg in self._events for a, b in itertools.pairwise(seg)]
        self._events = []
        return out


def _sync(device: Any) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


# --- the loop ----------------------------------------------------------------------------------------

def training_loop(task: TrainingTask, steps: int, *, mode: str = "train", warmup_steps: int = 0,
                  model: Any = None, optimizer: Any = None, window: Any = None, ttq: bool = False,
                  budget_s: float | None = None, clock: Callable[[], float] = time.perf_counter) -> LoopLog:
    """Run ``warmup_steps`` then ``steps`` timed steps of ``task`` (train: forward, loss, backward, gradient
    hook, optimizer step; infer: forward only under ``torch.inference_mode``).

    ``model`` defaults to ``task.model`` (pass ``DDP(task.model)`` to train it data-parallel); ``optimizer``
    defaults to ``task.make_optimizer(model.parameters())``. ``window`` (a meters window, or any context
    manager) is entered around exactly the timed steps. With ``ttq=True`` (train mode, a task with a
    ``quality``) the loop trains until the target is met or ``budget_s`` has passed, evaluating every
    ``quality.every_steps`` steps, ``steps`` is not used, and ``window`` covers every step from the first.
    """
    import torch

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = task.model if model is None else model
    train = mode == "train"
    if ttq and (not train or task.quality is None):
        raise ValueError("time to quality needs train mode and a task with a quality target")
    if train and optimizer is None:
        optimizer = task.make_optimizer(model.parameters())
    device = task.device
    cuda = getattr(device, "type", "cpu") == "cuda"
    timer = _CudaStepClock(device) if cuda else _HostStepClock(clock)
    log = LoopLog(mode=mode, timing=timer.name)
    losses: list[Any] = []
    grad_hook, after_step, next_batch = task.grad_hook, task.after_step, task.next_batch
    forward_loss, forward = task.forward_loss, task.forward

    def train_step(i: int) -> None:
        batch = next_batch(i)
        optimizer.zero_grad(set_to_none=True)
        loss = forward_loss(model, batch)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model)
        optimizer.step()
        if after_step is not None:
            after_step(i)
        losses.append(loss.detach())

    def infer_step(i: int) -> None:
        forward(model, next_batch(i))

    step_fn = train_step if train else infer_step
    model.train(train)
    ctx = contextlib.nullcontext() if train else torch.inference_mode()
    with ctx:
        if ttq:
            _ttq_loop(task, step_fn, model, timer, log, warmup_steps, window, budget_s, clock)
        else:
            _sync(device)
            t0 = clock()
            timer.start()
            for i in range(warmup_steps):
                step_fn(i)
                timer.mark()
            log.warmup_times = timer.collect() if warmup_steps else []
            _sync(device)
            t1 = clock()
            log.warmup_s = t1 - t0 if warmup_steps else 0.0
            with window if window is not None else contextlib.nullcontext():
                _sync(device)
                t1 = clock()
                timer.start()
                for i in range(warmup_steps, warmup_steps + steps):
                    step_fn(i)
                    timer.mark()
                _sync(device)
                log.run_s = clock() - t1
            log.step_times = timer.collect()
            log.steps_total = warmup_steps + steps
            log.samples = steps * task.samples_per_batch
    if losses:
        log.losses = [float(x) for x in torch.stack(losses).float().cpu().tolist()]
        bad = [i for i, x in enumerate(log.losses) if not math.isfinite(x)]
        log.diverged_at = bad[0] if bad else None
    return log


def _ttq_loop(task: TrainingTask, step_fn: Callable[[int], None], model: Any, timer: Any, log: LoopLog,
              warmup_steps: int, window: Any, budget_s: float | None, clock: Callable[[], float]) -> None:
    """Train until the quality target is met or the budget is spent. The clock runs from the first step;
    evaluations count towards time to target (MLPerf's rule) and are excluded from the step times."""
    import torch

    q = task.quality
    assert q is not None
    budget = DEFAULT_TTQ_BUDGET_S if budget_s is None else budget_s
    log.budget_s = budget
    times: list[float] = []
    i = 0
    log.stop_reason = "budget"
    with window if window is not None else contextlib.nullcontext():
        _sync(task.device)
        t0 = clock()
        timer.start()
        while True:
            step_fn(i)
            timer.mark()
            i += 1
            if i % q.every_steps == 0:
                times += timer.collect()
                e0 = clock()
                model.train(False)
                with torch.inference_mode():
                    value = float(q.evaluate(model))
                model.train(True)
                e1 = clock()
                log.eval_s += e1 - e0
                log.evaluations.append({"step": i, "time_s": e1 - t0, "value": value})
                if math.isfinite(value) and q.met(value):
                    log.reached, log.time_to_target, log.steps_to_target = True, e1 - t0, i
                    log.stop_reason = "target"
                    break
                if not math.isfinite(value):
                    log.stop_reason = "diverged (non-finite quality)"
                    break
                timer.start()
            if clock() - t0 >= budget:
                break
        times += timer.collect()
        _sync(task.device)
        log.run_s = clock() - t0
    if log.reached is None:
        log.reached = False
    log.warmup_times, log.step_times = times[:warmup_steps], times[warmup_steps:]
    log.warmup_s = math.fsum(log.warmup_times)
    log.steps_total = i
    log.samples = len(log.step_times) * task.samples_per_batch


# --- init / setup accounting -------------------------------------------------------------------------

_INIT_CLAIMED = False


def process_age() -> tuple[float | None, str]:
    """Seconds since this process started (kernel's start time, 1/CLK_TCK resolution), or None and why."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat.rpartition(")")[2].split()[19])  # field 22 (starttime), after "pid (comm)"
        ticks = os.sysconf("SC_CLK_TCK")
        if hasattr(time, "CLOCK_BOOTTIME"):
            now = time.clock_gettime(time.CLOCK_BOOTTIME)
            source = f"/proc/self/stat starttime vs CLOCK_BOOTTIME (1/{ticks} s ticks)"
        else:
            with open("/proc/uptime") as f:
                now = float(f.read().split()[0])
            source = f"/proc/self/stat starttime vs /proc/uptime (1/{ticks} s ticks)"
        return now - start_ticks / ticks, source
    except (OSError, ValueError, IndexError, AttributeError) as exc:
        return None, f"the OS does not give this process's start time ({type(exc).__name__}: {exc})"


def _device_init(device: Any) -> float:
    """Create the CUDA context now (it is lazily created on first use) and return how long it took."""
    if getattr(device, "type", "cpu") != "cuda":
        return 0.0
    import torch

    t0 = time.perf_counter()
    torch.cuda.init()
    torch.empty(1, device=device)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: Any) -> Iterator[dict[str, Any]]:
    """Enforce deterministic algorithms for the duration when ``enabled``; yields what was in force."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    info: dict[str, Any] = {"requested": enabled}
    if enabled:
        if getattr(device, "type", "cpu") == "cuda" and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS needs it for reproducible results
            info["cublas_workspace_config_set"] = ":4096:8"
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    info["enforced"] = torch.are_deterministic_algorithms_enabled()
    info["cudnn_deterministic"] = torch.backends.cudnn.deterministic
    info["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield info
    except RuntimeError as exc:
        if enabled and "deterministic" in str(exc):
            first = str(exc).strip().splitlines()[0]
            raise UnavailableError(f"--deterministic: {first}") from None
        raise
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_before


# --- the runner --------------------------------------------------------------------------------------

def ttq_budget(opts: Any) -> float | None:
    """The --ttq time budget from the run options: ``opts.ttq_budget_s`` where set (the CLI sets it from an
    explicit --max-time), else None (the loop's default)."""
    return getattr(opts, "ttq_budget_s", None)


def run_training(bench: Benchmark, params: dict[str, Any], result: Result, opts: Any) -> None:
    """The runner registered as ``training``: fills ``result`` in place."""
    global _INIT_CLAIMED
    from aibench.measure.device import resolve_device

    entered = time.perf_counter()
    age, age_source = process_age()
    first = not _INIT_CLAIMED
    _INIT_CLAIMED = True
    mode = params.get("mode", "train")
    ttq = bool(params.get("ttq", False))
    seed = int(getattr(opts, "seed", 0))
    device = resolve_device(params.get("device", "cpu"))
    device_init_s = _device_init(device)
    steps, warmup = int(params.get("steps", 10)), int(params.get("warmup_steps", 0))
    with deterministic_algorithms(bool(params.get("deterministic", False)), device) as det:
        t_setup = time.perf_counter()
        task: TrainingTask = bench.factory(params, device=device, seed=seed)
        if ttq and task.quality is None:
            raise UnavailableError(f"{bench.id}: no time to quality here: {task.throughput_only or 'no target'}")
        # The optimizer is set-up too (its first construction also pays torch.optim's lazy imports).
        optimizer = task.make_optimizer(task.model.parameters()) if mode == "train" else None
        _sync(device)
        setup_s = time.perf_counter() - t_setup
        what = "every training step from the first (--ttq)" if ttq else "the timed steps (warm-up excluded)"
        window = meters.window(device, what=what)
        log = training_loop(task, steps, mode=mode, warmup_steps=warmup, optimizer=optimizer, window=window,
                            ttq=ttq, budget_s=ttq_budget(opts))
    end = time.perf_counter()
    _fill(result, bench, params, task, log, window, ttq)
    phases: dict[str, Any] = {
        "device_init_s": device_init_s, "setup_s": setup_s, "warmup_s": log.warmup_s, "run_s": log.run_s,
        "eval_s": log.eval_s, "runner_s": end - entered, "process_age_source": age_source,
    }
    if age is not None and first:
        phases["init_s"] = age + device_init_s
        phases["process_to_runner_s"] = age
        phases["wall_s"] = age + (end - entered)
        result.metrics["time_init"] = metric(age + device_init_s, "s", "lower")
        result.metrics["time_wall"] = metric(age + (end - entered), "s", "lower")
    else:
        why = (age_source if age is None else
               "an earlier run in this process paid its start-up (init is counted once per process)")
        result.metrics["time_init"] = metric(None, "s", "lower", unavailable=why)
        result.metrics["time_wall"] = metric(None, "s", "lower", unavailable=why)
    result.metrics["time_setup"] = metric(setup_s, "s", "lower")
    result.metrics["time_warmup"] = metric(log.warmup_s, "s", "lower") if warmup else metric(
        None, "s", "lower", unavailable="no warm-up steps (--warmup-steps 0)")
    result.metrics["time_run"] = metric(log.run_s, "s", "lower")
    result.context["phases"] = phases
    result.method["deterministic"] = det
    # Order for tables (the first columns shown): the headline figures first.
    order = FIRST_TTQ if ttq else FIRST_RUN
    result.metrics = {k: result.metrics[k] for k in order if k in result.metrics} | result.metrics
    if log.mode == "train" and log.diverged_at is not None:
        # Figures of a diverged run are never plain numbers (as for an INVALID LoadGen run).
        why = f"the training loss became non-finite at step {log.diverged_at + 1} (training diverged)"
        result.validity = {"valid": False, "result": "INVALID", "summary": f"INVALID: {why}", "reasons": [why]}
        for entry in result.metrics.values():
            entry["valid"] = False


def _fill(result: Result, bench: Benchmark, params: dict[str, Any], task: TrainingTask, log: LoopLog,
          window: Any, ttq: bool) -> None:
    """Metrics, samples, method and context of a finished loop (the phase times are added by the caller)."""
    train = log.mode == "train"
    rate = log.samples_per_s
    m: dict[str, dict[str, Any]] = {}
    # Declared the inverse of the mean step time (TRAINING_METRICS); its work is the samples of one step.
    m["samples_per_s"] = metric(rate, "samples/s", "higher", work=log.samples / len(log.step_times)) if rate \
        else metric(None, "samples/s", "higher", unavailable="no timed steps (all steps were warm-up)")
    if log.step_times:
        s = summarize(log.step_times)
        result.samples["step_time"] = {"unit": "s", "per": "step", "values": log.step_times, "summary": s,
                                       "first_step": len(log.warmup_times) + 1}
        m["step_time_median"] = metric(s["median"], "s", "lower")
        m["step_time_iqr"] = metric(s["iqr"], "s", "lower")
        m["step_time_p99"] = metric(s["p99"], "s", "lower")
        result.noisy = s["noisy"]
    else:
        for name in ("step_time_median", "step_time_iqr", "step_time_p99"):
            m[name] = metric(None, "s", "lower", unavailable="no timed steps")
    if log.warmup_times:
        result.samples["warmup_step_time"] = {"unit": "s", "per": "step", "values": log.warmup_times,
                                              "summary": summarize(log.warmup_times), "first_step": 1}
    m["epoch_time"] = _epoch_time(task, log)
    m["loss_final"] = _loss_final(log)
    _loss_curve(result, log)
    if ttq:
        result.primary_metric = "time_to_target"
        m.update(_ttq_metrics(task, log))
        result.context["ttq"] = {
            "reached": log.reached, "budget_s": log.budget_s, "stop_reason": log.stop_reason,
            "eval_s": log.eval_s, "steps": log.steps_total, "evaluations": log.evaluations,
            "clock": "host clock from the first training step; evaluations included, setup excluded"}
    else:
        why = "not a --ttq run" if task.quality is not None else f"throughput only: {task.throughput_only}"
        for spec in ("time_to_target", "steps_to_target", "epochs_to_target", "target_reached", "quality",
                     "energy_to_target"):
            sp = next(x for x in bench.metrics if x.name == spec)
            m[spec] = metric(None, sp.unit, sp.direction, unavailable=why)
    result.metrics = m
    meters.fold_into(result, window, count=log.samples if not ttq else log.steps_total * task.samples_per_batch,
                     per="sample", busy_s=math.fsum(log.step_times) + (log.warmup_s if ttq else 0.0))
    if ttq:
        _energy_to_target(result, log)
    result.method.update({
        "runner": "training", "mode": log.mode, "timing": log.timing, "statistic": "median of per-step times",
        "steps": len(log.step_times), "warmup_steps": len(log.warmup_times), "steps_total": log.steps_total,
        "stop_reason": log.stop_reason, "samples_per_step": task.samples_per_batch,
        "rate": "samples / sum of timed step times",
        "loss_recording": "every step's loss kept as a detached device tensor, read after the run" if train
        else "forward-only: no loss",
    })
    result.context["task"] = {**task.info, "data": task.data, "epoch_steps": task.epoch_steps,
                              "throughput_only": task.throughput_only, "notes": task.notes}
    if task.quality is not None:
        q = task.quality
        result.context["quality"] = {"name": q.name, "unit": q.unit, "direction": q.direction,
                                     "target": q.target, "every_steps": q.every_steps, "note": q.note}


def _epoch_time(task: TrainingTask, log: LoopLog) -> dict[str, Any]:
    e = task.epoch_steps
    if not e:
        return metric(None, "s", "lower", unavailable=f"no epoch: {task.throughput_only or 'no data set'}")
    first = len(log.warmup_times)
    k = -(-first // e)  # the first epoch boundary at or after the first timed step
    epochs = []
    while (k + 1) * e <= first + len(log.step_times):
        epochs.append(math.fsum(log.step_times[k * e - first:(k + 1) * e - first]))
        k += 1
    if not epochs:
        return metric(None, "s", "lower", unavailable=f"no complete epoch of {e} steps among the timed steps "
                      f"(steps {first + 1}..{first + len(log.step_times)}); run more steps")
    return metric(math.fsum(epochs) / len(epochs), "s", "lower", epochs=len(epochs), steps_per_epoch=e)


LOSS_FINAL_STEPS = 10


def _loss_final(log: LoopLog) -> dict[str, Any]:
    """The mean loss of the last LOSS_FINAL_STEPS timed steps. Warm-up steps are excluded: their loss (from
    freshly initialised weights, often a spike) says nothing about where training ended."""
    if log.mode != "train":
        return metric(None, "loss", "lower", unavailable="forward-only (--mode infer): no loss")
    if not log.losses:
        return metric(None, "loss", "lower", unavailable="no steps")
    warmup = len(log.warmup_times)
    timed = log.losses[warmup:]
    if not timed:
        return metric(None, "loss", "lower", unavailable="no timed steps (every step was warm-up)")
    tail = timed[-LOSS_FINAL_STEPS:]
    if not all(math.isfinite(x) for x in tail):
        return metric(None, "loss", "lower", unavailable="the loss became non-finite (training diverged)")
    first, last = warmup + len(timed) - len(tail) + 1, warmup + len(timed)
    note = f"mean loss of the last {len(tail)} timed step(s), steps {first}-{last}"
    if warmup:
        note += f"; the {warmup} warm-up step(s) are excluded"
    return metric(math.fsum(tail) / len(tail), "loss", "lower", steps=[first, last], note=note)


def _loss_curve(result: Result, log: LoopLog) -> None:
    """The loss per step (per block of steps beyond LOSS_CURVE_MAX_POINTS), up to the first non-finite."""
    losses = log.losses if log.diverged_at is None else log.losses[:log.diverged_at]
    if not losses:
        return
    block = max(1, -(-len(losses) // LOSS_CURVE_MAX_POINTS))
    values = [math.fsum(losses[i:i + block]) / len(losses[i:i + block]) for i in range(0, len(losses), block)]
    entry = {"unit": "loss", "per": "step" if block == 1 else f"mean of {block} steps", "block": block,
             "values": values, "summary": summarize(values), "first_step": 1,
             "warmup_steps": len(log.warmup_times)}
    if log.diverged_at is not None:
        entry["truncated_at_step"] = log.diverged_at + 1
    result.samples["loss"] = entry


def _ttq_metrics(task: TrainingTask, log: LoopLog) -> dict[str, dict[str, Any]]:
    q = task.quality
    assert q is not None
    out: dict[str, dict[str, Any]] = {}
    last = log.evaluations[-1]["value"] if log.evaluations else None
    if log.reached:
        out["time_to_target"] = metric(log.time_to_target, "s", "lower")
        out["steps_to_target"] = metric(float(log.steps_to_target or 0), "steps", "lower")
        out["epochs_to_target"] = (metric((log.steps_to_target or 0) / task.epoch_steps, "epochs", "lower")
                                   if task.epoch_steps else metric(None, "epochs", "lower",
                                                                   unavailable="no epoch"))
    else:
        seen = (f"; last evaluation {last:.4g} {q.unit} at step {log.evaluations[-1]['step']}" if last is not None
                else "; no evaluation was reached")
        why = (f"target {q.name} {'>=' if q.direction == 'higher' else '<='} {q.target:g} not met "
               f"({log.stop_reason}){seen}")
        out["time_to_target"] = metric(None, "s", "lower", unavailable=why)
        out["steps_to_target"] = metric(None, "steps", "lower", unavailable=why)
        out["epochs_to_target"] = metric(None, "epochs", "lower", unavailable=why)
    out["target_reached"] = metric(1.0 if log.reached else 0.0, "bool", "higher")
    out["quality"] = (metric(last, q.unit, q.direction, name=q.name) if last is not None and math.isfinite(last)
                      else metric(None, q.unit, q.direction, unavailable="no finite evaluation", name=q.name))
    return out


def _energy_to_target(result: Result, log: LoopLog) -> None:
    total = (result.meters.get("energy") or {}).get("total") or {}
    if not log.reached:
        result.metrics["energy_to_target"] = metric(None, "J", "lower", unavailable="target not met")
    elif total.get("energy_j") is None:
        result.metrics["energy_to_target"] = metric(
            None, "J", "lower", unavailable=f"no energy counter: {total.get('reason')} ({total.get('detail')})")
    else:
        # The window ends at the evaluation that met the target: its energy is the energy to target.
        result.metrics["energy_to_target"] = metric(total["energy_j"], "J", "lower",
                                                    provenance=total.get("provenance"), scope=total.get("scope"))


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
