"""The ``compare`` and ``gate`` commands (registered lazily in ``aibench/cli.py``). Thin: parse, call
:mod:`aibench.gate.compare` / :mod:`aibench.gate.gate`, print and write what was asked."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from aibench.errors import EXIT_INTERRUPTED, ResultIOError, UsageError
from aibench.gate import decide

log = logging.getLogger("aibench.gate")

COMPARE_EXIT_HELP = """\b
Exit codes: 0 compared (whatever the verdicts: compare informs, 'aibench gate' decides) ·
2 bad usage · 4 a result file unreadable, not JSON or foreign, or an output not writable ·
70 internal error."""

GATE_EXIT_HELP = """\b
Exit codes (one per outcome):
  0    pass: every metric is within ±threshold (its 95% CI lies inside)
  0    improved: a metric is better than the threshold and its CI excludes 1 (13 with --improved distinct)
  10   regression: a metric is worse than the threshold and its CI excludes 1
  11   inconclusive: too noisy to decide at the threshold (0 with --inconclusive pass)
  12   error: a process failed or timed out, a figure was missing, configurations differed
  2    bad usage (before anything is measured: options, a prefix that does not run, an unknown
       benchmark or parameter on either side) · 4 an output file not writable · 70 internal error
  130  interrupted (Ctrl-C or SIGTERM): children killed, the rounds gathered are still written
Several metrics or benchmarks: error > regression > inconclusive > improved > pass."""


def _thresholds(base: str | None, runner: str, per_metric: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    try:
        thr = decide.parse_threshold(base) if base is not None else decide.RUNNER_THRESHOLDS[runner]
        overrides = {}
        for item in per_metric:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"--metric-threshold {item!r}: give NAME=THRESHOLD, e.g. latency_p99=20%")
            overrides[name.strip()] = decide.parse_threshold(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return thr, overrides


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _emit(doc: dict[str, Any], json_out: str | None, md_out: str | None, junit_out: str | None = None,
          inconclusive: str = "fail") -> None:
    from aibench.gate import render
    from aibench.gate.pairs import dumps, write_text

    if json_out:
        write_text(json_out, dumps(doc))
    if md_out:
        write_text(md_out, render.markdown(doc))
    if junit_out:
        write_text(junit_out, render.junit(doc, inconclusive))


def _quiet(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("quiet"))


def _check_output(target: str | None) -> None:
    """An output file's folder must exist and be writable before anything is measured (exit 4)."""
    if target is None or target == "-":
        return
    folder = Path(target).expanduser().resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ResultIOError(f"cannot write {target!r}: folder {str(folder)!r} does not exist or is not writable")


def _check_metrics(benches: Sequence[Any], names: Sequence[str]) -> None:
    """A metric named with --metric/--ignore-metric must be one the benchmarks declare: a typo would
    otherwise drop a check silently. Benchmarks unknown here (a plugin of one side) are not checked."""
    if not names:
        return
    from aibench import registry

    declared: set[str] = set()
    for b in benches:
        try:
            bench = registry.get(b.ref)
        except Exception:  # unknown here: the sides decide
            return
        declared.update(m.name for m in bench.metrics)
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise UsageError(f"metric {unknown[0]!r} is not reported by {', '.join(b.ref for b in benches)}; "
                         f"known: {', '.join(sorted(declared))}")


