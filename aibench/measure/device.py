"""Devices, dtypes, synchronisation and thread pinning (imports torch: call only inside a run)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aibench.errors import AibenchError, UnavailableError, UsageError
from aibench.measure.op import DTYPES
from aibench.measure.timer import BlockTimer, HostBlockTimer

DEVICE_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def check_device_syntax(device: str) -> None:
    if not DEVICE_PATTERN.match(device):
        raise UsageError(f"--device must be cpu, cuda or cuda:N; got {device!r}")


def resolve_device(device: str) -> Any:
    """A ``torch.device`` for ``device``, or a one-line refusal if this machine has no such device."""
    import torch

    check_device_syntax(device)
    m = DEVICE_PATTERN.match(device)
    assert m is not None
    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableError(f"--device {device}: no CUDA GPU is available on this machine")
        index = int(m.group(2) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise UnavailableError(f"--device {device}: this machine has {count} CUDA device(s) (0..{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cpu")


def resolve_dtype(name: str, device: Any) -> Any:
    """A ``torch.dtype``, refused where the device cannot compute in it."""
    import torch

    if name not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    dtype = getattr(torch, name)
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UnavailableError(f"--dtype bfloat16 is not supported by {torch.cuda.get_device_name(device)}")
    return dtype


def unsupported_op_error(exc: BaseException, device: Any, dtype: Any) -> UnavailableError | None:
    """Turn torch's 'not implemented for <dtype>' into a clear refusal; None for other errors."""
    text = str(exc)
    if isinstance(exc, (RuntimeError, NotImplementedError)) and (
        "not implemented for" in text or "Unsupported" in text or "unsupported" in text
    ):
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return UnavailableError(f"{str(dtype).removeprefix('torch.')} on {device}: {first}")
    return None


@contextlib.contextmanager
def refusing_unsupported(device: Any, dtype: Any) -> Iterator[None]:
    """Inside, torch's 'not implemented for <dtype>' becomes a clear refusal (exit 3); other errors pass."""
    try:
        yield
    except AibenchError:
        raise
    except Exception as exc:
        refusal = unsupported_op_error(exc, device, dtype)
        if refusal is not None:
            raise refusal from None
        raise


def synchronizer(device: Any) -> Callable[[], None] | None:
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


@dataclass
class CudaEventBlockTimer:
    """Times a block with CUDA events recorded on the current stream: no host-clock skew."""

    device: Any
    name: str = "cuda-events"

    def time_block(self, fn: Callable[[], Any], number: int) -> float:
        import torch

        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def block_timer_for(device: Any) -> BlockTimer:
    if device.type == "cuda":
        return CudaEventBlockTimer(device)
    return HostBlockTimer(sync=synchronizer(device))


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[dict[str, Any]]:
    """Set torch's intra-op thread count for the duration (None leaves it as is); yields what was used."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield {
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "requested": threads,
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        }
    finally:
        torch.set_num_threads(before)
