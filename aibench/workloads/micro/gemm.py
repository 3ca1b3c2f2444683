"""Matrix multiply: DeepBench's GEMM (C = op(A)·op(B)) and AIBench's fully connected layer."""

from __future__ import annotations

from typing import Any

from aibench.registry import benchmark
from aibench.spec import Param
from aibench.workloads.micro.passes import (
    Cost,
    build_op,
    csv_bool,
    deepbench_rows,
    device_params,
    element_size,
    micro_kwargs,
    pass_param,
    randn,
    require_memory,
    wants_grad,
)

DIM = {"minimum": 1, "maximum": 1 << 20}


def _gemm_row(row: dict[str, str]) -> dict[str, Any]:
    return {"m": int(row["m"]), "n": int(row["n"]), "k": int(row["k"]),
            "a_t": csv_bool(row["a_t"]), "b_t": csv_bool(row["b_t"])}


@benchmark(
    name="gemm",
    description="General matrix multiply C[m,n] = op(A)[m,k] · op(B)[k,n]",
    source="DeepBench GEMM; AIBench micro",
    params=[
        Param("m", int, 1024, "rows of C and of op(A)", **DIM),
        Param("n", int, 1024, "columns of C and of op(B)", **DIM),
        Param("k", int, 1024, "inner dimension", **DIM),
        Param("a_t", bool, False, "A is stored transposed (k×m), as DeepBench's a_t"),
        Param("b_t", bool, False, "B is stored transposed (n×k), as DeepBench's b_t"),
        pass_param(),
        *device_params(),
    ],
    sets={
        "deepbench-inference-server": deepbench_rows("gemm_inference_server_set.csv", _gemm_row),
        "deepbench-inference-device": deepbench_rows("gemm_inference_device_set.csv", _gemm_row),
        "deepbench-training": deepbench_rows("gemm_training_set.csv", _gemm_row),
    },
    tiny={"m": 16, "n": 8, "k": 12},
    aliases=("matmul",),
    **micro_kwargs(),
)
def gemm(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    m, n, k = params["m"], params["n"], params["k"]
    s = element_size(params)
    grad = wants_grad(params)
    require_memory(s * (m * k + k * n + m * n) * (3 if grad else 1), device)
    a = randn((k, m) if params["a_t"] else (m, k), device, dtype, grad)
    b = randn((n, k) if params["b_t"] else (k, n), device, dtype, grad)
    a_op = a.t() if params["a_t"] else a
    b_op = b.t() if params["b_t"] else b

    def forward() -> Any:
        return a_op @ b_op

    fwd = Cost(2.0 * m * n * k, s * (m * k + k * n + m * n), "2·m·n·k", "s·(m·k + k·n + m·n)")
    bwd = Cost(4.0 * m * n * k, s * (2 * m * k + 2 * k * n + m * n), "4·m·n·k (dA and dB)",
               "s·(2·m·k + 2·k·n + m·n)")
    return build_op(params, forward, [a, b], fwd, bwd, {"A": list(a.shape), "B": list(b.shape), "C": [m, n]})


@benchmark(
    name="fc",
    description="Fully connected layer y = x·Wᵀ + b over a batch",
    source="AIBench micro DC-AI-M2",
    params=[
        Param("batch", int, 64, "rows of x (samples)", **DIM),
        Param("in_features", int, 4096, "input features", **DIM),
        Param("out_features", int, 4096, "output features", **DIM),
        Param("bias", bool, True, "add a bias vector"),
        pass_param(),
        *device_params(),
    ],
    tiny={"batch": 4, "in_features": 16, "out_features": 8},
    aliases=("fully-connected", "linear"),
    **micro_kwargs(),
)
def fc(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch.nn.functional as F

    b_, i, o = params["batch"], params["in_features"], params["out_features"]
    s = element_size(params)
    grad = wants_grad(params)
    require_memory(s * (b_ * i + i * o + b_ * o) * (3 if grad else 1), device)
    x = randn((b_, i), device, dtype, grad)
    w = randn((o, i), device, dtype, grad)
    bias = randn((o,), device, dtype, grad) if params["bias"] else None

    def forward() -> Any:
        return F.linear(x, w, bias)

    nb = o if bias is not None else 0
    fwd = Cost(2.0 * b_ * i * o + (b_ * o if nb else 0), s * (b_ * i + i * o + nb + b_ * o),
               "2·batch·in·out (+ batch·out for the bias)", "s·(batch·in + in·out + out + batch·out)")
    bwd = Cost(4.0 * b_ * i * o + (b_ * o if nb else 0), s * (2 * b_ * i + 2 * i * o + 2 * nb + b_ * o),
               "4·batch·in·out (dx and dW; + batch·out for db)", "s·(2·batch·in + 2·in·out + 2·out + batch·out)")
    grads = [x, w] + ([bias] if bias is not None else [])
    return build_op(params, forward, grads, fwd, bwd, {"x": [b_, i], "W": [o, i], "y": [b_, o]})
