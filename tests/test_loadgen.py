"""The load generator: every scenario with a tiny model, results from LoadGen's detail log, INVALID runs,
refused settings, faults (failed model, Ctrl-C), find-peak, closed-loop users, and the CLI."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from aibench.errors import UnavailableError, UsageError
from aibench.harness import RunOptions, execute, plan
from aibench.loadgen.settings import LoadgenOptions, Sizing, check_memory

LATENCY_FIELDS = ("latency_p50", "latency_p90", "latency_p95", "latency_p97", "latency_p99", "latency_p99_9",
                  "latency_min", "latency_max", "latency_mean")
RATE_FIELDS = ("samples_per_s", "queries_per_s", "samples_per_s_no_overhead", "queries_per_s_no_overhead")


def _run(bench: Any, tmp_path: Path, params: dict[str, Any] | None = None, **lg: Any) -> Any:
    lg.setdefault("duration_s", 0.15)
    opts = RunOptions().with_options(loadgen=LoadgenOptions(out_dir=tmp_path, **lg))
    return execute(plan(bench, params or {})[0], opts)


def _check_common(r: Any, scenario: str) -> None:
    assert r.status == "ok", r.error
    assert r.load_scenario == scenario
    assert r.config["loadgen"]["scenario"] == scenario
    assert r.method["profile"] == "quick" and "loadgen_seeds" in r.method
    for name in LATENCY_FIELDS:
        m = r.metrics[name]
        assert m["value"] is not None and m["value"] >= 0 and m["unit"] == "s", name
    assert r.metrics["latency_min"]["value"] <= r.metrics["latency_p50"]["value"] <= r.metrics["latency_max"]["value"]
    for name in RATE_FIELDS:
        assert name in r.metrics
        m = r.metrics[name]
        assert (m["value"] is not None and m["value"] > 0) or m.get("unavailable"), name
    v = r.validity
    assert v["result"] in ("VALID", "INVALID")
    assert set(v["constraints"]) >= {"min_duration", "min_queries", "early_stopping"}
    assert v["valid"] == (v["result"] == "VALID")
    if not v["valid"]:
        assert v["summary"].startswith("INVALID") and v["reasons"]
    log_dir = Path(v["log_dir"])
    assert (log_dir / "mlperf_log_detail.txt").is_file() and (log_dir / "mlperf_log_summary.txt").is_file()
    assert log_dir.parent == Path(r.method["loadgen_logs"]).parent
    assert r.method["effective_settings"]["min_duration_ms"] == 150
    assert r.method["requested_settings"]["min_duration_ms"] == 150
    lat = r.samples["latency"]
    assert 0 < len(lat["values"]) <= 10_000 and lat["summary"]["n"] == len(lat["values"]) and "note" in lat


def test_offline(tiny_bench: Any, tmp_path: Path) -> None:
    r = _run(tiny_bench, tmp_path, scenario="offline")
    _check_common(r, "offline")
    assert r.primary_metric == "samples_per_s"
    assert r.metrics["samples_per_s"]["value"] > 0
    assert r.metrics["samples_per_s_no_overhead"]["value"] is None
    assert r.method["adapter"]["mean_batch"] > 1  # batched up to --batch 4
    assert r.method["query_memory_estimate"]["estimated_bytes"] > 0


def test_single_stream(tiny_bench: Any, tmp_path: Path) -> None:
    r = _run(tiny_bench, tmp_path, scenario="single-stream")
    _check_common(r, "single-stream")
    assert r.primary_metric == "latency_early_stopping"
    assert r.metrics["queries_per_s_no_overhead"]["value"] >= r.metrics["queries_per_s"]["value"] * 0.5
    assert r.method["adapter"]["max_batch"] == 4 and r.method["adapter"]["mean_batch"] == 1


def test_multi_stream(tiny_bench: Any, tmp_path: Path) -> None:
    r = _run(tiny_bench, tmp_path, scenario="multi-stream", samples_per_query=4)
    _check_common(r, "multi-stream")
    assert r.config["loadgen"]["samples_per_query"] == 4
    assert r.method["effective_settings"]["samples_per_query"] == 4
    q = r.metrics["queries_per_s"]["value"]
    assert r.metrics["samples_per_s"]["value"] == pytest.approx(4 * q)


def test_server(tiny_bench: Any, tmp_path: Path) -> None:
    r = _run(tiny_bench, tmp_path, scenario="server", target_qps=2000.0, latency_bound_ms=50.0)
    _check_common(r, "server")
    assert r.config["loadgen"] == {"scenario": "server", "max_wait_us": 0.0, "spin_us": 1500.0,
                                   "latency_bound_ms": 50.0, "latency_percentile": 99.0, "target_qps": 2000.0}
    assert r.method["effective_settings"]["target_latency_ns"] == 50_000_000
    assert r.validity["constraints"]["latency_bound"]["bound_ms"] == 50.0
    assert r.primary_metric == "samples_per_s"


def test_invalid_run_is_reported_as_invalid(tiny_bench: Any, tmp_path: Path) -> None:
    # 15 queries cannot satisfy early stopping at p99: LoadGen says INVALID, and so must we.
    r = _run(tiny_bench, tmp_path, scenario="server", target_qps=100.0, duration_s=0.15, min_queries=1)
    assert r.status == "ok"
    v = r.validity
    assert v["valid"] is False and v["result"] == "INVALID"
    assert v["constraints"]["early_stopping"]["met"] is False
    assert "early stopping not met" in v["reasons"]
    assert v["summary"].startswith("INVALID")
    assert all(m.get("valid") is False for m in r.metrics.values())
    from rich.console import Console

    from aibench.display import results_table

    console = Console(width=200, record=True)
    console.print(results_table([r]))
    text = console.export_text()
    assert "INVALID" in text and "early stopping not met" in text


def test_config_hash_tracks_what_is_measured(tiny_bench: Any, tmp_path: Path) -> None:
    a = LoadgenOptions(scenario="server", target_qps=10.0).resolve()
    b = LoadgenOptions(scenario="server", target_qps=20.0).resolve()
    c = LoadgenOptions(scenario="server", target_qps=10.0, duration_s=99.0, seed=3).resolve()
    assert a.config() != b.config() and a.config() == c.config()
    assert a.method() != c.method()


@pytest.mark.parametrize("kwargs, words", [
    ({"scenario": "server"}, "--target-qps"),
    ({"scenario": "server", "target_qps": 10.0, "latency_bound_ms": 0.0}, "--latency-bound-ms"),
    ({"scenario": "server", "target_qps": -1.0}, "--target-qps"),
    ({"scenario": "server", "target_qps": 1.0, "latency_percentile": 100.0}, "--latency-percentile"),
    ({"scenario": "offline", "target_qps": 10.0, "explicit": ("target_qps",)}, "only to --scenario"),
    ({"scenario": "single-stream", "samples_per_query": 2, "explicit": ("samples_per_query",)}, "multi-stream"),
    ({"scenario": "offline", "find_peak": True, "explicit": ("find_peak",)}, "server"),
    ({"think_time_ms": 5.0}, "--users"),
    ({"users": 2, "scenario": "offline"}, "--scenario"),
    ({"users": 0}, "--users"),
    ({"duration_s": 0.0}, "--duration-s"),
    ({"min_queries": 0}, "--min-queries"),
    ({"max_wait_us": -1.0}, "--max-wait-us"),
    ({"spin_us": -1.0}, "--spin-us"),
])
def test_contradictory_settings_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("-", r"\-")):
        LoadgenOptions(**kwargs).resolve()


def test_query_memory_refused_with_numbers() -> None:
    s = LoadgenOptions(scenario="server", target_qps=1e6, duration_s=600).resolve()
    with pytest.raises(UnavailableError, match=r"660,000,000 queries.*GiB"):
        check_memory(Sizing(660_000_000, 660_000_000, 350 * 660_000_000), s, available=8 * 2**30)
    assert check_memory(Sizing(10, 10, 3500), s, available=8 * 2**30)["estimated_bytes"] == 3500


def test_official_profile_uses_mlperf_settings() -> None:
    s = LoadgenOptions(scenario="multi-stream", profile="official").resolve()
    assert s.duration_s == 600 and s.min_queries == 662 and s.samples_per_query == 8
    assert s.seeds["schedule_rng_seed"] == 16159082839903944936
    assert LoadgenOptions(profile="official", seed=5).resolve().seeds["qsl_rng_seed"] == 5


def _in_thread(fn: Any, timeout: float = 30.0) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the run hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("scenario, extra", [("offline", {}), ("single-stream", {}), ("multi-stream", {}),
                                             ("server", {"target_qps": 1000.0})])
def test_failing_model_fails_promptly(tiny_bench: Any, tmp_path: Path, scenario: str,
                                      extra: dict[str, Any]) -> None:
    # Calibration takes a few dozen calls; the model then fails inside the LoadGen run.
    r = _in_thread(lambda: _run(tiny_bench, tmp_path, {"fail_after": 60}, scenario=scenario, **extra))
    assert r.status == "failed"
    assert r.error["type"] == "RuntimeError" and "exploded" in r.error["message"]
    assert r.validity is not None and r.validity["valid"] is False
    assert (Path(r.method["loadgen_logs"]) / "mlperf_log_detail.txt").is_file()  # partial logs kept


def test_ctrl_c_records_interrupted_then_reraises(tiny_bench: Any, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_bench, tmp_path, {"interrupt_after": 60, "sleep_us": 500}, scenario="single-stream",
             duration_s=5.0)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["status"] == "interrupted" and doc["error"]["type"] == "KeyboardInterrupt"
    assert doc["validity"]["valid"] is False
    assert (Path(doc["method"]["loadgen_logs"]) / "mlperf_log_detail.txt").is_file()
    assert doc["duration_s"] < 3.0  # LoadGen's 5 s test was cut short


def test_find_peak_records_every_probe(tiny_bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aibench.loadgen.run as lgrun

    monkeypatch.setattr(lgrun, "FIND_PEAK_MAX_PROBES", 3)
    r = _run(tiny_bench, tmp_path, scenario="server", find_peak=True, target_qps=1500.0, duration_s=0.1,
             min_queries=1, latency_bound_ms=50.0)
    fp = r.method["find_peak"]
    assert 1 <= len(fp["probes"]) <= 3
    assert fp["probes"][0]["target_qps"] == 1500.0
    for p in fp["probes"]:
        assert Path(p["log_dir"], "mlperf_log_detail.txt").is_file()
        assert isinstance(p["valid"], bool)
    assert r.config["loadgen"]["target_qps"] == "find-peak"
    if fp["peak_target_qps"] is None:
        assert r.validity["valid"] is False and r.metrics["peak_target_qps"]["unavailable"]
    else:
        assert max(p["target_qps"] for p in fp["probes"] if p["valid"]) == fp["peak_target_qps"]


def test_closed_loop_users(tiny_bench: Any, tmp_path: Path) -> None:
    r = _run(tiny_bench, tmp_path, users=3, think_time_ms=0.2, duration_s=0.2)
    assert r.status == "ok", r.error
    assert r.load_scenario == "closed-loop" and r.validity is None
    assert r.config["loadgen"] == {"scenario": "closed-loop", "max_wait_us": 0.0, "spin_us": 100.0, "users": 3,
                                   "think_time_ms": 0.2}
    for name in LATENCY_FIELDS:
        assert r.metrics[name]["value"] > 0
    assert r.metrics["queries_per_s"]["value"] > 0
    assert r.metrics["queries_per_s_no_overhead"]["unavailable"]
    assert r.method["closed_loop"]["answers_in_window"] > 0 and r.method["closed_loop"]["warmup_s"] > 0
    assert r.samples["latency"]["values"]


def test_latency_log_is_bounded_and_deterministic() -> None:
    from aibench.loadgen.drive import LatencyLog

    a, b = LatencyLog(cap=100), LatencyLog(cap=100)
    for log in (a, b):
        for i in range(0, 10_000, 7):
            log.add([float(j) for j in range(i, min(i + 7, 10_000))], 20_000.0)
    assert a.kept() == b.kept() and len(a.kept()) == 100 and a.seen == 10_000 and a.stride > 1


def test_cli_runs_offline_and_writes_logs_beside_result(tiny_bench: Any, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "res"
    code, stdout, stderr = cli("run", "component", "tiny-lg", "--scenario", "offline", "--profile", "quick",
                               "--duration-s", "0.15", "--batch", "8", "--out", str(out), "--json")
    assert code == 0, stdout + stderr
    files = list(out.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["load_scenario"] == "offline" and doc["params"]["batch"] == 8
    logs = Path(doc["method"]["loadgen_logs"])
    # <stem>.loadgen, or <stem>.resized-N.loadgen when a busy machine made the calibration too slow
    assert logs.parent == out and logs.name.startswith(files[0].stem + ".") and logs.name.endswith(".loadgen")
    assert (logs / "mlperf_log_detail.txt").is_file()
    jsonschema = pytest.importorskip("jsonschema")
    from aibench.results.schema import json_schema

    jsonschema.validate(doc, json_schema())
    # a folder holding LoadGen's logs still reads as results (its JSON logs are skipped)
    from aibench.results.store import load_results

    assert len(load_results([out], skip_foreign=True)) == 1


@pytest.mark.parametrize("argv, words", [
    (["--scenario", "server"], "--target-qps"),
    (["--scenario", "server", "--target-qps", "10", "--latency-bound-ms", "0"], "--latency-bound-ms"),
    (["--scenario", "offline", "--target-qps", "10"], "only to --scenario"),
    (["--users", "2", "--scenario", "server", "--target-qps", "5"], "--scenario"),
])
def test_cli_refuses_contradictions(tiny_bench: Any, tmp_path: Path, argv: list[str], words: str) -> None:
    from aibench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "component", "tiny-lg", *argv, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert not list(tmp_path.glob("*.json"))


def test_cli_refuses_loadgen_options_for_micro_benchmarks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from aibench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "micro", "gemm", "--scenario", "offline", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "load-generated" in capsys.readouterr().err


def test_cli_ctrl_c_exits_130_after_writing(tiny_bench: Any, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from aibench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["-q", "run", "component", "tiny-lg", "--scenario", "single-stream", "--duration-s", "5",
              "--interrupt-after", "60", "--sleep-us", "500", "--out", str(tmp_path)])
    assert exc.value.code == 130
    docs = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert [d["status"] for d in docs] == ["interrupted"]
    assert "plus 1 interrupted (partial) result" in capsys.readouterr().err


def test_closed_loop_failing_model_fails_promptly(tiny_bench: Any, tmp_path: Path) -> None:
    r = _in_thread(lambda: _run(tiny_bench, tmp_path, {"fail_after": 60}, users=2, duration_s=5.0))
    assert r.status == "failed" and "exploded" in r.error["message"]
    assert r.duration_s < 4.0


def test_in_process_system_stacks_into_a_reused_buffer() -> None:
    import torch

    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.task import InferenceTask

    data = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    seen: list[Any] = []

    def model(x: Any) -> Any:
        seen.append(x.data_ptr())
        return x.sum(dim=1)

    system = InProcessSystem(InferenceTask(model=model, device=torch.device("cpu"), num_samples=10,
                                           load_sample=lambda i: data[i], postprocess=lambda y: y.tolist()))
    system.stage(range(10))
    assert system.execute([0, 1, 2]) == [6.0, 22.0, 38.0]
    assert system.execute([3, 4]) == [54.0, 70.0]
    assert system.execute([9, 0, 5]) == [150.0, 6.0, 86.0]
    assert seen[0] == seen[1] == seen[2]  # one buffer, reused
    ragged = InProcessSystem(InferenceTask(model=lambda x: [len(v) for v in x], device=torch.device("cpu"),
                                           num_samples=2, load_sample=lambda i: torch.zeros(i + 1),
                                           postprocess=lambda y: y))
    ragged.stage(range(2))
    assert ragged.execute([0, 1]) == [1, 2]  # unequal shapes stay a list, as default_collate does


def test_audit_config_in_working_directory_is_ignored(tiny_bench: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # LoadGen would apply ./audit.config silently; aibench points it at the test's own fresh folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audit.config").write_text("*.*.performance_issue_same = 1\n*.*.performance_issue_same_index = 3\n")
    r = _run(tiny_bench, tmp_path / "out", scenario="single-stream")
    assert r.method["effective_settings"]["performance_issue_same"] is False


def test_server_spin_window_follows_target_qps() -> None:
    from aibench.loadgen.settings import LoadgenOptions, server_spin_us

    assert server_spin_us(20000) == 150.0
    assert server_spin_us(10) == 2000.0 and server_spin_us(1e6) == 100.0
    s = LoadgenOptions(scenario="server", target_qps=2000.0).resolve()
    assert s.spin_us == 1500.0 and s.with_target(20000).spin_us == 150.0
    fixed = LoadgenOptions(scenario="server", target_qps=2000.0, spin_us=0).resolve()
    assert fixed.with_target(20000).spin_us == 0.0


@pytest.mark.parametrize("scenario", ["offline", "single-stream"])
def test_run_that_ran_out_of_queries_is_resized(scenario: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration that over-estimates the time per sample (a contended machine) makes LoadGen
    pre-generate too few queries: the run ends before its minimum duration. It is re-sized from its own
    measured rate and run again, and the first attempt's logs are kept.

    The model sleeps 0.5 ms per sample, so its rate has a ceiling (2000 samples/s) that load cannot raise,
    and most of its time is that sleep, which load hardly lengthens. A null model's rate was mostly Python
    and LoadGen overhead: 18 samples measured at ~60k/s, the next attempt at ~300k/s, so Offline always
    needed both re-sizes, and the last one holds only if its run is at most 2.2 times faster than the one it
    was sized from, which a burst of load on the machine during that one can break."""
    import time

    import torch

    from aibench.loadgen import run as lg_run
    from aibench.loadgen.drive import Calibration
    from aibench.results.schema import Result
    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.task import InferenceTask

    # What a calibration on a busy machine said: 20 ms per sample, far slower than this null model.
    monkeypatch.setattr(lg_run, "calibrate", lambda *_a, **_k: Calibration(
        per_sample_s=0.02, batch_sample_s=0.02, batch=8, rounds=2))
    def model(batch: list[int]) -> list[int]:
        time.sleep(0.5e-3 * len(batch))
        return batch

    task = InferenceTask(model=model, device=torch.device("cpu"), num_samples=64, load_sample=lambda i: i,
                         collate=list, to_device=lambda x, _d: x)
    s = LoadgenOptions(scenario=scenario, duration_s=0.3, out_dir=tmp_path).resolve()
    result = Result(benchmark={"id": "component/resize", "kind": "component", "name": "resize"}, params={},
                    config_hash="x")
    lg_run.drive_system(InProcessSystem(task), s, 8, result)
    assert "resized_after" in result.method, result.validity
    attempts = result.method["resized_after"]
    assert 1 <= len(attempts) <= lg_run.MAX_RESIZES and "minimum duration" in attempts[0]["summary"]
    assert Path(attempts[0]["log_dir"], "mlperf_log_detail.txt").is_file()
    assert ".resized-" in result.method["loadgen_logs"]
    assert result.validity["valid"], result.validity["summary"]


