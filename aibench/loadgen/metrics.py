"""The ``loadgen`` runner's contract, light (no torch, no LoadGen): the metrics a load-generated benchmark
reports, the options a sweep may vary, its primary metric per scenario, and the runner's registration. The
runner is :mod:`aibench.loadgen.run`, imported only when such a benchmark is measured.

Contract for a benchmark with ``runner="loadgen"``: ``factory(params, device=..., dtype=...) ->
InferenceTask``; a ``batch`` parameter, when declared, is the largest batch the adapter forms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aibench import meters
from aibench.registry import MetricSpec, RunnerSpec, register_runner

LATENCY = "samples.latency"  # the per-sample latencies the adapter kept (LoadGen's percentiles are of all)
# Metrics a LoadGen-run benchmark reports; component benchmarks can declare these as their metrics. The
# stage shares are those of the in-process system's stages; a system with other stages reports share_<stage>
# for each, declared where it is measured (_stage_metrics).
LOADGEN_METRICS = (
    MetricSpec("samples_per_s", "samples/s", "higher", "samples per second (Offline: LoadGen's metric; Server: "
               "completed samples/s)", "rate"),
    MetricSpec("queries_per_s", "queries/s", "higher", "queries per second, with LoadGen's overhead", "rate"),
    MetricSpec("samples_per_s_no_overhead", "samples/s", "higher", "samples/s without LoadGen's overhead", "rate"),
    MetricSpec("queries_per_s_no_overhead", "queries/s", "higher", "queries/s without LoadGen's overhead", "rate"),
    MetricSpec("latency_early_stopping", "s", "lower", "LoadGen's early-stopping latency estimate "
               "(SingleStream p90, MultiStream p99)", "early_stopping"),
    *(MetricSpec(f"latency_{p}", "s", "lower", f"{p} latency per query (LoadGen, full run)", p, LATENCY)
      for p in ("p50", "p90", "p95", "p97", "p99", "p99_9", "min", "max", "mean")),
    MetricSpec("gflops", "GFLOP/s", "higher", "achieved network FLOP rate: counted FLOPs per sample × samples/s",
               "rate"),
    MetricSpec("peak_target_qps", "queries/s", "higher", "--find-peak: the highest target QPS whose Server run "
               "was VALID"),
    MetricSpec("share_preprocess", "fraction", "lower", "share of batch time in pre-processing (--breakdown)",
               "ratio", "parts.stage.preprocess"),
    MetricSpec("share_dnn", "fraction", "higher", "share of batch time in the DNN (--breakdown)", "ratio",
               "parts.stage.dnn"),
    MetricSpec("share_postprocess", "fraction", "lower", "share of batch time in post-processing (--breakdown)",
               "ratio", "parts.stage.postprocess"),
)

# What a component benchmark declares: LoadGen's figures (with the achieved FLOP rate and the application
# breakdown, --breakdown) and the meters' energy metrics (per sample).
COMPONENT_METRICS = (
    *LOADGEN_METRICS,
    *meters.metric_specs("sample", "the measured LoadGen window"),
)

# What a system with stages of its own declares (a scenario's client and server, a split's device and server):
# LoadGen's figures and the meters, without the in-process stages' shares; its own stages give theirs as
# share_<stage> where they are measured.
SYSTEM_METRICS = tuple(m for m in COMPONENT_METRICS if not (m.of or "").startswith("parts.stage."))

# Numeric LoadGen options a sweep may vary, with their types (the options a user can give on `run`).
SWEEPABLE: dict[str, type] = {
    "target_qps": float, "expected_qps": float, "samples_per_query": int, "max_wait_us": float,
    "spin_us": float, "users": int, "think_time_ms": float, "latency_percentile": float, "duration_s": float,
    "min_queries": int,
}


def primary(bench: Any, params: dict[str, Any] | None = None, options: Any = None) -> str:
    """LoadGen's own metric for the scenario the options resolve to (Offline when none are given)."""
    from aibench.loadgen.logparse import PRIMARY

    if options is None:
        return PRIMARY["offline"]
    return PRIMARY[options.resolve().scenario]


def primary_from_args(bench: Any, option: Callable[[str], str | None]) -> str:
    """:func:`primary` from a command line's --scenario / --users."""
    from aibench.loadgen.logparse import PRIMARY

    scenario = option("--scenario") or ("closed-loop" if option("--users") is not None else "offline")
    return PRIMARY.get(scenario, bench.primary_metric)


INFERENCE_CONTRACT = "aibench.sut.task:InferenceTask"
LOADGEN = register_runner(RunnerSpec(
    name="loadgen", contract=INFERENCE_CONTRACT, measure="aibench.loadgen.run:run_loadgen_benchmark",
    capabilities=frozenset({"inference"}), metrics=COMPONENT_METRICS, options="loadgen",
    options_type="aibench.loadgen.settings:LoadgenOptions", cli_options="aibench.loadgen.options:CLI",
    primary="aibench.loadgen.metrics:primary", primary_from_args="aibench.loadgen.metrics:primary_from_args",
    sweepable=SWEEPABLE,
    describe="MLPerf LoadGen (SingleStream, MultiStream, Server, Offline) or closed-loop users"))
