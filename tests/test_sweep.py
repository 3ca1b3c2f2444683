"""aibench sweep in one process: --values, the sweep record (contract 1), a batch sweep with its knee, thread
scaling, a failing and a refused point, Ctrl-C and --resume, and bad input refused before anything runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench import registry
from aibench.errors import UnavailableError, UsageError
from aibench.results.schema import json_schema
from aibench.spec import Param
from aibench.sweep.record import SCHEMA_NAME, is_sweep_record, load_record
from aibench.sweep.values import default_counts, parse_values
from tests.conftest import TINY_FLAGS

PROBE_ID = "component/sweep-probe"
CALLS: dict[int, int] = {}  # batch -> factory calls, to see which points a resumed sweep measures again


def _probe_factory(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    """A model whose batch takes base_us + per_sample_us × batch (a sleep): throughput rises with the batch
    and so does batch latency, so a latency bound picks a knee that does not depend on this machine's speed."""
    import time

    import torch

    from aibench.sut.task import InferenceTask

    batch = params["batch"]
    CALLS[batch] = CALLS.get(batch, 0) + 1
    if batch == params["fail_at_batch"]:
        raise RuntimeError(f"probe model cannot build batch {batch} (on purpose)")
    if batch == params["refuse_at_batch"]:
        raise UnavailableError(f"batch {batch} does not fit (on purpose)")
    data = torch.zeros(16, 4)
    calls = [0]

    def forward(x: Any) -> Any:
        calls[0] += 1
        if batch == params["interrupt_at_batch"] and calls[0] == 8:  # past the probe and the calibration
            import _thread

            _thread.interrupt_main()
        time.sleep((params["base_us"] + params["per_sample_us"] * x.shape[0]) / 1e6)
        return x

    return InferenceTask(model=forward, device=device, num_samples=16, load_sample=lambda i: data[i])


@pytest.fixture
def probe() -> Iterator[registry.Benchmark]:
    from aibench.loadgen.metrics import LOADGEN_METRICS

    registry.discover()
    bench = registry.Benchmark(
        kind="component", name="sweep-probe", description="sleeps a known time per batch", source="aibench tests",
        runner="loadgen", factory=_probe_factory, metrics=LOADGEN_METRICS, primary_metric="samples_per_s",
        params=registry.ParamSet((
            Param("batch", int, 1, "largest batch", minimum=1),
            Param("device", str, "cpu", "device"),
            Param("base_us", int, 1000, "sleep per batch", minimum=0),
            Param("per_sample_us", int, 1000, "sleep per sample", minimum=0),
            Param("fail_at_batch", int, -1, "raise while building this batch size"),
            Param("refuse_at_batch", int, -1, "refuse (exit-3 kind) this batch size"),
            Param("interrupt_at_batch", int, -1, "send Ctrl-C while running this batch size"),
            Param("mode", str, "a", "a string parameter", choices=("a", "b")),
        )))
    registry.register(bench)
    CALLS.clear()
    try:
        yield bench
    finally:
        registry._REGISTRY.pop(bench.id, None)


QUICK = ["--duration-s", "0.1", "--min-queries", "1"]


def _record(out: Path) -> dict[str, Any]:
    (path,) = out.glob("sweep-*.json")
    doc = json.loads(path.read_text())
    assert is_sweep_record(doc) and doc["schema"] == SCHEMA_NAME and doc["schema_version"] == 1
    for key in ("id", "kind", "benchmark", "param", "values", "points", "knee", "started_at", "finished_at"):
        assert key in doc, key
    for p in doc["points"]:
        assert set(p) >= {"index", "value", "status", "result", "error"}
    return doc


def _result(out: Path, name: str) -> dict[str, Any]:
    doc = json.loads((out / name).read_text())
    jsonschema.validate(doc, json_schema())
    return doc


