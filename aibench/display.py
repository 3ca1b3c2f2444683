"""Human-facing rendering: value formatting and rich tables. Scripts use ``--json`` instead."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from aibench.registry import Benchmark
from aibench.results.schema import Result

_TIME_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "–"
    for scale, unit in _TIME_UNITS:
        if abs(x) >= scale or unit == "ns":
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} s"


def fmt_bool(value: bool) -> str:
    return "yes" if value else "no"


def fmt_value(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):  # before numbers: True is an int to Python, "yes" to a reader
        return fmt_bool(value)
    if unit == "fraction" and isinstance(value, int | float):
        return f"{value * 100:.3g}%"
    if unit == "s":
        return fmt_seconds(value)
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def fmt_metric(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    if entry.get("value") is None:
        return "n/a"
    # A metric's "mark" is a short qualifier a table must show beside the value (e.g. "max of 64": an
    # early-stopping estimate that is only the highest latency); its "note" says more, in the file.
    mark = f" ({entry['mark']})" if isinstance(entry.get("mark"), str) and entry["mark"] else ""
    if entry.get("valid") is False:  # from an INVALID LoadGen run: never a plain number
        return f"INVALID {fmt_value(entry['value'], entry.get('unit', ''))}{mark}"
    return fmt_value(entry["value"], entry.get("unit", "")) + mark


def _varying_params(results: Sequence[Result]) -> list[str]:
    """Parameters worth a column: those that differ between the rows, or all if there is one row."""
    keys: list[str] = []
    for r in results:
        for k in r.params:
            if k not in keys and k not in ("device", "dtype", "pass"):
                keys.append(k)
    if len(results) <= 1:
        return keys
    return [k for k in keys if len({repr(r.params.get(k)) for r in results}) > 1]


# Short column headers for common metric names; any other metric shows under its own name.
HEADERS = {"time_median": "median", "time_iqr": "IQR", "time_p90": "p90", "time_p99": "p99",
           "time_min": "min", "gflops": "GFLOP/s", "gbps": "GB/s"}
MAX_METRIC_COLUMNS = 8


def _is_meter_metric(name: str) -> bool:
    """Energy metrics derived from the meters; shown in the energy column instead of their own."""
    return name.startswith("energy_per_") or name.endswith("_per_joule") or name == "avg_power"


def _stage_of(entry: Any) -> str | None:
    """The stage a metric is the share of, by its declaration (``"statistic": "ratio", "of":
    "parts.stage.<stage>"``: a LoadGen run's --breakdown shares), else None."""
    if not isinstance(entry, dict) or entry.get("statistic") != "ratio":
        return None
    of = entry.get("of")
    return of.removeprefix("parts.stage.") if isinstance(of, str) and of.startswith("parts.stage.") else None


def _is_share(r: Result, name: str) -> bool:
    """The stage shares: shown in one breakdown column instead of one column each."""
    return _stage_of(r.metrics.get(name)) is not None


def _metric_columns(results: Sequence[Result], limit: int | None = MAX_METRIC_COLUMNS) -> list[str]:
    cols: list[str] = []
    for r in results:
        if r.primary_metric and r.primary_metric not in cols:
            cols.append(r.primary_metric)
        cols.extend(k for k in r.metrics if k not in cols and not _is_meter_metric(k) and not _is_share(r, k))
    return cols if limit is None else cols[:limit]


def fmt_breakdown(r: Result) -> str:
    """``preprocess 12% (3.1 µs) · dnn 80% (21 µs) · …``: each stage's share of the batch time, from the
    metrics declared as shares of a stage, with the median time of one batch in it where the stage's
    distribution was kept (``parts.stage``); or '–'."""
    parts, invalid = [], False
    stages = r.parts.get("stage") if isinstance(r.parts, dict) else None
    for entry in r.metrics.values():
        stage = _stage_of(entry)
        if stage is None:
            continue
        value = entry.get("value")
        text = f"{stage} " + ("n/a" if value is None else fmt_value(value, entry.get("unit", "")))
        summary = ((stages or {}).get(stage) or {}).get("summary") if value is not None else None
        if isinstance(summary, dict) and isinstance(summary.get("median"), int | float):
            text += f" ({fmt_value(summary['median'], 's')})"
        parts.append(text)
        invalid = invalid or entry.get("valid") is False
    if not parts:
        return "–"
    return ("INVALID " if invalid else "") + " · ".join(parts)  # from an INVALID run: never plain numbers


def _declared(m: Any) -> str:
    """What a metric declares it is, in a few words: ``p99 of samples.time``, ``rate (1/median of samples.time)``."""
    if m.inverse_of:
        return f"{m.statistic} (1/{m.inverse_of} of {m.of})"
    return f"{m.statistic} of {m.of}" if m.of else m.statistic


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def min_table_width(table: Table) -> int:
    """The narrowest width at which ``table`` shows every cell whole: no-wrap cells on one line, wrapping
    cells broken only at spaces (rich's own measure counts a no-wrap cell by its longest word, so a table
    it deems to fit still cuts those cells to "…")."""
    _, right, _, left = Padding.unpack(table.padding)
    width = 0
    for column in table.columns:
        need = column.min_width or 0
        for cell in (column.header, *column.cells):
            lines = _plain(cell).splitlines() or [""]
            if column.no_wrap:
                need = max(need, *(cell_len(line) for line in lines))
            else:
                need = max(need, *(cell_len(word) for line in lines for word in line.split() or [""]))
        width += need + left + right
    if table.box is not None:
        width += len(table.columns) + 1 if table.show_edge else len(table.columns) - 1
    return width


class FitOrStack:
    """A wide table where it fits, else the same cells stacked as records: never a cell cut to "…".

    A rich table narrower than its no-wrap columns shrinks the others to an ellipsis ("I…" for INVALID, in
    CI logs and pipes, where the width is fixed). This measures the wide table for the width it is given:
    when its *minimum* width (every no-wrap cell whole, every wrapping cell at its longest word) fits, it is
    printed as it is; otherwise each row becomes a block of ``name  value`` lines, whose values wrap at
    spaces, so every cell's full text is still there.
    """

    def __init__(self, wide: Table, records: Sequence[tuple[str, Sequence[tuple[str, str]]]],
                 title: str | None = None, notes: str | None = None) -> None:
        self.wide = wide
        self.records = records
        self.title = title
        self.notes = notes

    def stacked(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self.title:
            parts.append(Text.from_markup(self.title, style="italic", overflow="fold"))
        for i, (head, fields) in enumerate(self.records):
            if i:
                parts.append(Text(""))
            parts.append(Text.from_markup(head, style="bold", overflow="fold"))
            grid = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 2))
            grid.add_column("name", no_wrap=True, style="dim")
            grid.add_column("value", overflow="fold")
            for name, value in fields:
                grid.add_row(name, value)
            parts.append(grid)
        if self.notes:
            parts.append(Text.from_markup(self.notes, overflow="fold"))
        return Group(*parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        yield self.wide if min_table_width(self.wide) <= options.max_width else self.stacked()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.wide)


