"""GPU energy, power, utilisation and clocks through NVML (package ``nvidia-ml-py``, import ``pynvml``).

Energy: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and newer) read
at both ends of the window gives provenance ``measured``. Where the card has no such counter, power
(``nvmlDeviceGetPowerUsage``, milliwatts; averaged by the driver over about 1 s on Ampere and newer) is
sampled at both ends and by the background sampler, and integrated with the trapezoid rule: provenance
``sampled``. Utilisation (%), SM and memory clocks (MHz) and power are sampled for every GPU in scope.

The NVML module is a parameter, so tests pass a fake object with the same functions and error class.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from typing import Any

from aibench.meters.core import MEASURED, SAMPLED, Sampler, Stamp, stats, unavailable, window_json


def load_nvml() -> Any:
    import pynvml

    return pynvml


def integrate_power(samples: Sequence[tuple[float, float]]) -> float:
    """Joules from ``(monotonic seconds, milliwatts)`` samples, trapezoid rule."""
    pts = sorted(samples)
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(pts)) / 1e3


def _reason(nvml: Any, exc: BaseException) -> str:
    code = getattr(exc, "value", None)

    def is_(name: str) -> bool:
        return code is not None and code == getattr(nvml, name, object())

    if is_("NVML_ERROR_NOT_SUPPORTED"):
        return "not_supported"
    if is_("NVML_ERROR_NO_PERMISSION"):
        return "permission_denied"
    if is_("NVML_ERROR_LIBRARY_NOT_FOUND") or is_("NVML_ERROR_DRIVER_NOT_LOADED"):
        return "no_nvml"
    if is_("NVML_ERROR_GPU_IS_LOST") or is_("NVML_ERROR_NOT_FOUND") or is_("NVML_ERROR_INVALID_ARGUMENT"):
        return "no_gpu"
    return "read_error"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def cuda_to_nvml_indices(cuda_indices: Sequence[int]) -> list[int]:
    """NVML numbers all GPUs; CUDA numbers the visible ones. Map through ``CUDA_VISIBLE_DEVICES`` when it
    lists plain integers; otherwise (unset, or UUIDs, which we do not resolve) the numbers are taken as
    equal and the reading says so in ``index_mapping``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        parts = [p.strip() for p in visible.split(",") if p.strip()]
        if all(p.isdigit() for p in parts):
            return [int(parts[i]) if i < len(parts) else i for i in cuda_indices]
    return list(cuda_indices)


class _Gpu:
    def __init__(self, cuda_index: int, nvml_index: int) -> None:
        self.cuda_index = cuda_index
        self.nvml_index = nvml_index
        self.handle: Any = None
        self.name: str | None = None
        self.problem: dict[str, Any] | None = None
        self.energy_start: int | None = None
        self.energy_end: int | None = None
        self.counter_problem: tuple[str, str] | None = None
        self.power: list[tuple[float, float]] = []
        self.power_problem: tuple[str, str] | None = None
        self.series: dict[str, list[float]] = {"gpu_util_pct": [], "mem_util_pct": [], "sm_clock_mhz": [],
                                               "mem_clock_mhz": [], "power_w": []}
        self.dead: set[str] = set()
        self.start: Stamp | None = None
        self.end: Stamp | None = None

    @property
    def scope(self) -> str:
        return f"cuda:{self.cuda_index}"


