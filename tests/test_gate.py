"""aibench gate: its statistics on injected per-round figures, its exit codes, its outputs, and one real gate
run with tiny settings. Most gates here run a fake ``aibench run`` (tests/gate_fake_run.py) as each side's
process, so they take about a second and are deterministic."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench.gate import decide, render, stats
from tests.conftest import TINY_FLAGS

REPO = Path(__file__).resolve().parents[1]
FAKE = str(Path(__file__).with_name("gate_fake_run.py"))
Cli = Callable[..., tuple[int, str, str]]


def lognormal(k: int, factor: float, sigma: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [factor * math.exp(rng.gauss(0.0, sigma)) for _ in range(k)]


# -- statistics on injected per-round figures --------------------------------------------------------------
def test_geomean_and_ci_basics() -> None:
    assert stats.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert stats.geomean_ci([1.1, 1.1, 1.1]) == (pytest.approx(1.1), pytest.approx(1.1))
    ratios = lognormal(10, 1.0, 0.05, seed=1)
    a = stats.geomean_ci(ratios, seed=7)
    assert a == stats.geomean_ci(ratios, seed=7)  # seeded: reproducible
    assert a[0] < stats.geomean(ratios) < a[1]
    with pytest.raises(ValueError):
        stats.geomean_ci([1.0])
    with pytest.raises(ValueError):
        stats.geomean([1.0, -1.0])


def test_known_aa_passes() -> None:
    d = decide.decide_rounds(lognormal(10, 1.0, 0.01, seed=2), "lower", 0.05)
    assert d.verdict == "same" and d.outcome == "pass"
    assert 1 / 1.05 <= d.ci[0] <= d.ci[1] <= 1.05
    assert "lies within ±5%" in d.reason


@pytest.mark.parametrize(("direction", "factor", "verdict"), [
    ("lower", 1.10, "worse"),   # time +10%: regression
    ("lower", 1 / 1.10, "better"),
    ("higher", 1 / 1.10, "worse"),  # throughput -9%: the same slowdown, seen from the other side
    ("higher", 1.10, "better"),
])
def test_known_ten_percent_is_detected_in_its_direction(direction: str, factor: float, verdict: str) -> None:
    d = decide.decide_rounds(lognormal(10, factor, 0.02, seed=3), direction, 0.05)
    assert d.verdict == verdict
    assert d.ratio == pytest.approx(factor, rel=0.03)
    assert "excludes 1" in d.reason


def test_too_noisy_is_inconclusive_and_says_how_wide() -> None:
    d = decide.decide_rounds(lognormal(10, 1.0, 0.3, seed=4), "lower", 0.05)
    assert d.verdict == "inconclusive" and d.outcome == "inconclusive"
    assert "too wide to decide at ±5%" in d.reason and "rounds would be needed" in d.reason
    few = decide.decide_rounds([1.2, 1.3], "lower", 0.05)
    assert few.verdict == "inconclusive" and "at least 3" in few.reason


def test_small_real_change_within_threshold_passes_and_beyond_is_worse() -> None:
    # A real 2% slowdown measured precisely is within a 5% threshold: pass (the CI excludes 1 but not 5%).
    assert decide.decide_rounds(lognormal(12, 1.02, 0.005, seed=5), "lower", 0.05).verdict == "same"
    assert decide.decide_rounds(lognormal(12, 1.02, 0.005, seed=5), "lower", 0.01).verdict == "worse"


def test_false_alarm_rate_on_simulated_aa_gates_is_low() -> None:
    """600 simulated A/A gates (K=10, 5% spread per round, heavy-tailed): false alarms stay rare."""
    alarms = 0
    for g in range(600):
        rng = random.Random(g)
        ratios = [math.exp(rng.gauss(0, 0.05) if rng.random() > 0.1 else rng.gauss(0, 0.2)) for _ in range(10)]
        alarms += decide.decide_rounds(ratios, "lower", 0.05, seed=g).verdict in ("worse", "better")
    assert alarms / 600 <= 0.02


def test_thresholds_tail_metrics_and_parsing() -> None:
    assert decide.parse_threshold("5%") == pytest.approx(0.05)
    assert decide.parse_threshold("0.1") == pytest.approx(0.1)
    for bad in ("5", "abc", "-1%", "0"):
        with pytest.raises(ValueError):
            decide.parse_threshold(bad)
    # What a metric is comes from its declared statistic, never its name.
    assert decide.threshold_for("latency_p99", 0.05, statistic="p99") == pytest.approx(0.10)
    assert decide.threshold_for("anything", 0.05, statistic="p99_9") == pytest.approx(0.10)
    assert decide.threshold_for("conv1", 0.05, statistic="max") == pytest.approx(0.10)
    assert decide.threshold_for("latency_p99", 0.05, {"latency_p99": 0.3}, "p99") == pytest.approx(0.3)
    assert decide.threshold_for("time_median", 0.05, statistic="median") == pytest.approx(0.05)
    assert decide.threshold_for("time_p99", 0.05, statistic="value") == pytest.approx(0.05)
    assert decide.threshold_for("time_p99", 0.05) == pytest.approx(0.05)  # undeclared: not guessed


def test_overall_outcome_and_exit_codes() -> None:
    assert decide.overall(["pass", "improved"]) == "improved"
    assert decide.overall(["improved", "inconclusive"]) == "inconclusive"
    assert decide.overall(["inconclusive", "regression"]) == "regression"
    assert decide.overall(["regression", "error"]) == "error"
    assert decide.overall([]) == "pass"
    codes = {o: decide.exit_code(o) for o in decide.OUTCOMES}
    assert codes == {"pass": 0, "improved": 0, "regression": 10, "inconclusive": 11, "error": 12}
    assert decide.exit_code("inconclusive", inconclusive="pass") == 0
    assert decide.exit_code("improved", improved="distinct") == 13
    assert not {10, 11, 12, 13} & {1, 2, 3, 4, 70, 130}


# -- gates over fake processes ----------------------------------------------------------------------------
@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children must import this checkout's aibench whatever the test runner's environment."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def side(*opts: str) -> str:
    return " ".join([sys.executable, FAKE, *opts])


def run_gate(cli: Cli, tmp_path: Path, base: str, cand: str, *extra: str) -> tuple[int, dict, str]:
    out = tmp_path / "gate.json"
    code, _stdout, err = cli("gate", "--baseline", base, "--candidate", cand, "--seed", "3",
                            "--json", str(out), *extra, "micro/fake", "--m", "1")
    doc = json.loads(out.read_text()) if out.exists() else {}
    return code, doc, err


@pytest.mark.usefixtures("fake_env")
def test_gate_aa_passes_with_exit_0(cli: Cli, tmp_path: Path) -> None:
    code, doc, err = run_gate(cli, tmp_path, side("--noise", "0.01"), side("--noise", "0.01"))
    assert code == 0 and doc["outcome"] == "pass", err
    assert doc["schema"] == "aibench-gate" and doc["schema_version"] == 1 and doc["rounds"] == 10
    (pair,) = doc["pairs"]
    from tests.test_compare import CONTRACT_PAIR_KEYS

    assert CONTRACT_PAIR_KEYS <= set(pair) and {"outcome", "rounds", "created_at", "warnings"} <= set(doc)
    assert pair["verdict"] == "same" and pair["benchmark"] == "micro/fake" and pair["metric"] == "time_median"
    assert len(pair["rounds"]) == 10 and pair["direction"] == "lower" and pair["rounds_used"] == 10
    # Looks after 10, 15, 20, 25, 30 rounds; decided at the first, at 1 - 0.05/2.
    assert doc["looks"] == [10, 15, 20, 25, 30] and doc["looks_taken"] == 1 and doc["stopped"] == "decided"
    assert pair["confidence"] == doc["look_confidence"][0] == pytest.approx(0.975)
    firsts = [b["first"] for r in doc["schedule"] for b in r["benchmarks"]]
    assert firsts.count("baseline") == firsts.count("candidate") == 5  # balanced order
    assert "aibench gate: pass (exit 0)" in err


@pytest.mark.usefixtures("fake_env")
def test_gate_regression_exits_10_and_writes_markdown_and_junit(cli: Cli, tmp_path: Path) -> None:
    md, xml = tmp_path / "gate.md", tmp_path / "gate.xml"
    code, doc, err = run_gate(cli, tmp_path, side("--noise", "0.01"), side("--value", "1.1e-3", "--noise", "0.01"),
                              "--markdown", str(md), "--junit", str(xml))
    assert code == decide.EXIT_REGRESSION and doc["outcome"] == "regression", err
    assert doc["pairs"][0]["ratio"] == pytest.approx(1.1, rel=0.02)
    assert "❌ regression" in md.read_text() and "| micro/fake" in md.read_text()
    suite = ET.parse(xml).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "1"


@pytest.mark.usefixtures("fake_env")
@pytest.mark.parametrize(("policy", "expected"), [("fail", 11), ("pass", 0)])
def test_gate_inconclusive_policy(cli: Cli, tmp_path: Path, policy: str, expected: int) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side("--noise", "0.3"), side("--noise", "0.3"), "--rounds", "4",
                            "--inconclusive", policy)
    assert doc["outcome"] == "inconclusive" and code == expected


@pytest.mark.usefixtures("fake_env")
def test_gate_reads_what_a_metric_declares_and_an_older_baseline_writing_v1(cli: Cli, tmp_path: Path) -> None:
    # A metric named like nothing the gate knows, declared a p99: gated as a tail figure (twice the threshold).
    part = ("--metric", "conv1_worst", "--statistic", "p99", "--noise", "0.01")
    code, doc, err = run_gate(cli, tmp_path, side(*part), side(*part), "--rounds", "4")
    (pair,) = doc["pairs"]
    assert code == 0 and pair["threshold"] == pytest.approx(0.10), err
    # A baseline tree from before schema version 2 writes version-1 results: read, converted, gated by the
    # declaration its metric name gives (latency_p99: a p99).
    code, doc, err = run_gate(cli, tmp_path, side("--metric", "latency_p99", "--v1", "--noise", "0.01"),
                              side("--metric", "latency_p99", "--statistic", "p99", "--noise", "0.01"),
                              "--rounds", "4")
    (pair,) = doc["pairs"]
    assert code == 0 and doc["outcome"] == "pass" and pair["threshold"] == pytest.approx(0.10), err


@pytest.mark.usefixtures("fake_env")
def test_gate_improved_and_throughput_direction(cli: Cli, tmp_path: Path) -> None:
    base = side("--metric", "samples_per_s", "--unit", "samples/s", "--direction", "higher", "--value", "100",
                "--noise", "0.01")
    cand = side("--metric", "samples_per_s", "--unit", "samples/s", "--direction", "higher", "--value", "120",
                "--noise", "0.01")
    code, doc, _ = run_gate(cli, tmp_path, base, cand, "--rounds", "5")
    assert doc["outcome"] == "improved" and code == 0
    code, doc, _ = run_gate(cli, tmp_path, base, cand, "--rounds", "5", "--improved", "distinct")
    assert code == decide.EXIT_IMPROVED
    code, doc, _ = run_gate(cli, tmp_path, cand, base, "--rounds", "5")  # throughput fell: regression
    assert doc["outcome"] == "regression" and code == decide.EXIT_REGRESSION


@pytest.mark.usefixtures("fake_env")
def test_gate_failing_candidate_is_an_error_with_its_stderr(cli: Cli, tmp_path: Path) -> None:
    code, doc, err = run_gate(cli, tmp_path, side(), side("--fail"))
    assert code == decide.EXIT_ERROR and doc["outcome"] == "error"
    assert "the candidate exploded" in doc["errors"][0] and "exited 70" in doc["errors"][0]
    assert "the candidate exploded" in err and "Traceback" not in err.splitlines()[-1]


@pytest.mark.usefixtures("fake_env")
def test_gate_process_timeout_is_an_error(cli: Cli, tmp_path: Path) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side(), side("--sleep", "30"), "--process-timeout", "1")
    assert code == decide.EXIT_ERROR and "process timeout" in doc["errors"][0]


@pytest.mark.usefixtures("fake_env")
def test_gate_refuses_different_config_hash_and_missing_figures(cli: Cli, tmp_path: Path) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side(), side("--hash", "fedcba9876543210"))
    assert code == decide.EXIT_ERROR and "config hash differs" in doc["errors"][0]
    code, doc, _ = run_gate(cli, tmp_path, side(), side("--unavailable"))
    assert code == decide.EXIT_ERROR and "unavailable" in doc["errors"][0]


@pytest.mark.usefixtures("fake_env")
def test_gate_metric_selection(cli: Cli, tmp_path: Path) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side(), side(), "--rounds", "3", "--ignore-metric", "time_median")
    assert code == decide.EXIT_ERROR and "no metric left to gate on" in doc["errors"][0]
    code, doc, _ = run_gate(cli, tmp_path, side(), side(), "--rounds", "3", "--metric", "time_p99")
    assert code == 0 and [p["metric"] for p in doc["pairs"]] == ["time_median"]
    assert any("no metric 'time_p99'" in w for w in doc["warnings"])


@pytest.mark.usefixtures("fake_env")
def test_gate_usage_errors_exit_2_before_measuring(cli: Cli, tmp_path: Path) -> None:
    code, doc, err = run_gate(cli, tmp_path, side(), side("--refuse"))
    assert code == 2 and doc == {} and "unknown parameter --bogus" in err
    code, _, err = cli("gate", "--baseline-python", sys.executable, "micro/gemm")
    assert code == 2 and "--candidate-python" in err
    code, _, err = cli("gate", "--baseline", "/nonexistent/python", "--candidate", side(), "micro/fake")
    assert code == 2 and "cannot start" in err
    code, _, err = cli("gate", "--baseline", side(), "--candidate", side(), "--threshold", "5", "micro/fake")
    assert code == 2 and "threshold" in err
    code, _, err = cli("gate", "--baseline", side(), "--candidate", side())
    assert code == 2 and "name a benchmark" in err
    code, _, err = cli("gate", "--baseline", side(), "--candidate", side(), "micro/fake", "--out", "x")
    assert code == 2 and "--out cannot be passed to the benchmark's runs" in err


@pytest.mark.usefixtures("fake_env")
def test_gate_interrupt_kills_children_and_keeps_rounds(tmp_path: Path) -> None:
    out, pids = tmp_path / "gate.json", tmp_path / "pids"
    slow = side("--sleep", "0.4", "--pidfile", str(pids))
    proc = subprocess.Popen([sys.executable, "-m", "aibench", "gate", "--baseline", slow, "--candidate", slow,
                             "--seed", "1", "--json", str(out), "micro/fake"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 4):
        time.sleep(0.05)  # two rounds started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True and doc["outcome"] == "error" and doc["rounds"] >= 1
    assert len(doc["pairs"][0]["rounds"]) == doc["rounds"]
    for pid in map(int, pids.read_text().split()):  # no child left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- outputs ------------------------------------------------------------------------------------------------
def _doc(verdict: str, reason: str = "r") -> dict:
    return {"schema": "aibench-gate", "schema_version": 1, "baseline": "a`b", "candidate": "c", "outcome": "error",
            "rounds": 3, "seed": 1, "errors": ["boom <x>"], "warnings": ["w|1"],
            "pairs": [{"benchmark": "micro/x|y", "config_hash": "0" * 16, "metric": "time_median", "unit": "s",
                       "direction": "lower", "baseline": 1.0, "candidate": 1.2, "ratio": 1.2, "ci": [1.1, 1.3],
                       "confidence": 0.95, "verdict": verdict, "reason": reason, "threshold": 0.05}]}


def test_markdown_escapes_table_cells() -> None:
    text = render.markdown(_doc("worse", "a | b <script>"))
    assert "micro/x\\|y" in text and "&lt;script&gt;" in text and "<script>" not in text
    assert "w\\|1" in text and "`a'b`" in text


@pytest.mark.parametrize(("verdict", "policy", "tag"), [("worse", "fail", "failure"), ("refused", "fail", "error"),
                                                       ("inconclusive", "fail", "failure"),
                                                       ("inconclusive", "pass", "skipped"), ("same", "fail", None)])
def test_junit_maps_verdicts(verdict: str, policy: str, tag: str | None) -> None:
    suite = ET.fromstring(render.junit(_doc(verdict, "bad <&> reason"), policy))
    case = suite.find("testcase")
    assert case is not None
    if tag:
        assert case.find(tag) is not None
    else:
        assert case.find("failure") is None and case.find("error") is None
    assert suite.get("errors") == str(1 + (verdict == "refused"))  # the process error counts too


# -- one real gate ------------------------------------------------------------------------------------------
def test_real_gate_with_tiny_settings(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # A broken 'aibench' in the working directory must not shadow the sides' own (children get
    # PYTHONSAFEPATH=1; `python -m` would otherwise import this one first).
    shadow = tmp_path / "cwd" / "aibench"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the working directory shadowed aibench')\n")
    monkeypatch.chdir(shadow.parent)
    out = tmp_path / "gate.json"
    code, _, _err = cli("gate", "--baseline-python", sys.executable, "--candidate-python", sys.executable,
                       "--rounds", "3", "--max-rounds", "3", "--seed", "0", "--json", str(out),
                       "--out", str(tmp_path / "runs"), "micro", "gemm", "--m", "16", "--n", "8", "--k", "12",
                       *TINY_FLAGS)
    doc = json.loads(out.read_text())
    assert doc["outcome"] in ("pass", "inconclusive", "regression", "improved"), doc["errors"]
    assert code == decide.exit_code(doc["outcome"]) and doc["rounds"] == 3
    (pair,) = doc["pairs"]
    assert pair["benchmark"] == "micro/gemm" and pair["metric"] == "time_median" and len(pair["rounds"]) == 3
    files = list((tmp_path / "runs").rglob("micro-gemm-*.json"))
    assert len(files) == 6  # kept with --out
    # The two processes of every round took turns (lockstep), timed with the thread's CPU clock.
    assert doc["paced"]["rounds"] == 3 and all(b["paced"] and b["turns"] >= 1
                                               for r in doc["schedule"] for b in r["benchmarks"])
    for f in files:
        method = json.loads(f.read_text())["method"]
        assert method["paced"]["clock"] == "thread-cpu-clock" and method["stop_reason"] == "paced"
        assert method["page_faults"]["counted"] is True and method["allocator"]["setting"] in ("fixed", "default")


def test_gate_refuses_unknown_metric_and_unwritable_output_before_running(cli, tmp_path: Path) -> None:
    """A typo in --metric would drop a check silently, and an unwritable output would be found only after
    every round: both are refused before anything runs."""
    py = sys.executable
    code, _, err = cli("gate", "--baseline-python", py, "--candidate-python", py, "--metric", "time_p99x",
                       "micro/relu", "--batch", "1")
    assert code == 2 and "time_p99x" in err and "time_p99" in err
    code, _, err = cli("gate", "--baseline-python", py, "--candidate-python", py, "--json",
                       str(tmp_path / "missing" / "g.json"), "micro/relu", "--batch", "1")
    assert code == 4 and "does not exist" in err and not (tmp_path / "missing").exists()


# -- the sequential rule on injected per-round ratios (no timing) -------------------------------------------
def test_look_schedule_and_corrected_confidence() -> None:
    assert decide.look_schedule(10, 30) == [10, 15, 20, 25, 30]
    assert decide.look_schedule(10, 10) == [10]
    assert decide.look_schedule(3, 8) == [3, 5, 7, 8]  # the last look is always max_rounds
    assert decide.look_schedule(10, 31, step=10) == [10, 20, 30, 31]
    with pytest.raises(ValueError):
        decide.look_schedule(10, 9)
    # Half the error rate at the first look, the other half shared by the later ones; one look: all of it.
    assert decide.look_confidence(0.95, 5, 0) == pytest.approx(0.975)
    assert [decide.look_confidence(0.95, 5, i) for i in range(1, 5)] == [pytest.approx(0.99375)] * 4
    assert decide.look_confidence(0.95, 1) == 0.95
    assert sum(1 - decide.look_confidence(0.95, 5, i) for i in range(5)) == pytest.approx(0.05)


def test_sequential_decides_at_the_first_look_when_quiet() -> None:
    looks = decide.look_schedule(10, 30)
    seq = decide.decide_sequential(lognormal(30, 1.0, 0.01, seed=11), "lower", 0.05, looks)
    assert seq.decision.verdict == "same" and seq.rounds_used == 10 and seq.looks_taken == 1
    assert "97.5% CI" in seq.decision.reason  # the first look tests at 1 - 0.05/2
    slow = decide.decide_sequential(lognormal(30, 1.1, 0.01, seed=12), "lower", 0.05, looks)
    assert slow.decision.verdict == "worse" and slow.rounds_used == 10


def test_sequential_takes_more_rounds_while_the_interval_straddles() -> None:
    looks = decide.look_schedule(10, 30)
    # Ten rounds in two camps (a noisy start) leave the interval wide; fifteen quiet ones settle it.
    ratios = [0.95, 1.05] * 5 + lognormal(20, 1.0, 0.005, seed=13)
    first = decide.decide_rounds(ratios[:10], "lower", 0.05, decide.look_confidence(0.95, len(looks), 0))
    assert first.verdict == "inconclusive"
    seq = decide.decide_sequential(ratios, "lower", 0.05, looks)
    assert seq.decision.verdict == "same" and seq.rounds_used in (15, 20) and seq.looks_taken >= 2
    assert seq.decision.rounds == seq.rounds_used


def test_sequential_gives_up_at_the_last_look_or_the_end_of_the_stream() -> None:
    looks = decide.look_schedule(10, 30)
    noisy = lognormal(40, 1.0, 0.4, seed=14)
    seq = decide.decide_sequential(noisy, "lower", 0.05, looks)
    assert seq.decision.verdict == "inconclusive" and seq.rounds_used == 30 and seq.looks_taken == 5
    short = decide.decide_sequential(noisy[:17], "lower", 0.05, looks)  # a stream cut by the budget
    assert short.rounds_used == 15 and short.looks_taken == 2


def test_sequential_rule_keeps_false_alarms_below_the_nominal_rate() -> None:
    """Five looks at 1 - 0.05/5 each: over many simulated A/A gates noisy enough to need several looks, false
    alarms stay under 5% (the Bonferroni bound), and a +10% change is still found in most."""
    looks = decide.look_schedule(10, 30)
    alarms = found = extended = 0
    for g in range(300):
        noise = lognormal(30, 1.0, 0.06, seed=1000 + g)
        a = decide.decide_sequential(noise, "lower", 0.05, looks)
        alarms += a.decision.verdict in ("worse", "better")
        extended += a.rounds_used > 10
        b = decide.decide_sequential([1.1 * x for x in noise], "lower", 0.05, looks)
        found += b.decision.verdict == "worse"
    assert extended > 150  # the rule was exercised: most gates needed more than one look
    assert alarms <= 15  # <= 5% of 300
    assert found >= 240


@pytest.mark.usefixtures("fake_env")
def test_gate_extends_an_undecided_gate_and_reports_the_rounds_everywhere(cli: Cli, tmp_path: Path) -> None:
    md, xml = tmp_path / "gate.md", tmp_path / "gate.xml"
    _, doc, err = run_gate(cli, tmp_path, side("--noise", "0.04"), side("--noise", "0.04"),
                           "--rounds", "4", "--max-rounds", "12", "--markdown", str(md), "--junit", str(xml))
    assert doc["looks"] == [4, 6, 8, 10, 12] and doc["rounds"] > 4, err
    assert doc["rounds"] in doc["looks"] and doc["looks_taken"] == doc["looks"].index(doc["rounds"]) + 1
    assert doc["stopped"] in ("decided", "max rounds")
    (pair,) = doc["pairs"]
    assert pair["rounds_used"] == doc["rounds"] and len(pair["rounds"]) == doc["rounds"]
    assert f"{doc['rounds']} rounds" in err and "undecided after 4 rounds" in err
    assert f"| {doc['rounds']} |" in md.read_text()
    suite = ET.fromstring(xml.read_text())
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["rounds"] == str(doc["rounds"]) and props["stopped"] == doc["stopped"]


@pytest.mark.usefixtures("fake_env")
def test_gate_budget_stops_adding_rounds(cli: Cli, tmp_path: Path) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side("--noise", "0.3"), side("--noise", "0.3"), "--rounds", "4",
                            "--budget-s", "1")
    assert doc["rounds"] == 4 and doc["stopped"] == "budget" and doc["outcome"] == "inconclusive"
    assert any("--budget-s" in w for w in doc["warnings"])
    code, _, err = run_gate(cli, tmp_path, side(), side(), "--rounds", "10", "--max-rounds", "5")
    assert code == 2 and "--max-rounds 5 must be at least --rounds 10" in err


# -- lockstep -------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("fake_env")
def test_gate_runs_both_sides_in_lockstep(cli: Cli, tmp_path: Path) -> None:
    log = tmp_path / "turns"
    paced = ("--paced", "--turns", "3", "--turn-log", str(log))
    code, doc, err = run_gate(cli, tmp_path, side(*paced, "--noise", "0.01"), side(*paced, "--noise", "0.01"),
                              "--rounds", "4", "--max-rounds", "4")
    assert code == 0 and doc["paced"]["rounds"] == 4, err
    entries = [b for r in doc["schedule"] for b in r["benchmarks"]]
    assert all(b["paced"] and b["turns"] == 3 for b in entries)
    lines = [ln.split() for ln in log.read_text().splitlines()]
    by_pid: dict[str, list[str]] = {}
    for pid, what, cpu in lines:
        by_pid.setdefault(pid, []).append(what)
        assert cpu in {str(c) for c in os.sched_getaffinity(0)}  # pinned to a CPU this machine has
    assert len(by_pid) == 8 and all(w == ["warm", "turn", "turn", "turn"] for w in by_pid.values())
    # Turns alternate ABBA: within a round the two processes' turns interleave.
    first_round = [pid for pid, what, _ in lines[:8]]
    a, b = first_round[0], first_round[1]
    assert first_round == [a, b, a, b, b, a, a, b]


@pytest.mark.usefixtures("fake_env")
def test_lockstep_falls_back_to_one_after_the_other(cli: Cli, tmp_path: Path) -> None:
    """A side that does not take turns (an older aibench, a LoadGen benchmark) measures on its own; the other
    waits, then measures solo."""
    code, doc, err = run_gate(cli, tmp_path, side("--paced", "--noise", "0.01"), side("--noise", "0.01"),
                              "--rounds", "4", "--max-rounds", "4")
    assert code == 0 and doc["paced"]["rounds"] == 0, err
    assert not any(b["paced"] for r in doc["schedule"] for b in r["benchmarks"])


@pytest.mark.usefixtures("fake_env")
def test_a_side_dying_in_its_turn_is_an_error_with_its_stderr(cli: Cli, tmp_path: Path) -> None:
    code, doc, _ = run_gate(cli, tmp_path, side("--paced"), side("--paced", "--die-in-turn"), "--rounds", "4")
    assert code == decide.EXIT_ERROR and doc["outcome"] == "error"
    assert any("died in its turn" in e for e in doc["errors"])


@pytest.mark.usefixtures("fake_env")
def test_gate_pacing_can_be_switched_off(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBENCH_GATE_PACE", "0")
    code, doc, _ = run_gate(cli, tmp_path, side("--paced"), side("--paced"), "--rounds", "4", "--max-rounds", "4")
    assert code == 0 and doc["paced"] == {"enabled": False, "rounds": 0, "turn_s": 0.02, "protocol": 1}


@pytest.mark.parametrize("flags, threshold", [([], 0.05), (["--machine", "shared"], 0.10),
                                              (["--runner", "shared"], 0.10),
                                              (["--machine", "shared", "--runner", "shared"], 0.10)])
def test_gate_machine_setting_and_its_older_spelling(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                     flags: list[str], threshold: float) -> None:
    """--machine shared|dedicated is the threshold preset; --runner (hidden) is its older name, same values."""
    seen: list[Any] = []

    def fake_run_gate(cfg: Any, *_a: Any) -> Any:
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr("aibench.gate.gate.run_gate", fake_run_gate)
    cli("gate", "--baseline-python", sys.executable, "--candidate-python", sys.executable, *flags,
        "micro/gemm", "--m", "8")
    assert seen and seen[0].threshold == pytest.approx(threshold)


def test_gate_machine_and_runner_must_agree_and_runner_is_hidden(cli: Cli) -> None:
    code, _out, err = cli("gate", "--baseline-python", sys.executable, "--candidate-python", sys.executable,
                          "--machine", "shared", "--runner", "dedicated", "micro/gemm", "--m", "8")
    assert code == 2 and "disagree" in err
    code, out, _err = cli("gate", "--help")
    assert code == 0 and "--machine" in out and "--runner" not in out


def test_every_gate_option_reaches_its_configuration(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """The gate's options arrive in typed bundles (sides, rounds, decision, outputs): each one still lands in
    the GateConfig (or the exit policy) it sets."""
    seen: list[Any] = []

    def fake_run_gate(cfg: Any, _progress: Any, inconclusive: str, improved: str) -> Any:
        seen.append((cfg, inconclusive, improved))
        raise KeyboardInterrupt

    monkeypatch.setattr("aibench.gate.gate.run_gate", fake_run_gate)
    keep = tmp_path / "keep"
    code, _out, err = cli("gate", "--baseline-python", sys.executable, "--candidate", f"{sys.executable} -X utf8",
                          "--candidate-label", "pr", "--rounds", "4", "--max-rounds", "8", "--budget-s", "99",
                          "--seed", "5", "--process-timeout", "7", "--metric", "time_p99", "--ignore-metric",
                          "time_median", "--threshold", "3%", "--metric-threshold", "time_p99=20%",
                          "--inconclusive", "pass", "--improved", "distinct", "--confidence", "0.9", "--ci-method",
                          "BCa", "--trim", "0.1", "--out", str(keep), "micro/gemm", "--m", "8")
    assert code == 130 and seen, err
    cfg, inconclusive, improved = seen[0]
    assert (cfg.rounds, cfg.max_rounds, cfg.budget_s, cfg.seed, cfg.timeout_s) == (4, 8, 99.0, 5, 7.0)
    assert cfg.metrics == ("time_p99",) and cfg.ignore == ("time_median",)
    assert cfg.threshold == pytest.approx(0.03) and cfg.thresholds == {"time_p99": pytest.approx(0.20)}
    assert (inconclusive, improved) == ("pass", "distinct")
    assert (cfg.confidence, cfg.method, cfg.trim, cfg.out_dir) == (0.9, "BCa", 0.1, keep)
    assert cfg.candidate.label == "pr" and cfg.baseline.label != "pr"
    assert [b.ref for b in cfg.benches] == ["micro/gemm"]
