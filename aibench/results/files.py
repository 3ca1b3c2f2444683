"""Reading aibench's JSON files: the one reader every command uses (report, compare, gate, sweep --resume).

* :func:`read_json` reads one file safely. Only a *regular file* is opened (checked with ``stat`` before
  opening, and again with ``fstat`` on the opened descriptor, which is opened non-blocking); a FIFO, a
  device (``/dev/zero``, ``/dev/urandom``), a socket or a dangling link is refused without reading. At most
  :data:`MAX_FILE_BYTES` + 1 bytes are read, and a file whose size is already larger is refused unread, so
  no read can block or grow without bound. The text must be UTF-8 JSON within the read limits of
  :mod:`aibench.results.validate` (nesting, finite numbers); Python's 4,300-digit limit on integers is
  reported as a damaged file, not raised.
* :func:`json_files` walks a folder: ``*.json`` files, sorted, skipping hidden entries and LoadGen's
  ``<result>.loadgen/`` log folders, not following linked folders.
* :func:`classify` tells what a parsed document is: a result (validated against the read limits and the
  schema), a sweep record, a comparison or gate file; anything else raises :class:`ResultFileError` with
  its kind.
* :func:`scan` does all three over files and folders: in a folder an unusable file is *skipped* and
  remembered (the commands print one note); a file named directly must be usable (exit 4).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench.results.schema import SCHEMA_NAME, Result
from aibench.results.validate import ResultFileError, limits_problem, shown

# The largest file any aibench command reads (README, "Result files"): raw samples are kept, but bounded.
MAX_FILE_BYTES = 256 * 1024 * 1024

SWEEP_SCHEMA = "aibench-sweep"
COMPARISON_SCHEMAS = ("aibench-comparison", "aibench-gate")
TCO_SCHEMA = "aibench-tco"  # `aibench tco --json` (aibench.tco.report), drawn by `aibench report`
# aibench files that are not results, and what they are (a result reader names the file, not "foreign")
NOT_RESULTS = {"aibench-partition-profile": "a platform profile (`aibench partition fit`), not a result file"}
OTHER_SCHEMA_VERSION = 1  # of sweep records and comparison/gate files
# The files that record measurements: no command ever writes over one (see store.check_outputs).
RECORD_SCHEMAS = (SCHEMA_NAME, SWEEP_SCHEMA)

_OURS = re.compile(r'"schema"\s*:\s*"aibench-')
_KIND_OF_MODE = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"))


def what_is(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', … for a file mode that is not a regular file."""
    return next((name for test, name in _KIND_OF_MODE if test(mode)), "not a regular file")