def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def fmt_bytes(n: float) -> str:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_energy(meters: dict[str, Any]) -> str:
    """Energy per unit of work and average power, or 'unavailable (reason)'."""
    total = (meters.get("energy") or {}).get("total")
    if not total:
        return "–"
    if total.get("energy_j") is None:
        return f"unavailable ({total.get('reason')})"
    work = meters.get("work") or {}
    count, per = work.get("count"), work.get("per", "window")
    text = _si(total["energy_j"] / count, "J") + f"/{per}" if count else _si(total["energy_j"], "J")
    if total.get("avg_power_w") is not None:
        text += f" · {total['avg_power_w']:.3g} W"
    return text + (f" ({total['provenance']})" if total.get("provenance") != "measured" else "")


def fmt_memory(meters: dict[str, Any]) -> str:
    """Peak memory over the window: CUDA allocated where on a GPU, and the process's resident peak."""
    mem = meters.get("memory") or {}
    parts = []
    cuda = mem.get("cuda")
    if cuda and cuda.get("peak_allocated_bytes") is not None:
        parts.append(f"CUDA {fmt_bytes(cuda['peak_allocated_bytes'])}")
    proc = mem.get("process")
    if proc:
        parts.append(f"RSS {fmt_bytes(proc['peak_rss_bytes'])}" if proc.get("peak_rss_bytes") is not None
                     else f"RSS unavailable ({proc.get('reason')})")
    return " · ".join(parts) or "–"


def _status(r: Result) -> str:
    if r.status != "ok":
        return f"[red]{r.status}[/red]: {escape(r.error['message']) if r.error else ''}"
    if r.validity is not None and not r.validity.get("valid", True):
        return "[red]INVALID[/red] (see below)"
    drivers = (r.method.get(k) for k in ("adapter", "closed_loop")) if isinstance(r.method, dict) else ()
    if any(isinstance(d, dict) and d.get("stop_fault") for d in drivers):  # aibench.loadgen.drive.record_stop
        return "[yellow]system did not stop[/yellow] (method.adapter.stop_fault)"
    faults = r.method.get("page_faults") if isinstance(r.method, dict) else None
    if r.noisy and isinstance(faults, dict) and faults.get("dominant"):
        per = (faults.get("minor_per_call") or 0) + (faults.get("major_per_call") or 0)
        return f"[yellow]noisy[/yellow] ({per:,.0f} page faults per call)"
    if r.noisy:
        ratios = [s["summary"].get("iqr_over_median") for s in r.samples.values()]
        worst = max((x for x in ratios if x is not None), default=0.0)
        return f"[yellow]noisy[/yellow] (IQR {worst:.0%} of median)"
    return "ok"


