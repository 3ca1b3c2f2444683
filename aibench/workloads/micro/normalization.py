"""Normalisation operators of AIBench: batch normalisation (M9) and cosine normalisation (M8)."""

from __future__ import annotations

from typing import Any

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


@benchmark(
    name="batchnorm",
    description="Batch normalisation over N×C×H×W in training mode (batch statistics, affine)",
    source="AIBench micro DC-AI-M9 (Ioffe & Szegedy 2015)",
    params=[*feature_map_params(), pass_param(), *device_params()],
    tiny=FEATURE_MAP_TINY,
    aliases=("batch-norm", "bn"),
    **micro_kwargs(),
)
def batchnorm(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch.nn.functional as F

    shape = feature_map_shape(params)
    n, c, s = numel(shape), shape[1], element_size(params)
    grad = wants_grad(params)
    require_memory(s * n * (4 if grad else 2), device)
    x = randn(shape, device, dtype, grad)
    weight = randn((c,), device, dtype, grad)
    bias = randn((c,), device, dtype, grad)

    def forward() -> Any:
        return F.batch_norm(x, None, None, weight, bias, training=True)

    note = "not defined: statistics, rsqrt and affine counts depend on the implementation"
    fwd = Cost(None, s * 2.0 * n, note, "s·2·numel (read x, write y; a real kernel may read x twice)")
    bwd = Cost(None, s * 3.0 * n, note, "s·3·numel (read dy and x, write dx)")
    return build_op(params, forward, [x, weight, bias], fwd, bwd, {"x": list(shape)})


@benchmark(
    name="cosinenorm",
    description="Cosine normalisation: a fully connected layer on unit-normalised x and W, y = x̂·Ŵᵀ",
    source="AIBench micro DC-AI-M8 (Luo et al. 2017, arXiv:1702.05870)",
    params=[
        Param("batch", int, 64, "rows of x", minimum=1, maximum=1 << 20),
        Param("in_features", int, 4096, "input features", minimum=1, maximum=1 << 20),
        Param("out_features", int, 4096, "output features", minimum=1, maximum=1 << 20),
        pass_param(),
        *device_params(),
    ],
    tiny={"batch": 4, "in_features": 16, "out_features": 8},
    aliases=("cosine-norm", "cosine-normalization"),
    **micro_kwargs(),
)
def cosinenorm(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch.nn.functional as F

    b, i, o = params["batch"], params["in_features"], params["out_features"]
    s = element_size(params)
    grad = wants_grad(params)
    require_memory(s * (b * i + o * i + b * o) * (4 if grad else 2), device)
    x = randn((b, i), device, dtype, grad)
    w = randn((o, i), device, dtype, grad)

    def forward() -> Any:
        return F.linear(F.normalize(x, dim=1), F.normalize(w, dim=1))

    norm = 3 * (b * i + o * i)  # square, sum, divide per element of x and W
    fwd = Cost(2.0 * b * i * o + norm, s * (2 * b * i + 2 * o * i + b * o),
               "2·batch·in·out + 3·(batch·in + out·in) (dot products + normalisation)",
               "s·(2·batch·in + 2·out·in + batch·out) (x, W read; x̂, Ŵ written and read once)")
    bwd = Cost(4.0 * b * i * o + 2 * norm, s * (3 * b * i + 3 * o * i + b * o),
               "2 × forward matrix product + 2 × normalisation", "s·(3·batch·in + 3·out·in + batch·out)")
    return build_op(params, forward, [x, w], fwd, bwd, {"x": [b, i], "W": [o, i], "y": [b, o]})
