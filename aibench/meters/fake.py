"""A stand-in for the ``pynvml`` module, for tests and for measuring the sampler's cost without a GPU.

It has the functions :class:`~aibench.meters.nvml.NvmlMeter` calls, NVML's error class and codes, and GPUs
whose readings are scripted: each ``energy_mj`` / ``power_mw`` is a list of successive values (the last one
repeats) or ``None`` for "not supported on this card". It never appears in a real result: only code that
passes it explicitly as ``nvml=`` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    name: str = "Fake GPU"
    energy_mj: Sequence[int] | None = None
    power_mw: Sequence[float] | None = None
    util: tuple[int, int] = (50, 20)
    sm_clock_mhz: int = 1500
    mem_clock_mhz: int = 2600
    util_error: int | None = None
    calls: dict[str, int] = field(default_factory=dict)

    def next(self, what: str, values: Sequence[Any] | None) -> Any:
        if values is None:
            raise FakeNVMLError(FakeNvml.NVML_ERROR_NOT_SUPPORTED)
        i = self.calls.get(what, 0)
        self.calls[what] = i + 1
        return values[min(i, len(values) - 1)]


class FakeNvml:
    NVMLError = FakeNVMLError
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_UNKNOWN = 999
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, gpus: Sequence[FakeGpu] = (), init_error: int | None = None) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if i >= len(self.gpus):
            raise FakeNVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[i]

    def nvmlDeviceGetName(self, h: FakeGpu) -> bytes:
        return h.name.encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        return h.next("energy", h.energy_mj)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> float:
        return h.next("power", h.power_mw)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        if h.util_error is not None:
            raise FakeNVMLError(h.util_error)
        return SimpleNamespace(gpu=h.util[0], memory=h.util[1])

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, kind: int) -> int:
        return h.sm_clock_mhz if kind == self.NVML_CLOCK_SM else h.mem_clock_mhz
