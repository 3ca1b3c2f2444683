"""The ``kernel`` runner: measures one operator built by a micro benchmark's factory.

Contract for a micro benchmark's factory: ``factory(params, device, dtype) -> Op``. The factory allocates
inputs (untimed) and returns a closure that performs exactly the operation to time, plus the FLOP and
byte counts of one call where they are defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aibench import meters
from aibench.measure.timer import KernelTimer, TimerSettings
from aibench.registry import MetricSpec
from aibench.results.schema import metric

if TYPE_CHECKING:
    from aibench.registry import Benchmark
    from aibench.results.schema import Result

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


def run_kernel(bench: Benchmark, params: dict[str, Any], result: Result, settings: TimerSettings) -> None:
    """Build the op, probe it once, time it, and fill ``result`` in place."""
    from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype

    device = resolve_device(params["device"])
    dtype = resolve_dtype(params["dtype"], device)
    with refusing_unsupported(device, dtype):
        op: Op = bench.factory(params, device=device, dtype=dtype)
    try:
        _measure(op, device, dtype, result, settings)
    finally:
        if op.close is not None:
            op.close()


def _measure(op: Op, device: Any, dtype: Any, result: Result, settings: TimerSettings) -> None:
    from aibench.measure.device import block_timer_for, refusing_unsupported, synchronizer

    with refusing_unsupported(device, dtype):
        op.fn()  # one untimed call: turns 'not implemented for Half' into a clear refusal up front
        sync = synchronizer(device)
        if sync is not None:
            sync()
    window = meters.window(device, what="timed rounds (after warm-up and calibration)")
    m = KernelTimer(op.fn, settings, block_timer=op.block_timer or block_timer_for(device)).measure(window=window)
    s = m.summary
    med = s["median"]
    result.samples["time"] = {"unit": "s", "per": "call", "values": m.samples, "summary": s}
    result.method.update(m.method())
    result.noisy = s["noisy"]
    result.metrics = {
        "time_median": metric(med, "s", "lower"),
        "time_iqr": metric(s["iqr"], "s", "lower"),
        "time_p90": metric(s["p90"], "s", "lower"),
        "time_p99": metric(s["p99"], "s", "lower"),
        "time_min": metric(s["min"], "s", "lower"),
        "gflops": _rate(op.flops, med, 1e9, "GFLOP/s", op.flops_note),
        "gbps": _rate(op.bytes, med, 1e9, "GB/s", op.bytes_note),
    }
    # Energy covers the whole window; busy_s is the part spent inside timed blocks (the rest is the
    # stopping rule's bookkeeping between blocks), so a reader can see how much idle the figure holds.
    meters.fold_into(result, window, count=m.rounds * m.number, per="call",
                     busy_s=sum(m.samples) * m.number)
    result.context["shapes"] = op.shapes
    result.context["flops_per_call"] = op.flops
    result.context["bytes_per_call"] = op.bytes
    result.context["formulas"] = {"flops": op.flops_note, "bytes": op.bytes_note}
    if op.extra_metrics is not None:
        result.metrics.update(op.extra_metrics(s))
    result.context.update(op.context)


def _rate(amount: float | None, seconds: float, scale: float, unit: str, note: str) -> dict[str, Any]:
    if amount is None:
        return metric(None, unit, "higher", unavailable=note)
    if seconds <= 0:
        return metric(None, unit, "higher", unavailable="median time is zero")
    return metric(amount / seconds / scale, unit, "higher", work=amount / scale)
