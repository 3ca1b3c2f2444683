"""``aibench partition profile``: every layer of a network timed on one side.

The network comes from the registry: a component benchmark whose task carries its network as ordered named
layers (:class:`aibench.networks.Layered`; every Tonic network and VGG), built in its ``dnn`` stage with one
seeded synthetic request (``--batch`` of them) as the input. Each layer is timed alone on the activation the
layers before it produce (computed once, untimed), after a warm-up, until it has run ``min_reps`` times and
for at least ``min_time_s`` (at most ``max_reps``); a CUDA side is synchronised before each clock read.
The whole network is timed the same way, so the sum of the layers can be checked against it. Each layer's
figure is its median call, or, on a side under a CPU quota, its mean call over at least four CFS periods
(:class:`Timing`, the rule the fit's sweep follows too; ``method.partition.layer_statistic`` says which).

The result is an ordinary aibench result (``aibench report`` shows it): ``parts.layer`` holds each layer's
distribution (seconds per call); ``samples.time`` the whole network's; ``method.partition`` each layer's
type, the paper's variables, its output shape and the bytes that would cross a cut after it, and the input
size (what crosses at cut 0), and each layer's power where the side's device has an energy counter (RAPL
for the CPU, NVML for a GPU), or why not.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aibench.errors import ResultIOError, UsageError
from aibench.partition.layers import describe
from aibench.partition.sides import Side, applied, torch_dtype

LAYER_NOTE = ("the time of one call of this layer alone, on the activation of the layers before it (host clock; "
              "a CUDA side is synchronised before each read)")


POWER_NOTE = ("each layer's power: the energy counters of the side's device (RAPL package + DRAM for the CPU, "
              "NVML for a GPU) over that layer's timed calls, divided by their duration; whole-device power, so "
              "other processes' work counts too; 'unavailable' with the reason where no counter can be read")


@dataclass
class Network:
    """A registered network ready to run: its benchmark, layers, an input and each layer's description."""

    bench: Any
    params: dict[str, Any]
    layers: list[tuple[str, Any]]
    x: Any
    module: Any



