"""What a runner measured, before it is a record: plain data that :func:`aibench.harness.build_result` turns
into the one :class:`~aibench.results.schema.Result` (config hash computed once, stamped once).

A runner gets an empty Measurement from the harness, fills it (metrics, samples, parts, method, context, the
config its settings add, validity, ...) and returns it. It never builds, hashes, stamps or writes a record:
when it needs the name the record will have (LoadGen's log folder is named after it) it asks :meth:`stem`,
and when it is interrupted it asks :meth:`record_interrupted`, the harness's one writer of interrupted
records. Both are the harness's (``recorder``); a Measurement made without one (a test) names itself from
its own fields and cannot record.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aibench.results.schema import now_iso


class Recorder(Protocol):
    """The harness side of a Measurement (see :class:`aibench.harness.Recorder`)."""

    def stem(self, m: Measurement) -> str: ...

    def record_interrupted(self, m: Measurement, out_dir: Path, exc: BaseException | None, note: str | None,
                           keep_figures: bool) -> Path: ...


@dataclass(eq=False)
class Measurement:
    """A runner's figures and what it knows about how they were taken (fields as in the Result they become).

    ``config`` holds only what the runner's settings add to what is measured (LoadGen's settings, the pool);
    the harness adds the thread count and hashes the whole once. ``declared`` is the benchmark's metric
    declarations (read-only: a runner looks up a metric's direction there)."""

    benchmark_id: str = ""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    meters: dict[str, Any] = field(default_factory=dict)
    load_scenario: str | None = None
    validity: dict[str, Any] | None = None
    noisy: bool | None = None
    primary_metric: str | None = None  # None: the benchmark's own
    status: str = "ok"  # ok | failed | interrupted
    error: dict[str, Any] | None = None
    declared: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    started_at: str = field(default_factory=now_iso)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    recorder: Recorder | None = field(default=None, repr=False)

    def stem(self) -> str:
        """The file name (without ``.json``) the record of this measurement will have."""
        if self.recorder is not None:
            return self.recorder.stem(self)
        return f"{self.benchmark_id.replace('/', '-')}-{self.run_id[:8]}"

    def record_interrupted(self, out_dir: Path | None, exc: BaseException | None = None, *,
                           note: str | None = None, keep_figures: bool = False) -> Path | None:
        """Write this measurement, cut short by Ctrl-C or SIGTERM, as an ``interrupted`` record in ``out_dir``
        (the harness's one writer of such records); the path, or None where there is nowhere to write.
        ``keep_figures``: the figures stay (marked by the runner: LoadGen's partial run, INVALID); otherwise
        none are kept (a partial measurement is not one). ``note``: what was kept, for the message."""
        if self.recorder is None or out_dir is None:
            return None
        return self.recorder.record_interrupted(self, out_dir, exc, note, keep_figures)
