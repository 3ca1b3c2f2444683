"""Reading what a report shows: result files, sweep records and comparison files, from files and folders.

Reading is :func:`aibench.results.files.scan`, the reader every command shares. Every JSON file is
classified by its ``"schema"`` field:

- ``aibench-result`` (version 1): a measured run, validated against the result schema;
- ``aibench-sweep`` (contract 1): a sweep record, read for its knee and the status of each point;
- ``aibench-comparison`` / ``aibench-gate`` (contract 2): comparison pairs, drawn as ratio bars with CIs;
- ``aibench-tco`` (version 1): an ``aibench tco --json`` file, drawn as TCO vs DNN share per mix;
- anything else is *foreign*. Inside a folder a foreign, damaged, other-version or unreadable file (a FIFO,
  a device, a dangling link, a file over the size limit) is skipped and counted in one note line; a file
  named explicitly must be readable and of a kind the report knows, or the report stops with one line and
  exit 4 (:class:`~aibench.errors.ResultIOError`).

LoadGen's own logs, kept beside a result as ``<result>.loadgen/``, are not walked at all (they are large and
known not to be results), and neither are hidden files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aibench.results.files import COMPARISON_SCHEMAS, SWEEP_SCHEMA, Scan, scan
from aibench.results.schema import Result

__all__ = ["COMPARISON_SCHEMAS", "SWEEP_SCHEMA", "ReportInputs", "load_inputs"]


@dataclass
class ReportInputs(Scan):
    """Everything found under the paths of one report, in a stable order (see :class:`Scan`)."""

    @property
    def empty(self) -> bool:
        return not (self.results or self.sweeps or self.comparisons or self.tco)

    def result_file(self, result: Result) -> Path | None:
        return self.files.get(result.run_id)


def load_inputs(paths: Iterable[str | os.PathLike[str]]) -> ReportInputs:
    """Load everything under ``paths`` (files and folders, folders recursively)."""
    found = scan(paths)
    named_other = [e for e in found.other_versions if e.detail.get("named")]
    if named_other:  # a file named directly must be one the report reads
        raise named_other[0]
    found.skipped.extend(found.other_versions)  # inside folders: skipped with a note, like foreign files
    found.other_versions = []
    return ReportInputs(**vars(found))
