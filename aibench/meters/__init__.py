"""Meters: energy, power, memory and utilisation over exactly the measured window, with provenance.

The whole API, for any runner (kernel timer, LoadGen, training loop)::

    from aibench import meters

    with meters.window(device, what="LoadGen run") as w:   # device: "cpu", "cuda:1", a torch.device or a list
        ...                                                 # exactly the measured work, nothing else
    meters.fold_into(result, w, count=n_samples, per="sample")

``fold_into`` stores ``w.readings()`` (a JSON-ready dict, see docs/meters.md) as ``result.meters`` and adds
the derived metrics ``energy_per_<per>`` (J), ``<per>s_per_joule`` and ``avg_power`` (W) to
``result.metrics``, each ``unavailable`` with its reason when no energy counter covers the device.

Energy of a window counts the devices doing the work: the GPU(s) for a CUDA device (NVML), the CPU packages
and their DRAM for ``cpu`` (RAPL). Every reading says ``measured`` (a hardware counter read at both ends),
``sampled`` (power sampled and integrated) or ``unavailable`` with a reason code (``no_powercap``,
``permission_denied``, ``no_nvml``, ``no_gpu``, ... see :data:`REASONS`). Nothing is estimated.

Sampling (GPU utilisation, clocks, power) runs at a low rate on one background thread that is never the
measuring thread, and not at all when nothing needs sampling. Backends are injectable for tests: ``nvml``
(a module object with pynvml's functions), ``powercap_root`` (a directory laid out like
``/sys/class/powercap``) and ``cuda`` (an object with ``torch.cuda``'s memory functions).
Importing this package does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aibench.meters.core import (
    DEFAULT_INTERVAL_S,
    MEASURED,
    PROVENANCES,
    REASONS,
    SAMPLED,
    UNAVAILABLE,
    Meter,
    Sampler,
    Window,
    energy_total,
    unavailable,
)
from aibench.meters.host import CpuUtilMeter, CudaMemoryMeter, ProcessMemoryMeter
from aibench.meters.nvml import NvmlMeter, integrate_power
from aibench.meters.rapl import POWERCAP_ROOT, RaplMeter, energy_delta_uj
from aibench.results.schema import metric

__all__ = [
    "DEFAULT_INTERVAL_S", "MEASURED", "PROVENANCES", "REASONS", "SAMPLED", "UNAVAILABLE", "CpuUtilMeter",
    "CudaMemoryMeter", "Meter", "NvmlMeter", "ProcessMemoryMeter", "RaplMeter", "Sampler", "Window",
    "derived_metrics", "energy_delta_uj", "energy_total", "fold_into", "integrate_power", "metric_names",
    "metric_specs",
    "parse_devices", "unavailable", "window",
]


def parse_devices(device: Any) -> list[tuple[str, int | None]]:
    """``[("cpu", None)]`` or ``[("cuda", i), ...]`` from a string, a torch.device or a sequence of them."""
    items = list(device) if isinstance(device, (list, tuple)) else [device]
    out: list[tuple[str, int | None]] = []
    for d in items:
        if d is None:
            out.append(("cpu", None))
            continue
        kind = getattr(d, "type", None)
        index = getattr(d, "index", None)
        if kind is None:
            text = str(d)
            kind, _, idx = text.partition(":")
            index = int(idx) if idx else None
        if kind == "cuda":
            out.append(("cuda", index or 0))
        elif kind == "cpu":
            out.append(("cpu", None))
        else:
            raise ValueError(f"meters: unsupported device {d!r} (cpu, cuda or cuda:N)")
    return out


def window(device: Any = "cpu", *, what: str = "measured window", interval_s: float = DEFAULT_INTERVAL_S,
           nvml: Any = None, powercap_root: str | Path = POWERCAP_ROOT, cuda: Any = None,
           proc_self: str | Path = "/proc/self", extra: Sequence[Meter] = ()) -> Window:
    """The standard meters for ``device``, as an unopened :class:`Window` (a context manager)."""
    devices = parse_devices(device)
    gpus = sorted({i for k, i in devices if k == "cuda" and i is not None})
    meters: list[Meter] = [RaplMeter(powercap_root)]
    domains: list[str] = []
    if gpus:
        meters.append(NvmlMeter(gpus, nvml=nvml))
        domains.append("gpu")
    if any(k == "cpu" for k, _ in devices):
        domains += ["package", "dram"]
    meters.append(ProcessMemoryMeter(proc_self))
    meters += [CudaMemoryMeter(i, cuda=cuda) for i in gpus]
    meters += list(extra)
    meters.append(CpuUtilMeter())
    label = "+".join(f"cuda:{i}" for i in gpus) if gpus else "cpu"
    if gpus and any(k == "cpu" for k, _ in devices):
        label = "cpu+" + label
    return Window(meters, sampler=Sampler(interval_s), device=label, energy_domains=domains, what=what)


def metric_names(per: str) -> tuple[str, str, str]:
    return f"energy_per_{per}", f"{per}s_per_joule", "avg_power"


def metric_specs(per: str, window: str) -> tuple[Any, Any, Any]:
    """The registry declarations of the three derived metrics, for a benchmark whose unit of work is
    ``per`` (call, sample, step) measured over ``window`` (e.g. "the timed rounds")."""
    from aibench.registry import MetricSpec

    e_name, rate_name, p_name = metric_names(per)
    return (
        MetricSpec(e_name, "J", "lower", f"energy of the device(s) over {window} / {per}s (unavailable without "
                   "a counter)", "mean"),
        MetricSpec(rate_name, f"{per}/J", "higher", f"{per}s per joule over {window}", "rate"),
        MetricSpec(p_name, "W", "lower", f"average power of the device(s) over {window}", "mean"),
    )


def derived_metrics(total: dict[str, Any], count: float | None, per: str) -> dict[str, dict[str, Any]]:
    """``energy_per_<per>`` (J), ``<per>s_per_joule`` and ``avg_power`` (W) from an energy total."""
    e_name, rate_name, p_name = metric_names(per)
    e_unit, rate_unit = "J", f"{per}/J"
    energy = total.get("energy_j")
    if energy is None:
        why = f"no energy counter: {total.get('reason')} ({total.get('detail')})"
        return {e_name: metric(None, e_unit, "lower", unavailable=why),
                rate_name: metric(None, rate_unit, "higher", unavailable=why),
                p_name: metric(None, "W", "lower", unavailable=why)}
    tag = {"provenance": total["provenance"], "scope": total["scope"]}
    power = total.get("avg_power_w")
    out = {p_name: metric(power, "W", "lower", **tag) if power is not None else
           metric(None, "W", "lower", unavailable="window of zero duration")}
    if not count:
        why = f"the number of {per}s in the window is unknown"
        out[e_name] = metric(None, e_unit, "lower", unavailable=why)
        out[rate_name] = metric(None, rate_unit, "higher", unavailable=why)
    else:
        out[e_name] = metric(energy / count, e_unit, "lower", **tag)
        out[rate_name] = (metric(count / energy, rate_unit, "higher", **tag) if energy > 0 else
                          metric(None, rate_unit, "higher", unavailable="the counter did not advance in the window"))
    return out


def fold_into(result: Any, w: Window | dict[str, Any], count: float | None, per: str = "call",
              busy_s: float | None = None) -> dict[str, Any]:
    """Store the window's readings as ``result.meters`` and add the derived energy metrics.

    ``count`` is how many ``per`` units (call, sample, query, step) the window did; ``busy_s``, where the
    runner knows it, is the time spent in the timed work itself (the rest of the window is the harness's
    own bookkeeping between blocks) and is recorded beside the window."""
    data = w.readings() if isinstance(w, Window) else w
    data["work"] = {"count": count, "per": per}
    if busy_s is not None:
        dur = data["window"]["duration_s"]
        data["window"]["busy_s"] = busy_s
        data["window"]["busy_fraction"] = busy_s / dur if dur > 0 else None
    result.meters = data
    result.metrics.update(derived_metrics(data["energy"]["total"], count, per))
    return data
