"""Per-model statistics with the field names of Triton's statistics extension (``GET /v2/models/{m}/stats``),
so tools written for Triton (perf_analyzer, tritonclient's ``get_inference_statistics``) read ours.

Meanings, as Triton's:

- ``inference_stats.success``: requests answered, and their summed time in the server (from the moment the
  request was parsed and queued to its output ready to send); ``fail``: requests that failed after they
  were accepted (a worker died); requests refused as malformed are counted in neither (as Triton).
- ``queue``: from queued to the start of the batch that took its first row. A batch starts when it leaves
  the batcher's queue or, if it waited in a busy instance's socket behind the batch before it, when the
  instance finished that one.
- ``compute_input`` / ``compute_infer`` / ``compute_output``: per request, the times of the batch (or
  batches) that computed it. ``compute_input`` runs from the batch's start until its input is on the
  instance's device (forming it, sending it, receiving it, copying it); ``compute_infer`` is the forward
  pass with the device synchronised; ``compute_output`` the rest until the output is back in the server (to
  the host, over the instance's socket). Together they are the batch's whole time. The instance's stamps
  are ``time.monotonic_ns`` (CLOCK_MONOTONIC, one clock for every process of the machine).
- ``batch_stats``: one entry per executed batch size (rows), with the count and summed times of the
  batches of that size: the histogram of executed batch sizes is ``batch_size → compute_infer.count``.
- ``inference_count`` counts rows (a request of 16 images counts 16); ``execution_count`` counts executed
  batches; ``last_inference`` is milliseconds since the epoch.

Everything here runs on the event loop's thread: no locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STAT_NAMES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
              "cache_miss")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += int(ns)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    name: str
    version: str = "1"
    inference: dict[str, Duration] = field(default_factory=lambda: {n: Duration() for n in STAT_NAMES})
    batches: dict[int, BatchStat] = field(default_factory=dict)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0

    def record_batch(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        b = self.batches.get(rows)
        if b is None:
            b = self.batches[rows] = BatchStat()
        b.compute_input.add(input_ns)
        b.compute_infer.add(infer_ns)
        b.compute_output.add(output_ns)
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def record_success(self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        inf = self.inference
        inf["success"].add(total_ns)
        inf["queue"].add(queue_ns)
        inf["compute_input"].add(input_ns)
        inf["compute_infer"].add(infer_ns)
        inf["compute_output"].add(output_ns)

    def record_failure(self, total_ns: int) -> None:
        self.inference["fail"].add(total_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {n: d.to_json() for n, d in self.inference.items()},
            "response_stats": {},
            "batch_stats": [{"batch_size": size, "compute_input": b.compute_input.to_json(),
                             "compute_infer": b.compute_infer.to_json(),
                             "compute_output": b.compute_output.to_json()}
                            for size, b in sorted(self.batches.items())],
            "memory_usage": [],
        }
