"""The ``training`` runner: training steps (or forward-only steps) of a workload, timed one by one, with the
wall time split into init / setup / warm-up / run and, optionally, time to a quality target.

The task API (contract between workloads and anything that drives them) is
:mod:`aibench.measure.train_task`, light, which workloads import.

The parts: the loop and its per-step clocks (:mod:`aibench.measure.train_loop`: :func:`training_loop` takes
``model=``, e.g. a DDP wrapper of ``task.model``, and ``optimizer=`` overrides and returns a ``LoopLog`` of
plain numbers), the init/setup phases and determinism (:mod:`aibench.measure.train_phases`), the
time-to-quality figures (:mod:`aibench.measure.train_ttq`); this module turns them into the measurement.
:func:`run_training` is the runner registered as ``training`` (:data:`aibench.measure.train_task.TRAINING`).

Timing. On CPU each step ends with a ``perf_counter`` read (CPU work is synchronous). On CUDA a CUDA event
is recorded after each step and the intervals are read once the steps are done, so the host never waits
for the device inside the run (a per-step synchronisation would drain the launch queue that a plain
training loop keeps full); the run's total is the host clock with the device synchronised before both
reads. Losses are kept as detached device tensors and read after the run (no ``.item()`` per step).
Imports torch only inside functions.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from aibench import meters
from aibench.errors import UnavailableError
from aibench.measure.train_loop import LoopLog, sync, training_loop
from aibench.measure.train_phases import claim_init, deterministic_algorithms, device_init, process_age
from aibench.measure.train_task import TrainingOptions, TrainingTask
from aibench.measure.train_ttq import energy_to_target, ttq_metrics
from aibench.results.schema import metric
from aibench.results.stats import summarize

if TYPE_CHECKING:
    from aibench.harness import RunOptions
    from aibench.registry import Benchmark
    from aibench.results.measurement import Measurement

LOSS_CURVE_MAX_POINTS = 10_000  # beyond this many steps the loss curve is kept as means of blocks of steps
FIRST_RUN = ("samples_per_s", "step_time_median", "step_time_p99", "loss_final", "time_init", "time_setup",
             "time_run", "epoch_time")
FIRST_TTQ = ("time_to_target", "steps_to_target", "target_reached", "quality", "samples_per_s", "time_init",
             "time_setup", "energy_to_target")

# --- the runner --------------------------------------------------------------------------------------

def run_training(bench: Benchmark, params: dict[str, Any], result: Measurement, opts: RunOptions) -> Measurement:
    """The runner registered as ``training``: fills and returns ``result``."""
    from aibench.measure.device import resolve_device

    entered = time.perf_counter()
    age, age_source = process_age()
    first = claim_init()
    mode = params.get("mode", "train")
    ttq = bool(params.get("ttq", False))
    seed = opts.seed
    options: TrainingOptions = opts.options_for("training")
    device = resolve_device(params.get("device", "cpu"))
    device_init_s = device_init(device)
    steps, warmup = int(params.get("steps", 10)), int(params.get("warmup_steps", 0))
    with deterministic_algorithms(bool(params.get("deterministic", False)), device) as det:
        t_setup = time.perf_counter()
        task: TrainingTask = bench.factory(params, device=device, seed=seed)
        if ttq and task.quality is None:
            raise UnavailableError(f"{bench.id}: no time to quality here: {task.throughput_only or 'no target'}")
        # The optimizer is set-up too (its first construction also pays torch.optim's lazy imports).
        optimizer = task.make_optimizer(task.model.parameters()) if mode == "train" else None
        sync(device)
        setup_s = time.perf_counter() - t_setup
        what = "every training step from the first (--ttq)" if ttq else "the timed steps (warm-up excluded)"
        window = meters.window(device, what=what)
        log = training_loop(task, steps, mode=mode, warmup_steps=warmup, optimizer=optimizer, window=window,
                            ttq=ttq, budget_s=options.ttq_budget_s)
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
    return result


def _fill(result: Measurement, bench: Benchmark, params: dict[str, Any], task: TrainingTask, log: LoopLog,
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
        m.update(ttq_metrics(task, log))
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
        energy_to_target(result, log)
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


def _loss_curve(result: Measurement, log: LoopLog) -> None:
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
