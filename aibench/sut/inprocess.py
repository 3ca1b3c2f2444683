"""An :class:`~aibench.sut.task.InferenceTask` run in this process: the in-process system under test.

Batched on one worker thread by :class:`~aibench.sut.batcher.BatchingSystem` (and, when the driver allows
it, computed inline on the submitting thread when idle). One batch: collate, pre-process, to device, model
under ``torch.inference_mode()``, device synchronisation, post-process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aibench.sut import Capabilities
from aibench.sut.batcher import BatchingSystem
from aibench.sut.task import InferenceTask, TaskSamples, default_collate, iter_tensors

STAGES = ("preprocess", "dnn", "postprocess")


class InProcessSystem(TaskSamples, BatchingSystem):
    """``task`` computed in this process. With ``breakdown`` every batch's stages are timed (declared in
    ``capabilities.stages``; ``report().stages`` holds one duration per batch for each). Bytes of input
    tensors copied host to device are counted (``report().bytes_in``; 0 when the device is the host)."""

    def __init__(self, task: InferenceTask, name: str = "in-process", breakdown: bool = False) -> None:
        import torch

        from aibench.measure.device import synchronizer

        super().__init__(name, task.num_samples,
                         Capabilities(stages=STAGES if breakdown else (), reports_bytes=True, inline_ok=True))
        self.task = task
        self.breakdown = breakdown
        self._staged: dict[int, Any] = {}
        self._sync = synchronizer(task.device) if hasattr(task.device, "type") else None
        self._inference_mode = torch.inference_mode
        self._threads = torch.get_num_threads()  # the run's pinned count (set on the main thread)
        self._torch = torch
        self._stack_into_buffer = task.collate is default_collate
        self._pin = getattr(task.device, "type", "cpu") == "cuda"
        self._buffer: Any = None
        self._to_device = task.to_device if not self._pin else self._counting_to_device

    def worker_init(self) -> None:
        """On each thread that computes: carry the run's intra-op thread count over (OpenMP's is per
        thread)."""
        self._torch.set_num_threads(self._threads)

    def describe(self) -> dict[str, Any]:
        return {**self.task_description(), "device": str(self.task.device)}

    def _stack(self, samples: list[Any]) -> Any:
        """``default_collate``, but stacking into one reused buffer (pinned for a CUDA device): a fresh
        multi-megabyte batch per call costs page faults. Safe because batches run one at a time and the
        device is synchronised after each; a model must not keep its input across calls."""
        torch = self._torch
        first = samples[0] if samples else None
        if (not isinstance(first, torch.Tensor) or first.device.type != "cpu"
                or not all(isinstance(x, torch.Tensor) for x in samples)):
            return default_collate(samples)
        shape = first.shape
        if any(x.shape != shape for x in samples):
            return default_collate(samples)
        n = len(samples)
        buf = self._buffer
        if buf is None or buf.shape[0] < n or buf.shape[1:] != shape or buf.dtype != first.dtype:
            buf = torch.empty((n, *shape), dtype=first.dtype, pin_memory=self._pin)
            self._buffer = buf
        out = buf[:n] if buf.shape[0] != n else buf
        torch.stack(samples, out=out)
        return out

    def _counting_to_device(self, x: Any, device: Any) -> Any:
        self.bytes_in = (self.bytes_in or 0) + _host_tensor_bytes(x)
        return self.task.to_device(x, device)

    def execute(self, indices: Sequence[int]) -> Sequence[Any] | None:
        if self.breakdown:
            return self._execute_timed(indices)
        t = self.task
        staged = self._staged
        samples = list(map(staged.__getitem__, indices))
        x = self._stack(samples) if self._stack_into_buffer else t.collate(samples)
        if t.preprocess is not None:
            x = t.preprocess(x)
        x = self._to_device(x, t.device)
        with self._inference_mode():
            y = t.model(x)
        if self._sync is not None:
            self._sync()
        if t.postprocess is not None:
            return t.postprocess(y)
        return None

    def _execute_timed(self, indices: Sequence[int]) -> Sequence[Any] | None:
        """``execute`` with a host clock read between stages (the device is synchronised before the DNN
        stage ends, so its time is the device's): the paper's Fig. 4 breakdown. Collation counts as
        pre-processing; moving inputs to the device counts as DNN."""
        t = self.task
        clock = time.perf_counter
        t0 = clock()
        samples = list(map(self._staged.__getitem__, indices))
        x = self._stack(samples) if self._stack_into_buffer else t.collate(samples)
        if t.preprocess is not None:
            x = t.preprocess(x)
        t1 = clock()
        x = self._to_device(x, t.device)
        with self._inference_mode():
            y = t.model(x)
        if self._sync is not None:
            self._sync()
        t2 = clock()
        out = t.postprocess(y) if t.postprocess is not None else None
        t3 = clock()
        st = self.stage_times
        st["preprocess"].append(t1 - t0)
        st["dnn"].append(t2 - t1)
        st["postprocess"].append(t3 - t2)
        return out


def _host_tensor_bytes(x: Any) -> int:
    """Bytes of the host tensors in a batch (a tensor, or lists/tuples/dicts of them)."""
    return sum(int(t.nbytes) for t in iter_tensors(x) if t.device.type == "cpu")
