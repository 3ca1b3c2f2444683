"""Max and average pooling over N×C×H×W maps (AIBench micro DC-AI-M6, M7)."""

from __future__ import annotations

from typing import Any

from aibench.errors import UsageError
from aibench.registry import benchmark
from aibench.spec import Param
from aibench.workloads.micro.passes import (
    FEATURE_MAP_TINY,
    Cost,
    build_op,
    device_params,
    element_size,
    feature_map_params,
    feature_map_shape,
    micro_kwargs,
    numel,
    pass_param,
    randn,
    require_memory,
    wants_grad,
)


def _pool_params() -> list[Param]:
    return [
        *feature_map_params(),
        Param("kernel", int, 3, "square window size", minimum=1, maximum=1 << 12),
        Param("stride", int, 2, "window step", minimum=1, maximum=1 << 12),
        Param("padding", int, 1, "implicit padding on each side (at most kernel/2)", minimum=0, maximum=1 << 11),
        Param("ceil_mode", bool, False, "round the output size up (Caffe's pooling)"),
        pass_param(),
        *device_params(),
    ]


def _check(p: dict[str, Any]) -> None:
    if 2 * p["padding"] > p["kernel"]:
        raise UsageError(f"--padding {p['padding']} must be at most half of --kernel {p['kernel']}")
    if p["kernel"] > p["height"] + 2 * p["padding"] or p["kernel"] > p["width"] + 2 * p["padding"]:
        raise UsageError(f"--kernel {p['kernel']} is larger than the padded {p['height']}x{p['width']} input")


def _pool(params: dict[str, Any], device: Any, dtype: Any, which: str) -> Any:
    import torch.nn.functional as F

    shape = feature_map_shape(params)
    k, st, pad, ceil = params["kernel"], params["stride"], params["padding"], params["ceil_mode"]
    grad = wants_grad(params)
    s = element_size(params)
    require_memory(s * numel(shape) * (3 if grad else 2), device)
    x = randn(shape, device, dtype, grad)
    pool = F.max_pool2d if which == "max" else F.avg_pool2d

    def forward() -> Any:
        return pool(x, k, st, pad, ceil_mode=ceil)

    out_shape = list(pool(x.detach()[:1, :1], k, st, pad, ceil_mode=ceil).shape)
    out_shape[:2] = shape[:2]
    n_in, n_out = numel(shape), numel(out_shape)
    op = "comparisons" if which == "max" else "additions"
    fwd = Cost(float(n_out * k * k), s * (n_in + n_out), f"output·kernel² ({op})", "s·(input + output)")
    idx = " + 8·output (int64 indices)" if which == "max" else ""
    bwd = Cost(float(n_out * k * k), s * (n_in + n_out) + (8 * n_out if which == "max" else 0),
               "output·kernel² (scatter of dy)", f"s·(input + output){idx}")
    return build_op(params, forward, [x], fwd, bwd, {"x": list(shape), "y": out_shape})


@benchmark(name="maxpool", description="2-D max pooling", source="AIBench micro DC-AI-M6",
           params=_pool_params(), tiny={**FEATURE_MAP_TINY, "kernel": 2, "padding": 0}, check=_check,
           aliases=("maxpooling", "max-pool"), **micro_kwargs())
def maxpool(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    return _pool(params, device, dtype, "max")


@benchmark(name="avgpool", description="2-D average pooling", source="AIBench micro DC-AI-M7",
           params=_pool_params(), tiny={**FEATURE_MAP_TINY, "kernel": 2, "padding": 0}, check=_check,
           aliases=("avgpooling", "avg-pool"), **micro_kwargs())
def avgpool(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    return _pool(params, device, dtype, "avg")
