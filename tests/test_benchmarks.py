"""Generated from the registry: every registered benchmark runs with tiny settings and yields a
schema-valid result. A new benchmark is covered the moment it registers."""

from __future__ import annotations

import math

import jsonschema
import pytest

from aibench import registry
from aibench.results.schema import json_schema
from aibench.runner import RunOptions, execute, plan
from tests.conftest import TINY_TIMER

KERNEL = [b for b in registry.all_benchmarks() if b.runner == "kernel"]
CASES = [(b.id, p) for b in KERNEL for p in (b.params.by_name["pass"].choices if "pass" in b.params else (None,))]


@pytest.mark.parametrize("bench_id, mode", CASES)
def test_kernel_benchmark_tiny_run(bench_id: str, mode: str) -> None:
    bench = registry.get(bench_id)
    (run,) = plan(bench, {**bench.tiny, **({"pass": mode} if mode else {})})
    result = execute(run, RunOptions(timer=TINY_TIMER))
    assert result.status == "ok", result.error
    doc = result.to_dict()
    jsonschema.validate(doc, json_schema())
    med = result.metrics["time_median"]["value"]
    assert med > 0 and math.isfinite(med)
    assert result.metrics["time_min"]["value"] <= med <= result.metrics["time_p99"]["value"]
    for rate in ("gflops", "gbps"):
        entry = result.metrics[rate]
        assert (entry["value"] is not None and entry["value"] > 0) or entry["unavailable"]
    assert result.metrics["gbps"]["value"] is not None  # every operator has a byte count
    # Every figure is one the benchmark declares, and carries that declaration (schema v2).
    assert set(result.metrics) <= {m.name for m in bench.metrics}
    for m in bench.metrics:
        if m.name in result.metrics:
            assert {k: result.metrics[m.name].get(k) for k in m.declaration()} == m.declaration(), m.name
    gbps = result.metrics["gbps"]  # a rate of the median time: value = work / median
    assert gbps["value"] == pytest.approx(gbps["work"] / med)
    assert result.config["threads"] == 1 and result.method["threads"]["threads"] == 1
    assert result.machine["software"]["torch"]
    assert len(result.samples["time"]["values"]) == result.samples["time"]["summary"]["n"] >= 3


def test_float64_and_set_context() -> None:
    bench = registry.get("micro/gemm")
    (run,) = plan(bench, {**bench.tiny, "dtype": "float64", "a_t": True})
    result = execute(run, RunOptions(timer=TINY_TIMER))
    assert result.status == "ok" and result.context["shapes"]["A"] == [12, 16]
    assert result.context["flops_per_call"] == 2 * 16 * 8 * 12


def test_flop_and_byte_formulas() -> None:
    """The counts the GFLOP/s and GB/s figures rest on, checked against hand arithmetic."""
    from aibench.workloads.micro.conv import output_hw

    p = registry.get("micro/conv").resolve({"height": 7, "width": 9, "kernel_h": 3, "kernel_w": 3,
                                            "stride_h": 2, "stride_w": 2, "pad_h": 0, "pad_w": 1})
    assert output_hw(p) == (3, 5)
    import torch

    op = registry.get("micro/conv").factory(p, device=torch.device("cpu"), dtype=torch.float32)
    assert op.flops == 2 * p["batch"] * 64 * 3 * 5 * 64 * 9
    op = registry.get("micro/relu").factory(
        registry.get("micro/relu").resolve({"batch": 1, "channels": 2, "height": 3, "width": 4}),
        device=torch.device("cpu"), dtype=torch.float32)
    assert op.flops == 24 and op.bytes == 24 * 4 * 2


def test_failure_inside_a_benchmark_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = registry.get("micro/relu")
    (run,) = plan(bench, dict(bench.tiny))

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    from dataclasses import replace

    broken = replace(run, bench=replace(bench, factory=boom))
    result = execute(broken, RunOptions(timer=TINY_TIMER))
    assert result.status == "failed" and result.error["message"] == "kaboom"
    jsonschema.validate(result.to_dict(), json_schema())


def test_config_records_the_effective_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default run records the thread count torch uses, not null: it shares its config hash with an explicit
    --threads of that count, and default runs with different counts (other machines) do not share one."""
    import torch

    from aibench import runner
    from aibench.registry import Benchmark, MetricSpec, ParamSet

    monkeypatch.setitem(runner.RUNNERS, "noop-test", lambda *_a: None)
    bench = Benchmark(kind="component", name="threads-probe", description="measures nothing", source="tests",
                      params=ParamSet(()), metrics=(MetricSpec("x", "s", "lower", "x"),), primary_metric="x",
                      runner="noop-test", factory=lambda *_a, **_k: None)
    (run,) = plan(bench, {})
    before = torch.get_num_threads()
    default = execute(run, RunOptions())
    assert default.config["threads"] == before == default.method["threads"]["threads"]
    assert default.method["threads"]["requested"] is None
    explicit = execute(run, RunOptions(threads=before))
    assert explicit.config_hash == default.config_hash
    other = 1 if before != 1 else 2
    torch.set_num_threads(other)  # what a default run on a machine with another core count sees
    try:
        elsewhere = execute(run, RunOptions())
    finally:
        torch.set_num_threads(before)
    assert elsewhere.config["threads"] == other and elsewhere.config_hash != default.config_hash
