"""Scaling across processes: 2 CPU inference workers under one LoadGen, a worker that dies mid-run, the
all-reduce over two torchrun "nodes" on loopback, and DistributedDataParallel training over 2 processes.

These start real processes (each imports torch: seconds apiece), so each test keeps to one or two short
launches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench import registry
from aibench.results.schema import json_schema

POS_TINY = ["--batch", "3", "--num-samples", "3", "--words", "7", "--data", "synthetic"]
REPO = Path(__file__).resolve().parents[1]


def _record(out: Path) -> dict[str, Any]:
    (path,) = out.glob("sweep-*.json")
    return json.loads(path.read_text())


def _results(out: Path, rec: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for p in rec["points"]:
        doc = json.loads((out / p["result"]).read_text())
        jsonschema.validate(doc, json_schema())
        docs.append(doc)
    return docs


def test_two_cpu_worker_processes_under_one_loadgen(cli, tmp_path: Path) -> None:
    code, out, err = cli("sweep", "gpus", "component/pos", "--devices", "cpu:2", *POS_TINY, "--duration-s", "0.3",
                         "--out", str(tmp_path))
    assert code == 0, err
    rec = _record(tmp_path)
    assert rec["kind"] == "gpus" and rec["param"] == "devices" and rec["values"] == [1, 2]
    assert rec["scaling"] == {"metric": "samples_per_s", "direction": "higher", "unit": "devices",
                              "baseline_index": 0}
    one, two = _results(tmp_path, rec)
    for doc, n in ((one, 1), (two, 2)):
        assert doc["status"] == "ok", doc["error"]
        assert doc["config"]["scale_out"] == {"devices": ["cpu"] * n, "instances_per_device": 1, "workers": n,
                                              "worker_threads": 1}
        assert doc["config"]["threads"] == 1 and doc["load_scenario"] == "offline"
        so = doc["context"]["scale_out"]
        assert [w["device"] for w in so["workers"]] == ["cpu"] * n and all(w["threads"] == 1 for w in so["workers"])
        stats = so["worker_stats"]
        assert len(stats) == n and all(s["samples"] > 0 and s["busy_s"] > 0 for s in stats)
        assert len({w["pid"] for w in so["workers"]} | {os.getpid()}) == n + 1  # worker processes, not this one
        assert doc["method"]["adapter"]["workers"] == n and doc["method"]["adapter"]["max_batch"] == 3
        assert doc["metrics"]["samples_per_s"]["value"] > 0
    assert one["config_hash"] != two["config_hash"]
    assert one["metrics"]["speedup"]["value"] == pytest.approx(1.0)
    s2, e2 = two["metrics"]["speedup"]["value"], two["metrics"]["efficiency"]["value"]
    assert s2 == pytest.approx(two["metrics"]["samples_per_s"]["value"] / one["metrics"]["samples_per_s"]["value"])
    assert e2 == pytest.approx(s2 / 2)
    assert "speedup" in out and "efficiency" in out


def test_a_worker_that_dies_fails_the_run_promptly(tmp_path: Path) -> None:
    from aibench.harness import PlannedRun, RunOptions, execute
    from aibench.loadgen.settings import LoadgenOptions
    from aibench.sut.pool import WorkerConfig, WorkerPool
    from aibench.sweep.scaleout import RUNNER, PoolRunOptions

    bench = registry.get("component/pos")
    params = bench.resolve({"batch": 3, "num_samples": 3, "words": 7, "data": "synthetic"})
    pool = WorkerPool([WorkerConfig(i, "cpu", 1, bench.id, params) for i in range(2)]).start()
    try:
        victim = pool.workers[1].process.pid
        opts = RunOptions(threads=1).with_options(
            loadgen=LoadgenOptions(duration_s=60.0, out_dir=tmp_path),
            scale_out=PoolRunOptions(pool=pool, workers=(0, 1), scale={"devices": ["cpu", "cpu"], "workers": 2}))
        def kill_once_loadgen_runs() -> None:  # its log folder appears when the test starts
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob("*.loadgen")) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_loadgen_runs, daemon=True)
        t0 = time.monotonic()
        killer.start()
        result = execute(PlannedRun(replace(bench, runner=RUNNER), params, {}), opts)
        elapsed = time.monotonic() - t0
        killer.join()
    finally:
        pool.close()
    assert result.status == "failed", result.metrics
    assert f"pid {victim}" in result.error["message"] and "exited with code -9" in result.error["message"]
    assert elapsed < 30, f"took {elapsed:.1f} s for a 60 s run: the dead worker was waited on"
    assert Path(result.method["loadgen_logs"], "mlperf_log_detail.txt").is_file()  # LoadGen's partial logs
    assert not pool.workers  # closed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduce_over_two_nodes_on_loopback(cli, tmp_path: Path) -> None:
    """Two 'machines': node 1 a separate aibench process, node 0 this one, meeting at one rendezvous."""
    port = _free_port()
    common = ["sweep", "gpus", "micro/allreduce", "--devices", "cpu:1", "--nnodes", "2",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "--count", "1000", "--max-time", "0.2", "--warmup", "0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    node1 = subprocess.Popen([sys.executable, "-m", "aibench", *common, "--node-rank", "1",
                              "--out", str(tmp_path / "node1")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        code, _out, err = cli(*common, "--node-rank", "0", "--out", str(tmp_path / "node0"))
        _out1, err1 = node1.communicate(timeout=180)
    finally:
        if node1.poll() is None:
            node1.kill()
    assert code == 0, err
    assert node1.returncode == 0, err1
    rec0 = _record(tmp_path / "node0")
    (doc,) = _results(tmp_path / "node0", rec0)
    assert doc["status"] == "ok", doc["error"]
    assert doc["config"]["distributed"]["world_size"] == 2 and doc["config"]["distributed"]["nnodes"] == 2
    assert doc["params"]["ranks"] == 2 and doc["context"]["collective"]["ranks_from"] == "torchrun process group"
    assert doc["context"]["distributed"]["master"] == f"127.0.0.1:{port}"
    assert doc["metrics"]["busbw"]["value"] > 0 and doc["metrics"]["time_median"]["value"] > 0
    assert "unavailable" in doc["metrics"]["speedup"]  # an all-reduce does not speed up with ranks
    rec1 = _record(tmp_path / "node1")
    assert rec1["points"][0]["status"] == "ok" and rec1["points"][0]["result"] is None
    assert "node 0" in rec1["points"][0]["note"]
    assert not list((tmp_path / "node1").glob("micro-*.json"))


def test_ddp_training_over_two_processes(cli, tmp_path: Path) -> None:
    training = [b for b in registry.all_benchmarks() if b.runner == "training"]
    if not training:
        pytest.skip("no training benchmark is registered (the Fathom workloads, branch fathom, are not merged)")
    bench = next((b for b in training if b.name.endswith("lenet")), training[0])
    flags = [x for k, v in bench.tiny.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    # One launch of 2 ranks (the 1-rank point is the same machinery with a world of one).
    code, _out, err = cli("sweep", "gpus", bench.id, "--devices", "cpu:2", "--values", "2", *flags,
                          "--out", str(tmp_path))
    assert code == 0, err
    rec = _record(tmp_path)
    (doc,) = _results(tmp_path, rec)
    assert doc["status"] == "ok", doc["error"]
    dist = doc["config"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["wrapper"] == "DistributedDataParallel"
    per_rank = doc["metrics"]["samples_per_s_per_rank"]["value"]
    assert doc["metrics"]["samples_per_s"]["value"] == pytest.approx(2 * per_rank)
    assert doc["context"]["task"]["ddp"]["world_size"] == 2 and doc["context"]["distributed"]["rank"] == 0
    assert doc["metrics"]["speedup"]["value"] == pytest.approx(1.0)  # the sweep's first point
