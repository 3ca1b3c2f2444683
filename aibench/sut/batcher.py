"""The one dynamic batcher: which queued samples go together into the next batch, and when.

:class:`BatchQueue` is the rule alone, with no thread and no clock of its own (the caller passes the time),
so it is tested with a fake clock and shared by every system that batches: the in-process worker thread,
the worker-process pool's dispatcher and the DNN service.

The rule is Triton's dynamic batcher: a batch goes as soon as ``max_batch`` samples are queued, or when the
*oldest* queued sample has waited ``max_queue_delay_s`` since it was queued, whichever comes first. The
delay counts from when the sample was queued, not from when a worker came to look (TorchServe counts from
the worker's poll, so a request can wait longer than its setting: pytorch/serve#2478). A delay of 0 takes
whatever is queued at that moment. Samples leave in arrival order.

Samples arrive in chunks (one LoadGen query: one sample in SingleStream and Server, eight in MultiStream,
an entire Offline run of millions in one). Chunks are kept as they came and batches are sliced out of them:
a huge chunk is never copied wholesale, nor deleted from the front.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Batch:
    """Samples taken together: their completion tokens and sample indices, and ``groups``: (time queued,
    count) for each run of samples that were queued together, in order (for per-sample latencies)."""

    tokens: Sequence[Any]
    indices: Sequence[int]
    groups: list[tuple[float, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


class BatchQueue:
    """Queued samples and the batching rule. Not thread-safe: one thread (a batcher's worker, a
    dispatcher, an event loop) owns it."""

    def __init__(self, max_batch: int, max_queue_delay_s: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not max_queue_delay_s >= 0:  # also refuses NaN
            raise ValueError("max_queue_delay_s must be >= 0")
        self.max_batch = int(max_batch)
        self.max_queue_delay_s = float(max_queue_delay_s)
        # [tokens, indices, time queued, read position]
        self._chunks: collections.deque[list[Any]] = collections.deque()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, tokens: Sequence[Any], indices: Sequence[int], queued_at: float) -> None:
        """Queue one chunk (``tokens[i]`` completes ``indices[i]``), queued at ``queued_at``."""
        if len(indices):
            self._chunks.append([tokens, indices, queued_at, 0])
            self._n += len(indices)

    @property
    def oldest(self) -> float | None:
        """When the oldest sample still queued was queued (None when empty)."""
        return self._chunks[0][2] if self._chunks else None

    def wait_s(self, now: float) -> float | None:
        """How long from ``now`` until a batch is due: 0 when one is due now, None when nothing is queued
        (wait for work)."""
        if not self._n:
            return None
        if self._n >= self.max_batch:
            return 0.0
        return max(0.0, self._chunks[0][2] + self.max_queue_delay_s - now)

    def due(self, now: float) -> bool:
        """A batch should go now: a full one is queued, or the oldest sample's delay is spent."""
        return self.wait_s(now) == 0.0

    def take(self, limit: int | None = None) -> Batch:
        """The next batch: up to ``limit`` (default ``max_batch``) samples, oldest first. Taking does not
        check :meth:`due`: a caller that flushes, or a dispatcher that sends several batches in one
        message, takes when it decides to."""
        want = self.max_batch if limit is None else max(1, int(limit))
        chunks = self._chunks
        if not chunks:
            return Batch([], [])
        ctoks, cidx, queued, pos = chunks[0]
        avail = len(cidx) - pos
        if avail >= want or len(chunks) == 1:  # slice one chunk (or take it whole, uncopied)
            k = min(want, avail)
            if pos == 0 and k == len(cidx):
                batch = Batch(ctoks, cidx, [(queued, k)])
            else:
                batch = Batch(ctoks[pos:pos + k], cidx[pos:pos + k], [(queued, k)])
            if pos + k >= len(cidx):
                chunks.popleft()
            else:
                chunks[0][3] = pos + k
            self._n -= k
            return batch
        tokens: list[Any] = []
        indices: list[int] = []
        groups: list[tuple[float, int]] = []
        need = want
        while need and chunks:  # several small chunks (Server, MultiStream): gather up to the limit
            chunk = chunks[0]
            ctoks, cidx, queued, pos = chunk
            k = min(len(cidx) - pos, need)
            tokens.extend(ctoks[pos:pos + k])
            indices.extend(cidx[pos:pos + k])
            groups.append((queued, k))
            need -= k
            if pos + k >= len(cidx):
                chunks.popleft()
            else:
                chunk[3] = pos + k
        self._n -= len(indices)
        return Batch(tokens, indices, groups)

    def drain(self) -> list[Any]:
        """Remove everything queued; return the tokens (to be answered without computing: an abort)."""
        out: list[Any] = []
        for ctoks, _cidx, _queued, pos in self._chunks:
            out.extend(ctoks[pos:])
        self._chunks.clear()
        self._n = 0
        return out
