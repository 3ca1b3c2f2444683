"""The ``kernel`` runner: measures one operator built by a micro benchmark's factory.

Contract for a micro benchmark's factory: ``factory(params, device, dtype) -> Op``. The factory allocates
inputs (untimed) and returns a closure that performs exactly the operation to time, plus the FLOP and
byte counts of one call where they are defined.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aibench import meters
from aibench.measure import pace
from aibench.measure.timer import HostBlockTimer, KernelTimer, Measurement, TimerSettings
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


# glibc's mallopt parameters (malloc.h) and the values the kernel runner fixes. With glibc's defaults an
# allocation above a *dynamic* mmap threshold (128 KiB at start) is mmap'ed and unmapped when freed, and
# free memory at the top of the heap beyond a trim threshold is returned to the system: an op whose
# temporaries cross those thresholds gets fresh, zero-filled pages on every call. Measured here (docs/gate.md,
# "Page faults and the allocator"): a depthwise conv (micro/conv --groups 64) took ~2,300 minor faults per call
# and 11-43 ms, against 0 faults and 1.0-1.4 ms with the thresholds fixed. Fixed thresholds make a kernel's
# time independent of what the process allocated before. The cost: memory freed by the op stays with the
# process (its peak is unchanged).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MALLOPT_SETTINGS = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest allowed value
                    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 1 << 30)}
ALLOCATOR_ENV = "AIBENCH_ALLOCATOR"  # "default": leave the C allocator as it is (to measure its effect)
_allocator: dict[str, Any] | None = None


def _libc_mallopt() -> Callable[[int, int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def fix_allocator(mallopt: Callable[[int, int], int] | None = None, env: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """Fix glibc malloc's mmap and trim thresholds in this process (once) and say what was set.

    ``mallopt`` and ``env`` are for tests. The returned record goes into every kernel result's
    ``method.allocator``, so a figure says which allocator setting it was measured under.
    """
    global _allocator
    if _allocator is not None and mallopt is None:
        return _allocator
    env = os.environ if env is None else env
    wanted = env.get(ALLOCATOR_ENV, "fixed").strip().lower() or "fixed"
    record: dict[str, Any]
    if wanted == "default":
        record = {"setting": "default", "reason": f"{ALLOCATOR_ENV}=default: the C allocator's own settings"}
    elif wanted != "fixed":
        record = {"setting": "default",
                  "reason": f"{ALLOCATOR_ENV}={env.get(ALLOCATOR_ENV)!r} is neither 'fixed' nor 'default'; "
                            "left the C allocator as it is"}
    else:
        fn = mallopt if mallopt is not None else _libc_mallopt()
        if fn is None:
            record = {"setting": "default", "reason": "not glibc: the C allocator's own settings"}
        else:
            done = {name: value for name, (param, value) in MALLOPT_SETTINGS.items() if fn(param, value) == 1}
            failed = sorted(set(MALLOPT_SETTINGS) - set(done))
            record = {"setting": "fixed" if not failed else "partly fixed", "malloc": "glibc",
                      "mallopt": done}
            if failed:
                record["reason"] = f"mallopt refused {', '.join(failed)}"
    if mallopt is None:
        _allocator = record
    return record


def run_kernel(bench: Benchmark, params: dict[str, Any], result: Result, settings: TimerSettings) -> None:
    """Build the op, probe it once, time it, and fill ``result`` in place."""
    from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype

    result.method["allocator"] = fix_allocator()  # before the op allocates anything
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
    timer = KernelTimer(op.fn, settings, block_timer=op.block_timer or block_timer_for(device))
    # Under `aibench gate`, an op timed in this process takes turns with the other side's process.
    pacer = pace.current() if op.block_timer is None else None
    order = pacer.hello() if pacer is not None else None
    if pacer is None or order is None:
        m = timer.measure(window=window)
    else:
        m = _measure_paced(timer, pacer, order, device, window, result)
    s = m.summary
    med = s["median"]
    result.samples["time"] = {"unit": "s", "per": "call", "values": m.samples, "summary": s}
    result.method.update(m.method())
    # Noisy: the blocks spread (IQR > 10% of the median), or page faults would cost a tenth of a call.
    result.noisy = bool(s["noisy"] or result.method["page_faults"].get("dominant"))
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


def _measure_paced(timer: KernelTimer, pacer: pace.Pacer, order: pace.Order, device: Any,
                   window: Any, result: Result) -> Measurement:
    """Time in the turns the gate grants. With one thread on the CPU the process is pinned to the CPU the
    gate chose (the other side gets the same one) and each block is timed with the thread's CPU clock: the
    time the thread was switched out for another job is not the op's (wall and CPU time agree to within 1%
    when nothing else runs). Otherwise the usual block timer, unpinned."""
    import torch

    single = torch.get_num_threads() == 1
    if single and device.type == "cpu":
        timer.block_timer = HostBlockTimer(clock=time.thread_time, name="thread-cpu-clock")
    with pace.pinned_cpu(order.cpu if single else None) as cpu:
        m = timer.measure(window=window, turns=pacer)
    result.method["paced"] = {"by": "aibench gate", "protocol": pace.PROTOCOL, "turn_s": order.turn_s,
                              "cpu": cpu, "clock": timer.block_timer.name,
                              "note": "measured in turns alternating with the other side's process"}
    return m


def _rate(amount: float | None, seconds: float, scale: float, unit: str, note: str) -> dict[str, Any]:
    if amount is None:
        return metric(None, unit, "higher", unavailable=note)
    if seconds <= 0:
        return metric(None, unit, "higher", unavailable="median time is zero")
    return metric(amount / seconds / scale, unit, "higher", work=amount / scale)