def test_early_stopping_rule_matches_loadgen() -> None:
    """LoadGen's own thresholds: 64 queries for an estimate at p90 (662 at p99), and the estimate is the
    highest latency until 81 (838); from a run of 356, LoadGen logged 'Would discard 21 highest'."""
    from aibench.loadgen.logparse import early_stopping_min_passing, estimate_rank, queries_for_rank

    assert queries_for_rank(1, 0.90) == 64 and queries_for_rank(1, 0.99) == 662
    assert queries_for_rank(2, 0.90) == 81 and queries_for_rank(2, 0.99) == 838
    assert [early_stopping_min_passing(t, 0.90) for t in (1, 2, 3)] == [63, 79, 94]
    assert estimate_rank(63, 0.9) == {}  # too few for an estimate: LoadGen logs none
    assert estimate_rank(64, 0.9)["estimate_is_max"] is True and estimate_rank(80, 0.9)["mark"] == "max of 80"
    assert estimate_rank(81, 0.9)["estimate_is_max"] is False and "mark" not in estimate_rank(81, 0.9)
    got = estimate_rank(356, 0.9, "* Processed at least 64 queries (356).  * Would discard 21 highest latency "
                                  "queries.  * Early stopping 90.0th percentile estimate: 169486")
    assert got["estimate_rank"] == 22 and "22nd highest of the 356" in got["note"]


