"""The result record: one JSON document per measured configuration.

The dict form is the contract (``result.schema.json`` beside this file, README "Result files"); the
:class:`Result` dataclass is a convenience for building and reading it. Files are plain JSON: nothing is
ever unpickled, and a file that is not an aibench result is refused by :func:`from_dict`. Files of schema
version 1 are converted on read (:mod:`aibench.results.convert`).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aibench.results import declaration

SCHEMA_NAME = "aibench-result"
SCHEMA_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1 is converted on read
STATUSES = ("ok", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def metric(value: float | None, unit: str, direction: str, unavailable: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """One metric entry. ``value`` None requires a reason in ``unavailable`` (never a guess).

    The declaration (``statistic``, ``of``, ``inverse_of``: :mod:`aibench.results.declaration`) is usually
    filled in from the benchmark's metric list when the result is finished (:meth:`Result.declare_metrics`);
    a figure that is not among them (a derived one, a per-part one) passes it here."""
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


@dataclass(slots=True)
class Result:
    """One result record (schema version 2). Slotted: a misspelt or retired field name (``scenario``,
    ``system``) raises instead of being set silently."""

    benchmark: dict[str, Any]
    params: dict[str, Any]
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: dict[str, Any] | None = None
    primary_metric: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> name -> distribution (results.parts)
    method: dict[str, Any] = field(default_factory=dict)
    load_scenario: str | None = None  # LoadGen's scenario, or closed-loop; None when not run under load
    validity: dict[str, Any] | None = None
    noisy: bool | None = None
    meters: dict[str, Any] = field(default_factory=dict)
    # Defaults that satisfy the schema, so that a record built in code is valid before the runner fills in
    # the machine and code fingerprints.
    machine: dict[str, Any] = field(default_factory=lambda: {"machine": {}, "software": {}})
    code: dict[str, Any] = field(default_factory=_code_default)
    load: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    duration_s: float | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION
    # What the benchmark declares of its metrics (name -> statistic, of, inverse_of), from its MetricSpec list
    # (aibench.runner.new_result); not written: every entry carries its own once declared.
    declared: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.benchmark["id"]

    def declare_metrics(self, declared: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
        """Give every metric entry without a declaration the one its benchmark declares (``declared``, else
        what the record was created with). Idempotent; called when a result is finished and again when it
        is written, so no file holds an undeclared figure. Returns the names nobody declared (they are
        declared a plain value: :data:`aibench.results.declaration.UNDECLARED`)."""
        return declaration.declare(self.metrics, self.declared if declared is None else declared)

    def to_dict(self) -> dict[str, Any]:
        self.declare_metrics()
        d = asdict(self)
        del d["declared"]
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
        from aibench.results.validate import ResultFileError, limits_problem, result_problem, shown

        if not isinstance(d, dict) or d.get("schema") != SCHEMA_NAME:
            raise ResultFileError(source, f"not an aibench result file (no \"schema\": \"{SCHEMA_NAME}\")",
                                  "foreign")
        version = d.get("schema_version")
        if not (type(version) in (int, float) and version in READ_VERSIONS):
            bench = d.get("benchmark")
            bench_id = bench.get("id") if isinstance(bench, dict) and isinstance(bench.get("id"), str) else None
            chash = d.get("config_hash") if isinstance(d.get("config_hash"), str) else None
            raise ResultFileError(
                source, f"result schema version {shown(repr(version))[:40]} is not supported (this aibench "
                        f"reads versions {', '.join(map(str, READ_VERSIONS))})", "other-version",
                {"benchmark": bench_id, "config_hash": chash, "version": version})
        checked: set[int] = set()
        problem = limits_problem(d, checked) or result_problem(d, int(version), checked)
        if problem is not None:
            raise ResultFileError(source, f"damaged aibench result: {shown(problem)[:300]}", "damaged")
        if version != SCHEMA_VERSION:
            from aibench.results.convert import v1_to_v2

            d = v1_to_v2(d)
            problem = result_problem(d, SCHEMA_VERSION, checked)
            if problem is not None:  # a conversion that does not give a valid record is aibench's bug
                raise ResultFileError(source, f"damaged aibench result: version {version} converts to an invalid "
                                              f"record: {shown(problem)[:300]}", "damaged")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "declared"})


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a result file (shipped as package data); a copy, free to change."""
    from aibench.results.validate import result_schema

    return copy.deepcopy(result_schema())