class NvmlMeter:
    """Energy and sampled utilisation of the GPUs in scope (CUDA indices)."""

    name = "nvml"

    def __init__(self, cuda_indices: Sequence[int] = (0,), nvml: Any = None,
                 nvml_indices: Sequence[int] | None = None) -> None:
        self._nvml = nvml
        nv = list(nvml_indices) if nvml_indices is not None else cuda_to_nvml_indices(cuda_indices)
        self.gpus = [_Gpu(c, n) for c, n in zip(cuda_indices, nv, strict=True)]
        self._problem: tuple[str, str] | None = None
        self._initialised = False

    # -- reading one GPU -------------------------------------------------------------------------------
    def _energy(self, g: _Gpu) -> int | None:
        nv = self._nvml
        if g.counter_problem is not None:
            return None
        try:
            return int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
        except nv.NVMLError as exc:
            g.counter_problem = (_reason(nv, exc), f"nvmlDeviceGetTotalEnergyConsumption: {exc}")
            return None

    def _power_sample(self, g: _Gpu) -> None:
        nv = self._nvml
        if g.power_problem is not None:
            return
        try:
            mw = float(nv.nvmlDeviceGetPowerUsage(g.handle))
        except nv.NVMLError as exc:
            g.power_problem = (_reason(nv, exc), f"nvmlDeviceGetPowerUsage: {exc}")
            return
        g.power.append((time.perf_counter(), mw))
        g.series["power_w"].append(mw / 1e3)

    def _sample(self) -> None:
        """One tick on the sampler thread: power, utilisation and clocks of every GPU."""
        nv = self._nvml
        for g in self.gpus:
            if g.handle is None:
                continue
            self._power_sample(g)
            fields = (("util", lambda g=g: nv.nvmlDeviceGetUtilizationRates(g.handle)),
                      ("sm_clock_mhz", lambda g=g: nv.nvmlDeviceGetClockInfo(g.handle, nv.NVML_CLOCK_SM)),
                      ("mem_clock_mhz", lambda g=g: nv.nvmlDeviceGetClockInfo(g.handle, nv.NVML_CLOCK_MEM)))
            for key, read in fields:
                if key in g.dead:
                    continue
                try:
                    v = read()
                except nv.NVMLError:
                    g.dead.add(key)  # not supported here: stop asking
                    continue
                if key == "util":
                    g.series["gpu_util_pct"].append(float(v.gpu))
                    g.series["mem_util_pct"].append(float(v.memory))
                else:
                    g.series[key].append(float(v))

    # -- the meter protocol ----------------------------------------------------------------------------
    def start(self, sampler: Sampler) -> None:
        if self._nvml is None:
            try:
                self._nvml = load_nvml()
            except Exception as exc:
                self._problem = ("no_nvml", f"cannot import pynvml (nvidia-ml-py): {exc}")
                return
        nv = self._nvml
        try:
            nv.nvmlInit()
        except Exception as exc:
            reason = _reason(nv, exc)
            self._problem = ("no_nvml" if reason in ("no_nvml", "read_error") else reason, f"nvmlInit: {exc}")
            return
        self._initialised = True
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as exc:
            self._problem = (_reason(nv, exc), f"nvmlDeviceGetCount: {exc}")
            return
        for g in self.gpus:
            if g.nvml_index >= count:
                g.problem = unavailable("no_gpu", f"NVML sees {count} GPU(s); index {g.nvml_index} is not one")
                continue
            try:
                g.handle = nv.nvmlDeviceGetHandleByIndex(g.nvml_index)
                g.name = _text(nv.nvmlDeviceGetName(g.handle))
            except nv.NVMLError as exc:
                g.problem = unavailable(_reason(nv, exc), f"GPU {g.nvml_index}: {exc}")
                g.handle = None
        if any(g.handle is not None for g in self.gpus):
            sampler.register(self._sample)
        self._sample()  # power, utilisation and clocks at the start, so a short window still has two
        for g in self.gpus:
            if g.handle is not None:
                g.start = Stamp.now()
                g.energy_start = self._energy(g)

    def stop(self) -> None:
        for g in self.gpus:
            if g.handle is not None:
                g.energy_end = self._energy(g)
                g.end = Stamp.now()
        self._sample()
        if self._initialised:
            self._initialised = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def _energy_reading(self, g: _Gpu) -> dict[str, Any]:
        base: dict[str, Any] = {"meter": self.name, "domain": "gpu", "scope": g.scope}
        if self._problem is not None:
            return {**base, **unavailable(*self._problem)}
        if g.problem is not None:
            return {**base, **g.problem}
        assert g.start is not None and g.end is not None
        base.update({"device_name": g.name, "nvml_index": g.nvml_index})
        win = window_json(g.start, g.end)
        dur = win["duration_s"]
        reset = None
        if g.energy_start is not None and g.energy_end is not None:
            delta = g.energy_end - g.energy_start
            if delta >= 0:
                return {**base, "provenance": MEASURED, "energy_j": delta / 1e3,
                        "avg_power_w": delta / 1e3 / dur if dur > 0 else None, "window": win,
                        "counter": {"source": "nvmlDeviceGetTotalEnergyConsumption", "unit": "mJ",
                                    "start": g.energy_start, "end": g.energy_end}}
            reset = f"energy counter went from {g.energy_start} to {g.energy_end} mJ"
        if len(g.power) >= 2:
            energy = integrate_power(g.power)
            # The integral spans the first to the last power sample (taken just outside the window).
            t0, t1 = min(t for t, _ in g.power), max(t for t, _ in g.power)
            win = window_json(Stamp(g.start.wall + t0 - g.start.mono, t0), Stamp(g.start.wall + t1 - g.start.mono, t1))
            dur = win["duration_s"]
            note = "power averaged by the driver over ~1 s on Ampere and newer: short windows are smoothed"
            out = {**base, "provenance": SAMPLED, "energy_j": energy,
                   "avg_power_w": energy / dur if dur > 0 else None, "window": win,
                   "power_samples": {"source": "nvmlDeviceGetPowerUsage", "unit": "mW", "n": len(g.power),
                                     "integration": "trapezoid", "note": note},
                   "why_not_measured": reset or (g.counter_problem[1] if g.counter_problem else None)}
            return out
        if reset:
            return {**base, **unavailable("counter_reset", reset)}
        if g.power_problem is not None:
            counter = g.counter_problem[1] if g.counter_problem else "no energy counter"
            return {**base, **unavailable(g.power_problem[0], f"{counter}; {g.power_problem[1]}")}
        return {**base, **unavailable("too_few_samples", f"{len(g.power)} power sample(s)")}

    def _util_reading(self, g: _Gpu) -> dict[str, Any]:
        base: dict[str, Any] = {"scope": g.scope}
        if self._problem is not None:
            return {**base, **unavailable(*self._problem)}
        if g.problem is not None:
            return {**base, **g.problem}
        out = {**base, "provenance": SAMPLED, "device_name": g.name}
        for key, values in g.series.items():
            out[key] = stats(values)
        return out

    def readings(self) -> dict[str, Any]:
        return {"energy": [self._energy_reading(g) for g in self.gpus],
                "utilisation": {"gpu": [self._util_reading(g) for g in self.gpus]}}