def test_single_stream_says_when_its_estimate_is_the_maximum(tiny_bench: Any, tmp_path: Path) -> None:
    # 64 queries of 1 ms (the minimum duration is met long before): the estimate can only be the maximum.
    r = _run(tiny_bench, tmp_path, {"sleep_us": 1000}, scenario="single-stream", duration_s=0.01, min_queries=64)
    n = r.validity["constraints"]["min_queries"]["processed"]
    es = r.metrics["latency_early_stopping"]
    assert 64 <= n < 81 and es["queries"] == n
    assert es["estimate_is_max"] is True and es["estimate_rank"] == 1 and es["mark"] == f"max of {n}"
    assert es["value"] == r.metrics["latency_max"]["value"] and "maximum" in es["note"]
    from rich.console import Console

    from aibench.display import results_table

    console = Console(width=250, record=True)
    console.print(results_table([r]))
    assert f"(max of {n})" in console.export_text()
    # The quick profile's minimum is sized so the estimate is never just the maximum.
    assert LoadgenOptions(scenario="single-stream").resolve().min_queries == 81
    q = _run(tiny_bench, tmp_path, {"sleep_us": 1000}, scenario="single-stream", duration_s=0.01)
    es = q.metrics["latency_early_stopping"]
    assert es["queries"] >= 81 and es["estimate_is_max"] is False and es["estimate_rank"] >= 2
    assert es["value"] <= q.metrics["latency_max"]["value"]