def task_layers(bench: Any, task: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The network an inference task carries and its named layers; UsageError (exit 2) when it carries none
    or it is not a chain of named layers."""
    from aibench.networks import layers_of
    from aibench.sut.task import InferenceTask

    network = task.network if isinstance(task, InferenceTask) else None
    if network is None:
        raise UsageError(f"{bench.id}: its model is not a sequence of named layers (its task carries no network), "
                         "so it cannot be cut")
    try:
        return network, layers_of(network)
    except TypeError as exc:
        raise UsageError(f"{bench.id}: {exc}") from None

def load_network(ref: str, side: Side, batch: int = 1) -> Network:
    """The network of component benchmark ``ref`` (``component/imc`` or ``imc``) on ``side``'s device and
    dtype, with one input of ``batch`` requests. UsageError (exit 2) for an unknown benchmark or one whose
    model is not a chain of named layers."""
    import torch

    from aibench import registry

    bench = registry.get(ref)
    if bench.kind != "component":
        raise UsageError(f"{bench.id}: only component benchmarks (whole networks) can be partitioned")
    if not bench.can("inference"):  # a training benchmark's factory takes other arguments
        raise UsageError(f"{bench.id}: its model is not a sequence of named layers (a training benchmark, not an "
                         "inference network), so it cannot be cut")
    given: dict[str, Any] = {"batch": batch, "num_samples": 1, "data": "synthetic", "stage": "dnn",
                             "device": side.device, "dtype": side.dtype}
    names = {p.name for p in bench.params}
    params = bench.resolve({k: v for k, v in given.items() if k in names})
    torch.manual_seed(0)
    task = bench.factory(params, torch.device(side.device), torch_dtype(side.dtype))
    network, layers = task_layers(bench, task)
    x = task.to_device(task.collate([task.load_sample(i % task.num_samples) for i in range(params.get("batch", 1))]),
                       task.device)
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"{bench.id}: its network's input is not one tensor ({type(x).__name__}), so it cannot be "
                         "cut")
    return Network(bench=bench, params=params, layers=layers, x=x, module=network)


def tensor_bytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


def describe_network(net: Network) -> dict[str, Any]:
    """Each layer's type, variables, output shape and output bytes, and the input's, from one untimed pass on
    meta tensors (shapes only, no arithmetic)."""
    import copy
    import itertools

    import torch
    from torch import nn

    from aibench.networks import layers_of

    # A copy whose weights are meta tensors from the start: deep-copying the real weights first would
    # double the memory (VGG-16: another 528 MB, on the GPU for a CUDA side) only to throw them away.
    memo: dict[int, Any] = {}
    for t in itertools.chain(net.module.parameters(), net.module.buffers()):
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=False) if isinstance(t, nn.Parameter) else empty
    meta = copy.deepcopy(net.module, memo)

    a = net.x.to("meta")
    layers = []
    with torch.inference_mode():
        for (name, _), (_, layer) in zip(net.layers, layers_of(meta), strict=True):
            y = layer(a)
            layers.append({"name": name, **describe(layer, tuple(a.shape), tuple(y.shape)),
                           "out_shape": list(y.shape), "out_bytes": tensor_bytes(y)})
            a = y
    return {"input_shape": list(net.x.shape), "input_bytes": tensor_bytes(net.x), "layers": layers}


def _sync(device: Any) -> Callable[[], None]:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


MAX_CALLS = 1_000_000  # a bound on the calls of one timing, whatever it needs


def time_call(fn: Callable[[], Any], sync: Callable[[], None], min_reps: int, max_reps: int, min_time_s: float,
              warmup: int = 2, clock: Callable[[], float] = time.perf_counter, span_s: float = 0.0) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then at least ``min_reps`` timed ones and at least
    ``min_time_s`` of them, at most ``max_reps``; and, whatever ``max_reps`` says, until the timed calls span
    ``span_s`` (see :class:`Timing`)."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < MAX_CALLS and (
            (len(times) < max_reps and (len(times) < min_reps or spent < min_time_s)) or spent < span_s):
        t0 = clock()
        fn()
        sync()
        dt = clock() - t0
        times.append(dt)
        spent += dt
    return times


QUOTA_PERIODS = 4  # a side under a CPU quota: each layer's calls span at least this many CFS periods


def quota_period_s(side_info: dict[str, Any]) -> float | None:
    """The CFS period of a side's CPU quota as applied (:func:`aibench.partition.sides.applied`'s record), in
    seconds; None without a quota."""
    quota = side_info.get("quota")
    return quota["period_us"] / 1e6 if quota else None


@dataclass(frozen=True)
class Timing:
    """How a layer (of a profiled network, or of the fit's sweep) is timed, and which statistic of its calls
    stands for it: one rule for ``partition profile`` and ``partition fit``, so that the models are fitted to
    the figures they are checked against.

    On a side without a CPU quota the figure is the **median** call. On a side under a quota (``period_s``,
    its CFS period) the calls run back to back for at least :data:`QUOTA_PERIODS` periods (and ``min_time_s``),
    ``max_reps`` notwithstanding, and the figure is their **mean**: a call shorter than the period mostly runs
    unthrottled and the throttling lands on a few calls, so the median says the side is as fast as the whole
    core, while a layer inside a network pays the throttling on average (its share of the period's quota)."""

    min_reps: int = 5
    max_reps: int = 200
    min_time_s: float = 0.2
    warmup: int = 2
    period_s: float | None = None

    @property
    def statistic(self) -> str:
        return "median" if self.period_s is None else "mean"

    @property
    def span_s(self) -> float:
        return 0.0 if self.period_s is None else max(self.min_time_s, QUOTA_PERIODS * self.period_s)

    def times(self, fn: Callable[[], Any], sync: Callable[[], None]) -> list[float]:
        """Seconds per call of ``fn`` (synchronised by ``sync``)."""
        return time_call(fn, sync, self.min_reps, self.max_reps, self.min_time_s, self.warmup, span_s=self.span_s)

    def figure(self, times: Sequence[float]) -> float:
        """The statistic that stands for these calls."""
        if self.period_s is None:
            return statistics.median(times)
        return math.fsum(times) / len(times)

    def describe(self) -> dict[str, Any]:
        """What the figures are, for the record."""
        if self.period_s is None:
            return {"statistic": "median", "of": "the calls of each layer"}
        return {"statistic": "mean", "span_s": self.span_s, "period_s": self.period_s,
                "of": f"calls run back to back over at least {self.span_s * 1e3:g} ms ({QUOTA_PERIODS} or more CFS "
                      "periods of the quota)",
                "why": "under a CPU quota a call shorter than the period mostly runs unthrottled and the throttling "
                       "lands on a few calls: the median would say the side is as fast as the whole core, while a "
                       "layer inside a network pays the throttling on average"}


def metered(meter: Callable[[str], Any] | None, what: str, fn: Callable[[], list[float]]
            ) -> tuple[list[float], dict[str, Any] | None]:
    """``fn()`` inside a meter window (``meter(what)``: an unopened :class:`aibench.meters.Window`), and the
    power over it: ``{"provenance": "measured", "avg_power_w", "energy_j", "duration_s", "scope"}`` from the
    energy counters of the side's device (RAPL package and DRAM for the CPU, NVML for a GPU), or the reading
    that says why it is unavailable. None without a meter."""
    if meter is None:
        return fn(), None
    w = meter(what)
    with w:
        times = fn()
    total = w.readings()["energy"]["total"]
    keep = ("provenance", "avg_power_w", "energy_j", "duration_s", "scope", "parts", "reason", "detail")
    return times, {k: total[k] for k in keep if k in total}


def measure_layers(layers: Sequence[tuple[str, Any]], x: Any, timing: Timing,
                   progress: Callable[[str], None] | None = None, meter: Callable[[str], Any] | None = None
                   ) -> tuple[dict[str, list[float]], list[float], dict[str, Any]]:
    """Per-layer seconds per call (in layer order), the whole chain's, both timed by ``timing``, and each
    layer's power over its timed calls where ``meter`` is given (see :func:`metered`)."""
    import torch

    sync = _sync(x.device)
    per_layer: dict[str, list[float]] = {}
    power: dict[str, Any] = {}
    with torch.inference_mode():
        a = x
        for name, layer in layers:
            if progress is not None:
                progress(name)
            inp = a
            per_layer[name], power[name] = metered(
                meter, f"layer {name}", lambda layer=layer, inp=inp: timing.times(lambda: layer(inp), sync))
            a = layer(inp)

        def whole() -> Any:
            y = x
            for _, layer in layers:
                y = layer(y)
            return y

        total = timing.times(whole, sync)
    return per_layer, total, power


def layer_statistic(result: Any) -> str:
    """The statistic that stands for each layer of a ``partition profile`` result: ``median``, or ``mean`` on a
    side under a CPU quota (see :class:`Timing`). A result written before it was recorded used the median."""
    return ((result.method.get("partition") or {}).get("layer_statistic") or {}).get("statistic", "median")


def layer_figures(result: Any) -> tuple[str, dict[str, float]]:
    """:func:`layer_statistic` and each described layer's figure, in layer order; ResultIOError (exit 4) for
    a result whose ``parts.layer`` lacks a described layer's figure (a damaged file)."""
    statistic = layer_statistic(result)
    parts = result.parts.get("layer")
    figures: dict[str, float] = {}
    for layer in result.method["partition"]["layers"]:
        name = layer.get("name") if isinstance(layer, dict) else None
        part = parts.get(name) if isinstance(parts, dict) and isinstance(name, str) else None
        summary = part.get("summary") if isinstance(part, dict) else None
        if not isinstance(summary, dict) or not isinstance(summary.get(statistic), int | float):
            raise ResultIOError(f"{result.id} run {result.run_id[:8]}: damaged `partition profile` result (no "
                                f"described layer {name!r} with a measured {statistic} in parts.layer)")
        figures[name] = summary[statistic]  # type: ignore[index]
    return statistic, figures


def side_meter(side: Side, **backends: Any) -> Callable[[str], Any]:
    """Meter windows for ``side``'s device (``backends``: the injectable ones of :func:`aibench.meters.window`,
    for tests)."""
    from aibench import meters

    return lambda what: meters.window(side.device, what=what, **backends)


def profile(ref: str, side: Side, batch: int = 1, min_reps: int = 5, max_reps: int = 200, min_time_s: float = 0.2,
            progress: Callable[[str], None] | None = None, meter: Callable[[str], Any] | None = None) -> Any:
    """Profile every layer of ``ref`` on ``side``; the finished :class:`~aibench.results.schema.Result`.
    ``meter`` (default: the side's energy counters, :func:`side_meter`) gives each layer's power."""
    from aibench import machine
    from aibench.harness import PlannedRun, build_result
    from aibench.results.measurement import Measurement
    from aibench.results.parts import part_entry
    from aibench.results.schema import metric
    from aibench.results.stats import summarize

    t0 = time.perf_counter()
    loadavg_start = machine.load_average()
    m = Measurement(primary_metric="time_median", context={"partition": "profile", "side": side.name},
                    config={"min_reps": min_reps, "max_reps": max_reps, "min_time_s": min_time_s})
    with applied(side) as info:
        net = load_network(ref, side, batch)
        m.benchmark_id = net.bench.id
        shape = describe_network(net)
        timing = Timing(min_reps, max_reps, min_time_s, period_s=quota_period_s(info))
        per_layer, total, power = measure_layers(net.layers, net.x, timing, progress,
                                                 meter if meter is not None else side_meter(side))
    params = {"partition": "profile", "side": side.name, "batch": batch, "device": side.device,
              "dtype": side.dtype, "threads": side.threads, "cpu_quota": side.cpu_quota}
    stat = timing.statistic
    figures = {name: timing.figure(v) for name, v in per_layer.items()}
    whole = summarize(total)
    m.parts["layer"] = {name: part_entry(v, "s", "call", LAYER_NOTE) for name, v in per_layer.items()}
    m.samples["time"] = {"unit": "s", "values": list(total), "summary": whole}
    m.metrics = {
        "time_median": metric(whole["median"], "s", "lower", statistic="median", of="samples.time"),
        "time_p90": metric(whole["p90"], "s", "lower", statistic="p90", of="samples.time"),
        f"layers_sum_{stat}": metric(math.fsum(figures.values()), "s", "lower", statistic="value", of=None),
        "input_bytes": metric(float(shape["input_bytes"]), "B", "lower", statistic="value", of=None),
    }
    if stat != "median":  # the whole pass by the same statistic as its layers, so that the two compare
        m.metrics[f"time_{stat}"] = metric(timing.figure(total), "s", "lower", statistic=stat, of="samples.time")
    for name, value in figures.items():
        m.metrics[f"layer_{name}_{stat}"] = metric(value, "s", "lower", statistic=stat, of=f"parts.layer.{name}")
    for layer in shape["layers"]:
        layer["power"] = power.get(layer["name"])
    m.method["partition"] = {"side": info, **shape, "layer_statistic": timing.describe(), "power_note": POWER_NOTE}
    return build_result(PlannedRun(net.bench, params, {}), m, threads=info["threads_effective"],
                        duration_s=time.perf_counter() - t0, load_start=loadavg_start)
