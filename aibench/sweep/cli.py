"""``aibench sweep``: one result per point of a parameter, thread or device sweep, a sweep record linking them,
and a table at the end. Thin: parse, plan (:mod:`aibench.sweep.plan`), run (:mod:`aibench.sweep.engine`),
print. The measuring options and the runners' own options are the ``run`` command's bundles
(:data:`aibench.cli.measure_options`, :func:`aibench.spec.runner_option_bundle`), so the two commands parse
them identically.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from typing import Any

import click

from aibench import lifetime
from aibench.cli import (
    EXIT_CODES_HELP,
    MeasureOptions,
    _check_devices,
    _split_args,
    _stderr_console,
    _stdout_console,
    dry_run_option,
    measure_options,
)
from aibench.errors import EXIT_FAILED, UnavailableError, UsageError
from aibench.spec import RunnerArgs, option_bundle, runner_option_bundle
from aibench.sweep.analysis import LATENCY_CHOICES


@dataclass(frozen=True)
class PointOptions:
    """Which points a sweep measures (--values, --max, --devices, --instances-per-device) and the latency its
    knee's bound applies to (--latency-metric)."""

    values_text: str | None
    max_threads: int | None
    devices_text: str | None
    instances_text: str | None
    latency_metric: str | None


@dataclass(frozen=True)
class LaunchOptions:
    """Where the ranks of a distributed gpus sweep run: machines, this one's rank, node 0's rendezvous."""

    nnodes: int
    node_rank: int
    rdzv_endpoint: str | None

    @property
    def multi_node(self) -> bool:
        """Any of the options given (they only make sense for a distributed sweep)."""
        return self.nnodes > 1 or bool(self.node_rank) or bool(self.rdzv_endpoint)