@pytest.mark.parametrize("users", [None, 2], ids=["loadgen", "closed-loop"])
@pytest.mark.parametrize("stops", [True, False], ids=["stops", "does-not-stop"])
def test_a_system_that_does_not_stop_is_recorded_and_shown(users: int | None, stops: bool, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """After a test that ended normally, a system whose stop() times out (its threads still run) is a fault:
    recorded in the driver's record (adapter / closed_loop), warned about, and shown in the results table."""
    from aibench.display import _status
    from aibench.loadgen.drive import STOP_TIMEOUT_S
    from aibench.loadgen.run import drive_system
    from tests.test_sut import FakeRemote, _result

    class NeverStops(FakeRemote):
        def stop(self, timeout: float | None = None) -> bool:
            super().stop(timeout)  # its thread does end: nothing is left behind by the test itself
            return stops or timeout is None  # the calibration waits without a timeout

    caplog.set_level(logging.WARNING, logger="aibench.loadgen.drive")
    sut = NeverStops()
    kw: dict[str, Any] = {"users": users} if users else {"scenario": "offline", "expected_qps": 3000.0}
    s = LoadgenOptions(duration_s=0.1, out_dir=tmp_path, **kw).resolve()
    result = _result()
    drive_system(sut, s, 4, result)
    record = result.method["closed_loop" if users else "adapter"]
    assert record["stopped"] is stops
    result.validity = None  # a 0.1 s LoadGen test may be INVALID, which the status column shows first
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "did not stop" in r.getMessage()]
    if stops:
        assert "stop_fault" not in record and not warned and "did not stop" not in _status(result)
    else:
        assert "fake-remote" in record["stop_fault"] and f"{STOP_TIMEOUT_S:g} s" in record["stop_fault"]
        assert warned == [record["stop_fault"]]
        assert "system did not stop" in _status(result)


def test_a_stop_fault_of_an_earlier_test_of_the_run_reaches_the_result() -> None:
    """Re-sized attempts and find-peak probes are several LoadGen tests; the result carries the last (or the
    chosen) one's adapter record, and a system that did not stop after an earlier one must still show."""
    from types import SimpleNamespace

    from aibench.loadgen.run import _carry_stop_fault

    out = SimpleNamespace(adapter={"stopped": True})
    _carry_stop_fault(out, [{"stop_fault": None}, {"stop_fault": "did not stop (probe 2)"}])  # type: ignore[arg-type]
    assert out.adapter["stop_fault"] == "did not stop (probe 2)"
    own = SimpleNamespace(adapter={"stopped": False, "stop_fault": "its own"})
    _carry_stop_fault(own, [{"stop_fault": "earlier"}])  # type: ignore[arg-type]
    assert own.adapter["stop_fault"] == "its own"
