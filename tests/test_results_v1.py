"""Result files of schema version 1, written by aibench before schema version 2 (tests/data/v1), still load in
``report``, ``compare`` and ``gate``: converted on read, in one place (aibench/results/convert.py), with the
declaration every metric name has in the current benchmark definitions."""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from aibench import registry
from aibench.gate.compare import compare_paths
from aibench.results import load_result, write_result
from aibench.results.convert import legacy_declaration
from aibench.results.schema import Result

V1 = Path(__file__).parent / "data" / "v1"
FILES = sorted(V1.glob("*.json"))

# What each runner's results hold, for the declaration a legacy name gets.
RUNNER_CONTEXT: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "kernel": ({"time": {}}, {}),
    "loadgen": ({"latency": {}}, {}),
    "training": ({"step_time": {}}, {"rate": "samples / sum of timed step times"}),
}


def test_the_fixtures_are_version_1_files() -> None:
    assert len(FILES) == 5
    for path in FILES:
        doc = json.loads(path.read_text())
        assert doc["schema_version"] == 1 and "system" in doc and "parts" not in doc
        assert all("statistic" not in e for e in doc["metrics"].values())


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_version_1_file_loads_as_version_2(path: Path) -> None:
    before = path.read_bytes()
    r = load_result(path)
    assert path.read_bytes() == before  # converted on read, never rewritten
    assert r.schema_version == 2 and r.parts == {}
    doc = json.loads(before)
    assert r.machine == doc["system"] and r.load_scenario == doc["scenario"]
    for name, entry in r.metrics.items():
        assert entry["statistic"] and "of" in entry, name
        assert {k: v for k, v in entry.items() if k not in ("statistic", "of", "inverse_of")} == \
            doc["metrics"][name]
    # Writing it again gives a valid version-2 file.
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.to_dict() == r.to_dict()


def test_the_conversion_declares_what_the_fixtures_hold() -> None:
    kernel = load_result(V1 / "kernel-gemm.json")
    assert {k: kernel.metrics["time_median"][k] for k in ("statistic", "of")} == {"statistic": "median",
                                                                                    "of": "samples.time"}
    assert {k: kernel.metrics["time_p99"][k] for k in ("statistic", "of")} == {"statistic": "p99",
                                                                                 "of": "samples.time"}
    assert {k: kernel.metrics["gflops"][k] for k in ("statistic", "of", "inverse_of")} == {
        "statistic": "rate", "of": "samples.time", "inverse_of": "median"}
    lg = load_result(V1 / "component-pos-breakdown.json")
    assert lg.load_scenario == "single-stream"
    assert lg.metrics["latency_p99"]["statistic"] == "p99" and lg.metrics["latency_p99"]["of"] == "samples.latency"
    assert lg.metrics["latency_early_stopping"]["statistic"] == "early_stopping"
    assert lg.metrics["share_dnn"]["statistic"] == "ratio" and lg.metrics["share_dnn"]["of"] == "parts.stage.dnn"
    assert lg.metrics["samples_per_s"]["statistic"] == "rate" and lg.metrics["samples_per_s"]["of"] is None
    assert lg.metrics["gflops"]["of"] is None  # LoadGen's GFLOP/s: FLOPs × samples/s, no time samples
    train = load_result(V1 / "training-fathom-lenet.json")
    assert train.metrics["samples_per_s"]["inverse_of"] == "mean"
    assert train.metrics["steps_to_target"]["statistic"] == "count"
    sweep = load_result(V1 / "sweep-point-gemm-threads.json")
    assert sweep.metrics["speedup"]["statistic"] == "ratio"
    batch = load_result(V1 / "sweep-point-pos-batch.json")
    assert batch.metrics["batch_latency"]["statistic"] == "value" and batch.load_scenario == "offline"


def test_legacy_names_get_exactly_the_declarations_of_the_current_benchmarks() -> None:
    """The conversion and the benchmark definitions give every metric one meaning: a version-1 file and a
    version-2 file of the same benchmark are compared and gated alike."""
    checked = 0
    for bench in registry.all_benchmarks():
        samples, method = RUNNER_CONTEXT[bench.runner]
        for spec in bench.metrics:
            assert legacy_declaration(spec.name, samples, method) == spec.declaration(), (bench.id, spec.name)
            checked += 1
    from aibench.sweep.analysis import _RATIO, _VALUE

    assert legacy_declaration("batch_latency") == _VALUE
    assert legacy_declaration("speedup") == legacy_declaration("efficiency") == _RATIO
    assert legacy_declaration("a_name_nobody_knows_p99x") == {"statistic": "value", "of": None}
    assert checked > 300


def test_a_damaged_version_1_file_is_named_in_version_1_terms(tmp_path: Path) -> None:
    from aibench.errors import ResultIOError

    doc = json.loads((V1 / "kernel-gemm.json").read_text())
    del doc["system"]
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(ResultIOError, match="damaged aibench result: system is missing"):
        load_result(tmp_path / "x.json")


def _as_v2_copy(src: Path, folder: Path) -> Path:
    """The same measurement as a version-2 file of another run (as if measured again by this aibench)."""
    r = load_result(src)
    r.run_id = uuid.uuid4().hex
    return write_result(r, folder)


def test_compare_reads_version_1_files_against_version_2_ones(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    shutil.copy(V1 / "kernel-gemm.json", tmp_path / "old")
    _as_v2_copy(V1 / "kernel-gemm.json", tmp_path / "new")
    doc = compare_paths([tmp_path / "old"], [tmp_path / "new"], metrics=["time_p99", "gflops"])
    pairs = {p["metric"]: p for p in doc["pairs"]}
    assert set(pairs) == {"time_median", "time_p99", "gflops"}
    for name, p in pairs.items():
        assert p["ratio"] == pytest.approx(1.0) and p["verdict"] in ("same", "inconclusive"), (name, p["reason"])
        assert p["ci"] is not None and "samples.time" in p["reason"]  # bootstrapped from the kept samples
    assert pairs["time_p99"]["threshold"] == pytest.approx(0.10)  # a tail figure, from its declaration
    assert pairs["time_median"]["threshold"] == pytest.approx(0.05)


def test_compare_reads_a_version_1_loadgen_file(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    shutil.copy(V1 / "component-pos-breakdown.json", tmp_path / "old")
    _as_v2_copy(V1 / "component-pos-breakdown.json", tmp_path / "new")
    doc = compare_paths([tmp_path / "old"], [tmp_path / "new"], metrics=["latency_p99", "share_dnn"])
    pairs = {p["metric"]: p for p in doc["pairs"]}
    assert pairs["latency_p99"]["ci"] is not None and pairs["latency_p99"]["statistic"] == "p99"
    assert pairs["share_dnn"]["ci"] is None and pairs["share_dnn"]["verdict"] == "same"


def test_report_reads_version_1_files(tmp_path: Path, cli: Any) -> None:
    html, table = tmp_path / "r.html", tmp_path / "r.csv"
    code, _out, err = cli("report", str(V1), "--html", str(html), "--csv", str(table))
    assert code == 0, err
    assert "skipped" not in err
    rows = list(csv.DictReader(table.open()))
    assert {r["benchmark"] for r in rows} == {"micro/gemm", "component/pos", "component/fathom-lenet"}
    assert all(r["statistic"] for r in rows if r["metric"])
    assert {r["load_scenario"] for r in rows if r["benchmark"] == "component/pos"} == {"single-stream", "offline"}
    page = html.read_text()
    assert "component/pos" in page and "AMD EPYC" in page
