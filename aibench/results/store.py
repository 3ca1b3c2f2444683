"""Writing and reading result files, and the guard of every output a command writes.

Writes are atomic (temporary file, fsync, rename) and a result never replaces an existing file; reading goes
through :mod:`aibench.results.files` (regular files only, bounded, validated); :func:`check_outputs` refuses,
before any work, an output that would replace an input, a measurement or anything but a regular file."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from aibench.errors import ResultIOError, UsageError
from aibench.results.files import MAX_FILE_BYTES, is_record, json_files, read_json, scan, what_is
from aibench.results.schema import Result
from aibench.results.validate import ResultFileError, shown

# A result file larger than this is not an aibench result (raw samples are kept, but bounded): the read
# limit of every aibench file (README, "Result files").
MAX_RESULT_BYTES = MAX_FILE_BYTES


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
    """Read one result file through the one reader (:mod:`aibench.results.files`): a regular file, bounded,
    strict JSON, validated against the schema. Anything else raises
    :class:`~aibench.results.validate.ResultFileError` (a ResultIOError: exit 4)."""
    p = Path(path)
    return Result.from_dict(read_json(p, limits=False), source=str(p))  # from_dict checks the limits too


def load_results(paths: Iterable[str | os.PathLike[str]], skip_foreign: bool = False) -> list[Result]:
    """Load every result under ``paths``. With ``skip_foreign``, files found inside folders that are not
    usable results (LoadGen's logs, sweep records, damaged files, FIFOs…) are skipped; a file named directly
    must be a result. Results of another schema version are refused (exit 4)."""
    found = scan(paths)
    named_other = [e for e in found.other_versions if e.detail.get("named")]
    if named_other:
        raise named_other[0]
    not_results = found.named_non_results()
    if not_results:
        raise ResultFileError(not_results[0], "not an aibench result file (a sweep record or comparison)",
                              "foreign")
    if not skip_foreign:
        if found.skipped or found.other_versions:
            raise (found.skipped or found.other_versions)[0]
        if found.sweeps or found.comparisons or found.tco:
            src = (found.sweeps or found.comparisons or found.tco)[0]["_source"]
            raise ResultFileError(src, "not an aibench result file (a sweep record, comparison or TCO file)",
                                  "foreign")
    return found.results


# ------------------------------------------------------------------------------------------- outputs
def _inode(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _input_inodes(inputs: Iterable[str | os.PathLike[str]]) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) of every file a command reads from ``inputs``: the files named, and every file the
    folder walk yields (links followed, so a link or a hard link to an input is the input)."""
    keys: dict[tuple[int, int], str] = {}
    for raw in inputs:
        p = Path(raw)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            for f in json_files(p):
                try:
                    keys.setdefault(_inode(os.stat(f)), str(f))
                except OSError:
                    continue
        else:
            keys.setdefault(_inode(st), str(p))
    return keys


def check_outputs(outputs: Mapping[str, str | os.PathLike[str] | None],
                  inputs: Iterable[str | os.PathLike[str]] = (), *,
                  stdout_ok: Collection[str] = ()) -> dict[str, Path | None]:
    """Check, before any work, every output file a command was asked to write; return where to write each.

    This is the one guard of every named output (``report --csv/--html/--github-benchmark``, ``compare`` and
    ``gate --json/--markdown``, ``gate --junit``): **no command writes over something it did not create.**
    An output is refused with one line (:class:`~aibench.errors.UsageError`, exit 2) when it

    * is one of the command's ``inputs``: a file named, or a file inside an input folder that the command
      reads, compared by device and inode after following links, so a symbolic or hard link to an input is
      the input;
    * is an existing aibench result file or sweep record (whatever command made it; a damaged one too);
    * exists and is not a regular file: a folder, FIFO, device, socket, or a dangling link;
    * names the same file as another output, or is ``-`` where the flag is not in ``stdout_ok``.

    A new path is fine; its folder must exist and be writable (else ResultIOError, exit 4: nothing is
    created for an output).
    A regular file that is none of the above (an earlier report, comparison or gate file) is replaced,
    atomically, by :func:`write_text_atomic`. The returned mapping has a flag for each output asked for:
    the path to write (links resolved, so a link's target is replaced, not the link), or None for stdout.
    """
    asked = {flag: value for flag, value in outputs.items() if value is not None}
    if not asked:
        return {}
    protected = _input_inodes(inputs)
    out: dict[str, Path | None] = {}
    seen: dict[object, str] = {}
    for flag, value in asked.items():
        text = os.fspath(value)
        if text == "-":
            if flag not in stdout_ok:
                raise UsageError(f"{flag} -: this output cannot go to stdout; name a file")
            if "stdout" in seen:
                raise UsageError(f"{flag} - and {seen['stdout']} - both name stdout; send one of them to a file")
            seen["stdout"] = flag
            out[flag] = None
            continue
        if not text.strip():
            raise UsageError(f"{flag}: empty file name")
        path = Path(text)
        name = shown(text)
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                raise UsageError(f"{flag} {name!r} is a dangling symbolic link; name a file") from None
            st = None
        except OSError as exc:
            raise ResultIOError(f"cannot write {name!r}: {exc.strerror or exc}") from None
        if st is None:
            folder = path.absolute().parent
            if not folder.is_dir():
                raise ResultIOError(f"cannot write {name!r}: folder {shown(folder)!r} does not exist (or is not "
                                    "a folder)")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ResultIOError(f"cannot write {name!r}: folder {shown(folder)!r} is not writable")
            target = folder.resolve() / path.name
            key: object = ("new", str(target))
        else:
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{flag} {name!r} is a folder; name a file")
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{flag} {name!r} is {what_is(st.st_mode)}, not a regular file: aibench "
                                 "writes outputs only to regular files or new paths")
            key = _inode(st)
            if key in protected:
                source = protected[key]
                same = "" if os.path.normpath(source) == os.path.normpath(text) else f" ({shown(source)})"
                raise UsageError(f"{flag} {name!r} is one of this command's input files{same}; outputs never "
                                 "replace an input: name another file")
            if is_record(path):
                raise UsageError(f"{flag} {name!r} is an aibench result file or sweep record; outputs never "
                                 "replace a measurement: name another file")
            target = path.resolve()
            if not os.access(target.parent, os.W_OK | os.X_OK):
                raise ResultIOError(f"cannot write {name!r}: folder {shown(target.parent)!r} is not writable")
        if key in seen:
            raise UsageError(f"{flag} and {seen[key]} name the same file {name!r}")
        seen[key] = flag
        out[flag] = target
    return out