def regular_stat(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat`` of a regular file (links followed), or :class:`ResultFileError` saying what it is instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ResultFileError(path, "a dangling symbolic link (its target does not exist)", "not-regular") \
                from None
        raise ResultFileError(path, "no such file or folder", "missing") from None
    except OSError as exc:
        raise ResultFileError(path, f"cannot read ({exc.strerror or exc})", "unreadable") from None
    if not stat.S_ISREG(st.st_mode):
        raise ResultFileError(path, f"not a regular file ({what_is(st.st_mode)}): aibench reads only regular "
                                    "files", "not-regular")
    return st


def _too_large(path: str | os.PathLike[str], size: int | None = None) -> ResultFileError:
    what = f"{size / 2**20:.0f} MiB, " if size is not None else ""
    return ResultFileError(path, f"too large to be an aibench file ({what}the limit is "
                                 f"{MAX_FILE_BYTES // 2**20} MiB)", "too-large")


def read_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never blocks, never reads more than
    ``max_bytes`` + 1 bytes (:class:`ResultFileError` otherwise)."""
    st = regular_stat(path)
    if st.st_size > max_bytes:
        raise _too_large(path, st.st_size)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO swapped in after the stat)
            raise ResultFileError(path, "not a regular file: aibench reads only regular files", "not-regular") \
                from None
        raise ResultFileError(path, f"cannot read ({exc.strerror or exc})", "unreadable") from None
    try:
        st = os.fstat(fd)  # what was opened, not what the name pointed to a moment ago
        if not stat.S_ISREG(st.st_mode):
            raise ResultFileError(path, f"not a regular file ({what_is(st.st_mode)}): aibench reads only "
                                        "regular files", "not-regular")
        if st.st_size > max_bytes:
            raise _too_large(path, st.st_size)
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # it grew past the limit while being read
            raise _too_large(path)
        return b"".join(chunks)
    except OSError as exc:
        raise ResultFileError(path, f"cannot read ({exc.strerror or exc})", "unreadable") from None
    finally:
        os.close(fd)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, path: str | os.PathLike[str], limits: bool = True) -> Any:
    """Strict JSON (no NaN/Infinity) within the read limits; :class:`ResultFileError` otherwise. A file
    that says it is an aibench file but does not parse is *damaged*, anything else that does not is
    *not-json*. ``limits=False`` leaves the limits to the caller (:func:`classify` checks them, in the same
    pass as the result schema)."""
    head = data[:4096].decode("utf-8", "replace")
    ours = bool(_OURS.search(head))
    kind = "damaged" if ours else "not-json"
    prefix = "damaged aibench file: " if ours else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultFileError(path, f"{prefix}not a text file (not UTF-8)", kind) from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ResultFileError(path, f"{prefix}not valid JSON ({exc.msg} at line {exc.lineno})", kind) from None
    except RecursionError:
        raise ResultFileError(path, f"{prefix}nested too deeply to be an aibench file", kind) from None
    except ValueError as exc:  # NaN/Infinity (refused above); an integer of more than 4,300 digits
        why = str(exc).split(":")[0] if "digits" in str(exc) else str(exc)
        raise ResultFileError(path, f"{prefix}not valid JSON ({why})", kind) from None
    problem = limits_problem(doc) if limits else None
    if problem is not None:
        raise ResultFileError(path, f"{prefix}{problem}", kind)
    return doc


def read_json(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES, limits: bool = True) -> Any:
    """One JSON file, read safely (see the module docstring); :class:`ResultFileError` on any problem."""
    return parse_json(read_bytes(path, max_bytes), path, limits)


def is_record(path: str | os.PathLike[str]) -> bool:
    """Whether the regular file ``path`` is an aibench result or sweep record (whole or damaged)."""
    try:
        data = read_bytes(path)
    except ResultFileError:
        return False
    head = data[:4096].decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if not head.startswith("{"):
        return False
    if re.search(r'"schema"\s*:\s*"(aibench-result|aibench-sweep)"', head):
        return True
    try:
        doc = parse_json(data, path, limits=False)
    except ResultFileError:
        return False
    return isinstance(doc, dict) and doc.get("schema") in RECORD_SCHEMAS


def json_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """``*.json`` under ``folder``, sorted, skipping hidden entries and LoadGen's ``*.loadgen`` log folders.
    Linked folders are not followed; linked files are yielded (the reader decides what they are)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".loadgen"))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(root) / name


def iter_result_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, and ``*.json`` found under folders (see :func:`json_files`)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from json_files(p)
        else:
            yield p


def _check_version(doc: dict[str, Any], path: Path, what: str) -> None:
    version = doc.get("schema_version")
    if not (type(version) is int and version == OTHER_SCHEMA_VERSION):
        raise ResultFileError(path, f"{what} schema version {shown(repr(version))[:40]} is not supported (this "
                                    f"aibench reads version {OTHER_SCHEMA_VERSION})", "foreign")


