"""The system under test: the one contract every load driver drives (no torch, no LoadGen at import).

A driver (LoadGen, :mod:`aibench.loadgen.drive`; closed-loop users, :mod:`aibench.loadgen.users`; the
calibration) knows a system only through :class:`SystemUnderTest`: it stages samples (untimed), starts the
system, submits queries and is told of their completion through a callback, which the system may call from
any thread, in any order, later or at once. What a system can report is declared
(:class:`Capabilities`), never probed. Implementations: :class:`~aibench.sut.inprocess.InProcessSystem` (an
:class:`~aibench.sut.task.InferenceTask` in this process, batched by
:class:`~aibench.sut.batcher.BatchingSystem`), :class:`~aibench.sut.pool.PoolSystem` (worker processes);
a network service or a split network is a third kind, written against the same few methods.

A test's life::

    sut.stage(indices)                     # untimed: load samples into memory (LoadGen's QSL load)
    sut.start(on_complete, max_batch=16, max_queue_delay_us=0.0, ...)
    sut.submit(tokens, indices)            # timed; returns at once; tokens[i] answers indices[i]
    ...                                    # on_complete(tokens, responses, issued) from any thread
    sut.flush()                            # nothing more comes for now: do not wait for fuller batches
    sut.stop()                             # joins the system's threads; True when they ended
    sut.report()                           # what happened: batches, samples, error, stage times, bytes

``issued`` in a completion is the submit time (``time.perf_counter``) of the completed tokens, as runs of
``(time, count)`` in token order, or None for tokens answered without being computed (after an abort):
the driver measures each sample's latency from it (issue to the completion call), without a per-token
lookup that would cost an Offline run of millions of samples its throughput.

A system that fails keeps the exception (``report().error``), calls ``on_error`` once, answers what it
holds without computing (``responses`` and ``issued`` None) and never computes again: the driver ends the
test. ``abort()`` does the same on the driver's request (Ctrl-C). With ``hold_on_abort`` the answers wait
until :meth:`SystemUnderTest.flush` (a LoadGen Server test ends early only once its outstanding-query limit
is passed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Token = Any  # opaque to the system: LoadGen's response id, a user's event, a request handle
Issued = Sequence[tuple[float, int]]  # (submit time, count) runs covering a completion's tokens in order
Completion = Callable[[Sequence[Token], Sequence[Any] | None, Issued | None], None]


@dataclass(frozen=True)
class Capabilities:
    """What a system declares about itself (read by drivers and the result builder, never probed).

    ``stages``: the named stages this system times per batch (e.g. ``("preprocess", "dnn", "postprocess")``;
    a service: queue, compute_input, compute_infer, ...); ``report().stages`` holds one duration per batch
    for each. ``batches_itself``: batching happens behind ``submit`` by the system's own rule (a server's
    dynamic batcher), so the driver's ``max_batch``/``max_queue_delay_us`` are only hints; False: the system
    batches with :mod:`aibench.sut.batcher` by exactly those settings. ``reports_bytes``: ``report()`` counts
    the bytes moved into the system (host to device, client to server) and back. ``remote``: it computes in
    another process or machine (a driver's meters then cover only this side). ``inline_ok``: when it is
    idle, a lone query may be computed on the submitting thread (no thread hand-off), if the driver allows
    it (``start(inline=True)``).
    """

    stages: tuple[str, ...] = ()
    batches_itself: bool = False
    reports_bytes: bool = False
    remote: bool = False
    inline_ok: bool = False


@dataclass
class SutReport:
    """What a system did since it was made or last :meth:`~SystemUnderTest.reset_report`.

    ``batches``/``samples``: computed (not samples answered without computing after an abort). ``stages``:
    seconds per batch for each declared stage (distributions, one value per batch, not sums). ``bytes_in``
    / ``bytes_out``: bytes moved into the system and back (None: not counted); per sample, divide by
    ``samples``. ``extra``: details of this kind of system (the pool's messages, a service's counters).
    """

    batches: int = 0
    samples: int = 0
    error: BaseException | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)
    bytes_in: int | None = None
    bytes_out: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SystemUnderTest(ABC):
    """What every load driver drives. See the module docstring for a test's life and the completion."""

    name: str
    num_samples: int
    capabilities: Capabilities = Capabilities()

    # -- staging (untimed) ----------------------------------------------------------------------------------
    @abstractmethod
    def stage(self, indices: Sequence[int]) -> None:
        """Have samples ``indices`` ready (LoadGen's QSL load); untimed."""

    @abstractmethod
    def unstage(self, indices: Sequence[int]) -> None:
        """Release staged samples."""

    # -- a test ---------------------------------------------------------------------------------------------
    @abstractmethod
    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        """Get ready to take queries. ``max_batch`` and ``max_queue_delay_us``: the batching rule
        (:class:`~aibench.sut.batcher.BatchQueue`); ``spin_us``: how long an idle worker polls for work
        before sleeping; ``inline``: the driver allows a lone query to run on its submitting thread (it waits
        for it anyway: SingleStream, MultiStream), used when ``capabilities.inline_ok``. A system may be
        started again after :meth:`stop` (calibration, then each LoadGen test)."""

    @abstractmethod
    def submit(self, tokens: Sequence[Token], indices: Sequence[int]) -> None:
        """Queue one query (``tokens[i]`` answers sample ``indices[i]``); returns without waiting for it
        (unless it ran inline). Called from any thread."""

    @abstractmethod
    def flush(self) -> None:
        """The driver issues nothing more for now: queued samples go without waiting for a fuller batch;
        answers held after an abort are given."""

    @abstractmethod
    def abort(self, exc: BaseException | None = None) -> None:
        """Stop computing and answer everything outstanding promptly (held until :meth:`flush` with
        ``hold_on_abort``). ``exc``: the reason, kept as ``report().error``. Any thread."""

    @abstractmethod
    def stop(self, timeout: float | None = None) -> bool:
        """After the driver is done: end the system's threads (waiting at most ``timeout`` seconds, None:
        until they end). True when they all ended."""

    # -- what happened --------------------------------------------------------------------------------------
    @abstractmethod
    def report(self) -> SutReport:
        """A snapshot of what happened since the last :meth:`reset_report` (read after :meth:`stop`)."""

    @abstractmethod
    def reset_report(self) -> None:
        """Forget what happened so far (after the calibration)."""

    def record(self, result: Any, partial: str | None = None) -> None:
        """The system's own figures into ``result`` (a server's statistics, its processes' CPU and memory):
        called by the driver once, when the measured run ends however it ends, before the result is written
        (also an interrupted one: ``partial`` then says why the figures cover only part of the run, and the
        system marks them so). Default: nothing of its own."""
        return None

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the result records about the system: ``num_samples``, ``flops_per_sample`` (counted, or None
        with ``flops_note`` saying why), ``device``, ``stage`` (dnn or app), ``data`` (where inputs came from),
        and ``stages_note`` when no stage is timed and the reason is not --breakdown."""