class SweepCommand(click.Command):
    """``aibench sweep FORM KIND NAME --help`` appends that benchmark's parameters to the help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in ("-h", "--help") for a in args):
            refs, _ = _split_args(args)
            if len(refs) >= 2:
                from aibench import registry
                from aibench.errors import AibenchError

                try:
                    bench_id, rest = registry.split_ref(refs[1:])
                    bench = registry.get(bench_id) if not rest else None
                except AibenchError:
                    bench = None
                if bench is not None:
                    click.echo(self.get_help(ctx))
                    click.echo("")
                    from aibench.display import benchmark_info

                    benchmark_info(bench, _stdout_console())
                    ctx.exit(0)
        return super().parse_args(ctx, args)


@click.command("sweep", cls=SweepCommand, epilog=EXIT_CODES_HELP,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@option_bundle(
    "points", PointOptions,
    click.option("--values", "values_text", metavar="LIST",
                 help="The points: 1,2,4,8 · 1:64:x2 (×2 steps) · 1:16 or 1:16:+4 (added steps); items combine."),
    click.option("--max", "max_threads", type=click.IntRange(1, 1024), metavar="N",
                 help="threads: sweep 1..N [default: the CPUs this process may use]."),
    click.option("--devices", "devices_text", metavar="SPEC",
                 help="gpus: cpu:N (N CPU worker processes) · cuda · cuda:0,1 · N (GPUs 0..N-1) [default: every "
                      "GPU]."),
    click.option("--instances-per-device", "instances_text", metavar="K[,K…]",
                 help="gpus: worker processes per device [default: 1]; several values sweep instances (MPS-style "
                      "study) over all --devices."),
    click.option("--latency-metric", type=click.Choice(LATENCY_CHOICES), default=None,
                 help="With --latency-bound-ms: the latency the knee's bound applies to [default: batch in "
                      "Offline (batch / samples/s), p99 otherwise]."))
@click.option("--json", "as_json", is_flag=True,
              help="Print {\"sweep\": the sweep record, \"results\": one result per point} as JSON on stdout; "
                   "tables go to stderr.")
@click.option("--resume", is_flag=True,
              help="Continue the latest sweep with the same definition in --out: points already done are kept.")
@option_bundle(
    "launch", LaunchOptions,
    click.option("--nnodes", type=click.IntRange(1, 4096), default=1, show_default=True,
                 help="gpus, distributed benchmarks (training, all-reduce): machines taking part (torchrun)."),
    click.option("--node-rank", type=click.IntRange(0, 4095), default=0, show_default=True,
                 help="gpus, distributed: this machine's rank (0 writes the results)."),
    click.option("--rdzv-endpoint", metavar="HOST:PORT", default=None,
                 help="gpus, distributed: node 0's address and a port for torchrun's static rendezvous (its store "
                      "listens there on every interface) [default with --nnodes 1: no torchrun; aibench hosts the "
                      "store on 127.0.0.1, a free port]."))
@measure_options
@dry_run_option
@runner_option_bundle("runner_args")
@click.pass_context
def sweep(ctx: click.Context, args: tuple[str, ...], points: PointOptions, as_json: bool, resume: bool,
          launch: LaunchOptions, measure: MeasureOptions, dry_run: bool, runner_args: RunnerArgs) -> None:
    """Measure a benchmark at every point of a sweep: one result file per point, a sweep record
    (sweep-<id>.json) linking them, and a table.

    \b
    FORMS (the first word):
      PARAM    a numeric benchmark parameter (batch, frames, ...) or LoadGen option (target_qps, users, ...),
               with --values; param:NAME always means the benchmark's own parameter
      threads  --threads from 1 to N (--max N or --values): speedup and parallel efficiency
      gpus     devices 1..N (--devices), or --instances-per-device K1,K2,...: independent worker processes
               driven by one load generator (inference); speedup and efficiency vs linear

    \b
    --latency-bound-ms MS names the knee: the point with the highest samples/s whose latency
    (--latency-metric) is within MS (how DjiNN chose its batch sizes). In Server it is LoadGen's bound too.
    A failing point is recorded and the sweep goes on; Ctrl-C keeps finished points (exit 130; SIGTERM
    the same, exit 143); --resume skips points already done.

    \b
    Examples:
      aibench sweep batch component imc --values 1:64:x2 --latency-bound-ms 50
      aibench sweep threads component imc --max 2
      aibench sweep gpus component dig --devices cpu:2
      aibench sweep gpus component dig --devices cuda:0 --instances-per-device 1,2,4
      aibench sweep instances scenario djinn --app imc --values 1,2,4
      aibench sweep target_qps component imc --scenario server --values 50:400:x2 --latency-bound-ms 100
      aibench sweep m micro gemm --values 256:2048:x2 --n 1024 --k 1024
    """
    from aibench.sweep.plan import plan_sweep, resolve_form

    quiet = ctx.obj["quiet"] if ctx.obj else False
    form, bench, given = _benchmark(args)
    kind, _param, _target = resolve_form(form, bench)
    runner_options = runner_args.build(measure)
    bound = _knee_bound(runner_options)
    opts = measure.run_options(runner_options)
    if launch.multi_node and not (kind == "gpus" and not bench.can("inference")):
        raise UsageError("--nnodes, --node-rank and --rdzv-endpoint apply to distributed benchmarks (training, "
                         "all-reduce) in 'aibench sweep gpus'; inference scales out within one machine")
    plan = plan_sweep(form, bench, given, opts, values_text=points.values_text, max_threads=points.max_threads,
                      usable_cpus=_usable_cpus(), devices=_devices(kind, bench, points),
                      instances_text=points.instances_text, latency_bound_ms=bound,
                      latency_metric=points.latency_metric, threads_given=measure.threads is not None)
    for p in plan.points:  # each point's own runner options (a swept option differs between them)
        runner_args.check([p.run], p.opts)
    executor = _executor(kind, bench, plan, launch, measure.seed)
    out_dir = measure.out_dir

    err = _stderr_console()
    for note in plan.notes:
        err.print(f"note: {note}", markup=False)
    if dry_run:
        for p in plan.points:
            where = " ".join(f"--{k.replace('_', '-')}={v}" for k, v in p.run.params.items())
            extra = f" (workers on {', '.join(p.extra['slots'][i] for i in p.extra['workers'])})" if p.extra else ""
            click.echo(f"{p.index}: {plan.param}={p.value}: {bench.id} {where}"
                       f"{'' if p.opts.threads is None else f' threads={p.opts.threads}'}{extra}")
        click.echo(f"{len(plan.points)} result(s) and a sweep record would be written to {out_dir}", err=True)
        executor.close()
        return

    from aibench.results.store import ensure_writable_dir
    from aibench.sweep.engine import SweepInterrupted, run_sweep

    ensure_writable_dir(out_dir)
    if kind != "gpus":
        _check_devices([p.run for p in plan.points])
    progress = None
    task = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # auto_refresh=False: no refresh thread may run while a measurement is open (DESIGN.md).
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, auto_refresh=False, transient=True)
        progress.start()
        task = progress.add_task("", total=len(plan.points))

    def on_point(description: str, index: int, total: int) -> None:
        if progress is not None:
            progress.update(task, description=description, completed=index)
            progress.refresh()

    def say(message: str) -> None:
        if not quiet:
            err.print(f"aibench: {message}", markup=False, highlight=False)

    try:
        outcome = run_sweep(plan, out_dir, executor, resume=resume, progress=on_point, say=say)
    except SweepInterrupted as exc:
        if progress is not None:
            progress.stop()
        done = sum(1 for p in exc.record.points if p.status == "ok")
        click.echo(f"aibench: {lifetime.verb()}; {done} of {len(exc.record.points)} point(s) were finished and "
                   f"kept; the sweep record is {exc.record_path} (continue with --resume)", err=True)
        sys.exit(lifetime.exit_code())
    finally:
        if progress is not None:
            progress.stop()
    record = outcome.record
    if as_json:
        click.echo(json.dumps({"sweep": record.to_dict(),
                               "results": [r.to_dict() if r is not None else None for r in outcome.results]},
                              indent=2))
    if not quiet:
        from aibench.sweep.display import sweep_table

        console = err if as_json else _stdout_console()
        console.print(sweep_table(plan, record, outcome.results))
        if record.knee_request is not None:
            note = record.knee_note if record.knee is not None else f"no knee: {record.knee_note}"
            console.print(note, markup=False, highlight=False)
        console.print(f"sweep record written to {outcome.record_path}", markup=False, highlight=False)
    if any(p.status != "ok" for p in record.points):
        ctx.exit(EXIT_FAILED)


def _benchmark(args: tuple[str, ...]) -> tuple[str, Any, dict[str, Any]]:
    """The form (what is swept), the benchmark and its fixed parameters, from the command's words."""
    from aibench import registry
    from aibench.spec import parse_cli_params

    refs, param_args = _split_args(list(args))
    if len(refs) < 2:
        raise UsageError("name what to sweep and a benchmark: aibench sweep PARAM|threads|gpus KIND NAME "
                         "(see 'aibench sweep --help')")
    bench_id, rest = registry.split_ref(refs[1:])
    if rest:
        raise UsageError(f"unexpected arguments {' '.join(rest)!r}: benchmark parameters are --name VALUE")
    if any(ch in bench_id for ch in "*?["):
        raise UsageError("a sweep measures one benchmark: name it, not a pattern")
    bench = registry.get(bench_id)
    return refs[0], bench, dict(parse_cli_params(param_args, bench.params))


