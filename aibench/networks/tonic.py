"""The Tonic Suite service networks (DjiNN & Tonic, ISCA 2015) and VGG-16 (Neurosurgeon), in PyTorch.

Each network is an ``nn.Sequential`` whose child names are the layer names of the original Caffe prototxt
(``tonic_nets.json`` beside this file holds the reference table: per-layer output shapes and parameter
counts, which the tests check), so each is :class:`~aibench.networks.Layered`: its layers run one after
another equal the network. Caffe's pooling rounds *up*, so every max pool uses ``ceil_mode=True``.
Image nets end, as the DjiNN service did, in ``prob`` (softmax) and ``argmax``: the service returns class
ids. The ASR net has no softmax (the client applies it); the SENNA nets return per-tag scores for the
client's Viterbi decoder. Weights are seeded random (no pretrained weights can be had offline).

This module imports torch at module level; only the factories of the Tonic workloads
(:mod:`aibench.workloads.tonic`) and the tests import it, lazily.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any

import torch
from torch import nn

IMAGE_NETS = ("imc", "dig", "face", "vgg")
NLP_NETS = ("pos", "chk", "ner")
ALL_NETS = ("imc", "dig", "face", "asr", "pos", "chk", "ner", "vgg")


def reference_table() -> dict[str, Any]:
    """The layer tables shipped with the package (the seven Tonic nets from the shared reference, plus VGG-16)."""
    text = resources.files("aibench.networks").joinpath("tonic_nets.json").read_text()
    return json.loads(text)


class ArgMax(nn.Module):
    """The ``argmax`` layer of the Caffe deploy nets: the class id per row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=-1)


class LocallyConnected2d(nn.Module):
    """A convolution with *untied* weights: every output position has its own filter bank and its own bias
    per output channel (DeepFace's local layers). No padding.

    Implemented as ``unfold`` (im2col) followed by one batched matrix multiply over positions:
    ``out[n, l, o] = sum_i cols[n, i, l] * weight[l, i, o] + bias[o, l]``.
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: tuple[int, int], kernel_size: int,
                 stride: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.in_size = in_size
        self.out_size = tuple((d - kernel_size) // stride + 1 for d in in_size)
        positions = self.out_size[0] * self.out_size[1]
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(positions, fan_in, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.out_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        cols = nn.functional.unfold(x, self.kernel_size, stride=self.stride)  # [N, C*k*k, L]
        # bmm on the permuted view hits a slow strided path from N=2 on (measured: 2.2x slower at N=2);
        # one contiguous copy of the columns costs far less than that.
        out = torch.bmm(cols.permute(2, 0, 1).contiguous(), self.weight)  # [L, N, Cout]
        out = out.permute(1, 2, 0).reshape(n, self.out_channels, *self.out_size)
        return out + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, out_size={self.out_size} (untied)")


def _pool(k: int, s: int) -> nn.MaxPool2d:
    return nn.MaxPool2d(k, s, ceil_mode=True)  # Caffe rounds pooled sizes up


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


def imc() -> nn.Sequential:
    """CaffeNet (bvlc_reference_caffenet, AlexNet with grouped conv2/4/5 and LRN), 3×227×227 → class id."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 96, 11, stride=4)), ("relu1", nn.ReLU()), ("pool1", _pool(3, 2)), ("norm1", _lrn()),
        ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)), ("relu2", nn.ReLU()), ("pool2", _pool(3, 2)),
        ("norm2", _lrn()),
        ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)), ("relu5", nn.ReLU()), ("pool5", _pool(3, 2)),
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(9216, 4096)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(0.5)),
        ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(0.5)),
        ("fc8", nn.Linear(4096, 1000)), ("prob", nn.Softmax(dim=-1)), ("argmax", ArgMax()),
    ]))


def dig() -> nn.Sequential:
    """Caffe's LeNet for MNIST, 1×28×28 → digit. No nonlinearity between the convolutions (as in Caffe)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 20, 5)), ("pool1", _pool(2, 2)),
        ("conv2", nn.Conv2d(20, 50, 5)), ("pool2", _pool(2, 2)),
        ("flatten", nn.Flatten()),
        ("ip1", nn.Linear(800, 500)), ("relu1", nn.ReLU()),
        ("ip2", nn.Linear(500, 10)), ("prob", nn.Softmax(dim=-1)), ("argmax", ArgMax()),
    ]))


def face() -> nn.Sequential:
    """The Tonic DeepFace-style net, 3×152×152 → one of 83 identities. Three locally connected layers with
    untied weights; the prototxt has no activation layers at all, so neither does this."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 32, 11)), ("pool2", _pool(3, 2)),
        ("conv3", nn.Conv2d(32, 16, 9)),
        ("local4", LocallyConnected2d(16, 16, (63, 63), 9)),
        ("local5", LocallyConnected2d(16, 16, (55, 55), 7, stride=2)),
        ("local6", LocallyConnected2d(16, 16, (25, 25), 5)),
        ("flatten", nn.Flatten()),
        ("fc7", nn.Linear(7056, 4096)), ("fc8", nn.Linear(4096, 83)),
        ("prob", nn.Softmax(dim=-1)), ("argmax", ArgMax()),
    ]))


