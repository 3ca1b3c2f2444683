"""The ``aibench`` command. Thin: parse, call the library, print.

torch is imported only inside command bodies that measure, so ``aibench --help`` and ``aibench list`` stay
instant. Every expected error is an :class:`~aibench.errors.AibenchError`: one line on stderr and its exit
code. Anything else is a bug: one line too (``-vv`` shows the traceback), exit 70.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aibench import __version__, lifetime
from aibench.errors import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INVALID,
    AibenchError,
    UsageError,
)
from aibench.spec import FiniteFloat, RunnerArgs, Seed, option_bundle, runner_option_bundle

if TYPE_CHECKING:
    from aibench.harness import RunOptions

log = logging.getLogger("aibench")

EXIT_CODES_HELP = """\b
Exit codes: 0 ok · 1 a benchmark failed (recorded in its result) · 2 bad usage ·
3 not available on this machine (device, dtype) · 4 cannot read/write result files ·
5 run: a LoadGen result is INVALID (written, marked) · 6 serve: a port is in use ·
70 internal error · 130 interrupted by Ctrl-C, 143 by SIGTERM (finished results are kept, the
cut-short run is recorded)."""


class LazyGroup(click.Group):
    """Subcommands whose modules are imported only when that subcommand runs (or --help lists them)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=2) if args else []
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            # exc.message, not format_message(): click >= 8.4 appends its own "Did you mean" (over the
            # commands it has loaded only, not the lazy ones), and the hint would be printed twice.
            raise UsageError(f"{exc.message}{hint}") from None


def _console(stderr: bool) -> Any:
    """A rich console; when the stream is not a terminal, wide enough that tables are not truncated."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def _stderr_console() -> Any:
    return _console(stderr=True)


def _stdout_console() -> Any:
    return _console(stderr=False)


@click.group(cls=LazyGroup, lazy={
    "report": "aibench.report.cli:report",
    "sweep": "aibench.sweep.cli:sweep",
    "compare": "aibench.gate.cli:compare",
    "gate": "aibench.gate.cli:gate",
    "serve": "aibench.service.cli:serve",
    "tco": "aibench.tco.cli:tco",
    "partition": "aibench.partition.cli:partition",
    "scenario": "aibench.ecommerce.cli:scenario",
}, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="aibench")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no tables or progress.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Benchmarks for deep-learning systems: micro (operators), component (networks) and scenario
    (end-to-end) benchmarks, measured honestly and written as comparable result files.

    \b
    Quick start:
      aibench list                      what is registered
      aibench info micro/gemm           parameters and metrics of one benchmark
      aibench run micro gemm --m 512    measure it; results go to ./results
      aibench run micro                 every micro benchmark at its defaults
    """
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = {"verbose": verbose, "quiet": quiet}


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(["micro", "component", "scenario"]), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_cmd(pattern: str | None, kind: str | None, as_json: bool) -> None:
    """List registered benchmarks, optionally filtered by a shell-style PATTERN.

    \b
    Examples:
      aibench list
      aibench list 'micro/*pool*'
      aibench list --kind micro --json
    """
    from aibench import registry

    benches = registry.find(pattern, kind)
    if not benches and pattern and not any(ch in pattern for ch in "*?["):
        registry.get(pattern)  # a plain name: raises "unknown benchmark ... did you mean"
        benches = [registry.get(pattern)]
    if as_json:
        click.echo(json.dumps([{"id": b.id, "kind": b.kind, "name": b.name, "description": b.description,
                                "source": b.source, "aliases": list(b.aliases)} for b in benches], indent=2))
        return
    if not benches:
        click.echo(f"no benchmark matches {pattern!r}" if pattern else "no benchmarks registered", err=True)
        return
    from aibench.display import benchmarks_table

    _stdout_console().print(benchmarks_table(benches))


