"""aibench.networks: the Tonic and Fathom networks are public and shared, and each chain-of-layers network is
Layered: its named layers, run one after another (or split at any layer), equal its forward."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from typing import Any

import pytest
import torch
from torch import nn

from aibench import registry
from aibench.networks import Layered, layer_names, layers_of, run_layers
from aibench.networks import fathom as fathom_nets
from aibench.networks import tonic as tonic_nets

CPU = torch.device("cpu")


def _check_layered(net: nn.Module, x: torch.Tensor) -> None:
    """The layers in order equal the forward; so do the two halves of a split run one after the other."""
    net = net.eval()
    with torch.inference_mode():
        whole = net(x)
        y = x
        for _name, layer in layers_of(net):
            y = layer(y)
        assert torch.equal(y, whole) if not whole.is_floating_point() else torch.allclose(y, whole, atol=1e-6)
        cut = len(layers_of(net)) // 2
        tail = run_layers(net, run_layers(net, x, 0, cut), cut)
        assert torch.equal(tail, whole) if not whole.is_floating_point() else torch.allclose(tail, whole, atol=1e-6)


# VGG-16's input is fixed at 224x224 (fc6 takes 512x7x7); one image keeps it under a second.
@pytest.mark.parametrize("name", tonic_nets.ALL_NETS)
def test_every_tonic_network_is_its_layers_in_order(name: str) -> None:
    net = tonic_nets.build(name, seed=1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 if name != "vgg" else 1, *tonic_nets.INPUT_SHAPES[name], generator=gen)
    _check_layered(net, x)
    names = layer_names(net)
    assert len(set(names)) == len(names)
    # The layer names are the prototxts' (the reference table's) wherever the table names a layer.
    if name in tonic_nets.reference_table():
        table = [layer["name"] for layer in tonic_nets.reference_table()[name]["layers"]]
        assert [n for n in names if n in table] == [n for n in table if n in names]
        assert set(table) <= set(names), set(table) - set(names)


@pytest.mark.parametrize("builder, shape", [
    (lambda: fathom_nets.alexnet(10, 32, width=0.125), (2, 3, 64, 64)),
    (lambda: fathom_nets.vgg(10, 32, width=0.0625), (2, 3, 32, 32)),
    (lambda: fathom_nets.residual(10, 1, 0.125), (2, 3, 16, 16)),
    (lambda: fathom_nets.dqn(4), (2, 4, 84, 84)),
    (fathom_nets.lenet, (2, 1, 28, 28)),
], ids=["alexnet", "vgg", "residual", "dqn", "lenet"])
def test_fathom_convolutional_networks_are_their_layers_in_order(builder: Any, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    _check_layered(builder(), torch.randn(*shape))


def test_fathom_lenet_is_the_tonic_digit_net_up_to_its_logits() -> None:
    assert layer_names(fathom_nets.lenet()) == [n for n in layer_names(tonic_nets.dig()) if n not in ("prob", "argmax")]


def test_a_network_with_its_own_layers_method_is_layered() -> None:
    class TwoStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def layers(self) -> list[tuple[str, nn.Module]]:
            return [("a", self.a), ("relu", nn.ReLU()), ("b", self.b)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    net = TwoStep()
    assert isinstance(net, Layered) and layer_names(net) == ["a", "relu", "b"]
    _check_layered(net, torch.randn(5, 3))
    x = torch.randn(5, 3)
    assert torch.allclose(run_layers(net, run_layers(net, x, "a", "b"), "b"), net(x))


def test_what_is_not_a_chain_of_layers_is_refused() -> None:
    with pytest.raises(TypeError, match="no ordered layers"):
        layers_of(fathom_nets.VAE(8, 2))
    seq = nn.Sequential(OrderedDict([("x", nn.Identity())]))
    with pytest.raises(KeyError, match="no layer 'y'"):
        run_layers(seq, torch.zeros(1), "y")
    with pytest.raises(IndexError):
        run_layers(seq, torch.zeros(1), 0, 5)


def test_inference_tasks_expose_their_network_as_layers() -> None:
    """A Tonic task carries its DNN as named layers: running them on a staged batch is the task's model."""
    for app in ("dig", "pos", "asr"):
        bench = registry.get(f"component/{app}")
        params = bench.resolve(dict(bench.tiny) | {"stage": "dnn"})
        task = bench.factory(params, device=CPU, dtype=torch.float32)
        assert task.network is not None and layer_names(task.network)[0] in ("conv1", "fc1", "inner1")
        x = task.to_device(task.collate([task.load_sample(i) for i in range(2)]), CPU)
        with torch.inference_mode():
            assert torch.equal(run_layers(task.network, x), task.model(x))


def test_the_networks_package_does_not_import_torch() -> None:
    code = ("import sys, aibench.networks, aibench.registry as r; r.all_benchmarks(); "
            "assert 'torch' not in sys.modules, 'importing aibench.networks imported torch'; "
            "assert 'aibench.networks.tonic' not in sys.modules and 'aibench.networks.fathom' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fathom_no_longer_reaches_into_tonic_private_modules() -> None:
    import inspect

    import aibench.workloads.fathom._tasks as tasks

    for module in (fathom_nets, tasks):
        assert "tonic._nets" not in inspect.getsource(module) and "_models" not in inspect.getsource(module)
