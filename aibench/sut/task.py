"""The contract between an inference benchmark and the systems that run it (light: no torch at import).

A component benchmark's factory returns an :class:`InferenceTask`: *what* to compute per batch. The system
under test that runs it (:class:`~aibench.sut.inprocess.InProcessSystem` in this process, or one per worker
process in :mod:`aibench.sut.pool`) owns *how*: batching, moving data to the device,
``torch.inference_mode()``, synchronisation, answering the driver, and (with ``--breakdown``) timing each
stage. Workloads know nothing about timing, LoadGen or files.

The timed path for one batch of sample indices is::

    raw   = [load_sample(i) for i in batch]          # already in memory (QSL staging, untimed)
    x     = collate(raw)                             # host
    x     = preprocess(x)            if preprocess   # host, timed: the application's pre-processing
    x     = to_device(x, device)
    y     = model(x)                                 # under inference_mode, then device sync
    resp  = postprocess(y)           if postprocess  # timed: the application's post-processing
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


def default_collate(samples: Sequence[Any]) -> Any:
    """Stack equally shaped tensors into a batch; anything else stays a list (e.g. raw audio clips)."""
    import torch

    if samples and all(isinstance(s, torch.Tensor) for s in samples):
        shapes = {tuple(s.shape) for s in samples}
        if len(shapes) == 1:
            return torch.stack(list(samples))
    return list(samples)


def map_tensors(fn: Callable[[Any], Any], batch: Any) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it (a tensor, or lists/tuples/dicts of them)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(fn, b) for b in batch)
    if isinstance(batch, dict):
        return {k: map_tensors(fn, v) for k, v in batch.items()}
    return batch


def iter_tensors(batch: Any) -> Iterator[Any]:
    """Every tensor in ``batch`` (the same nesting as :func:`map_tensors`)."""
    import torch

    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, (list, tuple)):
        for b in batch:
            yield from iter_tensors(b)
    elif isinstance(batch, dict):
        for b in batch.values():
            yield from iter_tensors(b)


def default_to_device(batch: Any, device: Any) -> Any:
    return map_tensors(lambda t: t.to(device, non_blocking=True), batch)


@dataclass
class InferenceTask:
    """What a component benchmark hands the load generator.

    ``num_samples`` distinct samples make up the query sample library; ``load_sample(i)`` returns sample
    ``i`` ready for ``collate`` and is called only while staging (untimed). ``model`` is already on
    ``device`` in eval mode. ``flops_per_sample`` is counted (not guessed) or None with
    ``flops_note`` saying why. ``data`` records where inputs came from, e.g.
    ``{"source": "synthetic", "note": "seeded N(0,1) images"}`` or ``{"source": "real", "name": ...}``.
    ``stage`` is ``dnn`` (network alone) or ``app`` (with the application's pre/post-processing).
    ``network``, when set, is the DNN as ordered named layers (:class:`aibench.networks.Layered`, e.g. an
    ``nn.Sequential``) taking the network's input tensor (what ``model`` is given in stage ``dnn``): running
    layers ``i..j`` of it is one side of a split network.
    """

    model: Callable[[Any], Any]
    device: Any
    num_samples: int
    load_sample: Callable[[int], Any]
    collate: Callable[[Sequence[Any]], Any] = default_collate
    preprocess: Callable[[Any], Any] | None = None
    to_device: Callable[[Any, Any], Any] = default_to_device
    postprocess: Callable[[Any], Sequence[Any]] | None = None
    flops_per_sample: float | None = None
    flops_note: str = ""
    stage: str = "dnn"
    data: dict[str, Any] = field(default_factory=lambda: {"source": "synthetic"})
    network: Any = None
    # When the networks run elsewhere (``aibench run --remote``, scenario/djinn): an async
    # ``served_forward(x, call)`` doing what ``model(x)`` does with each network replaced by
    # ``await call(name, tensor)``, and the networks it calls. None: the model is one network, called with x.
    served_forward: Callable[[Any, Callable[[str, Any], Awaitable[Any]]], Awaitable[Any]] | None = None
    served_networks: tuple[str, ...] = ()

    def run_batch(self, indices: Sequence[int] = (0,)) -> Any:
        """The timed path above for one batch, untimed and unoptimised: the reference the adapter's fast
        path must agree with, the runner's up-front probe, and a convenience for tests."""
        import torch

        x = self.collate([self.load_sample(i) for i in indices])
        if self.preprocess is not None:
            x = self.preprocess(x)
        x = self.to_device(x, self.device)
        with torch.inference_mode():
            y = self.model(x)
        if getattr(self.device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(self.device)
        return self.postprocess(y) if self.postprocess is not None else y


class TaskSamples:
    """Staging of an :class:`InferenceTask`'s samples (LoadGen's QSL load; untimed), and what a result records
    of the task: the part every system that runs a task has alike (in this process, or its client side).
    The system sets ``task`` and an empty ``_staged`` dict."""

    task: InferenceTask
    _staged: dict[int, Any]

    def stage(self, indices: Sequence[int]) -> None:
        for i in indices:
            if i not in self._staged:
                self._staged[i] = self.task.load_sample(i)

    def unstage(self, indices: Sequence[int]) -> None:
        for i in indices:
            self._staged.pop(i, None)

    def task_description(self) -> dict[str, Any]:
        t = self.task
        return {"num_samples": t.num_samples, "stage": t.stage, "data": t.data,
                "flops_per_sample": t.flops_per_sample, "flops_note": t.flops_note}
