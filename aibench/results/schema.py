"""The result record: one JSON document per measured configuration.

The dict form is the contract (``result.schema.json`` beside this file, README "Result files"); the
:class:`Result` dataclass is a convenience for building and reading it. Files are plain JSON: nothing is
ever unpickled, and a file that is not an aibench result is refused by :func:`from_dict`.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_NAME = "aibench-result"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def metric(value: float | None, unit: str, direction: str, unavailable: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """One metric entry. ``value`` None requires a reason in ``unavailable`` (never a guess)."""
    if value is None and not unavailable:
        raise ValueError("a metric without a value must say why it is unavailable")
    entry: dict[str, Any] = {"value": value, "unit": unit, "direction": direction}
    if value is None:
        entry["unavailable"] = unavailable
    entry.update(extra)
    return entry


def _code_default() -> dict[str, Any]:
    from aibench import __version__

    return {"package_version": __version__, "git_commit": None, "git_dirty": None}


@dataclass
class Result:
    benchmark: dict[str, Any]
    params: dict[str, Any]
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: dict[str, Any] | None = None
    primary_metric: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    scenario: str | None = None
    validity: dict[str, Any] | None = None
    noisy: bool | None = None
    meters: dict[str, Any] = field(default_factory=dict)
    # Defaults that satisfy the schema, so that a record built in code is valid before the runner fills in
    # the machine and code fingerprints.
    system: dict[str, Any] = field(default_factory=lambda: {"machine": {}, "software": {}})
    code: dict[str, Any] = field(default_factory=_code_default)
    load: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    duration_s: float | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION

    @property
    def id(self) -> str:
        return self.benchmark["id"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Keep the identifying keys first so a file reads well in an editor.
        head = ("schema", "schema_version", "run_id", "benchmark", "params", "config_hash", "status")
        return {k: d[k] for k in head} | {k: v for k, v in d.items() if k not in head}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<data>") -> Result:
        """The record of a parsed result document, validated against ``result.schema.json`` (and the read
        limits) by :func:`aibench.results.validate.result_problem`: every command reads results through
        here, so a damaged or hostile file gets the same answer everywhere. Raises
        :class:`~aibench.results.validate.ResultFileError` (exit 4) with kind ``foreign``, ``other-version``
        or ``damaged``."""
        from aibench.results.validate import ResultFileError, result_problem, shown

        if not isinstance(d, dict) or d.get("schema") != SCHEMA_NAME:
            raise ResultFileError(source, f"not an aibench result file (no \"schema\": \"{SCHEMA_NAME}\")",
                                  "foreign")
        version = d.get("schema_version")
        if not (type(version) in (int, float) and version == SCHEMA_VERSION):
            bench = d.get("benchmark")
            bench_id = bench.get("id") if isinstance(bench, dict) and isinstance(bench.get("id"), str) else None
            chash = d.get("config_hash") if isinstance(d.get("config_hash"), str) else None
            raise ResultFileError(
                source, f"result schema version {shown(repr(version))[:40]} is not supported (this aibench "
                        f"reads version {SCHEMA_VERSION})", "other-version",
                {"benchmark": bench_id, "config_hash": chash, "version": version})
        problem = result_problem(d)
        if problem is not None:
            raise ResultFileError(source, f"damaged aibench result: {shown(problem)[:300]}", "damaged")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a result file (shipped as package data); a copy, free to change."""
    from aibench.results.validate import result_schema

    return copy.deepcopy(result_schema())
