"""scenario/djinn end to end with a tiny app: the server it starts, what the result records, and the server
gone afterwards (also when the run fails)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench.results.schema import json_schema
from tests.processes import gone

TINY = ["--app", "pos", "--batch", "3", "--num-samples", "3", "--words", "7", "--data", "synthetic",
        "--duration-s", "0.2"]


def pids(doc: dict[str, Any]) -> list[int]:
    return [p["pid"] for p in doc["method"]["djinn"]["server_processes"]]


def stage_parts(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["parts"]["stage"]


def test_scenario_djinn_http_offline(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "run", "scenario", "djinn", *TINY, "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "ok" and doc["benchmark"]["id"] == "scenario/djinn"
    jsonschema.validate(doc, json_schema())
    parts = stage_parts(doc)
    assert list(parts) == ["client_pre", "network_queue", "server_compute", "client_post"]
    assert all(p["seen"] > 0 and p["summary"]["n"] == p["seen"] for p in parts.values())
    assert doc["samples"]["latency"]["values"]  # the end-to-end distribution
    m = doc["metrics"]
    assert m["bytes_up_per_query"]["value"] > 7 * 300 * 4  # 7 words x 300 floats, plus the JSON header
    assert m["bytes_down_per_query"]["value"] >= 7 * 45 * 4
    assert m["bandwidth_bytes_per_s"]["value"] > 0
    assert m["server_mean_batch_rows"]["value"] >= 7
    assert m["server_cpu_s_per_query"]["value"] > 0 and m["server_peak_rss_bytes"]["value"] > 0
    dj = doc["method"]["djinn"]
    assert sum(dj["batches"]["histogram_rows"].values()) == dj["batches"]["executed"]
    assert {p["role"] for p in dj["server_processes"]} == {"server", "instance-0"}
    assert dj["server_energy"]  # available or the reason
    assert dj["server_exit"] == {"code": 0, "alive_after_stop": False}
    assert all(gone(pid) for pid in pids(doc))


def test_scenario_djinn_protocol_djinn_users(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "run", "scenario", "djinn", *TINY, "--protocol", "djinn", "--users", "2",
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["load_scenario"] == "closed-loop"
    assert list(stage_parts(doc)) == ["client_pre", "round_trip", "client_post"]
    assert doc["method"]["remote"]["protocol"] == "djinn"
    assert doc["metrics"]["server_mean_batch_rows"]["value"] >= 7  # statistics read over HTTP
    assert doc["metrics"]["server_compute_mean_s"]["value"] > 0
    assert all(gone(pid) for pid in pids(doc))


def test_scenario_djinn_with_resident_inputs(cli: Any, tmp_path: Path) -> None:
    """Fig. 12's setting: the server keeps rows on its instances' device, requests name them; on a CPU the
    result says what that removes (no host-to-device copy: the device is the host)."""
    code, out, err = cli("-q", "run", "scenario", "djinn", *TINY, "--resident-inputs", "16", "--out",
                         str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    inputs = doc["context"]["inputs"]
    assert inputs["mode"] == "resident" and inputs["rows"] == 16 and "the device is the host" in inputs["note"]
    assert doc["metrics"]["bytes_up_per_query"]["value"] < 300  # the rows named, not 7 x 300 floats
    assert doc["context"]["device_sharing"]["text"].endswith("inputs resident (16 rows)")
    assert doc["method"]["remote"]["inputs"].startswith("resident")
    assert doc["metrics"]["server_mean_batch_rows"]["value"] >= 7


def test_server_stopped_when_the_run_fails() -> None:
    from aibench.registry import get
    from aibench.results.schema import Result
    from aibench.workloads.scenario._served import served_app

    bench = get("scenario/djinn")
    params = bench.resolve({**bench.tiny})
    result = Result(benchmark={"id": bench.id}, params=params, config_hash="x")
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), served_app(params, result) as (sut, batch):
        assert batch == 3
        seen += [pid for _, pid in sut.pids()]
        raise RuntimeError("boom")
    assert len(seen) == 2 and all(gone(pid) for pid in seen)
    assert result.method["djinn"]["server_exit"]["code"] == 0


def test_listed_as_a_scenario(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("list", "--kind", "scenario", "--json")
    assert code == 0 and "scenario/djinn" in out
    code, _, err = cli("run", "scenario", "djinn", "--remote", "http://127.0.0.1:1", "--out", str(tmp_path))
    assert code == 2 and "--remote applies to component" in err


def test_ctrl_c_stops_the_server_and_keeps_its_figures(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to the whole process group) while the app runs: exit 130, the run recorded
    as interrupted with the server's side as measured up to then (statistics, CPU and memory from /proc),
    marked partial; no server process left."""
    import time

    from tests.test_remote import ctrl_c_while_measuring

    code, err, doc = ctrl_c_while_measuring(["run", "scenario", "djinn", *TINY[:-2], "--duration-s", "60"],
                                            tmp_path)
    assert code == 130, err[-2000:]
    assert doc["status"] == "interrupted" and doc["validity"]["valid"] is False
    dj, m = doc["method"]["djinn"], doc["metrics"]
    assert dj["partial"].startswith("interrupted (Ctrl-C)") and doc["method"]["remote"]["partial"]
    assert dj["batches"]["executed"] >= 1 and m["server_mean_batch_rows"]["value"] >= 7
    assert m["server_cpu_s_per_query"]["value"] > 0 and m["server_cpu_s_per_query"]["partial"] == dj["partial"]
    assert m["server_peak_rss_bytes"]["value"] > 0
    assert {p["role"] for p in dj["server_processes"]} == {"server", "instance-0"}
    # the statistics were read after the Ctrl-C: the server kept serving until aibench stopped it
    servers = pids(doc)
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in servers)


def test_sweep_gpus_of_a_scenario_on_cpu_workers_is_refused_up_front(cli: Any, tmp_path: Path) -> None:
    """Its own server places the instances: CPU worker processes are not how it scales (it crashed in the
    worker with a TypeError once)."""
    code, _out, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cpu:1", "--out", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_an_invalid_run_marks_the_scenarios_own_figures_too(cli: Any, tmp_path: Path) -> None:
    """The server's figures are added when the scenario's system is done, after LoadGen's verdict: an
    INVALID run still marks every figure (bytes, bandwidth, server CPU) as not valid."""
    code, out, err = cli("-q", "run", "scenario", "djinn", *TINY, "--scenario", "server", "--target-qps", "100000",
                         "--latency-bound-ms", "0.01", "--out", str(tmp_path), "--json")
    assert code == 5, err
    doc = json.loads(out)
    assert doc["validity"]["valid"] is False
    assert all(m.get("valid") is False for m in doc["metrics"].values()), \
        [k for k, m in doc["metrics"].items() if m.get("valid") is not False]
    assert "bytes_up_per_query" in doc["metrics"]
