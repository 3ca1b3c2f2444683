from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from aibench.errors import ResultIOError
from aibench.results import Result, load_result, load_results, metric, write_result
from aibench.results.schema import json_schema
from aibench.results.store import ensure_writable_dir


def sample_result(**kw) -> Result:
    from aibench.results.stats import summarize

    values = [1.0, 1.1, 0.9, 1.05]
    r = Result(benchmark={"id": "micro/x", "kind": "micro", "name": "x", "source": "test"},
               params={"m": 1, "device": "cpu"}, config_hash="0123456789abcdef", config={"threads": 1},
               primary_metric="time_median",
               metrics={"time_median": metric(1.0, "s", "lower", statistic="median", of="samples.time"),
                        "gflops": metric(None, "GFLOP/s", "higher", unavailable="not defined", statistic="rate",
                                         of="samples.time", inverse_of="median")},
               samples={"time": {"unit": "s", "per": "call", "values": values, "summary": summarize(values)}},
               machine={"machine": {}, "software": {}},
               code={"package_version": "0", "git_commit": None, "git_dirty": None},
               finished_at="2026-01-01T00:00:00Z", duration_s=1.0, **kw)
    return r


def test_round_trip_and_schema(tmp_path: Path) -> None:
    r = sample_result()
    path = write_result(r, tmp_path)
    data = json.loads(path.read_text())
    jsonschema.validate(data, json_schema())
    back = load_result(path)
    assert back.to_dict() == r.to_dict()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_unavailable_metric_needs_a_reason() -> None:
    with pytest.raises(ValueError):
        metric(None, "J", "lower")
    bad = sample_result().to_dict()
    del bad["metrics"]["gflops"]["unavailable"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())


def test_never_overwrites(tmp_path: Path) -> None:
    a, b = sample_result(), sample_result()
    pa, pb = write_result(a, tmp_path), write_result(b, tmp_path)
    assert pa != pb and len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"hello": 1}', "not an aibench result"),
    ('[1, 2]', "not an aibench result"),
    ('{"schema": "aibench-result", "schema_version": 99}', "version 99 is not supported"),
    ('{"schema": "aibench-result", "schema_version": 2}', "damaged aibench result: run_id is missing"),
    ('{"schema": "aibench-result", "schema_version": 1}', "damaged aibench result: run_id is missing"),
])
def test_foreign_or_broken_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "f.json"
    f.write_text(content)
    with pytest.raises(ResultIOError, match=message):
        load_result(f)


def test_binary_and_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "b.json"
    f.write_bytes(b"\x80\x81\x00\xff")
    with pytest.raises(ResultIOError, match=r"not a text file|not valid JSON"):
        load_result(f)
    with pytest.raises(ResultIOError, match="no such file"):
        load_results([tmp_path / "missing"])


def test_folders_skip_foreign_json_only_when_asked(tmp_path: Path) -> None:
    write_result(sample_result(), tmp_path)
    (tmp_path / "other.json").write_text('{"x": 1}')
    assert len(load_results([tmp_path], skip_foreign=True)) == 1
    with pytest.raises(ResultIOError):
        load_results([tmp_path])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_refused_up_front(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ResultIOError, match="cannot write"):
        ensure_writable_dir(locked)


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultIOError, match="cannot write"):
        ensure_writable_dir(tmp_path / "file" / "sub")
