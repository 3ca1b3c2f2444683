"""The one reader and the one output guard every command shares (issue 12, items 2-4).

Reading: only regular files, bounded, strictly parsed and validated against the result schema, with the
same answer in every command: a damaged or foreign file is a note inside a folder and exit 4 when named,
never exit 70 and never a hang. Writing: no command writes over an input, a result or sweep record, or
anything but a regular file or a new path (exit 2, before any work). No test writes to a device node: FIFOs
and sockets are made in tmp, and links to /dev/zero and /dev/urandom are only ever read (and refused).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench.errors import ResultIOError, UsageError
from aibench.gate.compare import compare_paths
from aibench.report.load import load_inputs
from aibench.results import load_result, load_results
from aibench.results.files import MAX_FILE_BYTES, read_bytes, read_json, scan
from aibench.results.schema import json_schema
from aibench.results.store import check_outputs, write_result
from aibench.results.validate import ANNOTATIONS, KEYWORDS, MAX_DEPTH, ResultFileError, result_problem
from tests.report_fixtures import loadgen, micro

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO, /dev/urandom) fails the test after 20 s instead of hanging the suite."""
    def fail(*_: Any) -> None:
        raise TimeoutError("a read blocked")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def good_folder(folder: Path) -> Path:
    """A folder with one valid micro result (what every command must still report beside a bad file)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_result(micro(2, "2026-01-01T00:00:00.000Z"), folder)


def valid_doc() -> dict[str, Any]:
    return micro(2, "2026-01-01T00:00:00.000Z").to_dict()


# ------------------------------------------------------------------------------- only regular files
def _special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket, links to /dev/zero and /dev/urandom, and a dangling link, all named *.json."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"fifo": folder / "pipe.json", "socket": folder / "sock.json", "zero": folder / "zero.json",
           "urandom": folder / "urandom.json", "dangling": folder / "dangling.json"}
    os.mkfifo(out["fifo"])
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(out["socket"]))
    s.close()
    out["zero"].symlink_to("/dev/zero")
    out["urandom"].symlink_to("/dev/urandom")
    out["dangling"].symlink_to(folder / "gone.json")
    return out


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("which, what", [("fifo", "FIFO"), ("socket", "socket"), ("zero", "character device"),
                                         ("urandom", "character device"), ("dangling", "dangling")])
def test_named_special_file_is_exit_4_in_every_command(tmp_path: Path, cli: Cli, which: str, what: str) -> None:
    special = _special_files(tmp_path / "special")[which]
    good = good_folder(tmp_path / "good")
    with pytest.raises(ResultFileError, match=what):
        read_json(special)
    with pytest.raises(ResultIOError, match=what):
        load_result(special)
    for args in (("report", str(special)), ("compare", str(special), str(good)),
                 ("compare", str(good), str(special))):
        code, _, err = cli(*args)
        assert code == 4, (args, err)
        assert what in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.usefixtures("no_hang")
def test_special_files_in_a_folder_are_skipped_with_a_note(tmp_path: Path, cli: Cli) -> None:
    folder = tmp_path / "res"
    good_folder(folder)
    _special_files(folder)
    inputs = load_inputs([folder])
    assert len(inputs.results) == 1 and len(inputs.skipped) == 5
    note = inputs.note() or ""
    assert "5 file(s) that could not be read" in note and "dangling" in note and "FIFO" in note
    code, out, err = cli("report", str(folder))
    assert code == 0 and "1 result(s)" in out and "could not be read" in err
    assert len(load_results([folder], skip_foreign=True)) == 1
    doc = compare_paths([folder], [folder])
    assert doc["pairs"] and any("could not be read" in w for w in doc["warnings"])
    code, _, err = cli("compare", str(folder), str(folder))
    assert code == 0, err


@pytest.mark.usefixtures("no_hang")
def test_a_file_over_the_limit_is_refused_unread(tmp_path: Path, cli: Cli) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: no disk used, and it must not be read
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ResultFileError, match="too large"):
        read_json(big)
    code, _, err = cli("report", str(big))
    assert code == 4 and "too large" in err and "256 MiB" in err
    small = tmp_path / "small.json"
    small.write_text("[" + "1," * 50 + "1]")
    with pytest.raises(ResultFileError, match="too large"):
        read_bytes(small, max_bytes=20)
    assert read_bytes(small, max_bytes=200) == small.read_bytes()


# ------------------------------------------------------------------------- one validation everywhere
def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _with(path_value: dict[str, Any]) -> str:
    doc = valid_doc()
    for dotted, value in path_value.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return json.dumps(doc)


BAD_RESULTS = {
    # the text of the file, and a word the one-line error must contain
    "deep-100000": ('{"schema": "aibench-result", "schema_version": 1, "context": ' + _deep(100_000) + "}",
                    "nested too deeply"),
    "deep-70": (_with({"context": json.loads(_deep(70))}), f"more than {MAX_DEPTH} levels"),
    "metrics-list": (_with({"metrics": [1, 2]}), "metrics must be object"),
    "benchmark-null": (_with({"benchmark": None}), "benchmark must be object"),
    "params-null": (_with({"params": None}), "params must be object"),
    "metric-entry-null": (_with({"metrics.time_median": None}), "metrics.time_median must be object"),
    "metric-string": (_with({"metrics.time_median.value": "fast"}), "metrics.time_median.value"),
    "samples-strings": (_with({"samples.time.values": ["a", "b"]}), "samples.time.values[0]"),
    "samples-long-with-a-string": (_with({"samples.time.values": [0.001] * 500 + ["x"]}), "samples.time.values[500]"),
    "samples-booleans": (_with({"samples.time.values": [True] * 100}), "must be number, not boolean"),
    "samples-nested": (_with({"samples.time.values": [[0.1], [0.2]]}), "samples.time.values[0]"),
    "samples-object": (_with({"samples.time.values": {"a": 1}}), "samples.time.values must be array"),
    "nan": (_with({"metrics.time_median.value": 1.0}).replace('"value": 1.0', '"value": NaN', 1), "NaN"),
    "infinity": (_with({"duration_s": 1.0}).replace('"duration_s": 1.0', '"duration_s": -Infinity', 1),
                 "Infinity"),
    "overflow-1e999": (_with({"samples.time.values": [0.001] * 100}).replace("0.001]", "1e999]", 1), "not finite"),
    "int-5000-digits": (_with({"metrics.time_median.value": 7}).replace('"value": 7', '"value": ' + "7" * 5000, 1),
                        "4300 digits"),
    "int-400-digits": (_with({"context": {"x": 10 ** 400}}), "beyond the range of a float"),
    "run-id-wrong": (_with({"run_id": "../../etc"}), "run_id"),
    "truncated": (_with({})[:200], "not valid JSON"),
}


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("name", sorted(BAD_RESULTS))
def test_every_command_gives_a_damaged_result_the_same_answer(tmp_path: Path, cli: Cli, name: str) -> None:
    text, words = BAD_RESULTS[name]
    folder = tmp_path / "res"
    good_folder(folder)
    bad = folder / "bad.json"
    bad.write_text(text)
    # named directly: exit 4 in every command, one line, the reason in it
    with pytest.raises(ResultFileError, match="damaged aibench") as exc:
        load_result(bad)
    assert words in str(exc.value)
    for args in (("report", str(bad)), ("compare", str(bad), str(folder)), ("compare", str(folder), str(bad))):
        code, _, err = cli(*args)
        assert code == 4, (args, err)
        assert words in err and "damaged aibench" in err and len(err.strip().splitlines()) == 1
    # inside a folder: skipped with a note, the rest is reported and compared (report DIR, compare, gate)
    code, out, err = cli("report", str(folder))
    assert code == 0 and "1 result(s)" in out and "skipped 1 damaged aibench file(s)" in err and "bad.json" in err
    code, out, err = cli("compare", str(folder), str(folder), "--json", "-")
    assert code == 0, err
    cmp_doc = json.loads(out)
    assert any("damaged" in w and "bad.json" in w for w in cmp_doc["warnings"])
    assert len(load_results([folder], skip_foreign=True)) == 1  # what the gate reads
    with pytest.raises(ResultIOError):
        load_results([folder])


def test_nan_and_infinity_are_never_emitted(tmp_path: Path, cli: Cli) -> None:
    """NaN and Infinity are refused on reading, so `--json` never writes them (it writes strict JSON)."""
    folder = tmp_path / "res"
    good_folder(folder)
    text = _with({"metrics.time_median.value": 1.0}).replace('"value": 1.0', '"value": Infinity', 1)
    (folder / "inf.json").write_text(text)
    code, out, _ = cli("compare", str(folder), str(folder), "--json", "-")
    assert code == 0
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert any("inf.json" in w and "Infinity is not a JSON number" in w for w in doc["warnings"])


def test_int_beyond_python_limit_does_not_break_a_folder_report(tmp_path: Path, cli: Cli) -> None:
    folder = tmp_path / "res"
    good_folder(folder)
    (folder / "digits.json").write_text('{"n": ' + "9" * 5000 + "}")  # foreign, and beyond int()'s limit
    code, out, err = cli("report", str(folder))
    assert code == 0 and "1 result(s)" in out and "digits.json" in err


@pytest.mark.usefixtures("no_hang")
def test_sweep_resume_reads_through_the_same_reader(tmp_path: Path) -> None:
    from aibench.sweep.record import load_record

    fifo = tmp_path / "sweep-x.json"
    os.mkfifo(fifo)
    with pytest.raises(ResultIOError, match="FIFO"):
        load_record(fifo)
    (tmp_path / "sweep-y.json").write_text('{"schema": "aibench-sweep", "points": ' + _deep(100_000) + "}")
    with pytest.raises(ResultIOError, match="nested too deeply"):
        load_record(tmp_path / "sweep-y.json")


# ----------------------------------------------------------------- the validator agrees with the schema
def test_schema_uses_only_keywords_the_validator_implements() -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                if key in ("properties", "$defs"):
                    for sub in value.values():
                        yield from walk(sub)
                elif key not in ("enum", "const", "required", "type"):
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    from aibench.results.validate import SCHEMA_FILES, result_schema

    for version in SCHEMA_FILES:
        used = set(walk(result_schema(version)))
        assert used <= KEYWORDS | ANNOTATIONS, (version, used - KEYWORDS - ANNOTATIONS)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


REPLACEMENTS: list[Any] = [None, True, -1, 1.5, "x", [1], {}, {"value": None}]


def _documents() -> list[dict[str, Any]]:
    from aibench.results.schema import metric

    lg = loadgen(4, "2026-01-01T00:00:00.000Z", invalid=True, stages=True).to_dict()
    for stage in list(lg["parts"]["stage"])[1:]:  # one stage is enough to mutate (and keeps this test short)
        del lg["parts"]["stage"][stage], lg["metrics"][f"share_{stage}"]
    metered = valid_doc()
    metered["meters"] = {
        "window": {"start": "a", "end": "b", "duration_s": 1.0, "what": "run", "busy_fraction": None},
        "work": {"count": 10, "per": "call"},
        "energy": {"total": {"provenance": "unavailable", "reason": "no_powercap", "detail": "d", "scope": "cpu"},
                   "readings": [{"provenance": "measured", "meter": "rapl", "domain": "package", "scope": "p0",
                                 "energy_j": 1.0}]},
        "memory": {"process": {"provenance": "measured", "peak_rss_bytes": 5}},
    }
    metered["metrics"]["energy_per_call"] = metric(None, "J", "lower", unavailable="no_powercap", statistic="mean",
                                                   of=None)
    docs = [valid_doc(), lg, metered]
    for doc in docs:  # short sample lists: the long ones are the fast path's test, below
        for entry in doc["samples"].values():
            entry["values"] = entry["values"][:3]
    return docs


V1_FIXTURES = Path(__file__).parent / "data" / "v1"


def _v1_documents() -> list[dict[str, Any]]:
    """The stored version-1 results (tests/data/v1), sample lists cut to 3 values."""
    docs = []
    for path in sorted(V1_FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for entry in doc["samples"].values():
            entry["values"] = entry["values"][:3]
        docs.append(doc)
    return docs


@pytest.mark.parametrize("version", [2, 1])
def test_validator_agrees_with_jsonschema_on_mutated_results(version: int) -> None:
    """Each field of real-shaped results replaced by each of a dozen values, or deleted: the hand-written
    validator and jsonschema must say the same (valid or not) every time, for the current schema and for
    the frozen version-1 schema that old files are checked against before they are converted."""
    from aibench.results.validate import result_schema

    validator = jsonschema.Draft202012Validator(result_schema(version))
    checked = disagreements = 0
    for base in (_documents() if version == 2 else _v1_documents()[1:2]):  # v1: the kernel result
        assert result_problem(base, version) is None and validator.is_valid(base)
        for path in _paths(base):
            for replacement in [*REPLACEMENTS, "<delete>"]:
                doc = copy.deepcopy(base)
                node = doc
                for key in path[:-1]:
                    node = node[key]
                if replacement == "<delete>":
                    if isinstance(node, list):
                        continue
                    del node[path[-1]]
                else:
                    node[path[-1]] = copy.deepcopy(replacement)
                ours = result_problem(doc, version) is None
                theirs = validator.is_valid(doc)
                checked += 1
                if ours != theirs:
                    disagreements += 1
                    pytest.fail(f"{path} = {replacement!r}: ours {ours}, jsonschema {theirs}: "
                                f"{result_problem(doc, version)}")
    assert checked > 1000 and disagreements == 0


def test_long_sample_lists_take_the_fast_path_with_the_same_answer() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    for values, ok in (([0.001] * 1000, True), ([0.001] * 999 + [True], False), ([1] * 1000, True),
                       ([0.001] * 999 + [None], False), ([0.001] * 999 + ["1"], False)):
        doc = valid_doc()
        doc["samples"]["time"]["values"] = values
        assert (result_problem(doc) is None) == ok == validator.is_valid(doc)


# ------------------------------------------------------------------------------- the output guard
def _stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_compare_never_writes_over_its_input(tmp_path: Path, cli: Cli) -> None:
    res = tmp_path / "res"
    result = good_folder(res)
    before = _stamp(result)
    for flag in ("--json", "--markdown"):
        code, _, err = cli("compare", str(res), str(res), flag, str(result))
        assert code == 2 and "input" in err and len(err.strip().splitlines()) == 1, err
        assert _stamp(result) == before
    # through a symbolic link and a hard link from outside the input folder
    (tmp_path / "link.json").symlink_to(result)
    os.link(result, tmp_path / "hard.json")
    for other in ("link.json", "hard.json"):
        code, _, err = cli("compare", str(res), str(res), "--json", str(tmp_path / other))
        assert code == 2 and "input" in err, err
    assert _stamp(result) == before and (tmp_path / "link.json").is_symlink()


@pytest.mark.usefixtures("no_hang")
def test_outputs_never_replace_a_result_or_a_special_file(tmp_path: Path, cli: Cli) -> None:
    res = tmp_path / "res"
    good_folder(res)
    elsewhere = write_result(micro(4, "2026-01-01T00:00:01.000Z"), tmp_path / "other")  # not an input
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    before = _stamp(elsewhere)
    cases = [
        (("report", str(res), "--html", str(fifo)), "FIFO"),
        (("report", str(res), "--csv", str(tmp_path)), "folder"),
        (("report", str(res), "--github-benchmark", str(elsewhere)), "result file"),
        (("compare", str(res), str(res), "--markdown", str(elsewhere)), "result file"),
        (("compare", str(res), str(res), "--json", str(fifo)), "FIFO"),
        (("report", str(res), "--csv", "-"), "stdout"),
        (("compare", str(res), str(res), "--json", "-", "--markdown", "-"), "stdout"),
        (("report", str(res), "--csv", str(tmp_path / "a.csv"), "--html", str(tmp_path / "a.csv")), "same file"),
    ]
    for args, words in cases:
        code, out, err = cli(*args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not out  # refused before any work: nothing printed
    assert fifo.is_fifo() and _stamp(elsewhere) == before
    code, _, err = cli("report", str(res), "--html", str(tmp_path / "missing" / "r.html"))
    assert code == 4 and "does not exist" in err and not (tmp_path / "missing").exists()


@pytest.mark.usefixtures("no_hang")
def test_gate_refuses_its_outputs_before_any_round(tmp_path: Path, cli: Cli) -> None:
    import sys

    result = write_result(micro(4, "2026-01-01T00:00:01.000Z"), tmp_path)
    fifo = tmp_path / "g.fifo"
    os.mkfifo(fifo)
    py = sys.executable
    for flag, target, words in (("--json", str(result), "result file"), ("--markdown", str(fifo), "FIFO"),
                                ("--junit", str(tmp_path), "folder"), ("--junit", "-", "stdout")):
        code, _, err = cli("gate", "--baseline-python", py, "--candidate-python", py, flag, target,
                           "micro/relu", "--batch", "1")
        assert code == 2 and words in err, (flag, err)
        assert "round" not in err


def test_earlier_outputs_are_replaced_and_links_written_through(tmp_path: Path, cli: Cli) -> None:
    res = tmp_path / "res"
    good_folder(res)
    report = res / "report.html"  # inside the input folder, but not something the report reads
    report.write_text("old page")
    target = tmp_path / "real.csv"
    target.write_text("old,csv\n")
    (tmp_path / "link.csv").symlink_to(target)
    code, _, err = cli("report", str(res), "--html", str(report), "--csv", str(tmp_path / "link.csv"))
    assert code == 0, err
    assert report.read_text().startswith("<!DOCTYPE html>") and "old" not in target.read_text()
    assert (tmp_path / "link.csv").is_symlink()
    cmp = tmp_path / "cmp.json"
    for _ in range(2):  # an earlier comparison is replaced, not refused
        code, _, err = cli("compare", str(res), str(res), "--json", str(cmp))
        assert code == 0, err


def test_check_outputs_returns_where_to_write(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    got = check_outputs({"--json": "-", "--markdown": str(tmp_path / "new.md"), "--junit": None},
                        [tmp_path / "in"], stdout_ok=("--json", "--markdown"))
    assert got == {"--json": None, "--markdown": (tmp_path / "new.md").resolve()}
    with pytest.raises(UsageError, match="empty"):
        check_outputs({"--csv": ""})
    assert scan([tmp_path / "in"]).results == []
