"""Element-wise operators of AIBench: ReLU, sigmoid, tanh, dropout, element-wise multiply, softmax.

All are memory-bound; the byte counts are the minimum traffic (each tensor read or written once). FLOPs
are given only where one operation per element is unambiguous (ReLU, multiply); for transcendental
functions and dropout's random numbers the count depends on the implementation, so GFLOP/s is reported
as unavailable rather than invented.
"""

from __future__ import annotations

from collections.abc import Callable
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

NO_FLOPS = "not defined: the operation count of {op} depends on the implementation"


def _unary(params: dict[str, Any], device: Any, dtype: Any, fn: Callable[[Any], Any], op: str,
           flops_per_elt: float | None) -> Any:
    shape = feature_map_shape(params)
    n, s = numel(shape), element_size(params)
    grad = wants_grad(params)
    require_memory(s * n * (4 if grad else 2), device)
    x = randn(shape, device, dtype, grad)

    def forward() -> Any:
        return fn(x)

    if flops_per_elt is None:
        ff = fb = None
        fnote = bnote = NO_FLOPS.format(op=op)
    else:
        ff, fb = flops_per_elt * n, flops_per_elt * n
        fnote, bnote = f"{flops_per_elt:g}·numel", f"{flops_per_elt:g}·numel"
    fwd = Cost(ff, 2.0 * s * n, fnote, "s·2·numel (read x, write y)")
    bwd = Cost(fb, 3.0 * s * n, bnote, "s·3·numel (read dy and x or y, write dx)")
    return build_op(params, forward, [x], fwd, bwd, {"x": list(shape)})


def _register_unary(name: str, description: str, source: str, op: str, flops_per_elt: float | None,
                    make: Callable[[dict[str, Any]], Callable[[Any], Any]], extra: list[Param] | None = None,
                    aliases: tuple[str, ...] = ()) -> None:
    @benchmark(name=name, description=description, source=source,
               params=[*feature_map_params(), *(extra or []), pass_param(), *device_params()],
               tiny=FEATURE_MAP_TINY, aliases=aliases, **micro_kwargs())
    def factory(params: dict[str, Any], device: Any, dtype: Any) -> Any:
        return _unary(params, device, dtype, make(params), op, flops_per_elt)


def _relu(params: dict[str, Any]) -> Callable[[Any], Any]:
    import torch

    return torch.relu


def _sigmoid(params: dict[str, Any]) -> Callable[[Any], Any]:
    import torch

    return torch.sigmoid


def _tanh(params: dict[str, Any]) -> Callable[[Any], Any]:
    import torch

    return torch.tanh


def _dropout(params: dict[str, Any]) -> Callable[[Any], Any]:
    import torch.nn.functional as F

    p = params["p"]
    return lambda x: F.dropout(x, p=p, training=True)


_register_unary("relu", "Rectified linear unit y = max(x, 0)", "AIBench micro DC-AI-M3", "relu", 1.0, _relu)
_register_unary("sigmoid", "Logistic sigmoid y = 1 / (1 + e^-x)", "AIBench micro DC-AI-M4", "sigmoid", None,
                _sigmoid)
_register_unary("tanh", "Hyperbolic tangent", "AIBench micro DC-AI-M5", "tanh", None, _tanh)
_register_unary("dropout", "Dropout in training mode (random mask, rescale by 1/(1-p))",
                "AIBench micro DC-AI-M10", "dropout (random number generation)", None, _dropout,
                extra=[Param("p", float, 0.5, "probability of zeroing an element", minimum=0.0, maximum=1.0)])


@benchmark(
    name="mul",
    description="Element-wise multiply c = a ⊙ b",
    source="AIBench micro DC-AI-M11",
    params=[*feature_map_params(), pass_param(), *device_params()],
    tiny=FEATURE_MAP_TINY,
    aliases=("elementwise-multiply", "eltwise-mul"),
    **micro_kwargs(),
)
def mul(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    shape = feature_map_shape(params)
    n, s = numel(shape), element_size(params)
    grad = wants_grad(params)
    require_memory(s * n * (6 if grad else 3), device)
    a = randn(shape, device, dtype, grad)
    b = randn(shape, device, dtype, grad)

    def forward() -> Any:
        return a * b

    fwd = Cost(1.0 * n, 3.0 * s * n, "numel", "s·3·numel (read a, b; write c)")
    bwd = Cost(2.0 * n, 5.0 * s * n, "2·numel (da = dc·b, db = dc·a)", "s·5·numel (read dc, a, b; write da, db)")
    return build_op(params, forward, [a, b], fwd, bwd, {"a": list(shape), "b": list(shape)})


@benchmark(
    name="softmax",
    description="Softmax over the last dimension of a [batch, classes] matrix",
    source="AIBench micro DC-AI-M12",
    params=[
        Param("batch", int, 256, "rows", minimum=1, maximum=1 << 20),
        Param("classes", int, 1000, "length of the softmax dimension", minimum=1, maximum=1 << 24),
        pass_param(),
        *device_params(),
    ],
    tiny={"batch": 3, "classes": 10},
    **micro_kwargs(),
)
def softmax(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch

    shape = (params["batch"], params["classes"])
    n, s = numel(shape), element_size(params)
    grad = wants_grad(params)
    require_memory(s * n * (4 if grad else 2), device)
    x = randn(shape, device, dtype, grad)

    def forward() -> Any:
        return torch.softmax(x, dim=-1)

    note = NO_FLOPS.format(op="softmax (exp)")
    fwd = Cost(None, 2.0 * s * n, note, "s·2·numel (read x, write y)")
    bwd = Cost(None, 3.0 * s * n, note, "s·3·numel (read dy and y, write dx)")
    return build_op(params, forward, [x], fwd, bwd, {"x": list(shape)})
