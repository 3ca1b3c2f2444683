"""The networks aibench's workloads run, public and shared: the Tonic Suite service networks and VGG-16
(:mod:`aibench.networks.tonic`) and the Fathom reference networks (:mod:`aibench.networks.fathom`).

**Layered.** A network whose forward pass is a chain of named layers exposes them in order, so that a caller
can run layers ``i..j`` alone (e.g. one side of a network split across two processes, as in Neurosurgeon):
either a method ``layers() -> [(name, module), …]`` (:class:`Layered`), or, simplest, by *being* an
``nn.Sequential`` whose children are named. Running the layers one after another equals the network's
forward (tested for every such network here). Layer names follow the original definitions where they exist
(the Caffe prototxts of the Tonic nets: ``conv1``, ``pool1``, …, ``fc6``; ``flatten`` stands for the
reshape Caffe's InnerProduct does implicitly). :class:`~aibench.sut.task.InferenceTask` may carry its
network (``network``) for this.

This module imports no torch (``aibench list`` stays light); the network modules do, and are imported only
by the factories that build them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Layered", "layer_names", "layers_of", "run_layers"]


@runtime_checkable
class Layered(Protocol):
    """A network that is a chain of named layers: composing ``layers()`` in order equals its forward."""

    def layers(self) -> Sequence[tuple[str, Any]]: ...


def layers_of(network: Any) -> list[tuple[str, Any]]:
    """The ordered ``(name, module)`` layers of ``network``: its ``layers()``, or the named children of an
    ``nn.Sequential``. TypeError for a network that is no chain of layers (one with several inputs, say)."""
    if isinstance(network, Layered):
        return list(network.layers())
    from torch import nn

    if isinstance(network, nn.Sequential):
        return list(network.named_children())
    raise TypeError(f"{type(network).__name__} exposes no ordered layers (neither layers() nor nn.Sequential)")


def layer_names(network: Any) -> list[str]:
    return [name for name, _ in layers_of(network)]


def run_layers(network: Any, x: Any, start: int | str = 0, stop: int | str | None = None) -> Any:
    """``x`` through layers ``start`` up to (not including) ``stop`` of ``network``, given as indices or
    layer names (``stop`` None: to the end). ``run_layers(net, run_layers(net, x, 0, i), i)`` equals
    ``net(x)``."""
    layers = layers_of(network)
    names = [name for name, _ in layers]

    def index(at: int | str | None, default: int) -> int:
        if at is None:
            return default
        if isinstance(at, str):
            if at not in names:
                raise KeyError(f"no layer {at!r}; layers: {', '.join(names)}")
            return names.index(at)
        if not 0 <= at <= len(layers):
            raise IndexError(f"layer index {at} outside 0..{len(layers)}")
        return at

    i, j = index(start, 0), index(stop, len(layers))
    for _, layer in layers[i:j]:
        x = layer(x)
    return x
