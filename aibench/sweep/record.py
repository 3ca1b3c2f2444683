"""The sweep record: ``sweep-<id>.json`` beside the point results (contract 1), and finding one to resume.

A record names every point of a sweep, its status and the result file it produced::

    {"schema": "aibench-sweep", "schema_version": 1, "id", "kind", "benchmark", "param", "values",
     "points": [{"index", "value", "status", "result", "error", "spread", "noisy"}], "knee", "started_at",
     "finished_at", ...}

It is rewritten (atomically: temporary file, fsync, rename) after every point, so a crash or Ctrl-C leaves a
record that says what was finished. Point statuses: ``pending`` (not run yet), ``ok``, ``failed`` (its
result file records the error), ``refused`` (the machine cannot run that point, exit-3 kind; no result
file), ``interrupted`` (Ctrl-C). The sweep's own ``status``: ``running``, ``complete``, ``interrupted``.

Plain JSON, no torch: report and compare code may import this module to recognise and skip records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aibench.errors import ResultIOError
from aibench.results.schema import now_iso
from aibench.results.store import write_text_atomic

SCHEMA_NAME = "aibench-sweep"
SCHEMA_VERSION = 1
KINDS = ("param", "threads", "gpus")
PREFIX = "sweep-"


@dataclass
class Point:
    index: int
    value: int | float
    status: str = "pending"
    result: str | None = None  # file name of the point's result, in the same folder as the record
    error: str | None = None
    valid: bool | None = None  # LoadGen's verdict on the point (None: not load-generated, or not run)
    note: str | None = None  # e.g. "measured on node 0" for the other nodes of a multi-node sweep
    spread: float | None = None  # IQR / median of the samples behind the point's primary metric (None: none)
    noisy: bool | None = None  # the point's figure is too noisy to trust (spread above 10%)


@dataclass
class SweepRecord:
    id: str
    kind: str
    benchmark: str
    param: str
    values: list[int | float]
    points: list[Point]
    knee: dict[str, Any] | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    status: str = "running"
    definition: dict[str, Any] = field(default_factory=dict)
    definition_hash: str = ""
    scaling: dict[str, Any] | None = None  # {"metric", "direction", "baseline_index"} for scaling sweeps
    knee_request: dict[str, Any] | None = None  # {"latency_bound_ms", "latency_metric", "metric"}
    knee_note: str | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{PREFIX}{self.id}.json"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        head = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION}
        order = ("id", "kind", "benchmark", "param", "values", "points", "knee", "started_at", "finished_at",
                 "status")
        return head | {k: d[k] for k in order} | {k: v for k, v in d.items() if k not in order}

    @classmethod
    def from_dict(cls, d: Any, source: str = "<data>") -> SweepRecord:
        if not is_sweep_record(d):
            raise ResultIOError(f"{source}: not an aibench sweep record (no \"schema\": \"{SCHEMA_NAME}\")")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ResultIOError(f"{source}: sweep record version {d.get('schema_version')!r} is not supported "
                                f"(this aibench reads version {SCHEMA_VERSION})")
        try:
            points = [Point(**{k: p[k] for k in Point.__dataclass_fields__ if k in p}) for p in d["points"]]
            known = set(cls.__dataclass_fields__) - {"points"}
            return cls(points=points, **{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise ResultIOError(f"{source}: malformed sweep record ({exc})") from None


def is_sweep_record(doc: Any) -> bool:
    """True for a parsed sweep record: what folder readers check to skip these files."""
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA_NAME


def definition_hash(definition: dict[str, Any]) -> str:
    """16 hex digits over everything that defines a sweep: equal hashes are the same sweep (resumable)."""
    canon = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def new_id(benchmark: str, param: str, def_hash: str, started_at: str) -> str:
    """``<name>-<param>-<hash8>-<UTC start>-<random4>``: readable, and unique per run of a sweep (two runs of
    the same sweep started in the same second still get two records)."""
    import secrets

    name = benchmark.rpartition("/")[2]
    stamp = started_at.replace(":", "").replace("-", "").replace(".", "")[:15]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-",
                  f"{name}-{param}-{def_hash[:8]}-{stamp}-{secrets.token_hex(2)}").strip("-")


def write_record(record: SweepRecord, out_dir: str | os.PathLike[str]) -> Path:
    """Write (or replace) the record atomically; the previous version stays intact until the rename."""
    directory = Path(out_dir)
    target = directory / record.filename
    text = json.dumps(record.to_dict(), indent=2, allow_nan=False)
    return write_text_atomic(target, text + "\n", describe=f"sweep record to {str(directory)!r}")


def load_record(path: str | os.PathLike[str]) -> SweepRecord:
    from aibench.results.files import read_json

    p = Path(path)
    return SweepRecord.from_dict(read_json(p), source=str(p))  # regular files only, bounded (exit 4)


def find_resumable(out_dir: str | os.PathLike[str], def_hash: str) -> SweepRecord | None:
    """The latest record in ``out_dir`` of the sweep with this definition hash (unreadable files skipped)."""
    best: SweepRecord | None = None
    for p in sorted(Path(out_dir).glob(f"{PREFIX}*.json")):
        try:
            rec = load_record(p)
        except ResultIOError:
            continue
        if rec.definition_hash == def_hash and (best is None or rec.started_at > best.started_at):
            best = rec
    return best
