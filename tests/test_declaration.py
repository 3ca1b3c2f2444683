"""The metric declaration (aibench.results.declaration) and per-part distributions (aibench.results.parts):
one vocabulary, checked where a metric is declared, filled into results from the benchmark's MetricSpec list."""

from __future__ import annotations

import pytest

from aibench.registry import MetricSpec
from aibench.results import declaration as d
from aibench.results.parts import MAX_PART_VALUES, part_entry, shares, stage_parts
from aibench.results.schema import Result, metric


def test_check_accepts_the_vocabulary_and_refuses_the_rest() -> None:
    d.check("p99", "samples.latency")
    d.check("p99", "parts.layer.features.0")  # a part name may hold dots (nn.Sequential's numbering)
    d.check("rate", "samples.time", "median")
    d.check("value")
    for bad, match in ((("p42",), "statistic"), (("p99", "latency"), "'of'"), (("p99", "samples.a.b"), "'of'"),
                       (("p99", "parts.rank.0"), "'of'"), (("p99", "parts.stage."), "'of'"),
                       (("median", "samples.t", "median"), "only a rate"), (("rate", "samples.t", "max"), "inverse_of"),
                       (("rate", None, "median"), "needs 'of'")):
        with pytest.raises(ValueError, match=match):
            d.check(*bad)


def test_metric_spec_validates_its_declaration() -> None:
    spec = MetricSpec("time_p99", "s", "lower", "p99", "p99", "samples.time")
    assert spec.declaration() == {"statistic": "p99", "of": "samples.time"}
    assert MetricSpec("x", "s", "lower", "x").declaration() == {"statistic": "value", "of": None}
    with pytest.raises(ValueError, match="metric bad: statistic"):
        MetricSpec("bad", "s", "lower", "help", "p42")


def test_declare_fills_what_is_missing_and_keeps_what_an_entry_declares() -> None:
    metrics = {"time_p99": metric(1.0, "s", "lower"), "own": metric(2.0, "s", "lower", statistic="max", of=None),
               "stray": metric(3.0, "s", "lower")}
    missing = d.declare(metrics, {"time_p99": {"statistic": "p99", "of": "samples.time", "unit": "s"},
                                  "own": {"statistic": "median", "of": "samples.time"}})
    assert metrics["time_p99"] == {"value": 1.0, "unit": "s", "direction": "lower", "statistic": "p99",
                                   "of": "samples.time"}
    assert metrics["own"]["statistic"] == "max"  # declared by the code that made it: kept
    assert missing == ["stray"] and metrics["stray"]["statistic"] == "value" and metrics["stray"]["of"] is None


def test_a_result_declares_its_metrics_when_written() -> None:
    r = Result(benchmark={"id": "micro/x", "kind": "micro", "name": "x", "source": "t"}, params={},
               config_hash="a" * 16, metrics={"time_median": metric(1.0, "s", "lower")},
               declared={"time_median": {"unit": "s", "direction": "lower", "statistic": "median",
                                         "of": "samples.time"}})
    doc = r.to_dict()
    assert doc["metrics"]["time_median"]["statistic"] == "median" and "declared" not in doc
    assert Result.from_dict(doc).metrics == r.metrics


def test_a_retired_field_name_is_an_error_not_a_silent_attribute() -> None:
    r = Result(benchmark={"id": "micro/x"}, params={}, config_hash="a" * 16)
    with pytest.raises(AttributeError):
        r.scenario = "offline"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        r.system = {}  # type: ignore[attr-defined]


def test_values_and_quantile_basis_come_from_the_declaration() -> None:
    samples = {"time": {"values": [1.0, 2.0]}}
    parts = {"stage": {"dnn": {"values": [3.0]}}}
    assert d.values_of(samples, parts, "samples.time") == [1.0, 2.0]
    assert d.values_of(samples, parts, "parts.stage.dnn") == [3.0]
    assert d.values_of(samples, parts, "parts.stage.pre") is None and d.values_of(samples, parts, None) is None
    assert d.values_of({"time": 5}, parts, "samples.time") is None  # malformed: absent, never a crash
    assert d.quantile_basis({"statistic": "p99_9", "of": "parts.module.rank"}) == ("parts.module.rank", 99.9, False)
    assert d.quantile_basis({"statistic": "rate", "of": "samples.step_time", "inverse_of": "mean"}) is None
    assert d.is_tail({"statistic": "max"}) and d.is_tail("p99_9") and not d.is_tail("p97") and not d.is_tail(None)


def test_stage_parts_keep_a_bounded_sample_and_summarise_all() -> None:
    many = [float(i % 100 + 1) for i in range(3 * MAX_PART_VALUES + 7)]
    stages = stage_parts({"pre": [1.0, 3.0], "dnn": many, "post": []})
    assert list(stages) == ["pre", "dnn"]  # a stage with no timed batch is left out; order kept
    dnn = stages["dnn"]
    assert dnn["seen"] == len(many) == dnn["summary"]["n"] and dnn["stride"] == 4
    assert len(dnn["values"]) <= MAX_PART_VALUES and dnn["values"] == many[::4]
    assert dnn["total"] == pytest.approx(sum(many)) and dnn["unit"] == "s" and dnn["per"] == "batch"
    assert stages["pre"]["summary"]["median"] == 2.0
    share = shares(stages)
    assert share["pre"] == pytest.approx(4.0 / (4.0 + sum(many))) and sum(share.values()) == pytest.approx(1.0)
    assert part_entry([]) is None and shares({}) == {} and shares({"a": {"total": 0.0}}) == {}