@click.command("compare", epilog=COMPARE_EXIT_HELP,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Also compare this metric (repeatable); the primary metric is always compared.")
@click.option("--threshold", default="5%", show_default=True, metavar="T",
              help="Change below which a verdict is 'same' (5% or 0.05); tail metrics (p99, p99.9, max) get 2×.")
@click.option("--metric-threshold", "metric_thresholds", multiple=True, metavar="NAME=T",
              help="Threshold for one metric, e.g. latency_p99=20% (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--markdown", "md_out", metavar="FILE|-", help="Write a markdown summary (for a PR comment).")
@click.option("--json", "json_out", metavar="FILE|-", help="Write the comparison as JSON ('-': stdout).")
@click.pass_context
def compare(ctx: click.Context, baseline: Path, candidate: Path, metrics: tuple[str, ...], threshold: str,
            metric_thresholds: tuple[str, ...], seed: int, md_out: str | None, json_out: str | None) -> None:
    """Compare stored results: BASELINE and CANDIDATE are result files or folders.

    Results are matched by benchmark and config hash; a benchmark whose configuration (hash) differs
    between the sides, a result of another schema version and a failed run are refused with the reason.
    Ratios are candidate/baseline; the 95% CI comes from the raw samples each run kept (or from the spread
    of three or more runs per side). Stored runs taken at different times on a shared machine are noisy:
    to decide on a change, use 'aibench gate'.

    \b
    Examples:
      aibench compare results/main results/branch
      aibench compare base.json cand.json --metric time_p99 --markdown -
      aibench compare results/a results/b --json comparison.json
    """
    from aibench.gate.compare import compare_paths
    from aibench.gate.render import table

    thr, overrides = _thresholds(threshold, "dedicated", metric_thresholds)
    doc = compare_paths([baseline], [candidate], metrics, thr, overrides, seed=seed)
    to_stdout = "-" in (json_out, md_out)
    if not _quiet(ctx):
        from rich.console import Console

        console = _console() if to_stdout else Console(width=None if sys.stdout.isatty() else 200)
        console.print(table(doc, title="aibench compare"))
    _emit(doc, json_out, md_out)


# Gate options come first; the first word that is not a gate option starts the benchmark, and it and everything
# after it are passed to 'aibench run' (so a '--seed' after the benchmark is the benchmark's, not the gate's).
@click.command("gate", epilog=GATE_EXIT_HELP,
               context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED, metavar="[BENCHMARK [RUN ARGS]...]")
@click.option("--baseline-python", metavar="PATH", help="Python interpreter of the baseline environment.")
@click.option("--candidate-python", metavar="PATH", help="Python interpreter of the candidate environment.")
@click.option("--baseline", "baseline_prefix", metavar="'CMD'",
              help="Command prefix that runs the baseline's Python, e.g. 'env PYTHONPATH=/src/base /venv/bin/python'.")
@click.option("--candidate", "candidate_prefix", metavar="'CMD'", help="Same for the candidate.")
@click.option("--baseline-label", metavar="TEXT", help="Name shown for the baseline (default: its command).")
@click.option("--candidate-label", metavar="TEXT", help="Name shown for the candidate.")
@click.option("-b", "--benchmark", "bench_specs", multiple=True, metavar="'KIND/NAME [ARGS]'",
              help="A benchmark and its 'aibench run' arguments as one string (repeatable).")
@click.option("--rounds", type=click.IntRange(decide.MIN_ROUNDS, 10_000), default=10, show_default=True,
              metavar="K", help="Interleaved rounds before the first decision; each round runs every benchmark "
              "once per side.")
@click.option("--max-rounds", type=click.IntRange(decide.MIN_ROUNDS, 30_000), default=None, metavar="N",
              help="While a metric is undecided, add rounds (K/2 at a time) up to N. The error rate is split "
              "over the looks (half at the first), so all looks together keep --confidence. N = K: one look "
              "at --confidence. [default: 3 × K]")
@click.option("--budget-s", type=click.FloatRange(1.0, 7 * 86400.0), default=decide.DEFAULT_BUDGET_S,
              show_default=True, metavar="S", help="Add no batch of rounds that would end more than S seconds "
              "after the gate started (the first K rounds always run).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Also gate on this metric (repeatable, e.g. time_p99); the primary metric always counts.")
@click.option("--ignore-metric", "ignore", multiple=True, metavar="NAME",
              help="Never gate on this metric (repeatable), e.g. a primary metric too noisy on shared runners.")
@click.option("--runner", type=click.Choice(sorted(decide.RUNNER_THRESHOLDS)), default="dedicated",
              show_default=True, help="Threshold preset: dedicated 5%, shared 10% (CI runners shared with others).")
@click.option("--threshold", metavar="T", help="Threshold for every metric (5% or 0.05); overrides --runner. "
              "Tail metrics (p99, p99.9, max) get 2×.")
@click.option("--metric-threshold", "metric_thresholds", multiple=True, metavar="NAME=T",
              help="Threshold for one metric, e.g. latency_p99=20% (repeatable).")
@click.option("--inconclusive", type=click.Choice(["pass", "fail"]), default="fail", show_default=True,
              help="How CI treats an inconclusive gate: exit 0, or exit 11.")
@click.option("--improved", type=click.Choice(["pass", "distinct"]), default="pass", show_default=True,
              help="Exit code of an improved gate: 0, or 13 (to tell it from pass in a script).")
@click.option("--confidence", type=click.FloatRange(0.5, 1.0, min_open=True, max_open=True), default=0.95,
              show_default=True, metavar="C", help="Confidence level of the interval the verdicts rest on.")
@click.option("--ci-method", type=click.Choice(["trimmed-t", "BCa", "percentile"]), default="trimmed-t",
              show_default=True, help="Interval of the (trimmed) geometric mean: Yuen's trimmed t, or a seeded "
              "bootstrap (too narrow with few rounds).")
@click.option("--trim", type=click.FloatRange(0.0, 0.5, max_open=True), default=0.2, show_default=True,
              metavar="F", help="Share of rounds trimmed from each end before the geometric mean (robust to a "
              "round hit by another job); 0: plain geometric mean.")
@click.option("--seed", type=int, default=None, metavar="N",
              help="Seed of the side order and the bootstrap [default: random, recorded in the JSON].")
@click.option("--process-timeout", type=click.FloatRange(1.0, 86400.0), default=600.0, show_default=True,
              metavar="S", help="Kill a benchmark process that runs longer (outcome: error).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Keep every process's result files here [default: a temporary folder, removed].")
@click.option("--json", "json_out", metavar="FILE|-", help="Write the gate's record as JSON ('-': stdout).")
@click.option("--markdown", "md_out", metavar="FILE|-", help="Write a markdown summary (for a PR comment).")
@click.option("--junit", "junit_out", metavar="FILE", help="Write JUnit XML (one test case per metric).")
@click.pass_context
def gate(ctx: click.Context, bench_args: tuple[str, ...], baseline_python: str | None,
         candidate_python: str | None, baseline_prefix: str | None, candidate_prefix: str | None,
         baseline_label: str | None, candidate_label: str | None, bench_specs: tuple[str, ...], rounds: int,
         max_rounds: int | None, budget_s: float, metrics: tuple[str, ...], ignore: tuple[str, ...], runner: str,
         threshold: str | None,
         metric_thresholds: tuple[str, ...],
         inconclusive: str, improved: str, confidence: float, ci_method: str, trim: float, seed: int | None,
         process_timeout: float, out_dir: Path | None, json_out: str | None, md_out: str | None,
         junit_out: str | None) -> None:
    """The CI performance decision: run benchmarks for a baseline and a candidate environment
    interleaved in this job, and decide pass / improved / regression / inconclusive.

    Each round runs every benchmark once per side as a fresh process ('<python> -m aibench run
    BENCHMARK ARGS'), the side order shuffled per round (balanced, seeded); a micro benchmark's two
    processes run at once and take turns of ~20 ms on one CPU (lockstep), others one after the other.
    Each round gives a ratio candidate/baseline per metric; the verdict comes from their (20%-trimmed)
    geometric mean and its interval (Yuen's trimmed t; --ci-method for a bootstrap): regression when worse
    than the threshold and the interval excludes 1, pass when it lies within ±threshold, inconclusive
    otherwise. The gate decides after K rounds and, while a metric is undecided, after every K/2 more up to
    --max-rounds and --budget-s, each look at a corrected confidence. Direction comes from each metric
    (time lower is better, throughput higher). The table goes to stderr.

    \b
    Examples:
      aibench gate --baseline-python base/.venv/bin/python --candidate-python cand/.venv/bin/python \\
          micro/gemm --m 256 --n 256 --k 256 --max-time 0.5
      aibench gate --baseline 'env PYTHONPATH=/src/main .venv/bin/python' \\
          --candidate 'env PYTHONPATH=/src/pr .venv/bin/python' --runner shared \\
          -b 'micro/gemm --m 256 --n 256 --k 256' -b 'component/dig --threads 1 --duration-s 2' \\
          --json gate.json --markdown gate.md --junit gate.xml
    """
    from aibench.gate.gate import BenchSpec, GateConfig, SideSpec, run_gate
    from aibench.gate.render import table

    sides = []
    for name, py, prefix, label in (("baseline", baseline_python, baseline_prefix, baseline_label),
                                    ("candidate", candidate_python, candidate_prefix, candidate_label)):
        if (py is None) == (prefix is None):
            raise UsageError(f"give exactly one of --{name}-python PATH or --{name} 'CMD PREFIX'")
        sides.append(SideSpec.from_python(name, py, label) if py is not None
                     else SideSpec.from_prefix(name, prefix or "", label))
    benches = [BenchSpec.parse(s) for s in bench_specs]
    if bench_args:
        benches.append(BenchSpec.from_words(list(bench_args)))
    if not benches:
        raise UsageError("name a benchmark: 'aibench gate [OPTIONS] KIND/NAME [ARGS]' or -b 'KIND/NAME ARGS'")
    thr, overrides = _thresholds(threshold, runner, metric_thresholds)
    _check_metrics(benches, (*metrics, *ignore))
    for target in (json_out, md_out, junit_out):  # before the rounds, which may take long: not after them
        _check_output(target)
    if seed is None:
        seed = secrets.randbelow(2**31)
    if out_dir is not None:
        from aibench.results.store import ensure_writable_dir

        ensure_writable_dir(out_dir)
    if max_rounds is not None and max_rounds < rounds:
        raise UsageError(f"--max-rounds {max_rounds} must be at least --rounds {rounds}")
    cfg = GateConfig(baseline=sides[0], candidate=sides[1], benches=benches, rounds=rounds, metrics=metrics,
                     max_rounds=max_rounds, budget_s=budget_s,
                     ignore=ignore,
                     threshold=thr, thresholds=overrides, seed=seed, timeout_s=process_timeout, out_dir=out_dir,
                     trim=trim, confidence=confidence, method=ci_method)
    quiet = _quiet(ctx)
    console = _console()
    bar = None
    if not quiet and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # auto_refresh=False: no refresh thread competes with the measuring children; updated between them.
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, auto_refresh=False, transient=True)
        task = bar.add_task("", total=rounds * len(benches) * 2)

    looks = iter(cfg.looks()[1:])

    def progress(kind: str, msg: str) -> None:
        if bar is not None and kind == "extend":
            bar.update(task, total=next(looks, rounds) * len(benches) * 2)
        if bar is not None and kind == "process":
            if bar.tasks[0].description:
                bar.advance(task)
            bar.update(task, description=msg)
            bar.refresh()
        if kind in ("round", "extend") and not quiet:
            console.print(msg, highlight=False, markup=False)
        else:
            log.info(msg)

    if not quiet:
        console.print(f"aibench gate: {rounds} rounds (up to {cfg.rounds_max} while undecided, budget "
                      f"{budget_s:g} s) × {len(benches)} benchmark(s) × 2 sides, seed {seed}, "
                      f"threshold {thr * 100:g}%", highlight=False, markup=False)
    if bar is not None:
        bar.start()
    try:
        doc = run_gate(cfg, progress, inconclusive, improved)
    finally:
        if bar is not None:
            bar.stop()
    if not quiet:
        console.print(table(doc))
        for err in doc["errors"]:
            console.print(f"error: {err}", highlight=False, markup=False)
    _emit(doc, json_out, md_out, junit_out, inconclusive)
    code = doc["exit_code"]
    if doc["interrupted"]:
        click.echo(f"aibench: interrupted; {doc['rounds']} round(s) were complete"
                   + (" and are in the JSON" if json_out else ""), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    click.echo(f"aibench gate: {doc['outcome']} (exit {code})", err=True)
    ctx.exit(code)