def _params_text(r: Result, keys: Sequence[str]) -> str:
    return " ".join(f"{k}={fmt_value(r.params[k])}" for k in keys if k in r.params)


def results_table(results: Sequence[Result], title: str | None = None) -> FitOrStack:
    """The results of a run: a table with a column per metric where the width allows, else one block per
    result (:class:`FitOrStack`); INVALID runs' verdicts below. Every text is escaped."""
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("benchmark", no_wrap=True)
    table.add_column("params")
    table.add_column("pass/dtype/device", no_wrap=True)
    metric_cols = _metric_columns(results)
    for col in metric_cols:
        table.add_column(HEADERS.get(col, col), justify="right", no_wrap=True)
    shares = any(_is_share(r, k) for r in results for k in r.metrics)
    if shares:
        table.add_column("breakdown")
    metered = any(r.meters for r in results)
    if metered:
        table.add_column("energy", justify="right")
        table.add_column("peak memory", justify="right")
    table.add_column("status")
    by_bench: dict[str, list[Result]] = {}
    for r in results:
        by_bench.setdefault(r.id, []).append(r)
    records: list[tuple[str, list[tuple[str, str]]]] = []
    for bench_id, rows in by_bench.items():
        shown = _varying_params(rows)
        for r in rows:
            params = _params_text(r, shown)
            where = "/".join(str(r.params[k]) for k in ("pass", "dtype", "device") if k in r.params)
            cells = [fmt_metric(r.metrics.get(c)) for c in metric_cols]
            extra = [escape(fmt_breakdown(r))] if shares else []
            if metered:
                extra += [escape(fmt_energy(r.meters)), escape(fmt_memory(r.meters))]
            table.add_row(escape(bench_id), escape(params), escape(where), *cells, *extra, _status(r))
            fields = [("params", escape(_params_text(r, list(r.params))))]
            if where:
                fields.append(("pass/dtype/device", escape(where)))
            fields += [(escape(name), escape(fmt_metric(r.metrics.get(name))))
                       for name in _metric_columns([r], limit=None)]
            if any(_is_share(r, k) for k in r.metrics):
                fields.append(("breakdown", escape(fmt_breakdown(r))))
            if r.meters:
                fields += [("energy", escape(fmt_energy(r.meters))), ("peak memory", escape(fmt_memory(r.meters)))]
            fields.append(("status", _status(r)))
            records.append((escape(bench_id), fields))
    invalid = [r for r in results if r.status == "ok" and r.validity is not None and not r.validity.get("valid")]
    notes = None
    if invalid:  # LoadGen's verdict with its recommendation, in full (a cell is too narrow)
        notes = "\n".join(f"{escape(r.id)}: {escape(r.validity.get('summary') or 'INVALID')}" for r in invalid)
        table.caption = notes
        table.caption_justify = "left"
    return FitOrStack(table, records, title=title, notes=notes)


def benchmarks_table(benches: Sequence[Benchmark]) -> Table:
    table = Table(header_style="bold")
    table.add_column("benchmark", no_wrap=True)
    table.add_column("description")
    table.add_column("source")
    for b in benches:
        table.add_row(escape(b.id), escape(b.description), escape(b.source))
    return table


def benchmark_info(b: Benchmark, console: Console) -> None:
    console.print(f"[bold]{escape(b.id)}[/bold] — {escape(b.description)}")
    console.print(f"source: {escape(b.source)}")
    if b.aliases:
        console.print(f"aliases: {escape(', '.join(b.aliases))}")
    params = Table(title="parameters", header_style="bold", title_justify="left")
    for col in ("flag", "type", "default", "unit", "allowed", "help"):
        params.add_column(col)
    for p in b.params:
        params.add_row(*(escape(x) for x in (p.flag, p.type_name, str(p.default), p.unit, p.describe_range(),
                                             p.help)))
    console.print(params)
    metrics = Table(title="metrics", header_style="bold", title_justify="left")
    for col in ("name", "unit", "better", "is", "meaning"):
        metrics.add_column(col)
    for m in b.metrics:
        star = " (primary)" if m.name == b.primary_metric else ""
        metrics.add_row(escape(m.name + star), escape(m.unit), m.direction, escape(_declared(m)), escape(m.help))
    console.print(metrics)
    if b.sets:
        console.print("named sets (--set): " + ", ".join(
            f"{name} ({len(load())} sizes)" for name, load in sorted(b.sets.items())))
    device = " --device cpu" if "device" in b.params else ""  # a system it owns may place itself (no --device)
    console.print(f"example: aibench run {b.kind} {b.name}{device}")
