"""Synthetic result files, sweep records and comparison files for the report tests, written by hand from
the contracts (README "Result files", contracts 1 and 2) so the report is tested without measuring anything.
Names and texts are hostile on purpose: HTML, SQL, spreadsheet formulas, TeX, terminal escapes, unicode."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from aibench.results.parts import stage_parts
from aibench.results.schema import Result, metric
from aibench.results.stats import summarize
from aibench.results.store import write_result

XSS = "<script>alert(1)</script>"
SQL = '"; DROP TABLE results; --'
UNICODE = "ünïcødé-β-🚀"
FORMULA = "=HYPERLINK(\"http://evil.example\",\"x\")"
TEX = "$\\frac{a}{b}$ 50%"
ANSI = "\x1b[31mred\x1b[0m"

MICRO_ID = f"micro/{XSS}"
LG_ID = f"component/{SQL}"
SWEEP_ID = f"component/{UNICODE}"

MACHINE = {
    "machine": {"hostname": f"host{XSS}", "os": "Linux-test", "arch": "x86_64", "cpu_model": "Test CPU <b>9000</b>",
                "logical_cpus": 2, "usable_cpus": 2, "memory_bytes": 8 << 30, "virtualised": True},
    "software": {"python": "3.11.7", "aibench": "0.1.0", "torch": "2.11.0", "blas": "mkl", "gpus": [],
                 "env": {"OMP_NUM_THREADS": f"1{XSS}"}},
}
CODE = {"package_version": "0.1.0", "git_commit": "0123456789abcdef0123", "git_dirty": True}


def _result(bench_id: str, params: dict[str, Any], metrics: dict[str, Any], primary: str, started: str,
            **kw: Any) -> Result:
    kind, name = bench_id.split("/", 1)
    return Result(benchmark={"id": bench_id, "kind": kind, "name": name, "source": "tests", "description": XSS},
                  params=params, config_hash=hashlib.sha256(
                      json.dumps([bench_id, params], sort_keys=True).encode()).hexdigest()[:16],
                  primary_metric=primary, metrics=metrics, machine=MACHINE, code=CODE,
                  load={"loadavg_start": [0.5, 0.4, 0.3], "loadavg_end": [0.7, 0.5, 0.3]},
                  started_at=started, finished_at=started, duration_s=1.5, **kw)


def micro(batch: int, started: str, energy: float | None = 0.002) -> Result:
    rng = random.Random(batch)
    times = [0.001 * batch * (1 + 0.02 * rng.random()) for _ in range(20)]
    summary = summarize(times)
    mean = {"statistic": "mean", "of": None}
    energy_metric = (metric(energy, "J", "lower", provenance="measured", scope="cpu", **mean) if energy is not None
                     else metric(None, "J", "lower", unavailable=f"no energy counter: no_powercap {XSS}", **mean))
    return _result(MICRO_ID, {"batch": batch, "note": SQL, "formula": FORMULA, "tex": TEX, "device": "cpu"}, {
        "time_median": metric(summary["median"], "s", "lower", statistic="median", of="samples.time"),
        "gflops": metric(2.0 * batch / summary["median"] / 1e9, "GFLOP/s", "higher", statistic="rate",
                         of="samples.time", inverse_of="median", work=2.0 * batch / 1e9),
        "energy_per_call": energy_metric,
    }, "time_median", started, config={"threads": 1},
        samples={"time": {"unit": "s", "per": "call", "values": times, "summary": summary}})


def loadgen(batch: int, started: str, invalid: bool = False, bench_id: str = LG_ID,
            sweep: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
            stages: bool = False) -> Result:
    rng = random.Random(batch + 100)
    lat = sorted(0.002 * batch * (1 + rng.expovariate(3.0)) for _ in range(300))
    s = summarize(lat)
    pct = {"p50": s["median"], "p90": s["p90"], "p95": s["p95"], "p97": s["p95"] * 1.01, "p99": s["p99"],
           "p99_9": s["p99_9"]}
    metrics = {f"latency_{k}": metric(v, "s", "lower", statistic=k, of="samples.latency") for k, v in pct.items()}
    metrics["samples_per_s"] = metric(500.0 * batch ** 0.5, "samples/s", "higher", statistic="rate", of=None)
    metrics["energy_per_sample"] = metric(None, "J", "lower", unavailable="no energy counter: no_powercap",
                                          statistic="mean", of=None)
    parts: dict[str, Any] = {}
    if stages:  # a --breakdown run: each stage's time per batch, and the shares declared as ratios of them
        parts["stage"] = stage_parts({
            f"pre{XSS}": [0.0001 * batch * (1 + 0.1 * rng.random()) for _ in range(50)],
            "dnn": [0.002 * batch * (1 + 0.3 * rng.random()) for _ in range(50)],
            "post": [0.00002 * batch * (1 + rng.random()) for _ in range(50)]})
        whole = sum(p["total"] for p in parts["stage"].values())
        for name, p in parts["stage"].items():
            metrics[f"share_{name}"] = metric(p["total"] / whole, "fraction", "lower", statistic="ratio",
                                              of=f"parts.stage.{name}")
    metrics.update(extra or {})
    validity = {"valid": not invalid, "result": "INVALID" if invalid else "VALID",
                "reasons": [f"min duration not met {XSS}"] if invalid else []}
    if invalid:
        for entry in metrics.values():
            if entry["value"] is not None:
                entry["valid"] = False
    context: dict[str, Any] = {"sweep": sweep} if sweep else {}
    return _result(bench_id, {"batch": batch, "stage": "dnn"}, metrics, "samples_per_s", started,
                   config={"threads": 2, "loadgen": {"scenario": "offline"}}, load_scenario="offline",
                   validity=validity, parts=parts,
                   samples={"latency": {"unit": "s", "per": "sample", "values": lat, "summary": s, "seen": 600}},
                   context=context)


def failed(started: str) -> Result:
    return _result(MICRO_ID, {"batch": 64, "note": SQL, "formula": FORMULA, "tex": TEX, "device": "cpu"}, {},
                   "time_median", started, status="failed",
                   error={"type": "RuntimeError", "message": f"exploded </td>{XSS} {ANSI}", "traceback": "tb"})


def write_fixture(folder: Path) -> dict[str, Any]:
    """Write a folder that exercises every section of the report; return what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"results": []}

    def put(r: Result) -> Path:
        path = write_result(r, folder)
        written["results"].append(path)
        return path

    for i, b in enumerate((1, 2, 4)):
        put(micro(b, f"2026-01-01T00:00:0{i}.000Z"))
    put(micro(8, "2026-01-01T00:00:05.000Z", energy=None))
    put(failed("2026-01-01T00:00:06.000Z"))
    for i, b in enumerate((1, 4)):
        put(loadgen(b, f"2026-01-01T00:01:0{i}.000Z", stages=b == 4))
    written["invalid"] = put(loadgen(8, "2026-01-01T00:01:05.000Z", invalid=True))

    # A threads scaling sweep (contract 1) whose last point failed, and a batch sweep with a knee.
    sweep_paths = []
    for i, t in enumerate((1, 2)):
        speed = 1.0 + 0.8 * i
        sweep_paths.append(put(loadgen(4, f"2026-01-01T00:02:0{i}.000Z", bench_id=SWEEP_ID,
                                       sweep={"id": "threads-1", "kind": "threads", "param": "threads", "value": t,
                                              "index": i, "size": 3},
                                       extra={"speedup": metric(speed, "x", "higher", statistic="ratio", of=None),
                                              "efficiency": metric(speed / t, "ratio", "higher", statistic="ratio",
                                                                   of=None)})))
    (folder / "sweep-threads-1.json").write_text(json.dumps({
        "schema": "aibench-sweep", "schema_version": 1, "id": "threads-1", "kind": "threads", "benchmark": SWEEP_ID,
        "param": "threads", "values": [1, 2, 4],
        "points": [{"index": 0, "value": 1, "status": "ok", "result": sweep_paths[0].name, "error": None},
                   {"index": 1, "value": 2, "status": "ok", "result": sweep_paths[1].name, "error": None},
                   {"index": 2, "value": 4, "status": "failed", "result": None, "error": f"OOM {XSS}"}],
        "knee": {"value": 2, "metric": "samples_per_s", "latency_metric": "latency_p99", "latency_bound_ms": 50},
        "started_at": "2026-01-01T00:02:00Z", "finished_at": "2026-01-01T00:03:00Z"}))
    for i, b in enumerate((1, 2, 4, 8)):
        put(loadgen(b, f"2026-01-01T00:04:0{i}.000Z", bench_id=SWEEP_ID,
                    sweep={"id": "batch-1", "kind": "param", "param": "batch", "value": b, "index": i, "size": 4}))
    (folder / "sweep-batch-1.json").write_text(json.dumps({
        "schema": "aibench-sweep", "schema_version": 1, "id": "batch-1", "kind": "param", "benchmark": SWEEP_ID,
        "param": "batch", "values": [1, 2, 4, 8], "points": [], "knee": {
            "value": 4, "metric": "samples_per_s", "latency_metric": "latency_p99", "latency_bound_ms": 60},
        "started_at": "2026-01-01T00:04:00Z", "finished_at": "2026-01-01T00:05:00Z"}))

    pairs = [
        {"benchmark": MICRO_ID, "config_hash": "a" * 16, "metric": "time_median", "unit": "s", "direction": "lower",
         "baseline": 0.001, "candidate": 0.0012, "ratio": 1.2, "ci": [1.1, 1.3], "confidence": 0.95,
         "verdict": "worse", "reason": None},
        {"benchmark": LG_ID, "config_hash": "b" * 16, "metric": "samples_per_s", "unit": "samples/s",
         "direction": "higher", "baseline": 500.0, "candidate": 520.0, "ratio": 1.04, "ci": [0.97, 1.11],
         "confidence": 0.95, "verdict": "inconclusive", "reason": f"CI spans 1 {XSS}"},
        {"benchmark": SWEEP_ID, "config_hash": "c" * 16, "metric": "samples_per_s", "unit": "samples/s",
         "direction": "higher", "baseline": None, "candidate": 3.0, "ratio": None, "ci": None, "confidence": 0.95,
         "verdict": "refused", "reason": "baseline INVALID"},
    ]
    comparison = {"schema": "aibench-comparison", "schema_version": 1, "baseline": f"main {XSS}",
                  "candidate": f"pr-7 {UNICODE}", "created_at": "2026-01-02T00:00:00Z", "pairs": pairs,
                  "warnings": [f"different machines {XSS}"]}
    gate = {**comparison, "schema": "aibench-gate", "outcome": "regression", "rounds": 10,
            "pairs": [{**p, "rounds": [1.1, 1.2, 1.3]} for p in pairs[:1]]}
    cmp_dir = folder.parent / f"{folder.name}-cmp"
    cmp_dir.mkdir(exist_ok=True)
    written["comparison"] = cmp_dir / "compare.json"
    written["comparison"].write_text(json.dumps(comparison))
    written["gate"] = cmp_dir / "gate.json"
    written["gate"].write_text(json.dumps(gate))

    # What a folder reader must skip: foreign JSON, broken JSON, another schema version, LoadGen's logs.
    (folder / "foreign.json").write_text('{"hello": 1}')
    (folder / "list.json").write_text("[1, 2]")
    (folder / "broken.json").write_text("{not json")
    other = loadgen(1, "2026-01-01T00:09:00.000Z").to_dict() | {"schema_version": 99}
    (folder / "future.json").write_text(json.dumps(other))
    logs = folder / "component-x.loadgen"
    logs.mkdir()
    (logs / "mlperf_log_trace.json").write_text("[]")
    written["skipped"] = 4
    return written
