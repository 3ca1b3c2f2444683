"""What each layer of a network is, for the prediction models: its type and the paper's variables.

Neurosurgeon (§5.1) fits one regression per layer *type*, each over a few variables of the layer:

=========  ==================================================================  ===============================
type       the paper's variables                                               ``work`` (the model's x)
=========  ==================================================================  ===============================
conv       input feature maps (C·H·W), (filter size / stride)² × filters       their product / groups (≈ MACs)
lc         input and output feature-map sizes (locally connected)             output size × C_in·k² (MACs)
pool       input and output feature-map sizes                                  input + output × k²
fc         inputs, outputs (× rows: the batch, or an utterance's frames)        rows × inputs × outputs (and
                                                                                inputs × outputs: ``work2``)
act        neurons (ReLU, sigmoid, tanh, hard tanh)                            neurons
norm       neurons (local response / batch normalisation)                      neurons
softmax    neurons (softmax and argmax, treated alike)                         neurons
reshape    neurons (flatten, dropout at inference, identity: no arithmetic)    neurons
=========  ==================================================================  ===============================

Each model predicts a layer's time from one ``work`` figure combining the paper's variables (for conv the
product of the two variables is about the multiply-accumulate count, which is what a linear-in-work or
log-throughput model needs); the variables themselves are kept beside it. Activations count the whole
batch. A layer of a type not listed is ``other``: it is profiled, but no model predicts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LAYER_TYPES = ("conv", "lc", "pool", "fc", "act", "norm", "softmax", "reshape")


def _prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple | list) else (int(v), int(v))


def layer_type(module: Any) -> str:
    """The model type of ``module`` (one of :data:`LAYER_TYPES`, or ``other``)."""
    from torch import nn

    from aibench.networks.tonic import ArgMax, LocallyConnected2d

    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return "conv"
    if isinstance(module, LocallyConnected2d):
        return "lc"
    if isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d):
        return "pool"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.ReLU | nn.Sigmoid | nn.Tanh | nn.Hardtanh | nn.GELU | nn.LeakyReLU | nn.ELU):
        return "act"
    if isinstance(module, nn.LocalResponseNorm | nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm):
        return "norm"
    if isinstance(module, nn.Softmax | nn.LogSoftmax | ArgMax):
        return "softmax"
    if isinstance(module, nn.Flatten | nn.Dropout | nn.Identity):
        return "reshape"
    return "other"


def describe(module: Any, in_shape: Sequence[int], out_shape: Sequence[int]) -> dict[str, Any]:
    """``{"type", "vars", "work"}`` of one layer given its input and output shapes (batch dimension
    included). ``vars`` are the paper's variables for the type; ``work`` the one figure its model uses."""
    kind = layer_type(module)
    n_in, n_out = _prod(in_shape), _prod(out_shape)
    out: dict[str, Any] = {"type": kind}
    if kind == "conv":
        k = _prod(module.kernel_size)
        s = _prod(module.stride)
        ratio = (k / s) * module.out_channels
        out["vars"] = {"input_maps": n_in, "filter_stride_sq_x_filters": ratio, "groups": module.groups}
        out["work"] = n_in * ratio / module.groups
    elif kind == "lc":
        kh, _ = _pair(module.kernel_size)
        out["vars"] = {"input_size": n_in, "output_size": n_out}
        out["work"] = float(n_out * module.in_channels * kh * kh)
    elif kind == "pool":
        k = _prod(_pair(module.kernel_size))
        out["vars"] = {"input_size": n_in, "output_size": n_out, "kernel": k}
        out["work"] = float(n_in + n_out * k)
    elif kind == "fc":
        rows = n_in // module.in_features
        out["vars"] = {"inputs": module.in_features, "outputs": module.out_features, "rows": rows}
        out["work"] = float(rows * module.in_features * module.out_features)
        # One row is a matrix-vector product, bound by reading the weights; many rows a matrix product,
        # bound by arithmetic: the linear model gets the weight count as a second variable.
        out["work2"] = float(module.in_features * module.out_features)
    else:
        out["vars"] = {"neurons": n_in}
        out["work"] = float(n_in)
    out["work"] = float(out["work"])
    return out


def signature(desc: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two layer configurations the same for the sweep's exclusion of real networks' layers."""
    return (desc["type"], *sorted((k, float(v)) for k, v in desc.get("vars", {}).items()))
