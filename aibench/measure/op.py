"""The ``kernel`` runner's contract, light (no torch): what a micro benchmark's factory returns, the metrics
the kernel timer reports, and the runner's registration. The timer itself is :mod:`aibench.measure.kernel`,
imported only when a kernel benchmark is measured.

Contract for a micro benchmark's factory: ``factory(params, device, dtype) -> Op``. The factory allocates
inputs (untimed) and returns a closure that performs exactly the operation to time, plus the FLOP and
byte counts of one call where they are defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibench import meters
from aibench.registry import MetricSpec, RunnerSpec, register_runner

DTYPES = ("float32", "float64", "float16", "bfloat16")  # the element types a micro benchmark takes
TIME = "samples.time"  # the per-call times of the timed blocks
KERNEL_METRICS = (
    MetricSpec("time_median", "s", "lower", "median time of one call", "median", TIME),
    MetricSpec("time_iqr", "s", "lower", "interquartile range of the per-call time", "iqr", TIME),
    MetricSpec("time_p90", "s", "lower", "90th percentile of the per-call time", "p90", TIME),
    MetricSpec("time_p99", "s", "lower", "99th percentile of the per-call time", "p99", TIME),
    MetricSpec("time_min", "s", "lower", "fastest per-call time", "min", TIME),
    MetricSpec("gflops", "GFLOP/s", "higher", "achieved FLOP rate at the median time (where FLOPs are defined)",
               "rate", TIME, "median"),
    MetricSpec("gbps", "GB/s", "higher", "achieved memory traffic at the median time (minimum bytes moved)",
               "rate", TIME, "median"),
    *meters.metric_specs("call", "the timed rounds"),
)


@dataclass
class Op:
    """One operation to time. ``flops``/``bytes`` are per call; None means not defined for this op,
    and ``flops_note``/``bytes_note`` then say why (they otherwise give the formula used)."""

    fn: Callable[[], Any]
    flops: float | None
    bytes: float | None
    flops_note: str
    bytes_note: str
    shapes: dict[str, Any] = field(default_factory=dict)
    # For an op that is not one call in this process (a collective over several ranks): its own block timer,
    # metrics derived from the per-call summary, context to record, and what to release after measuring.
    block_timer: Any = None
    extra_metrics: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None


KERNEL = register_runner(RunnerSpec(
    name="kernel", contract="aibench.measure.op:Op", measure="aibench.measure.kernel:run_kernel",
    metrics=KERNEL_METRICS,
    describe="kernel timer: blocks of calls, warm-up, calibration, a stopping rule on the median's CI"))
