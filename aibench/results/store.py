"""Writing and reading result files. Writes are atomic and never overwrite an existing file."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from aibench.errors import ResultIOError
from aibench.results.schema import Result

# A result file larger than this is not an aibench result (raw samples are kept, but bounded).
MAX_RESULT_BYTES = 256 * 1024 * 1024


def ensure_writable_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if needed and prove it is writable, before any measurement starts."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aibench-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResultIOError(f"cannot write results to {str(path)!r}: {exc.strerror or exc}") from None
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def result_filename(result: Result) -> str:
    stamp = result.started_at.replace(":", "").replace("-", "").replace(".", "")[:15]
    kind, name = result.benchmark["kind"], result.benchmark["name"]
    return f"{_slug(kind)}-{_slug(name)}-{result.config_hash[:8]}-{stamp}-{result.run_id[:8]}.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str, *, exclusive: bool = False,
                      describe: str | None = None) -> Path:
    """Write ``text`` to ``path`` so that no reader ever sees half a file: a temporary file beside it, fsync,
    then rename over it, with ordinary permissions (mkstemp's are 0600). ``exclusive`` refuses to replace an
    existing file. Every aibench file (results, sweep records, comparisons, reports) is written this way."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            if exclusive and target.exists():
                raise FileExistsError(target)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ResultIOError(f"cannot write {describe or repr(str(target))}: {exc.strerror or exc}") from None
    return target


def write_result(result: Result, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``result`` as JSON under ``out_dir`` atomically. Run ids are random, so an existing file of the
    same name means something is badly wrong: it is never replaced."""
    directory = Path(out_dir)
    return write_text_atomic(directory / result_filename(result), result.to_json() + "\n", exclusive=True,
                             describe=f"result to {str(directory)!r}")


def load_result(path: str | os.PathLike[str]) -> Result:
    """Read one result file; anything that is not a readable aibench result raises ResultIOError."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_RESULT_BYTES:
            raise ResultIOError(f"{p}: too large to be an aibench result file")
        with p.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ResultIOError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ResultIOError(f"{p}: not a text file") from None
    except OSError as exc:
        raise ResultIOError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return Result.from_dict(data, source=str(p))


def iter_result_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, and ``*.json`` files found recursively under folders (sorted)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*.json") if q.is_file() and not q.name.startswith("."))
        elif p.exists():
            yield p
        else:
            raise ResultIOError(f"{p}: no such file or folder")


def load_results(paths: Iterable[str | os.PathLike[str]], skip_foreign: bool = False) -> list[Result]:
    """Load every result under ``paths``. With ``skip_foreign``, JSON files found inside folders that are
    not aibench results (e.g. LoadGen's own logs) are skipped; a file named directly must be a result."""
    out: list[Result] = []
    named = {Path(p) for p in paths if not Path(p).is_dir()}
    for f in iter_result_files(paths):
        try:
            out.append(load_result(f))
        except ResultIOError:
            if skip_foreign and f not in named:
                continue
            raise
    return out