def asr() -> nn.Sequential:
    """Kaldi nnet1 DNN: 440 (40-dim features spliced ±5 frames) → 6 × (2048 + sigmoid) → 1706 senone scores.
    No softmax: the client turns scores into pseudo-likelihoods."""
    layers: list[tuple[str, nn.Module]] = []
    width = 440
    for i in range(1, 7):
        layers += [(f"inner{i}", nn.Linear(width, 2048)), (f"sig{i}", nn.Sigmoid())]
        width = 2048
    layers.append(("final_inner", nn.Linear(2048, 1706)))
    return nn.Sequential(OrderedDict(layers))


def _senna(fin: int, tags: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(fin, 300)), ("htanh", nn.Hardtanh()), ("fc3", nn.Linear(300, tags)),
    ]))


# SENNA window networks: the input is a window of 5 words, each word the concatenation of its feature
# embeddings (see aibench.workloads.tonic._apps for the feature widths).
POS_TAGS, CHK_TAGS, NER_TAGS = 45, 42, 17


def pos() -> nn.Sequential:
    """SENNA part-of-speech tagger: 5 × (word 50 + caps 5 + suffix 5) = 300 → 300 → hard tanh → 45 tags."""
    return _senna(300, POS_TAGS)


def chk() -> nn.Sequential:
    """SENNA chunker: 5 × (word 50 + caps 5 + POS tag 5) = 300 → 300 → hard tanh → 42 tags."""
    return _senna(300, CHK_TAGS)


def ner() -> nn.Sequential:
    """SENNA named-entity tagger: 5 × (word 50 + caps 5 + 4 gazetteers × 5) = 375 → 300 → hard tanh → 17."""
    return _senna(375, NER_TAGS)


def vgg() -> nn.Sequential:
    """VGG-16 (configuration D; Neurosurgeon's VGG), 3×224×224 → class id, Caffe layer names."""
    layers: list[tuple[str, nn.Module]] = []
    cin = 3
    for block, (cout, reps) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for r in range(1, reps + 1):
            layers += [(f"conv{block}_{r}", nn.Conv2d(cin, cout, 3, padding=1)), (f"relu{block}_{r}", nn.ReLU())]
            cin = cout
        layers.append((f"pool{block}", _pool(2, 2)))
    layers += [
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(512 * 7 * 7, 4096)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(0.5)),
        ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(0.5)),
        ("fc8", nn.Linear(4096, 1000)), ("prob", nn.Softmax(dim=-1)), ("argmax", ArgMax()),
    ]
    return nn.Sequential(OrderedDict(layers))


BUILDERS: dict[str, Callable[[], nn.Sequential]] = {
    "imc": imc, "dig": dig, "face": face, "asr": asr, "pos": pos, "chk": chk, "ner": ner, "vgg": vgg,
}

# Input of one network row (C×H×W for images, features for the MLPs).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "imc": (3, 227, 227), "dig": (1, 28, 28), "face": (3, 152, 152), "vgg": (3, 224, 224),
    "asr": (440,), "pos": (300,), "chk": (300,), "ner": (375,),
}


def build(name: str, seed: int = 0, device: Any = None, dtype: Any = None) -> nn.Sequential:
    """The network ``name`` with seeded random weights, in eval mode (dropout off).

    ``device="meta"`` builds it without allocating memory (for shape and parameter checks).
    """
    if name not in BUILDERS:
        raise KeyError(f"unknown Tonic network {name!r}; known: {', '.join(ALL_NETS)}")
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            net = BUILDERS[name]()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = BUILDERS[name]()
        if device is not None or dtype is not None:
            net = net.to(device=device, dtype=dtype)
    return net.eval()


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def layer_shapes(net: nn.Sequential, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-layer output shape (without the batch dimension) for input ``x`` (meta tensors work)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, layer in net.named_children():
        x = layer(x)
        out[name] = tuple(x.shape[1:])
    return out