def test_values_lists_and_ranges() -> None:
    assert parse_values("1,2,4,8") == [1, 2, 4, 8]
    assert parse_values("1:64:x2") == [1, 2, 4, 8, 16, 32, 64]
    assert parse_values("1:10:+4") == [1, 5, 9]
    assert parse_values("2:5") == [2, 3, 4, 5]
    assert parse_values("1, 3:12:x2") == [1, 3, 6, 12]
    assert parse_values("0.5:1.5:0.5", integer=False) == [0.5, 1.0, 1.5]
    assert parse_values("100:400:*2", integer=False) == [100.0, 200.0, 400.0]
    for bad in ("", "1,,2", "a", "1.5", "1:8:x1", "8:1", "1,1", "1:2:x", "1:2:3:4"):
        with pytest.raises(UsageError):
            parse_values(bad)
    assert default_counts(2) == [1, 2] and default_counts(20) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 20]


def test_batch_sweep_names_the_knee(cli, probe: registry.Benchmark, tmp_path: Path) -> None:
    # Batch latency 6, 8, 12, 20 ms (sleeps: 4 ms a batch + 2 ms a sample), so throughput rises with the
    # batch by a third or more at each step (167, 250, 333, 400 samples/s): with a flat throughput (no per-batch
    # cost) noise picked the knee. Within 16 ms the best is 4, with room for the few milliseconds a sleep
    # overshoots on a loaded 2-core machine. 200 samples per point outlast the 0.1 s minimum duration however
    # the calibration went (INVALID points are not knee candidates).
    code, out, err = cli("sweep", "batch", "component", "sweep-probe", "--values", "1:8:x2", "--latency-bound-ms",
                         "16", "--base-us", "4000", "--per-sample-us", "2000", "--duration-s", "0.1",
                         "--min-queries", "200", "--out", str(tmp_path))
    assert code == 0, err
    rec = _record(tmp_path)
    assert rec["kind"] == "param" and rec["param"] == "batch" and rec["values"] == [1, 2, 4, 8]
    assert rec["benchmark"] == PROBE_ID and rec["status"] == "complete"
    assert [p["status"] for p in rec["points"]] == ["ok"] * 4
    assert rec["knee"]["value"] == 4, rec["knee_note"]
    assert rec["knee"]["metric"] == "samples_per_s" and rec["knee"]["latency_metric"] == "batch_latency"
    assert rec["knee"]["latency_bound_ms"] == 16
    rates = []
    for p in rec["points"]:
        r = _result(tmp_path, p["result"])
        assert r["context"]["sweep"] == {"id": rec["id"], "kind": "param", "param": "batch", "value": p["value"],
                                         "index": p["index"], "size": 4}
        assert r["params"]["batch"] == p["value"] and r["metrics"]["batch_latency"]["unit"] == "s"
        assert "speedup" not in r["metrics"]  # not a scaling sweep
        rates.append(r["metrics"]["samples_per_s"]["value"])
    assert rates[3] > rates[0]
    assert "◀ knee" in out and "knee at 4" in out and rec["id"] in out


def test_failing_and_refused_points_are_recorded_and_the_sweep_goes_on(cli, probe: registry.Benchmark,
                                                                       tmp_path: Path) -> None:
    code, _out, err = cli("sweep", "batch", PROBE_ID, "--values", "1,2,4", "--fail-at-batch", "2",
                          "--refuse-at-batch", "4", "--per-sample-us", "0", *QUICK, "--out", str(tmp_path))
    assert code == 1
    assert "does not fit (on purpose)" in err
    rec = _record(tmp_path)
    ok, failed, refused = rec["points"]
    assert ok["status"] == "ok" and failed["status"] == "failed" and refused["status"] == "refused"
    assert "on purpose" in failed["error"] and failed["result"]
    assert refused["result"] is None and "does not fit" in refused["error"]
    r = _result(tmp_path, failed["result"])
    assert r["status"] == "failed" and r["context"]["sweep"]["index"] == 1
    assert rec["status"] == "complete"


def test_ctrl_c_during_a_point_keeps_the_finished_ones(cli, probe: registry.Benchmark, tmp_path: Path) -> None:
    code, _out, err = cli("sweep", "batch", PROBE_ID, "--values", "1,2,4", "--per-sample-us", "0",
                          "--interrupt-at-batch", "2", *QUICK, "--out", str(tmp_path))
    assert code == 130 and "1 of 3 point(s) were finished and kept" in err and "--resume" in err
    rec = _record(tmp_path)
    assert rec["status"] == "interrupted" and rec["finished_at"]
    assert [p["status"] for p in rec["points"]] == ["ok", "interrupted", "pending"]
    assert _result(tmp_path, rec["points"][0]["result"])["status"] == "ok"
    partial = rec["points"][1]["result"]  # the LoadGen runner recorded the interrupted run itself
    assert partial and _result(tmp_path, partial)["status"] == "interrupted"
    assert CALLS == {1: 1, 2: 1}


