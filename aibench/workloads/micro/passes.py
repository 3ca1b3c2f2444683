"""What every micro benchmark shares: device/dtype/pass parameters, forward/backward closures, the
DeepBench size lists and a memory check before allocating.

Forward passes run on tensors that do not require grad, so no autograd graph is built (the same work as
``torch.inference_mode`` without its per-call context cost). Backward passes build the graph once, outside
the timed closure, and time ``torch.autograd.grad(..., retain_graph=True)`` so nothing accumulates.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aibench.errors import UnavailableError
from aibench.measure.op import DTYPES, KERNEL_METRICS, Op
from aibench.spec import Param

PASSES = ("fwd", "bwd", "fwdbwd")
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


def device_params() -> list[Param]:
    return [
        Param("device", str, "cpu", "device to run on: cpu, cuda or cuda:N", pattern=r"(cpu|cuda)(:\d+)?"),
        Param("dtype", str, "float32", "element type", choices=DTYPES),
    ]


def pass_param(default: str = "fwd") -> Param:
    return Param("pass", str, default, "fwd: forward only; bwd: backward only; fwdbwd: both", choices=PASSES)


def micro_kwargs(**extra: Any) -> dict[str, Any]:
    """Registry keywords every micro benchmark shares."""
    return {"kind": "micro", "metrics": KERNEL_METRICS, "primary_metric": "time_median", "runner": "kernel",
            **extra}


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes of one call, with the formula text recorded in the result."""

    flops: float | None
    bytes: float | None
    flops_note: str
    bytes_note: str


def element_size(params: dict[str, Any]) -> int:
    return DTYPE_BYTES[params["dtype"]]


def require_memory(nbytes: float, device: Any) -> None:
    """Refuse, with the numbers, a size that would not fit (rather than meeting the OOM killer)."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        available, where = free, f"free on {device}"
    else:
        available = _mem_available()
        where = "available host memory"
        if available is None:
            return
    if nbytes > 0.8 * available:
        raise UnavailableError(
            f"this size needs about {nbytes / 2**30:.1f} GiB, more than 80% of the {available / 2**30:.1f} GiB "
            f"{where}"
        )


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_op(
    params: dict[str, Any],
    forward: Callable[[], Any],
    grad_inputs: Sequence[Any],
    fwd: Cost,
    bwd: Cost,
    shapes: dict[str, Any],
) -> Op:
    """The timed closure for ``params['pass']``. ``grad_inputs`` must require grad unless the pass is fwd."""
    import torch

    mode = params["pass"]
    if mode == "fwd":
        fn, cost = forward, fwd
    else:
        out = forward()
        grad_out = torch.randn_like(out)
        inputs = tuple(grad_inputs)
        if mode == "bwd":
            def fn() -> Any:
                return torch.autograd.grad(out, inputs, grad_out, retain_graph=True)

            cost = bwd
        else:
            def fn() -> Any:
                return torch.autograd.grad(forward(), inputs, grad_out)

            cost = _add(fwd, bwd)
    return Op(fn=fn, flops=cost.flops, bytes=cost.bytes, flops_note=cost.flops_note,
              bytes_note=cost.bytes_note, shapes=shapes)


def _add(a: Cost, b: Cost) -> Cost:
    flops = None if a.flops is None or b.flops is None else a.flops + b.flops
    nbytes = None if a.bytes is None or b.bytes is None else a.bytes + b.bytes
    fnote = a.flops_note if flops is None else f"fwd ({a.flops_note}) + bwd ({b.flops_note})"
    return Cost(flops, nbytes, fnote, f"fwd ({a.bytes_note}) + bwd ({b.bytes_note})")


def randn(shape: Sequence[int], device: Any, dtype: Any, grad: bool) -> Any:
    import torch

    t = torch.randn(*shape, device=device, dtype=dtype)
    return t.requires_grad_(grad)


def wants_grad(params: dict[str, Any]) -> bool:
    return params["pass"] != "fwd"


def deepbench_rows(filename: str, convert: Callable[[dict[str, str]], dict[str, Any]]) -> Callable[[], list]:
    """A set loader for one of DeepBench's size lists shipped in ``aibench/data/deepbench``."""

    def load() -> list[dict[str, Any]]:
        text = resources.files("aibench").joinpath("data", "deepbench", filename).read_text()
        return [convert(row) for row in csv.DictReader(io.StringIO(text))]

    return load


def csv_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "t", "yes")


FEATURE_MAP_TINY = {"batch": 2, "channels": 3, "height": 4, "width": 5}


def feature_map_params(batch: int = 32, channels: int = 64, height: int = 56, width: int = 56) -> list[Param]:
    """An N×C×H×W activation map (the default is a ResNet stage-1 map at batch 32)."""
    dim = {"minimum": 1, "maximum": 1 << 16}
    return [
        Param("batch", int, batch, "N: samples", **dim),
        Param("channels", int, channels, "C: channels", **dim),
        Param("height", int, height, "H: rows", unit="px", **dim),
        Param("width", int, width, "W: columns", unit="px", **dim),
    ]


def feature_map_shape(params: dict[str, Any]) -> tuple[int, int, int, int]:
    return params["batch"], params["channels"], params["height"], params["width"]


def numel(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
