"""The training loop: warm-up steps then timed steps of a :class:`~aibench.measure.train_task.TrainingTask`
(or, with time to quality, steps until the target is met), each step timed by a per-step clock that never
makes the host wait for the device inside the run. Returns a :class:`LoopLog` of plain numbers.

On CPU each step ends with a ``perf_counter`` read (CPU work is synchronous). On CUDA a CUDA event is
recorded after each step and the intervals are read once the steps are done (a per-step synchronisation
would drain the launch queue that a plain training loop keeps full); the run's total is the host clock with
the device synchronised before both reads. Losses are kept as detached device tensors and read after the
run (no ``.item()`` per step). Imports torch only inside functions.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibench.measure.train_task import DEFAULT_TTQ_BUDGET_S, MODES, TrainingTask


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


def sync(device: Any) -> None:
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
            sync(device)
            t0 = clock()
            timer.start()
            for i in range(warmup_steps):
                step_fn(i)
                timer.mark()
            log.warmup_times = timer.collect() if warmup_steps else []
            sync(device)
            t1 = clock()
            log.warmup_s = t1 - t0 if warmup_steps else 0.0
            with window if window is not None else contextlib.nullcontext():
                sync(device)
                t1 = clock()
                timer.start()
                for i in range(warmup_steps, warmup_steps + steps):
                    step_fn(i)
                    timer.mark()
                sync(device)
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
        sync(task.device)
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
        sync(task.device)
        log.run_s = clock() - t0
    if log.reached is None:
        log.reached = False
    log.warmup_times, log.step_times = times[:warmup_steps], times[warmup_steps:]
    log.warmup_s = math.fsum(log.warmup_times)
    log.steps_total = i
    log.samples = len(log.step_times) * task.samples_per_batch