def test_resume_skips_points_already_done(cli, probe: registry.Benchmark, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["sweep", "batch", PROBE_ID, "--values", "1,2,4", "--per-sample-us", "0", *QUICK, "--out", str(tmp_path)]
    # First session: Ctrl-C during the second point (the model raises it as a real Ctrl-C would arrive).
    real = probe.factory

    def interrupting(params: dict[str, Any], device: Any, dtype: Any) -> Any:
        if params["batch"] == 2:
            raise KeyboardInterrupt
        return real(params, device, dtype)

    monkeypatch.setitem(registry._REGISTRY, PROBE_ID, registry.Benchmark(
        **{**probe.__dict__, "factory": interrupting}))
    code, _out, err = cli(*args)
    assert code == 130 and "1 of 3 point(s) were finished and kept" in err and "--resume" in err
    rec = _record(tmp_path)
    assert rec["status"] == "interrupted"
    assert [p["status"] for p in rec["points"]] == ["ok", "interrupted", "pending"]
    kept = rec["points"][0]["result"]
    before = (tmp_path / kept).read_text()
    # Second session, same sweep: only the points not done are measured; the first result is untouched.
    monkeypatch.setitem(registry._REGISTRY, PROBE_ID, probe)
    CALLS.clear()
    code, _out, err = cli(*args, "--resume")
    assert code == 0, err
    assert CALLS == {2: 1, 4: 1}
    rec2 = _record(tmp_path)
    assert rec2["id"] == rec["id"] and rec2["status"] == "complete" and len(rec2["sessions"]) == 2
    assert rec2["sessions"][1]["reused_points"] == 1
    assert rec2["points"][0]["result"] == kept and (tmp_path / kept).read_text() == before
    assert [p["status"] for p in rec2["points"]] == ["ok"] * 3
    assert "resuming sweep" in err
    # Resuming a finished sweep measures nothing.
    CALLS.clear()
    code, _out, err = cli(*args, "--resume")
    assert code == 0 and CALLS == {}


def test_thread_sweep_reports_speedup_and_efficiency(cli, tmp_path: Path) -> None:
    code, out, err = cli("sweep", "threads", "micro/relu", "--batch", "2", "--channels", "3", "--height", "4",
                         "--width", "5", "--max", "2", *TINY_FLAGS, "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    rec, results = doc["sweep"], doc["results"]
    assert rec["kind"] == "threads" and rec["values"] == [1, 2] and rec["scaling"]["metric"] == "time_median"
    assert rec == _record(tmp_path)
    for p, r in zip(rec["points"], results, strict=True):
        jsonschema.validate(r, json_schema())
        assert r["config"]["threads"] == p["value"] and r["method"]["threads"]["threads"] == p["value"]
        assert r["context"]["sweep"]["kind"] == "threads"
        assert r["metrics"]["speedup"]["unit"] == "x" and r["metrics"]["efficiency"]["unit"] == "ratio"
    s0, s1 = (r["metrics"]["speedup"]["value"] for r in results)
    e1 = results[1]["metrics"]["efficiency"]["value"]
    assert s0 == pytest.approx(1.0) and e1 == pytest.approx(s1 / 2)
    t0, t1 = (r["metrics"]["time_median"]["value"] for r in results)
    assert s1 == pytest.approx(t0 / t1)
    # Each point's spread and noisy flag (record and table), and the speedup's interval from the points' own.
    for p, r in zip(rec["points"], results, strict=True):
        summary = r["samples"]["time"]["summary"]
        assert p["spread"] == pytest.approx(summary["iqr_over_median"]) and p["noisy"] == r["noisy"]
    sp = results[1]["metrics"]["speedup"]
    (b_lo, b_hi), (c_lo, c_hi) = (r["samples"]["time"]["summary"]["median_ci95"] for r in results)
    assert sp["ci95"] == pytest.approx([b_lo / c_hi, b_hi / c_lo]) and sp["ci95"][0] <= s1 <= sp["ci95"][1]
    assert results[1]["metrics"]["efficiency"]["ci95"] == pytest.approx([x / 2 for x in sp["ci95"]])
    assert results[0]["metrics"]["speedup"]["ci95"] == [1.0, 1.0]
    assert sp["noisy"] == (results[0]["noisy"] or results[1]["noisy"]) and "ci_method" in sp
    assert "spread" in err and "95% interval" in err
    # The HTML report draws the speedup with its interval, and names the points it is noisy at.
    from aibench.report.html_report import render_html
    from aibench.report.load import load_inputs

    page = render_html(load_inputs([tmp_path]), title="t")
    assert "95% interval" in page
    assert ("speedup rests on a noisy point" in page) == bool(sp["noisy"])


def _kernel_result(times: list[float], threads: int) -> Any:
    from aibench.results.schema import Result, metric
    from aibench.results.stats import summarize

    s = summarize(times)
    r = Result(benchmark={"id": "micro/gemm"}, params={}, config_hash="h", primary_metric="time_median",
               metrics={"time_median": metric(s["median"], "s", "lower", statistic="median", of="samples.time")},
               noisy=s["noisy"],
               samples={"time": {"unit": "s", "values": times, "summary": s}}, context={"threads": threads})
    return r


def test_noisy_points_mark_their_spread_and_the_speedup_built_on_them() -> None:
    """The case a user hit: a 2.69x speedup on 2 CPUs from points whose IQR was 33-122% of the median, each
    shown 'ok'. Now the table shows the spread, 'noisy', and the speedup's interval."""
    from rich.console import Console

    from aibench.sweep import analysis
    from aibench.sweep.display import sweep_table
    from aibench.sweep.engine import SweepPlan
    from aibench.sweep.record import Point, SweepRecord

    base = _kernel_result([1.0, 1.1, 1.6, 2.4, 0.9, 1.3, 2.2, 1.0, 3.0, 1.2], 1)
    fast = _kernel_result([0.30, 0.32, 0.31, 0.30, 0.33, 0.29, 0.31, 0.30, 0.32, 0.31], 2)
    for r, v in ((base, 1), (fast, 2)):
        analysis.add_scaling(r, float(v), base, 1.0, "time_median", "lower", "threads")
    sp = fast.metrics["speedup"]
    assert base.noisy and not fast.noisy and sp["noisy"] is True
    lo, hi = sp["ci95"]
    assert lo < sp["value"] < hi and hi / lo > 1.5  # the noisy baseline makes the interval wide
    assert analysis.point_spread(base, "time_median")["spread"] == pytest.approx(
        base.samples["time"]["summary"]["iqr_over_median"])
    plan = SweepPlan(kind="threads", bench=registry.get("micro/gemm"), param="threads", values=[1, 2], points=[],
                     definition={}, scaling={"metric": "time_median", "direction": "lower", "unit": "threads"})
    record = SweepRecord(id="t", kind="threads", benchmark="micro/gemm", param="threads", values=[1, 2],
                         points=[Point(0, 1, "ok"), Point(1, 2, "ok")])
    console = Console(width=250, record=True)
    console.print(sweep_table(plan, record, [base, fast]))
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert "noisy" in rows[0] and f"{base.samples['time']['summary']['iqr_over_median']:.0%}" in rows[0]
    assert f"{sp['value']:.2f}x [{lo:.2f}–{hi:.2f}x] noisy" in rows[1]
    assert "95% interval" in text


def test_a_figure_without_samples_gives_no_interval_and_says_why(probe: registry.Benchmark) -> None:
    from aibench.results.schema import Result, metric
    from aibench.sweep import analysis

    def offline(rate: float) -> Result:
        return Result(benchmark={"id": PROBE_ID}, params={}, config_hash="h", load_scenario="offline",
                      primary_metric="samples_per_s",
                      metrics={"samples_per_s": metric(rate, "samples/s", "higher", statistic="rate", of=None)})

    a, b = offline(100.0), offline(180.0)
    for r, v in ((a, 1.0), (b, 2.0)):
        analysis.add_scaling(r, v, a, 1.0, "samples_per_s", "higher", "devices")
    assert b.metrics["speedup"]["value"] == pytest.approx(1.8)
    assert "ci95" not in b.metrics["speedup"] and "ci95" not in a.metrics["speedup"]  # not even the baseline's
    assert "one figure per run" in b.metrics["speedup"]["ci_unavailable"]
    assert analysis.point_spread(b, "samples_per_s")["spread"] is None
    from rich.console import Console

    from aibench.sweep.display import sweep_table
    from aibench.sweep.engine import SweepPlan
    from aibench.sweep.record import Point, SweepRecord

    plan = SweepPlan(kind="gpus", bench=probe, param="devices", values=[1, 2], points=[], definition={},
                     scaling={"metric": "samples_per_s", "direction": "higher", "unit": "devices"})
    record = SweepRecord(id="g", kind="gpus", benchmark=PROBE_ID, param="devices", values=[1, 2],
                         points=[Point(0, 1, "ok"), Point(1, 2, "ok")])
    console = Console(width=250, record=True)
    console.print(sweep_table(plan, record, [a, b]))
    text = console.export_text()
    assert "carry no interval" in text and "95% interval" not in text and "1.80x" in text


def test_a_sweep_already_running_is_not_measured_twice(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 'sweep --resume' of one sweep used to measure every point twice: the second is now refused (exit 2),
    naming the sweep that runs, while the first goes on."""
    from aibench import harness

    args = ["sweep", "m", "micro/gemm", "--values", "8,16", "--n", "8", "--k", "8", *TINY_FLAGS,
            "--out", str(tmp_path)]
    real = harness.execute
    calls: list[int] = []
    nested: list[tuple[int, str]] = []

    def execute(run: Any, opts: Any) -> Any:
        calls.append(run.params["m"])
        if len(calls) == 1:  # while the first point is measured, a second process resumes the same sweep
            code, _out, err = cli(*args, "--resume")
            nested.append((code, err))
        return real(run, opts)

    monkeypatch.setattr(harness, "execute", execute)
    code, _out, err = cli(*args, "--resume")
    assert code == 0, err
    ((n_code, n_err),) = nested
    rec = _record(tmp_path)
    refusal = n_err.strip().splitlines()[-1]  # (the first's own lines so far are captured with it)
    assert n_code == 2 and refusal.startswith("aibench: error: this sweep is already running")
    assert rec["id"] in refusal and "aibench: error" not in n_err.replace(refusal, "")
    assert calls == [8, 16]  # each point once
    assert rec["status"] == "complete"
    # Once it has ended, the lock is free: resuming the finished sweep measures nothing and succeeds.
    code, _out, err = cli(*args, "--resume")
    assert code == 0 and calls == [8, 16], err


def test_loadgen_option_sweep_and_dry_run(cli, probe: registry.Benchmark, tmp_path: Path) -> None:
    code, out, err = cli("sweep", "target-qps", PROBE_ID, "--scenario", "server", "--values", "20,40",
                         "--latency-bound-ms", "50", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    assert "0: target_qps=20" in out and "1: target_qps=40" in out and not list(tmp_path.glob("*"))
    code, out, err = cli("sweep", "target_qps", PROBE_ID, "--scenario", "server", "--values", "20,40",
                         "--latency-bound-ms", "50", "--per-sample-us", "0", *QUICK, "--out", str(tmp_path),
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    targets = [r["config"]["loadgen"]["target_qps"] for r in doc["results"]]
    assert targets == [20.0, 40.0]
    assert all(r["config"]["loadgen"]["latency_bound_ms"] == 50 for r in doc["results"])  # LoadGen's bound too
    assert doc["sweep"]["knee_request"]["latency_metric"] == "latency_p99"


@pytest.mark.parametrize("args, message", [
    (["nosuch", PROBE_ID, "--values", "1"], "cannot sweep 'nosuch'"),
    (["bach", PROBE_ID, "--values", "1"], "did you mean batch"),
    (["batch", PROBE_ID], "give the values of --batch"),
    (["batch", PROBE_ID, "--values", "1,2", "--batch", "4"], "is what this sweep varies"),
    (["batch", PROBE_ID, "--values", "0,1"], "batch=0: --batch must be >= 1"),
    (["mode", PROBE_ID, "--values", "1"], "a sweep varies a number"),
    (["batch", PROBE_ID, "--values", "1,2", "--latency-bound-ms", "5", "--latency-metric", "p99"],
     "in Offline every sample is issued at once"),
    (["threads", PROBE_ID, "--threads", "2"], "a thread sweep sets --threads itself"),
    (["batch", PROBE_ID, "--values", "1", "--max", "2"], "--max applies to"),
    (["batch", PROBE_ID, "--values", "1", "--devices", "cpu:2"], "apply to 'aibench sweep gpus'"),
    (["gpus", PROBE_ID, "--devices", "cpu:2", "--nnodes", "2"], "inference scales out within one machine"),
    (["gpus", "micro/relu", "--devices", "cpu:2"], "is none of them"),
    (["gpus", "micro/allreduce", "--devices", "cpu:2", "--ranks", "4"], "drop --ranks"),
    (["gpus", "micro/allreduce", "--devices", "cpu:2", "--instances-per-device", "2"], "take one device each"),
    (["gpus", "micro/allreduce", "--devices", "cpu:1", "--nnodes", "2"], "needs --rdzv-endpoint"),
    (["gpus", "micro/allreduce", "--devices", "cpu:1", "--nnodes", "2", "--node-rank", "2",
      "--rdzv-endpoint", "127.0.0.1:1"], "must be below --nnodes"),
    (["batch", "micro/*", "--values", "1"], "one benchmark"),
    (["gpus", PROBE_ID, "--devices", "tpu:3"], "--devices must be"),
    (["batch", "micro/relu", "--values", "1,2", "--latency-bound-ms", "5"], "load-generated"),
])
def test_bad_input_is_refused_before_anything_runs(cli, probe: registry.Benchmark, tmp_path: Path,
                                                    args: list[str], message: str) -> None:
    code, _out, err = cli("sweep", *args, "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_record_round_trip_and_readers_can_tell_it_from_a_result(tmp_path: Path) -> None:
    from aibench.errors import ResultIOError
    from aibench.results.store import load_results
    from aibench.sweep.record import Point, SweepRecord, write_record

    rec = SweepRecord(id="x-batch-1-2", kind="param", benchmark=PROBE_ID, param="batch", values=[1, 2],
                      points=[Point(0, 1), Point(1, 2)])
    path = write_record(rec, tmp_path)
    assert path.name == "sweep-x-batch-1-2.json" and load_record(path).to_dict() == rec.to_dict()
    assert load_results([tmp_path], skip_foreign=True) == []  # folder readers skip it
    with pytest.raises(ResultIOError):
        load_results([path])


def test_gpus_plans_devices_and_instances_and_refuses_missing_gpus(cli, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pos = ["component/pos", "--batch", "3", "--dry-run", "--out", str(tmp_path)]
    code, out, err = cli("sweep", "gpus", *pos, "--devices", "cpu:3", "--values", "1,3")
    assert code == 0, err
    assert "0: devices=1:" in out and "(workers on cpu)" in out and "(workers on cpu, cpu, cpu)" in out
    code, out, err = cli("sweep", "gpus", *pos, "--devices", "cpu:2", "--instances-per-device", "1,2")
    assert code == 0, err
    assert "0: instances_per_device=1:" in out and "1: instances_per_device=2:" in out
    assert "(workers on cpu, cpu, cpu, cpu)" in out
    # GPUs this machine lacks are refused up front (exit 3), whatever the spelling.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, out, err = cli("sweep", "gpus", *pos, "--devices", "cuda:0,1", "--instances-per-device", "2")
    assert code == 0, err
    assert "(workers on cuda:0, cuda:0)" in out and "(workers on cuda:0, cuda:0, cuda:1, cuda:1)" in out
    code, _out, err = cli("sweep", "gpus", *pos, "--devices", "cuda:2")
    assert code == 3 and "this machine has 2 CUDA device(s)" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, _out, err = cli("sweep", "gpus", *pos)
    assert code == 3 and "use --devices cpu:N" in err
    code, _out, err = cli("sweep", "gpus", *pos, "--devices", "2")
    assert code == 3 and "no CUDA GPU" in err
