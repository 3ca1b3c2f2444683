"""The time-to-quality figures of a training run (MLPerf Training's rule: clock from the first step,
evaluations included): time, steps and epochs to the target, the last quality, and the energy to target."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aibench.measure.train_loop import LoopLog
from aibench.measure.train_task import TrainingTask
from aibench.results.schema import metric

if TYPE_CHECKING:
    from aibench.results.measurement import Measurement


def ttq_metrics(task: TrainingTask, log: LoopLog) -> dict[str, dict[str, Any]]:
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


def energy_to_target(result: Measurement, log: LoopLog) -> None:
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
