"""The LoadGen runner's command-line options on ``aibench run`` and ``sweep`` (no torch, no LoadGen): the
:class:`~aibench.registry.RunnerCli` its registration names (:data:`aibench.loadgen.metrics.LOADGEN`).

Every float option is a :class:`~aibench.spec.FiniteFloat` with its range, so nan, inf and out-of-range
values are refused while the command line is parsed (exit 2), before any benchmark is selected or built.
:meth:`LoadgenOptions.resolve` checks the same ranges again for callers from Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from aibench.errors import UsageError
from aibench.loadgen.settings import PROFILES, SCENARIOS, LoadgenOptions
from aibench.registry import RunnerCli
from aibench.spec import FiniteFloat

_OPTIONS = (
    click.option("--scenario", type=click.Choice(SCENARIOS), default=None,
                 help="LoadGen scenario for inference benchmarks [default: offline]."),
    click.option("--profile", type=click.Choice(PROFILES), default="quick", show_default=True,
                 help="Durations and seeds: quick (seconds), ci (tens of seconds), official (MLPerf: 600 s, "
                      "MLPerf's seeds)."),
    click.option("--duration-s", type=FiniteFloat(0.0, None, min_open=True), default=None, metavar="S",
                 help="Minimum test duration (overrides the profile)."),
    click.option("--min-queries", type=click.IntRange(1), default=None, metavar="N",
                 help="Minimum query count (Offline: samples; overrides the profile)."),
    click.option("--target-qps", type=FiniteFloat(0.0, None, min_open=True), default=None, metavar="Q",
                 help="Server: Poisson arrival rate."),
    click.option("--latency-bound-ms", type=FiniteFloat(0.0, None, min_open=True), default=None, metavar="MS",
                 help="Server: latency bound at --latency-percentile [default: 10]."),
    click.option("--latency-percentile", type=FiniteFloat(0.0, 100.0, min_open=True, max_open=True), default=None,
                 metavar="P",
                 help="Server: percentile the bound applies to [default: 99]."),
    click.option("--expected-qps", type=FiniteFloat(0.0, None, min_open=True), default=None, metavar="Q",
                 help="Offline: expected samples/s (sizes the query) [default: calibrated]."),
    click.option("--samples-per-query", type=click.IntRange(1), default=None, metavar="N",
                 help="MultiStream: samples per query [default: 8]."),
    click.option("--max-wait-us", type=FiniteFloat(0.0), default=0.0, show_default=True, metavar="US",
                 help="Longest the adapter waits for a batch to fill (up to the benchmark's --batch)."),
    click.option("--spin-us", type=FiniteFloat(0.0, 1e6), default=None, metavar="US",
                 help="How long the idle adapter worker polls for work before sleeping [default: 100 for "
                      "single-stream, multi-stream and --users; 0 otherwise]."),
    click.option("--find-peak", is_flag=True, help="Server: search the highest target QPS that is VALID "
                 "(one line per probe on stderr)."),
    click.option("--find-peak-budget-s", type=FiniteFloat(min=0.0, min_open=True), default=None, metavar="S",
                 help="--find-peak: wall-time budget of the whole search; no probe starts that would end past "
                      "it [default: 300, or 10 × --duration-s when longer]."),
    click.option("--users", type=click.IntRange(1), default=None, metavar="N",
                 help="Closed-loop users instead of LoadGen (each sends one request at a time)."),
    click.option("--think-time-ms", type=FiniteFloat(0.0), default=None, metavar="MS",
                 help="Closed-loop users: mean exponential think time [default: 0]."),
    click.option("--remote", default=None, metavar="URL",
                 help="Send the network's input to this endpoint: http://HOST:PORT (Open Inference Protocol) "
                      "or djinn://HOST:PORT (DjiNN's protocol); pre/post-processing stay here."),
    click.option("--breakdown", is_flag=True,
                 help="Time each stage of every batch (pre-processing, DNN, post-processing) and report "
                      "their shares (share_preprocess, share_dnn, share_postprocess)."),
)


def build(values: Mapping[str, Any], measure: Any, given: frozenset[str]) -> LoadgenOptions:
    """LoadgenOptions from the parsed options. ``--seed`` sets LoadGen's seeds only when given on the command
    line (otherwise the profile's: MLPerf's for official, 0 for quick and ci); logs go to the results folder."""
    return LoadgenOptions(**dict(values), seed=measure.seed if "seed" in given else None, out_dir=measure.out_dir,
                          explicit=tuple(k for k in values if k in given))


def check_applicable(runs: Sequence[Any], lg: LoadgenOptions) -> None:
    """Refuse load-generator options for benchmarks whose runner does not read them (its RunnerSpec's
    ``options`` is not ``loadgen``), and contradictions."""
    mine = [r for r in runs if r.bench.runner_spec.options == "loadgen"]
    flags = list(lg.explicit)
    if flags and len(mine) < len(runs):
        other = next(r.bench.id for r in runs if r.bench.runner_spec.options != "loadgen")
        raise UsageError(f"--{flags[0].replace('_', '-')} applies to load-generated (inference) benchmarks; "
                         f"{other} is not one")
    if mine:
        lg.resolve()  # contradictory settings are refused before anything runs


CLI = RunnerCli(build=build, options=_OPTIONS, check=check_applicable)
