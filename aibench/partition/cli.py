"""``aibench partition``: per-layer profiles, per-layer-type prediction models, and the split decision
(Neurosurgeon). Thin: parse, call :mod:`aibench.partition`, print. docs/partition.md has the method."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from aibench.partition.sides import DTYPES, SIDES


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def side_options(fn: Any) -> Any:
    """The options that constrain a side (shared by profile and fit)."""
    fn = click.option("--cpu-quota", type=float, default=None,
                      help="cap the side at this many cores of CPU time (cgroup v2 cpu.max or v1 cfs quota; "
                           "root only; refused with exit 3 where the machine does not allow it)")(fn)
    fn = click.option("--dtype", type=click.Choice(DTYPES), default=None, help="element type (default float32)")(fn)
    fn = click.option("--threads", type=int, default=None,
                      help="torch threads (default: device 1, server every usable core)")(fn)
    fn = click.option("--device", "device", default=None,
                      help="cpu, cuda or cuda:N (default: device cpu; server cuda when present, else cpu)")(fn)
    fn = click.option("--side", type=click.Choice(SIDES), default="device", show_default=True,
                      help="which side of the split this configuration plays")(fn)
    return fn


@click.group("partition")
def partition() -> None:
    """Neurosurgeon: where to cut a network between a weak device and a strong server.

    \b
    aibench partition profile component/imc --side device     time every layer (a result file)
    aibench partition fit --side device                       fit per-layer-type models (a JSON profile)
    aibench partition choose component/imc --network lte      the predicted time of every cut, and the choice

    See docs/partition.md for the method and what is measured and what is derived.
    """


@partition.command("profile")
@click.argument("ref")
@side_options
@click.option("--batch", type=int, default=1, show_default=True, help="requests in the input")
@click.option("--min-reps", type=click.IntRange(1, 100_000), default=5, show_default=True,
              help="timed calls per layer, at least")
@click.option("--max-reps", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="timed calls per layer, at most")
@click.option("--min-time", "min_time_s", type=click.FloatRange(0, 3600), default=0.2, show_default=True,
              help="seconds of timed calls per layer, at least")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="folder for the result file")
@click.option("--json", "as_json", is_flag=True, help="print the per-layer table as JSON")
def profile_cmd(ref: str, side: str, device: str | None, threads: int | None, dtype: str | None,
                cpu_quota: float | None, batch: int, min_reps: int, max_reps: int, min_time_s: float,
                out_dir: str, as_json: bool) -> None:
    """Time every layer of the network of REF (e.g. component/imc) on one side; writes a result file whose
    parts.layer holds each layer's distribution (aibench report shows it)."""
    from aibench.errors import UsageError
    from aibench.partition.profile import profile
    from aibench.partition.sides import side_for
    from aibench.results.store import ensure_writable_dir, write_result

    if batch < 1:
        raise UsageError(f"--batch must be at least 1, not {batch}")
    if max_reps < min_reps:
        raise UsageError(f"--max-reps ({max_reps}) is below --min-reps ({min_reps})")
    s = side_for(side, device, threads, dtype, cpu_quota)
    directory = ensure_writable_dir(out_dir)
    result = profile(ref, s, batch, min_reps, max_reps, min_time_s)
    path = write_result(result, directory)
    rows = profile_rows(result)
    if as_json:
        click.echo(json.dumps({"result": str(path), "side": result.method["partition"]["side"],
                               "input_bytes": result.method["partition"]["input_bytes"], "layers": rows}, indent=2))
        return
    from rich.table import Table

    info = result.method["partition"]["side"]
    quota = f", quota {info['quota']['cores']:g} cores (cgroup {info['quota']['cgroup']})" if info.get("quota") else ""
    table = Table(title=f"{result.id} on the {s.name} side: {s.device}, {info['threads_effective']} thread(s), "
                        f"{s.dtype}{quota}", title_justify="left")
    for col in ("j", "layer", "type", "median ms", "IQR ms", "n", "out KB"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for i, row in enumerate(rows, start=1):
        table.add_row(str(i), row["name"], row["type"], f"{row['median_s'] * 1e3:.3f}", f"{row['iqr_s'] * 1e3:.3f}",
                      str(row["n"]), f"{row['out_bytes'] / 1e3:.1f}")
    con = _console()
    con.print(table)
    whole = result.metrics["time_median"]["value"]
    summed = result.metrics["layers_sum_median"]["value"]
    con.print(f"input {result.method['partition']['input_bytes'] / 1e3:.1f} KB · whole network median "
              f"{whole * 1e3:.2f} ms · sum of layer medians {summed * 1e3:.2f} ms · {path}")


def profile_rows(result: Any) -> list[dict[str, Any]]:
    """One row per layer of a profile result: name, type, median and IQR seconds, calls, output bytes."""
    rows = []
    for layer in result.method["partition"]["layers"]:
        part = result.parts["layer"][layer["name"]]
        rows.append({"name": layer["name"], "type": layer["type"], "median_s": part["summary"]["median"],
                     "iqr_s": part["summary"]["iqr"], "n": part["seen"], "out_bytes": layer["out_bytes"],
                     "work": layer["work"]})
    return rows