def _knee_bound(runner_options: dict[str, Any]) -> float | None:
    """--latency-bound-ms: the bound of the sweep's knee. LoadGen takes a bound in Server only, so elsewhere it
    is removed from LoadGen's options (``runner_options`` is updated) and is the knee's alone."""
    lg = runner_options.get("loadgen")
    bound = getattr(lg, "latency_bound_ms", None)
    if lg is None or bound is None:
        return None
    scenario = lg.scenario or ("closed-loop" if lg.users is not None else "offline")
    if scenario != "server":
        runner_options["loadgen"] = replace(lg, latency_bound_ms=None,
                                            explicit=tuple(x for x in lg.explicit if x != "latency_bound_ms"))
    return float(bound)


def _devices(kind: str, bench: Any, points: PointOptions) -> list[str] | None:
    """The device slots of a gpus sweep (None for another form, which refuses --devices and
    --instances-per-device); UnavailableError when the machine has too few GPUs for the benchmark."""
    from aibench.sweep.plan import parse_devices

    text = points.devices_text
    if kind != "gpus":
        if text is not None or points.instances_text is not None:
            raise UsageError("--devices and --instances-per-device apply to 'aibench sweep gpus'")
        return None
    cuda = _cuda_count(text)
    on_cpu = text is not None and text.strip().lower().startswith("cpu")
    if bench.can("owns-system") and not on_cpu and (cuda == 0 or (cuda < 2 and text is None)):
        one = " (--devices cuda:0 sweeps the one)" if cuda == 1 else ""
        raise UnavailableError(
            f"this machine has {cuda} CUDA GPU(s): a device sweep of {bench.id} (DjiNN's Figs. 11/12) needs "
            f"two or more{one}; sweep CPU instances with 'aibench sweep instances {bench.kind} {bench.name} "
            "--values 1,2,4'")
    devices: list[str] = parse_devices(text, cuda)
    return devices


def _executor(kind: str, bench: Any, plan: Any, launch: LaunchOptions, seed: int) -> Any:
    """Where the points run: one pool of worker processes (a gpus sweep of an inference benchmark), distributed
    ranks (a gpus sweep of a training or collective benchmark), or this process."""
    if kind == "gpus" and bench.can("inference") and not bench.can("owns-system"):
        from aibench.sweep.scaleout import PoolExecutor

        first = plan.points[0]
        return PoolExecutor(bench, first.extra["slots"], first.opts.threads or 1, seed, first.run.params)
    if kind == "gpus" and not bench.can("inference"):
        from aibench.sweep.launch import distributed_executor

        return distributed_executor(plan, nnodes=launch.nnodes, node_rank=launch.node_rank,
                                    rdzv_endpoint=launch.rdzv_endpoint)
    from aibench.sweep.engine import InProcessExecutor

    return InProcessExecutor()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cuda_count(devices_text: str | None) -> int:
    """GPUs on this machine (imports torch only when the device spec is not CPU workers)."""
    if devices_text is not None and devices_text.strip().lower().startswith("cpu"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
