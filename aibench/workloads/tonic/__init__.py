"""Tonic Suite (DjiNN & Tonic, ISCA 2015): the seven DjiNN service networks with their applications, plus
VGG-16 (Neurosurgeon), as component benchmarks run by the load generator (runner ``loadgen``).

Registration only: no torch here (``aibench list`` imports this). The networks live in
:mod:`aibench.networks.tonic` (shared with the Fathom workloads) and the applications in ``_apps``; the
factories import them on first use. See docs/tonic.md.
"""

from __future__ import annotations

from typing import Any

from aibench.loadgen.run import COMPONENT_METRICS
from aibench.registry import benchmark
from aibench.spec import Param
from aibench.workloads.micro.passes import device_params

TONIC_DTYPES = ("float32", "bfloat16", "float16")
SOURCE = "Tonic Suite / DjiNN (Hauswald et al., ISCA 2015)"


def _common(batch: int, num_samples: int, cnn: bool) -> list[Param]:
    dev, dtype = device_params()
    params = [
        Param("batch", int, batch, "samples per query (the paper's Table 3 batch is the default)",
              minimum=1, maximum=1 << 16),
        Param("stage", str, "dnn", "dnn: the network alone on pre-processed tensors; app: the whole application "
              "(raw input → pre-processing → DNN → post-processing)", choices=("dnn", "app")),
        dev,
        Param(dtype.name, str, "float32", "element type of weights and activations", choices=TONIC_DTYPES),
    ]
    if cnn:
        params.append(Param("channels_last", bool, False, "NHWC memory format for the convolutions"))
    params += [
        Param("compile", bool, False, "wrap the network in torch.compile (opt-in; compiles before measuring)"),
        Param("num_samples", int, num_samples, "distinct samples in the sample library", minimum=1,
              maximum=1 << 20),
        Param("data", str, "auto", "auto: real samples when installed, else seeded synthetic (noted); "
              "synthetic; real (refused when absent)", choices=("auto", "synthetic", "real")),
    ]
    return params


def _kwargs(app: str) -> dict[str, Any]:
    return {"kind": "component", "metrics": COMPONENT_METRICS, "primary_metric": "samples_per_s",
            "runner": "loadgen", "source": SOURCE}


def _factory(app: str):
    def factory(params: dict[str, Any], device: Any, dtype: Any) -> Any:
        from aibench.workloads.tonic import _apps

        return _apps.TASKS[app](params, device, dtype)

    factory.__name__ = f"tonic_{app}"
    return factory


TINY_IMAGE = {"batch": 1, "num_samples": 1, "data": "synthetic"}


def _register(app: str, description: str, batch: int, num_samples: int, cnn: bool, extra: list[Param],
              tiny: dict[str, Any]) -> None:
    benchmark(name=app, description=description, params=[*_common(batch, num_samples, cnn), *extra],
              tiny=tiny, **_kwargs(app))(_factory(app))


_register("imc", "Image classification: CaffeNet/AlexNet (grouped convs, LRN), 3×227×227 → 1000 classes",
          16, 32, True, [], TINY_IMAGE)
_register("dig", "Digit recognition: LeNet, requests of 28×28 digits → 10 classes", 16, 16, True,
          [Param("images_per_request", int, 100, "digit images per request (the paper's requests carry 100)",
                 minimum=1, maximum=100_000)],
          {"batch": 2, "num_samples": 2, "images_per_request": 3, "data": "synthetic"})
_register("face", "Face recognition: DeepFace-style net with 3 untied locally connected layers, 3×152×152 → 83",
          2, 8, True, [], TINY_IMAGE)
_register("asr", "Speech recognition: Kaldi DNN 440 → 6×2048 sigmoid → 1706 senones, per utterance", 2, 4, False,
          [Param("frames", int, 548, "10 ms frames per synthetic utterance (the paper's requests carry 548)",
                 minimum=11, maximum=1_000_000)],
          {"batch": 2, "num_samples": 2, "frames": 40, "data": "synthetic"})
for _app, _what in (("pos", "Part-of-speech tagging: SENNA window MLP 300 → 300 → hard tanh → 45 tags"),
                    ("chk", "Chunking: SENNA window MLP 300 → 300 → hard tanh → 42 tags (runs POS first)"),
                    ("ner", "Named-entity recognition: SENNA window MLP 375 → 300 → hard tanh → 17 tags")):
    _register(_app, _what, 64, 128, False,
              [Param("words", int, 28, "words per synthetic sentence (the paper's requests carry 28)",
                     minimum=1, maximum=100_000)],
              {"batch": 3, "num_samples": 3, "words": 7, "data": "synthetic"})
# VGG-16 at batch 8: its 15.5 GFLOP per image is ~22× IMC's (0.72), so 8 images already make a query as
# heavy as ~170 IMC images (past IMC's batch-16 knee); Fathom's VGG uses batch 8 too.
_register("vgg", "Image classification: VGG-16 (Neurosurgeon's VGG), 3×224×224 → 1000 classes", 8, 32, True, [],
          TINY_IMAGE)
