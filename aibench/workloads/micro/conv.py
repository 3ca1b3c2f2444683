"""2-D convolution (NCHW), with DeepBench's convolution size lists."""

from __future__ import annotations

from typing import Any

from aibench.errors import UsageError
from aibench.registry import benchmark
from aibench.spec import Param
from aibench.workloads.micro.passes import (
    Cost,
    build_op,
    deepbench_rows,
    device_params,
    element_size,
    micro_kwargs,
    pass_param,
    randn,
    require_memory,
    wants_grad,
)

SIZE = {"minimum": 1, "maximum": 1 << 16}


def _conv_row(row: dict[str, str]) -> dict[str, Any]:
    # DeepBench: w,h,c,n,k,filter_w_s,filter_h_r,pad_w,pad_h,wstride,hstride
    return {
        "batch": int(row["n"]), "in_channels": int(row["c"]), "height": int(row["h"]), "width": int(row["w"]),
        "out_channels": int(row["k"]), "kernel_h": int(row["filter_h_r"]), "kernel_w": int(row["filter_w_s"]),
        "pad_h": int(row["pad_h"]), "pad_w": int(row["pad_w"]),
        "stride_h": int(row["hstride"]), "stride_w": int(row["wstride"]),
    }


def output_hw(p: dict[str, Any]) -> tuple[int, int]:
    ho = (p["height"] + 2 * p["pad_h"] - p["kernel_h"]) // p["stride_h"] + 1
    wo = (p["width"] + 2 * p["pad_w"] - p["kernel_w"]) // p["stride_w"] + 1
    return ho, wo


def _check(p: dict[str, Any]) -> None:
    g = p["groups"]
    if p["in_channels"] % g or p["out_channels"] % g:
        raise UsageError(f"--groups {g} must divide --in-channels {p['in_channels']} and "
                         f"--out-channels {p['out_channels']}")
    ho, wo = output_hw(p)
    if ho < 1 or wo < 1:
        raise UsageError(f"the {p['kernel_h']}x{p['kernel_w']} kernel does not fit the padded "
                         f"{p['height']}x{p['width']} input (output would be {ho}x{wo})")


@benchmark(
    name="conv",
    description="2-D convolution y = conv2d(x, W) in NCHW layout",
    source="DeepBench convolution; AIBench micro DC-AI-M1",
    params=[
        Param("batch", int, 4, "images per call (N)", **SIZE),
        Param("in_channels", int, 64, "input channels (C)", **SIZE),
        Param("height", int, 56, "input height (H)", unit="px", **SIZE),
        Param("width", int, 56, "input width (W)", unit="px", **SIZE),
        Param("out_channels", int, 64, "filters (K)", **SIZE),
        Param("kernel_h", int, 3, "filter height (R)", **SIZE),
        Param("kernel_w", int, 3, "filter width (S)", **SIZE),
        Param("stride_h", int, 1, "vertical stride", **SIZE),
        Param("stride_w", int, 1, "horizontal stride", **SIZE),
        Param("pad_h", int, 1, "zero padding top and bottom", minimum=0, maximum=1 << 16),
        Param("pad_w", int, 1, "zero padding left and right", minimum=0, maximum=1 << 16),
        Param("groups", int, 1, "channel groups", **SIZE),
        pass_param(),
        *device_params(),
    ],
    sets={
        "deepbench-inference-server": deepbench_rows("conv_inference_server_set.csv", _conv_row),
        "deepbench-inference-device": deepbench_rows("conv_inference_device_set.csv", _conv_row),
        "deepbench-training": deepbench_rows("conv_training_set.csv", _conv_row),
    },
    tiny={"batch": 1, "in_channels": 3, "height": 8, "width": 8, "out_channels": 4},
    aliases=("convolution", "conv2d"),
    check=_check,
    **micro_kwargs(),
)
def conv(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch.nn.functional as F

    p = params
    n, c, h, w, k = p["batch"], p["in_channels"], p["height"], p["width"], p["out_channels"]
    r, s_, g = p["kernel_h"], p["kernel_w"], p["groups"]
    ho, wo = output_hw(p)
    es = element_size(p)
    x_n, w_n, y_n = n * c * h * w, k * (c // g) * r * s_, n * k * ho * wo
    grad = wants_grad(p)
    require_memory(es * (x_n + w_n + y_n) * (3 if grad else 1), device)
    x = randn((n, c, h, w), device, dtype, grad)
    weight = randn((k, c // g, r, s_), device, dtype, grad)
    stride, pad = (p["stride_h"], p["stride_w"]), (p["pad_h"], p["pad_w"])

    def forward() -> Any:
        return F.conv2d(x, weight, None, stride, pad, 1, g)

    macs = n * k * ho * wo * (c // g) * r * s_
    fwd = Cost(2.0 * macs, es * (x_n + w_n + y_n), "2·N·K·Ho·Wo·(C/groups)·R·S",
               "s·(N·C·H·W + K·(C/groups)·R·S + N·K·Ho·Wo)")
    bwd = Cost(4.0 * macs, es * (2 * x_n + 2 * w_n + y_n), "2 × forward (data gradient + weight gradient)",
               "s·(2·input + 2·weight + output)")
    return build_op(p, forward, [x, weight], fwd, bwd,
                    {"x": [n, c, h, w], "W": [k, c // g, r, s_], "y": [n, k, ho, wo]})
