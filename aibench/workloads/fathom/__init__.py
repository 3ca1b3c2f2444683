"""Fathom (Adolf et al., IISWC 2016): eight reference deep-learning workloads, each in training and
forward-only (inference) mode, run by the ``training`` runner (aibench/measure/training.py), plus the
LeNet digit classifier of the Tonic Suite as the time-to-quality reference on real data.

Registration only: no torch here (``aibench list`` imports this). Networks live in
:mod:`aibench.networks.fathom`, tasks (model + optimizer + staged data + loss) in ``_tasks``; factories import
them on first use. Names carry a
``fathom-`` prefix so they never collide with the Tonic networks (``component/vgg`` is Tonic's VGG-16
service, ``component/fathom-vgg`` Fathom's VGG training workload). See docs/fathom.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aibench.measure.training import MODES, TRAINING_METRICS, check_mode, training_metrics
from aibench.registry import benchmark
from aibench.spec import Param
from aibench.workloads.micro.passes import device_params

SOURCE = "Fathom (Adolf et al., IISWC 2016); init/setup/run as in Guignard et al. (Minsky, HICSS 2018)"


def _common(batch: int, steps: int, warmup: int) -> list[Param]:
    return [
        Param("mode", str, "train", "train: forward, loss, backward and optimizer step; infer: forward only",
              choices=MODES),
        Param("batch", int, batch, "samples per step (Fathom's default is the default)", minimum=1,
              maximum=1 << 16),
        Param("steps", int, steps, "timed steps after the warm-up (not used with --ttq, which trains to the "
              "target or --max-time)", minimum=1, maximum=10_000_000),
        Param("warmup_steps", int, warmup, "steps run before timing starts (reported apart)", minimum=0,
              maximum=1_000_000),
        device_params()[0],
        Param("ttq", bool, False, "time to quality: train until the held-out target is met or --max-time "
              "(default 600 s) has passed (only where real or generated data allows it)"),
        Param("deterministic", bool, False, "enforce deterministic algorithms "
              "(torch.use_deterministic_algorithms); an operation without one is refused (exit 3)"),
    ]


def _quality(target: float, help_: str, unit: str) -> list[Param]:
    # An accuracy target above 1 could never be met and would train for the whole --max-time budget.
    return [
        Param("target", float, target, help_, unit=unit, minimum=0.0,
              maximum=1.0 if unit == "fraction" else None),
        Param("eval_every", int, 0, "with --ttq, evaluate every N steps (0: once per epoch)", minimum=0,
              maximum=10_000_000),
    ]


DATA = Param("data", str, "auto", "auto: real digits when scikit-learn is installed, else seeded synthetic "
             "glyphs (noted); synthetic; real (refused when absent). --ttq needs real digits",
             choices=("auto", "synthetic", "real"))


def _factory(name: str) -> Callable[..., Any]:
    def factory(params: dict[str, Any], device: Any, seed: int = 0) -> Any:
        from aibench.workloads.fathom import _tasks

        return _tasks.BUILDERS[name](params, device, seed)

    factory.__name__ = f"fathom_{name}"
    return factory


def _register(name: str, description: str, params: list[Param], tiny: dict[str, Any],
              quality: bool, why_not: str | None = None, source: str = SOURCE,
              quality_spec: tuple[str, str, str] | None = None) -> None:
    def check(values: dict[str, Any]) -> None:
        check_mode(values, quality, why_not)

    benchmark(kind="component", name=f"fathom-{name}", description=description, source=source, params=params,
              metrics=training_metrics(*quality_spec) if quality_spec else TRAINING_METRICS,
              primary_metric="samples_per_s", runner="training", tiny=tiny,
              check=check)(_factory(name))


NO_IMAGENET = "ImageNet cannot be had offline, so this workload reports throughput only"
TINY_STEPS = {"steps": 2, "warmup_steps": 1}
IMAGE = [Param("classes", int, 1001, "output classes (ImageNet's 1000 + background, as Fathom)", minimum=2,
               maximum=1_000_000),
         Param("width", float, 1.0, "channel multiplier of every convolution (1: the original network)",
               minimum=0.01, maximum=16.0)]

_register("alexnet", "AlexNet training (Fathom): 5 convs with LRN, fc 4096-4096-1001, Adam 1e-3",
          [*_common(64, 10, 2), Param("image_size", int, 224, "square input side", unit="px", minimum=64,
                                      maximum=4096), *IMAGE,
           Param("fc_width", int, 4096, "width of fc6 and fc7", minimum=1, maximum=1 << 16)],
          {"batch": 2, "image_size": 64, "classes": 10, "fc_width": 32, "width": 0.125, **TINY_STEPS},
          False, NO_IMAGENET)
_register("vgg", "VGG training (Fathom's vgg.py: 12 3×3 convs in 5 blocks, fc 4096-4096), Adam 1e-4",
          [*_common(8, 10, 2), Param("image_size", int, 224, "square input side", unit="px", minimum=32,
                                     maximum=4096), *IMAGE,
           Param("fc_width", int, 4096, "width of fc6 and fc7", minimum=1, maximum=1 << 16)],
          {"batch": 2, "image_size": 32, "classes": 10, "fc_width": 32, "width": 0.0625, **TINY_STEPS},
          False, NO_IMAGENET)
_register("residual", "Residual network training (Fathom): 4 groups of 3 bottleneck units, no downsampling "
          "between groups, Adam 1e-2",
          [*_common(16, 10, 2), Param("image_size", int, 224, "square input side", unit="px", minimum=16,
                                      maximum=4096), *IMAGE,
           Param("repeats", int, 3, "bottleneck units per group", minimum=1, maximum=64)],
          {"batch": 2, "image_size": 16, "classes": 10, "repeats": 1, "width": 0.125, **TINY_STEPS}, False, NO_IMAGENET)
_register("autoenc", "Variational autoencoder (Fathom): 784 → 200-d Gaussian → 784, Adam 1e-3, on real digits",
          [*_common(128, 200, 10), DATA, Param("latent", int, 200, "latent dimensions", minimum=1, maximum=1 << 16),
           *_quality(0.15, "--ttq target: held-out reconstruction MSE per standard-scaled pixel (at most)", "mse")],
          {"batch": 16, **TINY_STEPS}, True, quality_spec=("mse", "lower", "test reconstruction MSE"))
_register("memnet", "End-to-end memory network (Fathom): 3 hops, embedding 20, Adam 1e-2, on generated bAbI "
          "task 1",
          [*_common(32, 200, 10), Param("embedding", int, 20, "embedding width", minimum=1, maximum=4096),
           Param("hops", int, 3, "memory hops", minimum=1, maximum=64),
           Param("stories", int, 1000, "generated training stories (and as many test stories)", minimum=8,
                 maximum=10_000_000),
           Param("sentences", int, 10, "most sentences per story (memory size = min(50, this))", minimum=2,
                 maximum=1000),
           *_quality(0.95, "--ttq target: answer accuracy on the generated test stories (at least)", "fraction")],
          {"batch": 8, "stories": 32, **TINY_STEPS}, True, quality_spec=("fraction", "higher", "test accuracy"))
_register("seq2seq", "Sequence to sequence (Fathom): 3-layer LSTM 256 encoder-decoder with attention, 40k "
          "vocabularies, sampled softmax, SGD 0.5",
          [*_common(64, 10, 2),
           Param("vocab", int, 40000, "source and target vocabulary size", minimum=8, maximum=10_000_000),
           Param("size", int, 256, "LSTM and embedding width", minimum=1, maximum=1 << 16),
           Param("layers", int, 3, "LSTM layers", minimum=1, maximum=64),
           Param("bucket", str, "40,50", "source,target length (Fathom's buckets)",
                 choices=("5,10", "10,15", "20,25", "40,50")),
           Param("num_samples", int, 512, "sampled-softmax candidates in training (0: full softmax)", minimum=0,
                 maximum=10_000_000)],
          {"batch": 2, "vocab": 64, "size": 16, "layers": 1, "bucket": "5,10", "num_samples": 8, **TINY_STEPS},
          False, "WMT15 cannot be had offline, so this workload reports throughput only")
_register("speech", "Deep Speech (Fathom): 3 dense clipped-ReLU 1024, bidirectional clipped-ReLU RNN, CTC, "
          "SGD 0.01",
          [*_common(32, 10, 2),
           Param("frames", int, 1566, "frames per utterance (Fathom pads TIMIT to 1566)", minimum=1,
                 maximum=1_000_000),
           Param("coeffs", int, 26, "feature coefficients per frame", minimum=1, maximum=4096),
           Param("hidden", int, 1024, "units per layer", minimum=1, maximum=1 << 16),
           Param("max_labels", int, 75, "most phoneme labels per utterance", minimum=1, maximum=100_000)],
          {"batch": 2, "frames": 12, "hidden": 16, "max_labels": 4, **TINY_STEPS},
          False, "TIMIT is licensed and cannot be had offline, so this workload reports throughput only")
_register("deepq", "DQN (Fathom's deepq): Nature network on 84×84×4 frames, replay memory, target network, "
          "RMSProp 2.5e-4",
          [*_common(32, 200, 10), Param("actions", int, 4, "actions (Breakout's minimal set has 4)", minimum=2,
                                         maximum=1024),
           Param("replay", int, 10000, "replay memory in frames (Fathom: 1M, 7 GB)", minimum=8,
                 maximum=100_000_000),
           Param("replay_start", int, 100, "frames of random play stored before learning (setup)", minimum=5,
                 maximum=100_000_000),
           Param("target_sync", int, 10000, "copy the Q-network to the target network every N steps", minimum=1,
                 maximum=100_000_000)],
          {"batch": 4, "replay": 64, "replay_start": 16, "target_sync": 2, "steps": 3, "warmup_steps": 1},
          False, "there is no Atari emulator offline, so this workload reports throughput only")
_register("lenet", "LeNet digit classifier (Tonic DIG net, Caffe's solver) on real digits: the time-to-quality "
          "reference (not one of Fathom's eight)",
          [*_common(64, 200, 10), DATA,
           *_quality(0.97, "--ttq target: top-1 accuracy on the held-out real digits (at least)", "fraction")],
          {"batch": 16, **TINY_STEPS}, True, quality_spec=("fraction", "higher", "test accuracy"),
          source="Caffe LeNet (Tonic Suite DIG); time to quality as MLPerf Training")
