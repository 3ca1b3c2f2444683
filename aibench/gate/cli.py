"""The ``compare`` and ``gate`` commands (registered lazily in ``aibench/cli.py``). Thin: parse, call
:mod:`aibench.gate.compare` / :mod:`aibench.gate.gate`, print and write what was asked."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from aibench import lifetime
from aibench.errors import UsageError
from aibench.gate import decide
from aibench.spec import FiniteFloat, Seed, option_bundle

log = logging.getLogger("aibench.gate")

COMPARE_EXIT_HELP = """\b
Outputs (--json, --markdown): a new file, an earlier comparison, or '-' (stdout; one of them); never an
input file, an existing result or sweep record, a folder, FIFO or device (refused up front, exit 2).
\b
Exit codes: 0 compared (whatever the verdicts: compare informs, 'aibench gate' decides) ·
2 bad usage, or an output refused as above · 4 a named file unreadable, not a regular file, over 256 MiB,
not JSON, foreign or damaged; a side with no result; nothing to compare (no benchmark on both sides);
an output not writable · 70 internal error."""

GATE_EXIT_HELP = """\b
Exit codes (one per outcome):
  0    pass: every metric is within ±threshold (its 95% CI lies inside)
  0    improved: a metric is better than the threshold and its CI excludes 1 (13 with --improved distinct)
  10   regression: a metric is worse than the threshold and its CI excludes 1
  11   inconclusive: too noisy to decide at the threshold (0 with --inconclusive pass)
  12   error: a process failed or timed out, a figure was missing, configurations differed
  2    bad usage (before anything is measured: options, a prefix that does not run, an unknown
       benchmark or parameter on either side, an output that is a folder, FIFO, device, or an
       existing result or sweep record) · 4 an output file not writable · 70 internal error
  130  interrupted by Ctrl-C (143: by SIGTERM): children killed, the rounds gathered are still written
