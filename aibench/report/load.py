"""Reading what a report shows: result files, sweep records and comparison files, from files and folders.

Every JSON file is classified by its ``"schema"`` field:

- ``aibench-result`` (version 1): a measured run;
- ``aibench-sweep`` (contract 1): a sweep record, read for its knee and the status of each point;
- ``aibench-comparison`` / ``aibench-gate`` (contract 2): comparison pairs, drawn as ratio bars with CIs;
- anything else is *foreign*. Inside a folder a foreign, broken or other-version file is skipped and counted
  in one note line; a file named explicitly must be readable and of a kind the report knows, or the report
  stops with one line and exit 4 (:class:`~aibench.errors.ResultIOError`).

LoadGen's own logs, kept beside a result as ``<result>.loadgen/``, are not walked at all (they are large and
known not to be results), and neither are hidden files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench.errors import ResultIOError
from aibench.results.schema import SCHEMA_NAME, Result
from aibench.results.store import MAX_RESULT_BYTES

SWEEP_SCHEMA = "aibench-sweep"
COMPARISON_SCHEMAS = ("aibench-comparison", "aibench-gate")
SUPPORTED_VERSION = 1


@dataclass
class ReportInputs:
    """Everything found under the paths of one report, in a stable order."""

    results: list[Result] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # run_id -> the result file it came from
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # each with "_source": its path
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # each with "_source": its path
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) for files found in folders
    duplicates: int = 0  # the same run (run_id) found twice, e.g. a copied file
    paths: list[Path] = field(default_factory=list)  # what the user named

    @property
    def empty(self) -> bool:
        return not (self.results or self.sweeps or self.comparisons)

    def note(self) -> str | None:
        """One line saying what was skipped, or None when nothing was."""
        parts = []
        damaged = [(p, why) for p, why in self.skipped if why.startswith(DAMAGED)]
        foreign = [(p, why) for p, why in self.skipped if not why.startswith(DAMAGED)]
        if damaged:  # a result file that was cut short or edited: named, all of them
            parts.append(f"skipped {len(damaged)} damaged aibench file(s): "
                         + ", ".join(f"{p} ({why})" for p, why in damaged))
        if foreign:
            path, why = foreign[0]
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            parts.append(f"skipped {len(foreign)} JSON file(s) that are not aibench results, sweep records "
                         f"or comparisons ({path}: {why}{more})")
        if self.duplicates:
            parts.append(f"ignored {self.duplicates} duplicate result file(s) (same run_id)")
        return "; ".join(parts) or None

    def result_file(self, result: Result) -> Path | None:
        return self.files.get(result.run_id)


DAMAGED = "damaged aibench file"


class _Foreign(Exception):
    """A file that is not something a report reads; the message says why."""


def _walk(folder: Path) -> Iterator[Path]:
    """``*.json`` under ``folder``, sorted, skipping hidden entries and LoadGen's ``*.loadgen`` log folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".loadgen"))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(root) / name


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise _Foreign("too large to be an aibench file")
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        why = f"not valid JSON ({exc.msg} at line {exc.lineno})"
        if '"schema": "aibench-' in exc.doc[:2000]:  # ours, but cut short or edited
            why = f"{DAMAGED}: {why}"
        raise _Foreign(why) from None
    except UnicodeDecodeError:
        raise _Foreign("not a text file") from None
    except RecursionError:
        raise _Foreign("nested too deeply to be an aibench file") from None
    except OSError as exc:
        raise ResultIOError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_version(doc: dict[str, Any], kind: str) -> None:
    version = doc.get("schema_version")
    if version != SUPPORTED_VERSION:
        raise _Foreign(f"{kind} schema version {version!r} is not supported (this aibench reads version "
                       f"{SUPPORTED_VERSION})")


def _classify(doc: Any, path: Path) -> tuple[str, Any]:
    """("result", Result) | ("sweep", dict) | ("comparison", dict); raises _Foreign otherwise."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise _Foreign(f"not an aibench file (no \"schema\": \"{SCHEMA_NAME}\")")
    schema = doc["schema"]
    if schema == SCHEMA_NAME:
        try:
            result = Result.from_dict(doc, source=str(path))
        except ResultIOError as exc:
            raise _Foreign(exc.format_message().removeprefix(f"{path}: ")) from None
        if not isinstance(result.benchmark, dict) or not isinstance(result.benchmark.get("id"), str):
            raise _Foreign(f"{DAMAGED}: malformed result (benchmark has no id)")
        for name in ("params", "metrics", "samples", "context", "system", "code", "load", "config", "meters"):
            if not isinstance(getattr(result, name), dict):
                raise _Foreign(f"{DAMAGED}: malformed result ({name} is not an object)")
        for name, entry in result.metrics.items():
            value = entry.get("value") if isinstance(entry, dict) else "?"
            if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
                raise _Foreign(f"{DAMAGED}: malformed result (metric {name!r} has no numeric value)")
        if not isinstance(result.run_id, str):
            raise _Foreign(f"{DAMAGED}: malformed result (run_id is not a string)")
        return "result", result
    if schema == SWEEP_SCHEMA:
        _check_version(doc, "sweep record")
        if not isinstance(doc.get("id"), str) or not isinstance(doc.get("points"), list):
            raise _Foreign("malformed sweep record (needs a string id and a list of points)")
        return "sweep", {**doc, "_source": str(path)}
    if schema in COMPARISON_SCHEMAS:
        _check_version(doc, "comparison")
        pairs = doc.get("pairs")
        if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
            raise _Foreign("malformed comparison file (pairs must be a list of objects)")
        return "comparison", {**doc, "_source": str(path)}
    raise _Foreign(f"a {schema!r} file, which a report does not read")


def load_inputs(paths: Iterable[str | os.PathLike[str]]) -> ReportInputs:
    """Load everything under ``paths`` (files and folders, folders recursively)."""
    out = ReportInputs(paths=[Path(p) for p in paths])
    seen_files: set[Path] = set()
    seen_runs: set[str] = set()
    for named in out.paths:
        if named.is_dir():
            found, explicit = list(_walk(named)), False
        elif named.exists():
            found, explicit = [named], True
        else:
            raise ResultIOError(f"{named}: no such file or folder")
        for path in found:
            key = path.resolve()
            if key in seen_files:
                continue
            seen_files.add(key)
            try:
                kind, item = _classify(_read_json(path), path)
            except _Foreign as exc:
                if explicit:
                    raise ResultIOError(f"{path}: {exc}") from None
                out.skipped.append((path, str(exc)))
                continue
            if kind == "result":
                if item.run_id in seen_runs:
                    out.duplicates += 1
                    continue
                seen_runs.add(item.run_id)
                out.results.append(item)
                out.files[item.run_id] = path
            elif kind == "sweep":
                out.sweeps.append(item)
            else:
                out.comparisons.append(item)
    out.results.sort(key=lambda r: (r.id, str(r.started_at)))
    return out
