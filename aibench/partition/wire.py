"""What the two processes of a split network share: the network as both build it, and the frames between them.

The device process (:mod:`aibench.partition.split`) runs layers ``1..j`` and the server process
(:mod:`aibench.partition.server`) the rest; both hold the whole network, built the same way from the same
resolved parameters (the registry's component benchmark, its seeded weights), and the server proves it: its
ready line carries a fingerprint of the weights, which the device compares with its own before a query goes.

Frames (:mod:`aibench.sut.transport`: bounded, tensors as raw bytes, never pickled), device to server:

* ``A`` an activation: the tensor crossing cut ``key`` (the layers from ``key`` on run at the server), ``id``
  the query's number; the server answers ``T`` then ``R`` (or ``E``);
* ``P`` a probe of the link (raw bytes): the server answers ``K`` then a ``P`` of the same size (``key`` 1:
  an empty ``P``, the upload alone);
* ``L`` the link's new rate (float64 bit/s, a bandwidth trace replayed): the server's bucket takes it;
* ``Q`` a request for the server's counters: it answers ``S`` (JSON) unshaped (control, not the link);
* ``G`` a ping for the server's load: it answers ``S`` (JSON: the load factor, its network's layers now
  against idle, from its recent queries or a slice timed now, and what it is made of), unshaped;
* ``W`` the measured run starts (float64 ``[step seconds]``): the server's load schedule starts stepping.

Server to device: ``T`` float64 ``[received, computed, sending]`` stamps of CLOCK_MONOTONIC (one clock for
every process of the machine, so the parts of a query are measured across the two processes); ``R`` the
result tensor; ``K`` float64 ``[received, sending]`` for a probe; ``E`` a one-line error (UTF-8); ``S`` JSON.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from aibench.errors import UsageError
from aibench.sut.transport import Frame

TAG_ACT, TAG_PROBE, TAG_QUERY, TAG_RATE, TAG_PING, TAG_LOAD_START = b"A", b"P", b"Q", b"L", b"G", b"W"
TAG_TIMES, TAG_RESULT, TAG_PROBE_ACK, TAG_ERROR, TAG_STATS = b"T", b"R", b"K", b"E", b"S"
TO_SERVER = (TAG_ACT, TAG_PROBE, TAG_QUERY, TAG_RATE, TAG_PING, TAG_LOAD_START)
TO_DEVICE = (TAG_TIMES, TAG_RESULT, TAG_PROBE_ACK, TAG_ERROR, TAG_STATS, TAG_PROBE)
CONTROL_MAX = 1 << 20  # a stamp, an error line or the counters: far below this


def clock() -> float:
    """CLOCK_MONOTONIC: one clock for every process of this machine (stamps cross the two processes)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass
class Built:
    """A registered network as one side builds it: its benchmark, resolved parameters, task, layers."""

    bench: Any
    params: dict[str, Any]
    task: Any
    network: Any
    layers: list[tuple[str, Any]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]


def component_params(net: str, given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The component benchmark of ``net`` and its resolved parameters in stage ``dnn`` on the CPU (the given
    ones it declares). UsageError (exit 2) for an unknown one, or one that is no inference network."""
    from aibench import registry

    bench = registry.get(net if "/" in net else f"component/{net}")
    if bench.kind != "component" or not bench.can("inference"):
        raise UsageError(f"{bench.id}: not an inference network of a component benchmark, so it cannot be cut")
    names = {p.name for p in bench.params}
    base = {"stage": "dnn", "device": "cpu", **given}
    return bench, bench.resolve({k: v for k, v in base.items() if k in names})


def build(net: str, params: dict[str, Any], dtype: str) -> Built:
    """The network of component ``net`` with ``params`` (resolved: both sides pass the same), in ``dtype`` on
    the CPU. UsageError when its model is not a chain of named layers taking one tensor."""
    import torch

    from aibench.partition.profile import task_layers
    from aibench.partition.sides import torch_dtype

    bench, resolved = component_params(net, params)
    torch.manual_seed(0)
    task = bench.factory(resolved, torch.device("cpu"), torch_dtype(dtype))
    network, layers = task_layers(bench, task)
    return Built(bench, resolved, task, network, layers)


def fingerprint(built: Built) -> list[float]:
    """Per layer, the sum and the sum of squares of its weights (float64): equal on both sides when both built
    the same network (a different seed, dtype or version shows)."""
    import torch

    out = []
    with torch.inference_mode():
        for _, layer in built.layers:
            s = q = 0.0
            for t in [*layer.parameters(), *layer.buffers()]:
                d = t.detach().to(torch.float64)
                s += float(d.sum())
                q += float((d * d).sum())
            out += [s, q]
    return out


def same_fingerprint(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


TORCH_NAMES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64",
               "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
               "bool": "bool"}


def tensor_frame(tag: bytes, t: Any, key: int = 0, ident: int = 0) -> Frame:
    """A CPU tensor as a frame (its bytes, not a copy when it is contiguous)."""
    import torch

    t = t.detach().to("cpu").contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in TORCH_NAMES:
        raise UsageError(f"a tensor of {t.dtype} cannot cross the link")
    payload = t.view(torch.uint8).numpy() if t.numel() else b""
    return Frame(tag, payload, name, tuple(t.shape), key=key, id=ident)


def frame_tensor(frame: Frame) -> Any:
    """A received tensor frame as a tensor over the frame's buffer (no copy)."""
    import torch

    dtype = getattr(torch, frame.dtype)
    if not frame.nbytes:
        return torch.empty(frame.shape, dtype=dtype)
    return torch.frombuffer(frame.payload, dtype=torch.uint8).view(dtype).reshape(frame.shape)


def stamps_frame(tag: bytes, values: list[float], ident: int = 0) -> Frame:
    import struct

    return Frame(tag, struct.pack(f"<{len(values)}d", *values), "float64", (len(values),), id=ident)


def frame_stamps(frame: Frame) -> list[float]:
    import struct

    if frame.dtype != "float64" or len(frame.shape) != 1:
        raise ValueError(f"a stamp frame of {frame.dtype}{list(frame.shape)}")
    return list(struct.unpack(f"<{frame.shape[0]}d", bytes(frame.payload)))
