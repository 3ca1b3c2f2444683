"""The table at the end of a sweep: one row per point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from aibench.display import HEADERS, fmt_metric
from aibench.results.schema import Result
from aibench.sweep.analysis import BATCH_LATENCY
from aibench.sweep.engine import SweepPlan
from aibench.sweep.record import SweepRecord

# Latency columns, first present wins per column: LoadGen's per-query percentiles, else the kernel timer's.
LATENCY_COLUMNS = (("p50", ("latency_p50",)), ("p99", ("latency_p99", "time_p99")))


def sweep_table(plan: SweepPlan, record: SweepRecord, results: Sequence[Result | None]) -> Table:
    done = [r for r in results if r is not None]
    primary = next((r.primary_metric for r in done if r.primary_metric), plan.bench.primary_metric)
    title = f"{plan.bench.id}: {plan.kind} sweep of {plan.param} ({record.id})"
    table = Table(title=escape(title), header_style="bold")
    table.add_column(escape(plan.param), justify="right", no_wrap=True)
    table.add_column(escape(HEADERS.get(primary, primary)), justify="right", no_wrap=True)
    columns: list[tuple[str, tuple[str, ...]]] = []
    # In Offline LoadGen issues every sample at once: its latency percentiles measure the run, not a query.
    per_query = [r for r in done if r.scenario != "offline"]
    for header, names in LATENCY_COLUMNS:
        if any(n in r.metrics for r in per_query for n in names if n != primary):
            columns.append((header, tuple(n for n in names if n != primary)))
    if any(BATCH_LATENCY in r.metrics for r in done):
        columns.append(("batch latency", (BATCH_LATENCY,)))
    if any("busbw" in r.metrics for r in done):
        columns.append(("busbw", ("busbw",)))
    if plan.scaling is not None:
        columns += [("speedup", ("speedup",)), ("efficiency", ("efficiency",))]
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("status")
    knee_index = (record.knee or {}).get("index")
    for p, r in zip(record.points, results, strict=True):
        value = f"{p.value:g}" + (" ◀ knee" if knee_index == p.index else "")
        cells = [escape(value), fmt_metric(r.metrics.get(primary)) if r is not None else "–"]
        for _, names in columns:
            entry = next((r.metrics[n] for n in names if r is not None and n in r.metrics), None)
            cells.append(_cell(entry))
        table.add_row(*cells, _status(p.status, p.error, r) + (f" ({escape(p.note)})" if p.note else ""))
    return table


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is not None and entry.get("unit") == "ratio" and entry.get("value") is not None:
        return f"{entry['value']:.0%}" if entry.get("valid") is not False else f"INVALID {entry['value']:.0%}"
    if entry is not None and entry.get("unit") == "x" and entry.get("value") is not None:
        text = f"{entry['value']:.2f}x"
        return text if entry.get("valid") is not False else f"INVALID {text}"
    return escape(fmt_metric(entry))


def _status(status: str, error: str | None, r: Result | None) -> str:
    if status == "ok" and r is not None and r.validity is not None and not r.validity.get("valid", True):
        reasons = "; ".join(r.validity.get("reasons") or []) or "see the result's validity"
        return f"[red]INVALID[/red]: {escape(reasons)}"
    if status == "ok":
        return "ok"
    color = "yellow" if status in ("pending", "interrupted") else "red"
    return f"[{color}]{status}[/{color}]" + (f": {escape(error[:160])}" if error else "")
