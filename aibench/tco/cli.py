"""``aibench tco``: DjiNN & Tonic's total-cost-of-ownership comparison (ISCA 2015, §6), fed with throughput
measured by aibench. The model is a reconstruction (docs/tco.md); the command says so and shows every input
and where it came from."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from aibench.errors import UsageError

EPILOG = """\b
Exit codes: 0 ok · 2 bad usage: an unknown parameter, a negative or non-finite value, a bad --speedup,
both --accelerator and --speedup (or neither), an output refused (an input, a result, a folder) ·
4 result files: no usable throughput figure (no finished, non-INVALID throughput run of a Tonic app),
a file named directly that is not one (a micro benchmark, a SingleStream run, a sweep record),
unreadable or damaged files, a --params file that cannot be read."""

TABLE_SHARES = (0, 10, 25, 50, 75, 90, 100)  # the terminal's subset; --json and --csv have every percent


def _plain(text: Any) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _num(x: float) -> str:
    return f"{x:.4g}"


@click.command("tco", epilog=EPILOG)
@click.argument("cpu_results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--accelerator", "acc_paths", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Results measured on an accelerator server (files or folders; repeatable).")
@click.option("--speedup", "speedups", multiple=True, metavar="X|APP=X,…",
              help="No accelerator measured: its throughput as a speed-up over the CPU figure, for every app "
                   "(20) or per app (imc=20,pos=7); labelled 'given', never 'measured'.")
@click.option("--param", "param_texts", multiple=True, metavar="NAME=VALUE",
              help="Override a cost parameter (repeatable), e.g. gpu_price=2500; --list-params lists them.")
@click.option("--params", "param_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE.toml",
              help="Parameters from a TOML file (name = number; --param wins over it).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write every input, share (0..100%) and crossover as JSON ('-': stdout); "
                   "`aibench report FILE --html …` draws it.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write one row per mix, design and DNN share (0..100%).")
@click.option("--list-params", is_flag=True, help="List the cost parameters, their defaults and sources, and exit.")
@click.pass_context
def tco(ctx: click.Context, cpu_results: tuple[Path, ...], acc_paths: tuple[Path, ...], speedups: tuple[str, ...],
        param_texts: tuple[str, ...], param_files: tuple[Path, ...], json_path: Path | None, csv_path: Path | None,
        list_params: bool) -> None:
    """Total cost of ownership of CPU-only, integrated-GPU and disaggregated-GPU datacenters (DjiNN & Tonic,
    ISCA 2015, §6), normalised to CPU-only, for the workload mixes MIXED, IMAGE and NLP and a DNN share of
    the datacenter from 0 to 100%, from throughput measured by aibench.

    CPU_RESULTS are result files or folders measured on a CPU-only server (one machine = one server).
    The accelerator's throughput comes from --accelerator (results measured on it, per device) or, when
    none was measured, from --speedup. The model is a reconstruction (the paper gives no formulas): see
    docs/tco.md.

    \b
    Examples:
      aibench tco results/cpu --accelerator results/gpu
      aibench tco results --speedup 20 --param gpu_price=2500 --json tco.json
      aibench tco results --speedup imc=120,dig=120,face=40,asr=120,pos=7,chk=7,ner=7 --csv tco.csv
      aibench report tco.json --html tco.html
    """
    from aibench.tco import params as tparams

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    # Everything that can be refused without reading a result is checked first (exit 2).
    if list_params:
        _list_params(tparams.resolve(param_texts, param_files))
        return
    if not cpu_results:
        raise UsageError("name the CPU results (files or folders): aibench tco CPU_RESULTS [--accelerator PATH | "
                         "--speedup X]")
    if acc_paths and speedups:
        raise UsageError("--accelerator and --speedup exclude each other: measured accelerator figures, or a "
                         "given speed-up, not both")
    if not acc_paths and not speedups:
        raise UsageError("no accelerator figures: name results measured on one (--accelerator PATH) or give a "
                         "speed-up over the CPU figure (--speedup X or --speedup imc=20,pos=7)")
    from aibench.tco import inputs as tinputs

    speedup = tinputs.parse_speedup(speedups) if speedups else None
    resolved = tparams.resolve(param_texts, param_files)
    from aibench.results.store import check_outputs

    targets = check_outputs({"--json": json_path, "--csv": csv_path}, [*cpu_results, *acc_paths, *param_files],
                            stdout_ok={"--json"})
    cpu_side = tinputs.read_side("cpu", cpu_results)
    acc_side = tinputs.read_side("accelerator", acc_paths) if acc_paths else None
    cpu, acc, notes = tinputs.pair(cpu_side, acc_side, speedup)  # type: ignore[arg-type]
    # each app's DNN share and bytes per query where the results measured them, unless given
    resolved = tparams.with_measured(resolved, tinputs.measured_params(cpu_side, acc_side))
    if speedup is not None:
        notes += [f"{app}: a speed-up was given but there is no CPU figure for it; left out"
                  for app in speedup if app != "*" and app not in cpu]

    from aibench.tco import report as treport

    doc = treport.document(resolved, cpu, acc, cpu_side, acc_side, speedups, param_files, notes)
    out = sys.stderr if targets.get("--json", False) is None else sys.stdout
    for side in (cpu_side, acc_side):
        if side is not None and side.note() and not quiet:
            click.echo(_plain(f"aibench: note: {side.name} results: skipped {side.note()}"), err=True)
    if not quiet:
        click.echo(treport.text(doc, TABLE_SHARES), file=out, nl=False)
    from aibench.results.store import write_text_atomic

    if targets.get("--json"):
        write_text_atomic(targets["--json"], json.dumps(doc, indent=1, allow_nan=False) + "\n")  # type: ignore[arg-type]
        if not quiet:
            click.echo(f"wrote {targets['--json']}", err=True)
    elif "--json" in targets:
        click.echo(json.dumps(doc, indent=1, allow_nan=False))
    if targets.get("--csv"):
        write_text_atomic(targets["--csv"], treport.csv_text(doc))  # type: ignore[arg-type]
        if not quiet:
            click.echo(f"wrote {targets['--csv']}", err=True)


def _list_params(resolved: dict[str, Any]) -> None:
    from aibench.tco.params import SPEC

    width = max(len(n) for n in resolved)
    for name, v in resolved.items():
        click.echo(_plain(f"{name:<{width}}  {_num(v.value):>10} {v.unit:<16} {v.source}  · {SPEC[name].help}"))
