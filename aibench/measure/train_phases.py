"""The Minsky paper's phases of a training run: init (process start to the runner, plus device
initialisation), counted once per process, and deterministic algorithms enforced for the duration."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from aibench.errors import UnavailableError

_INIT_CLAIMED = False


def process_age() -> tuple[float | None, str]:
    """Seconds since this process started (kernel's start time, 1/CLK_TCK resolution), or None and why."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat.rpartition(")")[2].split()[19])  # field 22 (starttime), after "pid (comm)"
        ticks = os.sysconf("SC_CLK_TCK")
        if hasattr(time, "CLOCK_BOOTTIME"):
            now = time.clock_gettime(time.CLOCK_BOOTTIME)
            source = f"/proc/self/stat starttime vs CLOCK_BOOTTIME (1/{ticks} s ticks)"
        else:
            with open("/proc/uptime") as f:
                now = float(f.read().split()[0])
            source = f"/proc/self/stat starttime vs /proc/uptime (1/{ticks} s ticks)"
        return now - start_ticks / ticks, source
    except (OSError, ValueError, IndexError, AttributeError) as exc:
        return None, f"the OS does not give this process's start time ({type(exc).__name__}: {exc})"


def device_init(device: Any) -> float:
    """Create the CUDA context now (it is lazily created on first use) and return how long it took."""
    if getattr(device, "type", "cpu") != "cuda":
        return 0.0
    import torch

    t0 = time.perf_counter()
    torch.cuda.init()
    torch.empty(1, device=device)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: Any) -> Iterator[dict[str, Any]]:
    """Enforce deterministic algorithms for the duration when ``enabled``; yields what was in force."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    info: dict[str, Any] = {"requested": enabled}
    if enabled:
        if getattr(device, "type", "cpu") == "cuda" and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS needs it for reproducible results
            info["cublas_workspace_config_set"] = ":4096:8"
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    info["enforced"] = torch.are_deterministic_algorithms_enabled()
    info["cudnn_deterministic"] = torch.backends.cudnn.deterministic
    info["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield info
    except RuntimeError as exc:
        if enabled and "deterministic" in str(exc):
            first = str(exc).strip().splitlines()[0]
            raise UnavailableError(f"--deterministic: {first}") from None
        raise
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_before



def claim_init() -> bool:
    """True for the first run in this process (it paid the process's start-up), False after."""
    global _INIT_CLAIMED
    first = not _INIT_CLAIMED
    _INIT_CLAIMED = True
    return first