Several metrics or benchmarks: error > regression > inconclusive > improved > pass."""


@dataclass(frozen=True)
class SideOptions:
    """The two environments the gate compares: each a Python interpreter or a command prefix, and a label."""

    baseline_python: str | None
    candidate_python: str | None
    baseline_prefix: str | None
    candidate_prefix: str | None
    baseline_label: str | None
    candidate_label: str | None

    def specs(self) -> tuple[Any, Any]:
        """(baseline, candidate) as SideSpecs; UsageError unless each side is given exactly one way."""
        from aibench.gate.gate import SideSpec

        out = []
        for name, py, prefix, label in (
                ("baseline", self.baseline_python, self.baseline_prefix, self.baseline_label),
                ("candidate", self.candidate_python, self.candidate_prefix, self.candidate_label)):
            if (py is None) == (prefix is None):
                raise UsageError(f"give exactly one of --{name}-python PATH or --{name} 'CMD PREFIX'")
            out.append(SideSpec.from_python(name, py, label) if py is not None
                       else SideSpec.from_prefix(name, prefix or "", label))
        return out[0], out[1]


@dataclass(frozen=True)
class RoundOptions:
    """How the rounds run: K before the first decision, at most N while undecided, the time budget, the seed
    of the side order (and bootstrap), and how long one benchmark process may run."""

    rounds: int
    max_rounds: int | None
    budget_s: float
    seed: int | None
    process_timeout: float

    def checked(self) -> RoundOptions:
        """These options with the seed drawn when none was given; UsageError when N < K."""
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise UsageError(f"--max-rounds {self.max_rounds} must be at least --rounds {self.rounds}")
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2**31))


@dataclass(frozen=True)
class DecisionOptions:
    """What the gate decides on and how: the metrics gated and ignored, the thresholds (a machine preset, one
    for every metric, one per metric), the exit code of an inconclusive or improved outcome, and the interval
    the verdicts rest on."""

    metrics: tuple[str, ...]
    ignore: tuple[str, ...]
    machine: str
    runner_alias: str | None
    threshold: str | None
    metric_thresholds: tuple[str, ...]
    inconclusive: str
    improved: str
    confidence: float
    ci_method: str
    trim: float

    def thresholds(self, ctx: click.Context) -> tuple[float, dict[str, float]]:
        """The threshold of every metric and those of single metrics (UsageError on a bad one)."""
        return _thresholds(self.threshold, self._machine(ctx), self.metric_thresholds)

    def _machine(self, ctx: click.Context) -> str:
        """--machine, or its older spelling --runner (hidden, same values); both given must agree."""
        if self.runner_alias is None:
            return self.machine
        given = ctx.get_parameter_source("machine") != click.core.ParameterSource.DEFAULT
        if given and self.machine != self.runner_alias:
            raise UsageError(f"--machine {self.machine} and --runner {self.runner_alias} disagree (--runner is the "
                             "older name of --machine: give one)")
        return self.runner_alias


@dataclass(frozen=True)
class GateOutputs:
    """Where the gate's findings go besides the table: the processes' result files, JSON, markdown, JUnit XML."""

    out_dir: Path | None
    json_out: str | None
    md_out: str | None
    junit_out: str | None


def _thresholds(base: str | None, machine: str, per_metric: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    try:
        thr = decide.parse_threshold(base) if base is not None else decide.MACHINE_THRESHOLDS[machine]
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


def _emit(doc: dict[str, Any], targets: dict[str, Path | None], inconclusive: str = "fail") -> None:
    """Write the outputs checked by :func:`aibench.results.store.check_outputs` (None: stdout)."""
    from aibench.gate import render
    from aibench.gate.pairs import dumps, write_text

    texts = {"--json": lambda: dumps(doc), "--markdown": lambda: render.markdown(doc),
             "--junit": lambda: render.junit(doc, inconclusive)}
    for flag, target in targets.items():
        write_text("-" if target is None else target, texts[flag]())


def _quiet(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("quiet"))


def _primary_metric(bench: Any, args: Sequence[str]) -> str:
    """The primary metric a run of ``bench`` with ``args`` reports: its runner's ``primary_from_args`` hook
    where it declares one (a load-generated benchmark's depends on the scenario, a training one's on --ttq)."""
    def option(name: str) -> str | None:
        for i, word in enumerate(args):
            if word == name:
                return args[i + 1] if i + 1 < len(args) else ""
            if word.startswith(name + "="):
                return word.partition("=")[2]
        return None

    from aibench import registry

    hook = bench.runner_spec.primary_from_args
    name: str = registry.load(hook)(bench, option) if hook is not None else bench.primary_metric
    return name


def _check_metrics(benches: Sequence[Any], metrics: Sequence[str], ignore: Sequence[str]) -> None:
    """A metric named with --metric/--ignore-metric must be one the benchmarks declare: a typo would
    otherwise drop a check silently. Ignoring a benchmark's primary metric (the one the gate decides on)
    without naming another with --metric leaves nothing to decide on: refused now, not after the rounds.
    Benchmarks unknown here (a plugin of one side) are not checked."""
    names = (*metrics, *ignore)
    if not names:
        return
    from aibench import registry

    declared: set[str] = set()
    known = []
    for b in benches:
        try:
            bench = registry.get(b.ref)
        except Exception:  # unknown here: the sides decide
            return
        declared.update(m.name for m in bench.metrics)
        known.append((b, bench))
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise UsageError(f"metric {unknown[0]!r} is not reported by {', '.join(b.ref for b in benches)}; "
                         f"known: {', '.join(sorted(declared))}")
    for b, bench in known:
        primary = _primary_metric(bench, b.args)
        if primary in ignore and not [m for m in metrics if m not in ignore]:
            raise UsageError(f"--ignore-metric {primary} drops the primary metric of {b.ref}, the one the gate "
                             "decides on, and leaves nothing to gate: to gate on another metric instead, name "
                             f"it with --metric NAME (its metrics: 'aibench info {bench.id}')")


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
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Seed of the bootstrap (0..2^64-1).")
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
    from aibench.results.store import check_outputs

    thr, overrides = _thresholds(threshold, "dedicated", metric_thresholds)
    # Before reading anything: an output never replaces an input, a result or anything but a regular file.
    targets = check_outputs({"--json": json_out, "--markdown": md_out}, [baseline, candidate],
                            stdout_ok=("--json", "--markdown"))
    doc = compare_paths([baseline], [candidate], metrics, thr, overrides, seed=seed)
    to_stdout = None in targets.values()
    if not _quiet(ctx):
        from rich.console import Console

        console = _console() if to_stdout else Console(width=None if sys.stdout.isatty() else 200)
        console.print(table(doc, title="aibench compare"))
    _emit(doc, targets)


# Gate options come first; the first word that is not a gate option starts the benchmark, and it and everything
# after it are passed to 'aibench run' (so a '--seed' after the benchmark is the benchmark's, not the gate's).
@click.command("gate", epilog=GATE_EXIT_HELP,
               context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED, metavar="[BENCHMARK [RUN ARGS]...]")
@option_bundle(
    "sides", SideOptions,
    click.option("--baseline-python", metavar="PATH", help="Python interpreter of the baseline environment."),
    click.option("--candidate-python", metavar="PATH", help="Python interpreter of the candidate environment."),
    click.option("--baseline", "baseline_prefix", metavar="'CMD'", help="Command prefix that runs the "
                 "baseline's Python, e.g. 'env PYTHONPATH=/src/base /venv/bin/python'."),
    click.option("--candidate", "candidate_prefix", metavar="'CMD'", help="Same for the candidate."),
    click.option("--baseline-label", metavar="TEXT", help="Name shown for the baseline (default: its command)."),
    click.option("--candidate-label", metavar="TEXT", help="Name shown for the candidate."))
@click.option("-b", "--benchmark", "bench_specs", multiple=True, metavar="'KIND/NAME [ARGS]'",
              help="A benchmark and its 'aibench run' arguments as one string (repeatable).")
@option_bundle(
    "schedule", RoundOptions,
    click.option("--rounds", type=click.IntRange(decide.MIN_ROUNDS, 10_000), default=10, show_default=True,
                 metavar="K", help="Interleaved rounds before the first decision; each round runs every benchmark "
                 "once per side."),
    click.option("--max-rounds", type=click.IntRange(decide.MIN_ROUNDS, 30_000), default=None, metavar="N",
                 help="While a metric is undecided, add rounds (K/2 at a time) up to N. The error rate is split "
                 "over the looks (half at the first), so all looks together keep --confidence. N = K: one look "
                 "at --confidence. [default: 3 × K]"),
    click.option("--budget-s", type=FiniteFloat(1.0, 7 * 86400.0), default=decide.DEFAULT_BUDGET_S,
                 show_default=True, metavar="S", help="Add no batch of rounds that would end more than S seconds "
                 "after the gate started (the first K rounds always run)."),
    click.option("--seed", type=Seed(), default=None, metavar="N",
                 help="Seed of the side order and the bootstrap [default: random, recorded in the JSON]."),
    click.option("--process-timeout", type=FiniteFloat(1.0, 86400.0), default=600.0, show_default=True,
                 metavar="S", help="Kill a benchmark process that runs longer (outcome: error)."))
@option_bundle(
    "decision", DecisionOptions,
    click.option("--metric", "metrics", multiple=True, metavar="NAME",
                 help="Also gate on this metric (repeatable, e.g. time_p99); the primary metric always counts."),
    click.option("--ignore-metric", "ignore", multiple=True, metavar="NAME",
                 help="Never gate on this metric (repeatable), e.g. a primary metric too noisy on shared runners."),
    click.option("--machine", type=click.Choice(sorted(decide.MACHINE_THRESHOLDS)), default="dedicated",
                 show_default=True, help="Threshold preset for the machine the gate runs on: dedicated 5%, shared "
                 "10% (a CI runner shared with other jobs)."),
    click.option("--runner", "runner_alias", type=click.Choice(sorted(decide.MACHINE_THRESHOLDS)), hidden=True,
                 help="Older name of --machine (same values)."),
    click.option("--threshold", metavar="T", help="Threshold for every metric (5% or 0.05); overrides --machine. "
                 "Tail metrics (p99, p99.9, max) get 2×."),
    click.option("--metric-threshold", "metric_thresholds", multiple=True, metavar="NAME=T",
                 help="Threshold for one metric, e.g. latency_p99=20% (repeatable)."),
    click.option("--inconclusive", type=click.Choice(["pass", "fail"]), default="fail", show_default=True,
                 help="How CI treats an inconclusive gate: exit 0, or exit 11."),
    click.option("--improved", type=click.Choice(["pass", "distinct"]), default="pass", show_default=True,
                 help="Exit code of an improved gate: 0, or 13 (to tell it from pass in a script)."),
    click.option("--confidence", type=FiniteFloat(0.5, 1.0, min_open=True, max_open=True), default=0.95,
                 show_default=True, metavar="C", help="Confidence level of the interval the verdicts rest on."),
    click.option("--ci-method", type=click.Choice(["trimmed-t", "BCa", "percentile"]), default="trimmed-t",
                 show_default=True, help="Interval of the (trimmed) geometric mean: Yuen's trimmed t, or a seeded "
                 "bootstrap (too narrow with few rounds)."),
    click.option("--trim", type=FiniteFloat(0.0, 0.5, max_open=True), default=0.2, show_default=True,
                 metavar="F", help="Share of rounds trimmed from each end before the geometric mean (robust to a "
                 "round hit by another job); 0: plain geometric mean."))
@option_bundle(
    "outputs", GateOutputs,
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                 help="Keep every process's result files here [default: a temporary folder, removed]."),
    click.option("--json", "json_out", metavar="FILE|-", help="Write the gate's record as JSON ('-': stdout)."),
    click.option("--markdown", "md_out", metavar="FILE|-", help="Write a markdown summary (for a PR comment)."),
    click.option("--junit", "junit_out", metavar="FILE", help="Write JUnit XML (one test case per metric)."))
@click.pass_context
def gate(ctx: click.Context, bench_args: tuple[str, ...], sides: SideOptions, bench_specs: tuple[str, ...],
         schedule: RoundOptions, decision: DecisionOptions, outputs: GateOutputs) -> None:
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
          --candidate 'env PYTHONPATH=/src/pr .venv/bin/python' --machine shared \\
          -b 'micro/gemm --m 256 --n 256 --k 256' -b 'component/dig --threads 1 --duration-s 2' \\
          --json gate.json --markdown gate.md --junit gate.xml
    """
    from aibench.gate.gate import BenchSpec, GateConfig, run_gate
    from aibench.gate.render import table
    from aibench.results.store import check_outputs, ensure_writable_dir

    baseline, candidate = sides.specs()
    benches = [BenchSpec.parse(s) for s in bench_specs]
    if bench_args:
        benches.append(BenchSpec.from_words(list(bench_args)))
    if not benches:
        raise UsageError("name a benchmark: 'aibench gate [OPTIONS] KIND/NAME [ARGS]' or -b 'KIND/NAME ARGS'")
    thr, overrides = decision.thresholds(ctx)
    _check_metrics(benches, decision.metrics, decision.ignore)
    # Before the rounds, which may take long: an output never replaces a result or anything but a regular file.
    targets = check_outputs({"--json": outputs.json_out, "--markdown": outputs.md_out, "--junit": outputs.junit_out},
                            stdout_ok=("--json", "--markdown"))
    schedule = schedule.checked()
    if outputs.out_dir is not None:
        ensure_writable_dir(outputs.out_dir)
    rounds, inconclusive = schedule.rounds, decision.inconclusive
    cfg = GateConfig(baseline=baseline, candidate=candidate, benches=benches, rounds=rounds,
                     metrics=decision.metrics, max_rounds=schedule.max_rounds, budget_s=schedule.budget_s,
                     ignore=decision.ignore, threshold=thr, thresholds=overrides, seed=schedule.seed,
                     timeout_s=schedule.process_timeout, out_dir=outputs.out_dir, trim=decision.trim,
                     confidence=decision.confidence, method=decision.ci_method)
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
                      f"{schedule.budget_s:g} s) × {len(benches)} benchmark(s) × 2 sides, seed {schedule.seed}, "
                      f"threshold {thr * 100:g}%", highlight=False, markup=False)
    if bar is not None:
        bar.start()
    try:
        doc = run_gate(cfg, progress, inconclusive, decision.improved)
    finally:
        if bar is not None:
            bar.stop()
    if not quiet:
        console.print(table(doc))
        for err in doc["errors"]:
            console.print(f"error: {err}", highlight=False, markup=False)
    _emit(doc, targets, inconclusive)
    code = doc["exit_code"]
    if doc["interrupted"]:
        click.echo(f"aibench: {lifetime.verb()}; {doc['rounds']} round(s) were complete"
                   + (" and are in the JSON" if outputs.json_out else ""), err=True)
        ctx.exit(lifetime.exit_code())
    click.echo(f"aibench gate: {doc['outcome']} (exit {code})", err=True)
    ctx.exit(code)
