"""What the service can host: the Tonic networks (the network stage: the pre-processed tensor in, the
network's output out) and ``null``, a model that does no work (for measuring the server itself).

This module is light (no torch): the event-loop process validates requests against it; only a worker
builds the networks (:func:`build`).

Every model is *row-wise*: its input is a batch of rows of ``input_shape`` and its output one row of
``output_shape`` per input row, each output row depending only on its input row (the nets run in eval mode).
So the dynamic batcher may put rows of different requests together and split a large request over
several executed batches. A row is one image (IMC, FACE, DIG's one digit, VGG), one 10 ms frame of spliced
features (ASR), one 5-word window (POS, CHK, NER): the first dimension of the network's input, as in
DjiNN, which reshapes the net's batch dimension to the request, and Triton, whose ``max_batch_size`` counts
the same dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    input_shape: tuple[int, ...]  # one row
    output_shape: tuple[int, ...]  # one row; () = one value per row
    output_dtype: str  # "float32" or "int64" (numpy names)
    default_max_batch: int  # rows per executed batch: the paper's Table 3 batch × rows per query
    source: str | None = None  # "FAMILY=DIR" for a model read from files (--model-dir); None: built in

    @property
    def row_elements(self) -> int:
        return math.prod(self.input_shape)

    @property
    def row_bytes(self) -> int:
        return 4 * self.row_elements

    @property
    def out_row_elements(self) -> int:
        return math.prod(self.output_shape)

    @property
    def out_row_bytes(self) -> int:
        return self.out_row_elements * (8 if self.output_dtype == "int64" else 4)


# The paper's Table 3 batches in rows: IMC 16 images, DIG 16 requests of 100 digits, FACE 2 images, ASR 2
# utterances of 548 frames, NLP 64 sentences of 28 words; VGG 8 (as its component benchmark).
SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("imc", "CaffeNet image classification: 3×227×227 image → class id", (3, 227, 227), (), "int64", 16),
    ModelSpec("dig", "LeNet digit recognition: 1×28×28 digit → class id", (1, 28, 28), (), "int64", 1600),
    ModelSpec("face", "DeepFace-style face recognition: 3×152×152 image → identity", (3, 152, 152), (), "int64", 2),
    ModelSpec("asr", "Kaldi DNN acoustic model: 440 spliced features → 1706 senone scores", (440,), (1706,),
              "float32", 1096),
    ModelSpec("pos", "SENNA part-of-speech tagger: 300-wide word window → 45 tag scores", (300,), (45,),
              "float32", 1792),
    ModelSpec("chk", "SENNA chunker: 300-wide word window → 42 tag scores", (300,), (42,), "float32", 1792),
    ModelSpec("ner", "SENNA named-entity tagger: 375-wide word window → 17 tag scores", (375,), (17,),
              "float32", 1792),
    ModelSpec("vgg", "VGG-16 image classification: 3×224×224 image → class id", (3, 224, 224), (), "int64", 8),
    ModelSpec("null", "no work: 4 values → their sum (measures the server, not a network)", (4,), (1,),
              "float32", 64),
)}
TONIC_MODELS = ("imc", "dig", "face", "asr", "pos", "chk", "ner")
# Families of trained models read from a folder (``aibench serve --model-dir FAMILY=DIR``). Each provider
# module has ``model_specs(folder) -> list[ModelSpec]`` (light, no torch: it checks the folder and says the
# shapes; the server's event loop calls it) and ``build(spec, device, dtype)`` (in each instance).
PROVIDERS = {"ecommerce": "aibench.ecommerce.served"}


def _provider(family: str) -> Any:
    import importlib

    return importlib.import_module(PROVIDERS[family])


def add_model_dirs(dirs: dict[str, str]) -> tuple[str, ...]:
    """Register the models of each ``FAMILY: DIR`` in :data:`SPECS` (the server and each of its instances
    call this with the same folders); the names added. An unknown family is a usage error; a folder its
    provider cannot use raises the provider's error (one line, its exit code)."""
    from aibench.errors import UsageError

    added: list[str] = []
    for family, folder in dirs.items():
        if family not in PROVIDERS:
            raise UsageError(f"--model-dir: unknown model family {family!r}; known: {', '.join(PROVIDERS)}")
        for spec in _provider(family).model_specs(folder):
            if spec.name in SPECS and SPECS[spec.name].source is None:
                raise UsageError(f"--model-dir {family}: model {spec.name!r} is a built-in name")
            SPECS[spec.name] = spec
            added.append(spec.name)
    return tuple(added)
RESIDENT_MAX_BYTES = 2048 << 20  # resident input rows of one model in one instance, at most
# aibench's extension of the Open Inference Protocol (``aibench serve --resident-inputs``): an input whose
# parameters hold ``{"resident_input": S}`` (and no data) names rows S, S+1, … S+rows-1 (modulo the rows
# kept) of the model's resident inputs, already on each instance's device, instead of carrying a tensor.
# ``GET /v2`` lists RESIDENT_EXTENSION among its extensions when any model has them.
RESIDENT_PARAM = "resident_input"
RESIDENT_EXTENSION = "aibench_resident_inputs"


def resident_row_numbers(start: int, rows: int, kept: int) -> bytes:
    """The int32 row numbers a request naming ``rows`` resident rows from ``start`` stands for: ``start``,
    ``start + 1``, … each modulo the ``kept`` rows (0 <= start < 2**31, 1 <= kept < 2**31). Four bytes per row
    (uint32 sums cannot overflow: below 2**31 + rows), so a request's bound on its bytes bounds this too."""
    import numpy as np

    at = np.arange(rows, dtype=np.uint32)
    at += np.uint32(start % kept)
    at %= np.uint32(kept)
    return at.astype("<i4").tobytes()


def resident_inputs(name: str, rows: int) -> Any:
    """The ``rows`` resident input rows of model ``name`` (``aibench serve --resident-inputs``): standard normal
    float32 on the host, seeded by the model's name, so every instance (and every run) holds the same rows and
    a test can compute their outputs in process. Imports torch."""
    import zlib

    import torch

    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn((rows, *SPECS[name].input_shape), generator=gen)


def build(name: str, device: Any, dtype: Any, null_delay_s: float = 0.0) -> Any:
    """The network ``name`` with the benchmark's seeded weights (the same as ``aibench run component``'s
    network stage), on ``device`` in ``dtype``, in eval mode. Imports torch."""

    if name == "null":
        return NullModel(null_delay_s)
    spec = SPECS[name]
    if spec.source is not None:
        return _provider(spec.source.partition("=")[0]).build(spec, device, dtype)
    from aibench.workloads.tonic import _apps

    return _apps.prepare_net(name, {}, device, dtype)


class NullModel:
    """Row sums in float32, after an optional fixed delay (a stand-in network with a known compute time,
    like Triton's test models): the server's own cost is what remains."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def __call__(self, x: Any) -> Any:
        if self.delay_s > 0:
            import time

            time.sleep(self.delay_s)
        return self.warm_up(x)

    def warm_up(self, x: Any) -> Any:
        return x.float().sum(dim=1, keepdim=True)
