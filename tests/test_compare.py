"""aibench compare: matching by benchmark and config hash, refusals with reasons, intervals from raw samples,
direction-aware verdicts, folder reading, and its outputs. Result files are written by hand (no torch)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench.errors import UsageError
from aibench.gate.compare import compare_paths, sample_source
from aibench.results.schema import Result, metric
from aibench.results.store import write_result

Cli = Callable[..., tuple[int, str, str]]


def make(folder: Path, median: float = 1e-3, spread: float = 0.01, bench: str = "micro/gemm",
         chash: str = "aaaaaaaaaaaaaaaa", params: dict[str, Any] | None = None, status: str = "ok",
         seed: int = 0, n: int = 60, **extra_metrics: dict[str, Any]) -> Path:
    """A micro-like result: time samples around ``median``, time_median and gflops derived from them."""
    rng = random.Random(seed)
    values = sorted(median * (1 + rng.gauss(0, spread)) for _ in range(n))
    med = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    kind, name = bench.split("/")
    r = Result(benchmark={"id": bench, "kind": kind, "name": name, "source": "t", "description": "d"},
               params=params or {"m": 64}, config_hash=chash, status=status,
               error={"type": "RuntimeError", "message": "boom", "traceback": ""} if status == "failed" else None,
               primary_metric="time_median",
               metrics={"time_median": metric(med, "s", "lower"), "gflops": metric(1.0 / med, "GFLOP/s", "higher"),
                        "energy_per_call": metric(None, "J", "lower", unavailable="no_powercap"),
                        **extra_metrics},
               samples={"time": {"unit": "s", "per": "call", "values": values, "summary": {}}},
               system={"machine": {"hostname": "ci-1"}})
    return write_result(r, folder)


def pairs_of(doc: dict[str, Any], metric_name: str = "time_median") -> list[dict[str, Any]]:
    return [p for p in doc["pairs"] if p["metric"] == metric_name]


CONTRACT_PAIR_KEYS = {"benchmark", "config_hash", "metric", "unit", "direction", "baseline", "candidate", "ratio",
                      "ci", "confidence", "verdict", "reason"}


def test_document_follows_the_comparison_contract(tmp_path: Path) -> None:
    make(tmp_path / "a", seed=1)
    make(tmp_path / "b", seed=2)
    doc = json.loads(json.dumps(compare_paths([tmp_path / "a"], [tmp_path / "b"])))  # plain JSON
    assert {"schema", "schema_version", "baseline", "candidate", "created_at", "pairs", "warnings"} <= set(doc)
    for p in doc["pairs"]:
        assert CONTRACT_PAIR_KEYS <= set(p)
        assert p["verdict"] in ("better", "worse", "same", "inconclusive", "refused")
        assert p["direction"] in ("lower", "higher") and len(p["ci"]) == 2


def test_sample_source_maps_metrics_to_samples() -> None:
    assert sample_source("time_median") == ("time", 50.0, False)
    assert sample_source("latency_p99_9") == ("latency", 99.9, False)
    assert sample_source("gflops") == ("time", 50.0, True)
    assert sample_source("samples_per_s") is None and sample_source("time_iqr") is None


def test_matching_pairs_with_ci_from_raw_samples(tmp_path: Path) -> None:
    make(tmp_path / "a", 1.00e-3, seed=1)
    make(tmp_path / "b", 1.20e-3, seed=2)
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"], metrics=["gflops"])
    assert doc["schema"] == "aibench-comparison" and doc["schema_version"] == 1
    (p,) = pairs_of(doc)
    assert p["ratio"] == pytest.approx(1.2, rel=0.02) and p["verdict"] == "worse"
    assert p["ci"][0] > 1.1 and p["ci"][1] < 1.3 and p["confidence"] == 0.95
    assert p["direction"] == "lower" and p["unit"] == "s" and p["config_hash"] == "aaaaaaaaaaaaaaaa"
    (g,) = pairs_of(doc, "gflops")  # higher is better: a lower rate is worse, its CI the inverse of time's
    assert g["verdict"] == "worse" and g["ratio"] == pytest.approx(1 / 1.2, rel=0.02) and g["ci"][1] < 1
    assert any("shared machine are noisy" in w and "aibench gate" in w for w in doc["warnings"])


def test_same_and_better_and_threshold(tmp_path: Path) -> None:
    make(tmp_path / "a", 1.00e-3, seed=1)
    make(tmp_path / "same", 1.01e-3, seed=2)
    make(tmp_path / "fast", 0.80e-3, seed=3)
    assert pairs_of(compare_paths([tmp_path / "a"], [tmp_path / "same"]))[0]["verdict"] == "same"
    assert pairs_of(compare_paths([tmp_path / "a"], [tmp_path / "fast"]))[0]["verdict"] == "better"
    wide = compare_paths([tmp_path / "a"], [tmp_path / "fast"], threshold=0.3)
    assert pairs_of(wide)[0]["verdict"] == "same" and pairs_of(wide)[0]["threshold"] == 0.3


def test_noisy_samples_give_inconclusive(tmp_path: Path) -> None:
    make(tmp_path / "a", 1.00e-3, spread=0.5, n=8, seed=1)
    make(tmp_path / "b", 1.08e-3, spread=0.5, n=8, seed=2)
    (p,) = pairs_of(compare_paths([tmp_path / "a"], [tmp_path / "b"]))
    assert p["verdict"] == "inconclusive" and "too wide" in p["reason"]


def test_several_runs_per_side_use_the_spread_of_runs(tmp_path: Path) -> None:
    for i in range(3):
        make(tmp_path / "a", 1.00e-3 * (1 + 0.01 * i), seed=i)
        make(tmp_path / "b", 1.30e-3 * (1 + 0.01 * i), seed=10 + i)
    (p,) = pairs_of(compare_paths([tmp_path / "a"], [tmp_path / "b"]))
    assert p["verdict"] == "worse" and "bootstrap over runs" in p["reason"] and p["runs"] == {
        "baseline": 3, "candidate": 3}


def test_refuses_different_config_hash_with_the_differing_params(tmp_path: Path) -> None:
    make(tmp_path / "a", chash="1111111111111111", params={"m": 64, "n": 8})
    make(tmp_path / "b", chash="2222222222222222", params={"m": 128, "n": 8})
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"])["pairs"]
    assert p["verdict"] == "refused" and p["ratio"] is None
    assert "config hash differs" in p["reason"] and "m=64 vs 128" in p["reason"] and "n=" not in p["reason"]


def test_refuses_other_schema_version_and_failed_runs(tmp_path: Path) -> None:
    make(tmp_path / "a")
    path = make(tmp_path / "b")
    doc = json.loads(path.read_text())
    doc["schema_version"] = 2
    path.write_text(json.dumps(doc))
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"])["pairs"]
    assert p["verdict"] == "refused" and "schema version 2" in p["reason"]

    make(tmp_path / "c")
    make(tmp_path / "d", status="failed")
    (p,) = compare_paths([tmp_path / "c"], [tmp_path / "d"])["pairs"]
    assert p["verdict"] == "refused" and "status failed: boom" in p["reason"]


def test_unavailable_metric_is_refused_and_unknown_extra_metric_refused(tmp_path: Path) -> None:
    make(tmp_path / "a")
    make(tmp_path / "b", seed=3)
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"], metrics=["energy_per_call"])
    (e,) = pairs_of(doc, "energy_per_call")
    assert e["verdict"] == "refused" and "no_powercap" in e["reason"]
    # A metric no compared result has is a typo, not a note: it would drop the check silently.
    with pytest.raises(UsageError, match="no compared result has a metric 'latency_p99'"):
        compare_paths([tmp_path / "a"], [tmp_path / "b"], metrics=["energy_per_call", "latency_p99"])


def test_one_sided_benchmarks_and_foreign_json_in_folders_are_noted(tmp_path: Path) -> None:
    make(tmp_path / "a")
    make(tmp_path / "a", bench="micro/relu")
    make(tmp_path / "b", seed=4)
    (tmp_path / "b" / "sweep-x.json").write_text(json.dumps({"schema": "aibench-sweep", "schema_version": 1}))
    (tmp_path / "b" / "notes.json").write_text("not json at all")
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"])
    assert [p["benchmark"] for p in doc["pairs"]] == ["micro/gemm"]
    assert any("only in the baseline" in w and "micro/relu" in w for w in doc["warnings"])
    assert any("skipped 2 JSON file(s)" in w for w in doc["warnings"])


def test_cli_outputs_and_exit_codes(cli: Cli, tmp_path: Path) -> None:
    a = make(tmp_path / "a", seed=1)
    make(tmp_path / "b", 1.2e-3, seed=2)
    code, out, err = cli("compare", str(a), str(tmp_path / "b"), "--json", "-", "--markdown", str(tmp_path / "c.md"))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["pairs"][0]["verdict"] == "worse" and "worse" in err  # the table went to stderr
    md = (tmp_path / "c.md").read_text()
    assert md.startswith("### aibench compare") and "| micro/gemm [aaaaaaaa] |" in md and "❌ **worse**" in md

    code, out, _ = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0 and "micro/gemm" in out and "note: runs taken at different times" in out

    (tmp_path / "bad.json").write_text("{}")
    code, _, err = cli("compare", str(tmp_path / "bad.json"), str(tmp_path / "b"))
    assert code == 4 and "not an aibench result file" in err and "Traceback" not in err
    code, _, err = cli("compare", str(tmp_path / "missing"), str(tmp_path / "b"))
    assert code == 4 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compare", str(tmp_path / "empty"), str(tmp_path / "b"))
    assert code == 4 and "no aibench result files" in err
    code, _, err = cli("compare", str(a), str(tmp_path / "b"), "--threshold", "200%")
    assert code == 2 and "threshold" in err