@cli.command("info")
@click.argument("ref", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def info_cmd(ref: tuple[str, ...], as_json: bool) -> None:
    """Show a benchmark's parameters, metrics and named sets: KIND/NAME or KIND NAME.

    \b
    Example:
      aibench info micro/conv
    """
    from aibench import registry

    bench_id, rest = registry.split_ref(list(ref))
    if rest:
        raise UsageError(f"unexpected arguments: {' '.join(rest)}")
    b = registry.get(bench_id)
    if as_json:
        click.echo(json.dumps({
            "id": b.id, "kind": b.kind, "name": b.name, "description": b.description, "source": b.source,
            "aliases": list(b.aliases), "runner": b.runner, "measured_by": b.runner_spec.describe,
            "capabilities": sorted(b.capabilities | b.runner_spec.capabilities), "primary_metric": b.primary_metric,
            "params": [p.to_json() for p in b.params],
            "metrics": [{"name": m.name, "unit": m.unit, "direction": m.direction, "help": m.help,
                         **m.declaration()} for m in b.metrics],
            "sets": {name: len(load()) for name, load in b.sets.items()},
        }, indent=2))
        return
    from aibench.display import benchmark_info

    benchmark_info(b, _stdout_console())


def _select(refs: list[str]) -> list[Any]:
    """Benchmarks named by the leading words of ``run``: nothing (all micro), a kind, a pattern, or one."""
    from aibench import registry

    if not refs:
        return registry.find(kind="micro")
    if len(refs) == 1 and refs[0] in registry.KINDS:
        found = registry.find(kind=refs[0])
        if not found:
            raise UsageError(f"no {refs[0]} benchmarks are registered yet")
        return found
    bench_id, rest = registry.split_ref(refs)
    if rest:
        raise UsageError(f"unexpected arguments {' '.join(rest)!r}: benchmark parameters are --name VALUE")
    if any(ch in bench_id for ch in "*?["):
        found = registry.find(bench_id)
        if not found:
            raise UsageError(f"no benchmark matches {bench_id!r} (see 'aibench list')")
        return found
    return [registry.get(bench_id)]


def _split_args(args: list[str]) -> tuple[list[str], list[str]]:
    for i, tok in enumerate(args):
        if tok.startswith("-"):
            return args[:i], args[i:]
    return args, []


class RunCommand(click.Command):
    """``run`` takes benchmark parameters as free ``--name VALUE`` options; ``run KIND NAME --help``
    appends that benchmark's parameters to the help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in ("-h", "--help") for a in args):
            refs, _ = _split_args(args)
            if refs:
                try:
                    benches = _select(refs)
                except AibenchError:
                    benches = []
                if len(benches) == 1:
                    click.echo(self.get_help(ctx))
                    click.echo("")
                    from aibench.display import benchmark_info

                    benchmark_info(benches[0], _stdout_console())
                    ctx.exit(0)
        return super().parse_args(ctx, args)


@dataclass(frozen=True)
class MeasureOptions:
    """How each result is measured and where it goes: the options ``run`` and ``sweep`` share (one
    definition, :data:`measure_options`), and what the runners' own options are built with
    (:class:`~aibench.registry.RunnerCli`)."""

    threads: int | None
    max_time: float
    warmup: float
    min_rounds: int
    target_ci: float
    seed: int
    out_dir: Path

    def run_options(self, runner_options: dict[str, Any], interrupted_dir: Path | None = None) -> RunOptions:
        """The harness's RunOptions: these settings with each runner's typed options (by key)."""
        from aibench.harness import RunOptions
        from aibench.measure.timer import TimerSettings

        timer = TimerSettings(warmup_s=self.warmup, max_time_s=self.max_time, min_rounds=self.min_rounds,
                              target_rel_ci=self.target_ci)
        return RunOptions(threads=self.threads, seed=self.seed, timer=timer,
                          interrupted_dir=interrupted_dir).with_options(**runner_options)


measure_options = option_bundle(
    "measure", MeasureOptions,
    click.option("--threads", type=click.IntRange(1, 1024), metavar="N",
                 help="Intra-op threads, pinned and recorded [default: 1 for micro benchmarks]."),
    click.option("--max-time", type=FiniteFloat(0.0, 86400, min_open=True), default=2.0, show_default=True,
                 metavar="S", help="Time budget for measuring one result (warm-up excluded)."),
    click.option("--warmup", type=FiniteFloat(0.0, 3600), default=0.1, show_default=True, metavar="S",
                 help="Minimum warm-up time before measuring."),
    click.option("--min-rounds", type=click.IntRange(3, 1_000_000), default=10, show_default=True, metavar="N",
                 help="Timed blocks before the stopping rule may end a measurement."),
    click.option("--target-ci", type=FiniteFloat(0.0, 1.0, min_open=True), default=0.01, show_default=True,
                 metavar="R", help="Stop once the 95% CI of the median is within ±R of it."),
    click.option("--seed", type=Seed(), default=0, show_default=True,
                 help="Seed for inputs and weights (and, when given, LoadGen's seeds): 0..2^64-1."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
                 show_default=True, help="Folder for result files."))

dry_run_option = click.option("--dry-run", is_flag=True, help="Validate and show what would run, measure nothing.")


@cli.command("run", cls=RunCommand, epilog=EXIT_CODES_HELP,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--set", "set_name", metavar="NAME",
              help="Run every size of a named set (e.g. deepbench-inference-server).")
@measure_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the result (an array if several) as JSON on stdout; tables go to stderr.")
@dry_run_option
@runner_option_bundle("runner_args")
@click.pass_context
def run_cmd(ctx: click.Context, args: tuple[str, ...], set_name: str | None, measure: MeasureOptions,
            as_json: bool, dry_run: bool, runner_args: RunnerArgs) -> None:
    """Measure benchmarks and write one result file per configuration.

    BENCHMARK is KIND NAME, KIND/NAME, a pattern such as 'micro/*pool*', or a kind alone; with nothing,
    every micro benchmark runs at its defaults. Benchmark parameters follow as --name VALUE (see
    'aibench run KIND NAME --help' or 'aibench info KIND/NAME'); a parameter applies to every selected
    benchmark that has it.

    \b
    Examples:
      aibench run micro gemm --m 1024 --n 1024 --k 1024 --dtype float32 --device cpu
      aibench run micro/conv --pass fwdbwd --batch 8
      aibench run micro gemm --set deepbench-inference-server --max-time 0.5
      aibench run micro --json > micro.json
      aibench run component imc --scenario server --target-qps 200 --latency-bound-ms 50
    """
    quiet = ctx.obj["quiet"] if ctx.obj else False
    refs, param_args = _split_args(list(args))
    benches = _select(refs)
    runs = _plan_runs(benches, param_args, set_name)
    out_dir, threads = measure.out_dir, measure.threads
    opts = measure.run_options(runner_args.build(measure), interrupted_dir=out_dir)
    runner_args.check(runs, opts)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    if threads is not None and usable and threads > usable and not quiet:
        click.echo(f"warning: --threads {threads} is more than the {usable} CPU(s) this process may use: the "
                   "threads will share cores, and the figures will show it", err=True)
    err = _stderr_console()
    if dry_run:
        for r in runs:
            click.echo(f"{r.bench.id} " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in r.params.items()))
        click.echo(f"{len(runs)} result(s) would be written to {out_dir}", err=True)
        return
    from aibench.results.store import ensure_writable_dir

    ensure_writable_dir(out_dir)
    _check_devices(runs)
    results, paths = _execute(runs, opts, out_dir, show_progress=not quiet and len(runs) > 1)
    if as_json:
        docs = [r.to_dict() for r in results]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    if not quiet:
        from rich.markup import escape

        from aibench.display import results_table

        console = err if as_json else _stdout_console()
        console.print(results_table(results))
        for r in results:  # a benchmark's one-line account of what ran (scenario/neurosurgeon: the cut)
            if isinstance(r.method.get("summary"), str):
                console.print(escape(f"{r.id}: {r.method['summary']}"))
        where = paths[0] if len(paths) == 1 else f"{out_dir}/ ({len(paths)} files)"
        console.print(f"results written to {where}")
    if any(r.status != "ok" for r in results):
        ctx.exit(EXIT_FAILED)
    invalid = [r for r in results if r.validity is not None and not r.validity.get("valid", True)]
    if invalid:  # written and marked; a CI step must not take an INVALID LoadGen run for a good one
        click.echo(f"aibench: {len(invalid)} of {len(results)} result(s) INVALID by LoadGen's rules: "
                   f"{invalid[0].validity.get('summary') or 'see the result'} (exit {EXIT_INVALID})", err=True)
        ctx.exit(EXIT_INVALID)


def _plan_runs(benches: list[Any], param_args: list[str], set_name: str | None) -> list[Any]:
    from aibench.harness import plan
    from aibench.spec import ParamSet, parse_cli_params

    # Parse against the union of parameters so an unknown flag is reported once, with suggestions.
    union: dict[str, Any] = {}
    for b in benches:
        for p in b.params:
            union.setdefault(p.name, p)
    given = parse_cli_params(param_args, ParamSet(tuple(union.values())))
    if set_name is not None:
        with_set = [b for b in benches if set_name in b.sets]
        if not with_set:
            if len(benches) == 1:
                benches[0].expand_set(set_name)  # raises with the benchmark's own sets listed
            raise UsageError(f"no selected benchmark has a set named {set_name!r}")
        benches = with_set
    runs = []
    for b in benches:
        mine = {k: v for k, v in given.items() if k in b.params}
        runs.extend(plan(b, mine, set_name))
    return runs


def _check_devices(runs: list[Any]) -> None:
    """Refuse up front a device or dtype this machine lacks, before any result is written."""
    from aibench.measure.device import resolve_device, resolve_dtype

    seen: set[tuple[str, str]] = set()
    for r in runs:
        key = (r.params.get("device", "cpu"), r.params.get("dtype", "float32"))
        if key in seen or "device" not in r.params:
            continue
        seen.add(key)
        dev = resolve_device(key[0])
        if "dtype" in r.params:
            resolve_dtype(key[1], dev)


def _execute(runs: list[Any], opts: Any, out_dir: Path, show_progress: bool) -> tuple[list[Any], list[Path]]:
    """Run each planned configuration and write its result as soon as it is done; on Ctrl-C (or SIGTERM),
    report what was kept and exit 130 (143)."""
    from aibench.harness import execute
    from aibench.results.store import write_result

    results: list[Any] = []
    paths: list[Path] = []
    progress = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # auto_refresh=False: no refresh thread may run while a timing window is open (DESIGN.md).
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=_stderr_console(), auto_refresh=False,
                            transient=True)
        progress.start()
        task = progress.add_task("", total=len(runs))
    try:
        for run in runs:
            if progress is not None:
                progress.update(task, description=run.bench.id)
                progress.refresh()
            result = execute(run, opts)
            paths.append(write_result(result, out_dir))
            results.append(result)
            log.info("wrote %s", paths[-1])
            if progress is not None:
                progress.advance(task)
                progress.refresh()
    except KeyboardInterrupt as exc:
        if progress is not None:
            progress.stop()
        # The runner records the interrupted run itself (status "interrupted") and names the file it wrote;
        # other files that appeared in the folder meanwhile are another run's.
        partial = getattr(exc, "record", None)
        extra = f", plus 1 interrupted (partial) result ({partial.name})" if partial else ""
        click.echo(f"aibench: {lifetime.verb(exc)}; {len(paths)} of {len(runs)} result(s) were finished and "
                   f"kept in {out_dir}{extra}", err=True)
        sys.exit(lifetime.exit_code(exc))
    finally:
        if progress is not None:
            progress.stop()
    return results, paths


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: expected errors are one line; bugs are one line plus exit 70. SIGTERM is
    handled as Ctrl-C is (aibench.lifetime), with exit 143 instead of 130."""
    with lifetime.handling_signals():
        try:
            _main(argv)
        except SystemExit as exc:
            # A thread that could not be stopped after an interruption (a LoadGen test) must not see the
            # interpreter's teardown: the process's own entry point ends at once, having flushed its output.
            lifetime.leave(exc.code if isinstance(exc.code, int) else 1, hard=argv is None)
            raise


def _main(argv: list[str] | None) -> None:
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=argv, prog_name="aibench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AibenchError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # click's own usage errors (bad option value, missing argument)
        click.echo(f"aibench: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(f"aibench: {lifetime.verb()}", err=True)
        sys.exit(lifetime.exit_code())
    except KeyboardInterrupt as exc:
        click.echo(f"aibench: {lifetime.verb(exc)}", err=True)
        sys.exit(lifetime.exit_code(exc))
    except Exception as exc:  # a bug: say so in one line, traceback with -vv
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            import traceback

            traceback.print_exc()
        click.echo(f"aibench: internal error: {type(exc).__name__}: {exc} (rerun with -vv for a traceback)",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
