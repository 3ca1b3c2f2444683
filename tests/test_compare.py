"""aibench compare: matching by benchmark and config hash, refusals with reasons, intervals from raw samples,
direction-aware verdicts, folder reading, and its outputs. Result files are written by hand (no torch)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aibench.errors import ResultIOError, UsageError
from aibench.gate.compare import bootstrap_quantiles, compare_paths, quantile_ratio_ci, sample_source
from aibench.gate.render import ratio_words
from aibench.results.schema import Result, metric
from aibench.results.stats import summarize
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
               metrics={"time_median": metric(med, "s", "lower", statistic="median", of="samples.time"),
                        "gflops": metric(1.0 / med, "GFLOP/s", "higher", statistic="rate", of="samples.time",
                                         inverse_of="median"),
                        "energy_per_call": metric(None, "J", "lower", unavailable="no_powercap", statistic="mean",
                                                  of=None),
                        **extra_metrics},
               samples={"time": {"unit": "s", "per": "call", "values": values, "summary": summarize(values)}},
               machine={"machine": {"hostname": "ci-1"}, "software": {}})
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


def test_sample_source_reads_the_declaration_never_the_name() -> None:
    assert sample_source({"statistic": "median", "of": "samples.time"}) == ("samples.time", 50.0, False)
    assert sample_source({"statistic": "p99_9", "of": "samples.latency"}) == ("samples.latency", 99.9, False)
    assert sample_source({"statistic": "rate", "of": "samples.time", "inverse_of": "median"}) == \
        ("samples.time", 50.0, True)
    assert sample_source({"statistic": "p99", "of": "parts.layer.conv1"}) == ("parts.layer.conv1", 99.0, False)
    assert sample_source({"statistic": "rate", "of": None}) is None  # LoadGen's samples/s
    assert sample_source({"statistic": "iqr", "of": "samples.time"}) is None
    assert sample_source({"statistic": "max", "of": "samples.time"}) is None
    assert sample_source({"statistic": "value", "of": None}) is None


def _part_result(folder: Path, scale: float, seed: int, name: str = "dnn_tail", statistic: str = "p99") -> Path:
    """A LoadGen-like result whose only samples are one stage's per-batch times, and a metric over them called
    something no name rule knows."""
    from aibench.results.parts import stage_parts

    rng = random.Random(seed)
    parts = {"stage": stage_parts({"dnn": [scale * (1 + 0.05 * rng.random()) for _ in range(400)]})}
    summary = parts["stage"]["dnn"]["summary"]
    value = summary["p99"] if statistic == "p99" else summary["median"]
    r = Result(benchmark={"id": "component/x", "kind": "component", "name": "x", "source": "t"},
               params={"batch": 1}, config_hash="b" * 16, primary_metric=name,
               metrics={name: metric(value, "s", "lower", statistic=statistic, of="parts.stage.dnn")},
               parts=parts)
    return write_result(r, folder)


def test_a_per_part_metric_is_compared_by_its_declaration(tmp_path: Path) -> None:
    _part_result(tmp_path / "a", 1e-3, seed=1)
    _part_result(tmp_path / "b", 1.5e-3, seed=2)
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"])["pairs"]
    assert p["verdict"] == "worse" and p["ci"] is not None and p["ratio"] == pytest.approx(1.5, rel=0.1)
    assert "parts.stage.dnn" in p["reason"] and p["statistic"] == "p99"
    assert p["threshold"] == pytest.approx(0.10)  # a tail statistic: twice the 5% base, whatever its name


def test_a_median_like_name_declared_a_plain_value_gets_no_sample_interval(tmp_path: Path) -> None:
    for side, seed in (("a", 1), ("b", 2)):
        make(tmp_path / side, seed=seed, time_p99=metric(1e-3, "s", "lower", statistic="value", of=None))
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"], metrics=["time_p99"])["pairs"][1:]
    assert p["metric"] == "time_p99" and p["ci"] is None and p["threshold"] == pytest.approx(0.05)


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
    doc["schema_version"] = 3
    path.write_text(json.dumps(doc))
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"])["pairs"]
    assert p["verdict"] == "refused" and "schema version 3" in p["reason"]

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
    (tmp_path / "b" / "sweep-x.json").write_text(json.dumps({"schema": "aibench-sweep", "schema_version": 1, "id": "x",
                                                                  "points": []}))
    (tmp_path / "b" / "notes.json").write_text("not json at all")
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"])
    assert [p["benchmark"] for p in doc["pairs"]] == ["micro/gemm"]
    assert any("only in the baseline" in w and "micro/relu" in w for w in doc["warnings"])
    # the sweep record is aibench's own and expected beside results: not counted as foreign JSON
    assert any("skipped 1 JSON file(s)" in w and "notes.json" in w for w in doc["warnings"])
    assert not any("sweep-x.json" in w for w in doc["warnings"])


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
    assert code == 4 and "not an aibench file" in err and "Traceback" not in err
    code, _, err = cli("compare", str(tmp_path / "missing"), str(tmp_path / "b"))
    assert code == 4 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compare", str(tmp_path / "empty"), str(tmp_path / "b"))
    assert code == 4 and "no aibench result files" in err
    code, _, err = cli("compare", str(a), str(tmp_path / "b"), "--threshold", "200%")
    assert code == 2 and "threshold" in err


# ------------------------------------------------------------------------------ issue 12: compare in CI
def test_nothing_to_compare_exits_4(cli: Cli, tmp_path: Path) -> None:
    make(tmp_path / "a", bench="micro/relu")
    make(tmp_path / "b", bench="micro/gemm")
    with pytest.raises(ResultIOError, match="nothing to compare"):
        compare_paths([tmp_path / "a"], [tmp_path / "b"])
    code, out, err = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json"))
    assert code == 4 and "nothing to compare" in err and "micro/relu" in err and "micro/gemm" in err
    assert not (tmp_path / "c.json").exists() and not out


@pytest.mark.parametrize("ratio, direction, unit, words", [
    (0.457, "lower", "s", "0.457×, 54% less time"),
    (2.186, "lower", "s", "2.186×, 119% more time"),
    (1.25, "higher", "samples/s", "1.250×, 25% more samples/s"),
    (0.8, "higher", "GFLOP/s", "0.800×, 20% less GFLOP/s"),
    (1.048, "lower", "J", "1.048×, 4.8% more energy"),
    (1.0, "lower", "s", "1.000×, no change"),
    (0.9, "higher", "", "0.900×, 10% lower"),
])
def test_ratios_are_worded_as_what_they_are(ratio: float, direction: str, unit: str, words: str) -> None:
    assert ratio_words(ratio, direction, unit) == words


def test_compare_reasons_say_the_ratio_not_a_percentage_better(tmp_path: Path) -> None:
    make(tmp_path / "a", 1.0e-3, seed=1)
    make(tmp_path / "b", 0.457e-3, seed=2)
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"], metrics=["gflops"])
    (t,) = pairs_of(doc)
    assert t["verdict"] == "better" and t["reason"].startswith("0.45") and "% less time" in t["reason"]
    assert "% better" not in t["reason"] and "118" not in t["reason"]
    (g,) = pairs_of(doc, "gflops")  # higher is better: 2.19× the rate
    assert g["verdict"] == "better" and "% more GFLOP/s" in g["reason"] and "% better" not in g["reason"]


def _profiled(folder: Path, profile: str, value: float, seed: int) -> Path:
    path = make(folder, value, seed=seed, bench="component/dig")
    doc = json.loads(path.read_text())
    doc["method"]["profile"] = profile
    path.write_text(json.dumps(doc))
    return path


def test_quick_and_official_loadgen_runs_are_not_paired(tmp_path: Path) -> None:
    """They share a config hash (the profile sets durations, not the work), so the profile is matched too."""
    _profiled(tmp_path / "a", "quick", 1.0e-3, 1)
    _profiled(tmp_path / "b", "official", 1.0e-3, 2)
    (p,) = compare_paths([tmp_path / "a"], [tmp_path / "b"])["pairs"]
    assert p["verdict"] == "refused" and "LoadGen profile differs" in p["reason"]
    assert "quick" in p["reason"] and "official" in p["reason"] and p["ratio"] is None
    # the same profile on both sides (beside a lone official run): compared, and the lone run refused
    _profiled(tmp_path / "a", "official", 1.0e-3, 3)
    doc = compare_paths([tmp_path / "a"], [tmp_path / "b"])
    assert sorted(p["verdict"] for p in doc["pairs"]) == ["refused", "same"]
    (lone,) = [p for p in doc["pairs"] if p["verdict"] == "refused"]
    assert "profile quick" in lone["reason"]


def test_github_export_keeps_profiles_apart(tmp_path: Path) -> None:
    from aibench.report.github import github_entries
    from aibench.report.load import load_inputs

    _profiled(tmp_path / "r", "quick", 1.0e-3, 1)
    _profiled(tmp_path / "r", "official", 1.1e-3, 2)
    _, entries, _ = github_entries(load_inputs([tmp_path / "r"]))
    names = sorted(e["name"] for e in entries)
    assert len(names) == 2 and "profile=official" in names[0] and "profile=quick" in names[1]


def test_named_sweep_record_is_not_a_result(cli: Cli, tmp_path: Path) -> None:
    make(tmp_path / "a")
    sweep = tmp_path / "sweep-x.json"
    sweep.write_text(json.dumps({"schema": "aibench-sweep", "schema_version": 1, "id": "x", "points": []}))
    code, _, err = cli("compare", str(sweep), str(tmp_path / "a"))
    assert code == 4 and "sweep record or comparison file, not a result" in err


@pytest.mark.parametrize("n, q", [(7, 50.0), (40, 50.0), (41, 90.0), (200, 99.0)])
def test_exact_bootstrap_matches_resampling(n: int, q: float) -> None:
    """The order-statistic draw gives the same distribution as resampling n values and taking numpy's
    quantile (compared at a few percentiles of 20,000 draws each)."""
    rng = np.random.default_rng(5)
    x = rng.lognormal(0.0, 0.3, n)
    ours = bootstrap_quantiles(x, q, 20_000, np.random.default_rng(1))
    brute = np.percentile(np.random.default_rng(2).choice(x, size=(20_000, n), replace=True), q, axis=1)
    for p in (2.5, 25.0, 50.0, 75.0, 97.5):
        a, b = np.percentile(ours, p), np.percentile(brute, p)
        assert a == pytest.approx(b, rel=0.02), (p, a, b)


def test_interval_of_a_million_samples_is_tight_and_centred() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(1e-3), 0.05, 1_000_000)
    cand = rng.lognormal(np.log(1.1e-3), 0.05, 1_000_000)
    lo, hi = quantile_ratio_ci(base, cand, 50.0)
    assert lo < float(np.median(cand) / np.median(base)) < hi and hi - lo < 0.005 and lo > 1.09


def test_a_copied_result_named_twice_is_one_run(tmp_path: Path) -> None:
    a = make(tmp_path / "a", seed=1)
    copy = tmp_path / "copy.json"
    copy.write_bytes(a.read_bytes())
    make(tmp_path / "b", seed=2)
    doc = compare_paths([a, copy], [tmp_path / "b"])
    assert [p["runs"] for p in pairs_of(doc)] == [{"baseline": 1, "candidate": 1}]