def classify(doc: Any, path: Path) -> tuple[str, Any]:
    """("result", Result) | ("sweep", dict) | ("comparison", dict) | ("tco", dict); :class:`ResultFileError`
    otherwise. Sweep, comparison and TCO documents get ``"_source"``: the file they came from."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str) or \
            not doc["schema"].startswith("aibench-"):
        raise ResultFileError(path, "not an aibench file (no \"schema\": \"aibench-…\")", "foreign")
    schema = doc["schema"]
    if schema == SCHEMA_NAME:
        return "result", Result.from_dict(doc, source=str(path))  # the read limits and the schema
    problem = limits_problem(doc)
    if problem is not None:
        raise ResultFileError(path, f"damaged aibench file: {problem}", "damaged")
    if schema == SWEEP_SCHEMA:
        _check_version(doc, path, "sweep record")
        if not isinstance(doc.get("id"), str) or not isinstance(doc.get("points"), list):
            raise ResultFileError(path, "damaged aibench file: malformed sweep record (needs a string id and a "
                                        "list of points)", "damaged")
        return "sweep", {**doc, "_source": str(path)}
    if schema in COMPARISON_SCHEMAS:
        _check_version(doc, path, "comparison")
        pairs = doc.get("pairs")
        if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
            raise ResultFileError(path, "damaged aibench file: malformed comparison file (pairs must be a list "
                                        "of objects)", "damaged")
        return "comparison", {**doc, "_source": str(path)}
    if schema == TCO_SCHEMA:
        _check_version(doc, path, "TCO file")
        if not isinstance(doc.get("series"), list) or not isinstance(doc.get("shares"), list):
            raise ResultFileError(path, "damaged aibench file: malformed TCO file (needs lists of shares and "
                                        "series)", "damaged")
        return "tco", {**doc, "_source": str(path)}
    if schema in NOT_RESULTS:
        raise ResultFileError(path, NOT_RESULTS[schema], "foreign")
    raise ResultFileError(path, f"a {schema!r} file, which this aibench does not read", "foreign")


@dataclass
class Scan:
    """Everything found under some paths, in a stable order, and what was skipped on the way."""

    paths: list[Path] = field(default_factory=list)  # what the user named
    results: list[Result] = field(default_factory=list)  # sorted by benchmark id, then start time
    files: dict[str, Path] = field(default_factory=dict)  # run_id -> the file it came from
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # each with "_source": its path
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # each with "_source": its path
    tco: list[dict[str, Any]] = field(default_factory=list)  # `aibench tco --json` files, with "_source"
    other_versions: list[ResultFileError] = field(default_factory=list)  # results of another schema version
    skipped: list[ResultFileError] = field(default_factory=list)  # unusable files found inside folders
    duplicates: int = 0  # the same run (run_id) found twice, e.g. a copied file
    named: dict[Path, str] = field(default_factory=dict)  # files named directly -> "result", "sweep", "comparison"

    def named_non_results(self) -> list[Path]:
        """Files named directly that are sweep records or comparison files, not results."""
        return sorted(p for p, kind in self.named.items() if kind != "result")

    def note(self, ignore: Iterable[str] = ()) -> str | None:
        """One line saying what was skipped in folders, or None. Damaged aibench files are each named;
        other kinds are counted with one example."""
        skipped = [s for s in self.skipped if s.kind not in set(ignore)]
        parts = []
        damaged = [s for s in skipped if s.kind == "damaged"]
        special = [s for s in skipped if s.kind in ("not-regular", "unreadable", "too-large")]
        foreign = [s for s in skipped if s not in damaged and s not in special]
        if damaged:
            parts.append(f"skipped {len(damaged)} damaged aibench file(s): "
                         + ", ".join(f"{s.path} ({s.why.removeprefix('damaged aibench file: ')})" for s in damaged))
        if special:
            parts.append(f"skipped {len(special)} file(s) that could not be read: "
                         + ", ".join(f"{s.path} ({s.why})" for s in special[:5])
                         + (f" and {len(special) - 5} more" if len(special) > 5 else ""))
        if foreign:
            first = foreign[0]
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            parts.append(f"skipped {len(foreign)} JSON file(s) that are not aibench results, sweep records "
                         f"or comparisons ({first.path}: {first.why}{more})")
        if self.duplicates:
            parts.append(f"ignored {self.duplicates} duplicate result file(s) (same run_id)")
        return shown("; ".join(parts)) or None


def scan(paths: Iterable[str | os.PathLike[str]]) -> Scan:
    """Read everything under ``paths`` (files, and folders recursively). A file named directly that is not
    usable raises :class:`ResultFileError` (exit 4) — except a result of another schema version, which is
    kept in ``other_versions`` for the caller to judge; inside folders every unusable file is skipped."""
    out = Scan(paths=[Path(p) for p in paths])
    seen_files: set[tuple[int, int]] = set()
    seen_runs: set[str] = set()
    for named in out.paths:
        if named.is_dir():
            found, explicit = list(json_files(named)), False
        else:
            regular_stat(named)  # missing, dangling, FIFO, device…: exit 4 with what it is
            found, explicit = [named], True
        for path in found:
            try:
                st = regular_stat(path)
                key = (st.st_dev, st.st_ino)
                if key in seen_files:  # the same file reached twice (named and in its folder, or a link)
                    continue
                seen_files.add(key)
                kind, item = classify(read_json(path, limits=False), path)
            except ResultFileError as exc:
                if exc.kind == "other-version":
                    exc.detail["named"] = explicit
                    out.other_versions.append(exc)
                    continue
                if explicit:
                    raise
                out.skipped.append(exc)
                continue
            if explicit:
                out.named[path] = kind
            if kind == "result":
                if item.run_id in seen_runs:
                    out.duplicates += 1
                    continue
                seen_runs.add(item.run_id)
                out.results.append(item)
                out.files[item.run_id] = path
            elif kind == "sweep":
                out.sweeps.append(item)
            elif kind == "tco":
                out.tco.append(item)
            else:
                out.comparisons.append(item)
    out.results.sort(key=lambda r: (r.id, str(r.started_at)))
    return out
