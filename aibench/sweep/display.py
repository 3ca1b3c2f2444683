"""The table at the end of a sweep: one row per point, with the spread of the figure it is judged by and,
for scaling sweeps, speedup and efficiency with their interval or a noisy mark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from aibench.display import HEADERS, fmt_metric
from aibench.results.schema import Result
from aibench.sweep import analysis
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
    # Each point's spread: the figure a scaling sweep's speedup rests on, else the primary metric.
    judged = str(plan.scaling["metric"]) if plan.scaling is not None else primary
    spreads = [analysis.point_spread(r, judged) for r in results]
    table.add_column("spread", justify="right", no_wrap=True)
    columns: list[tuple[str, tuple[str, ...]]] = []
    # In Offline LoadGen issues every sample at once: its latency percentiles measure the run, not a query.
    per_query = [r for r in done if r.load_scenario != "offline"]
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
    # How a system's instances share its device (a result's context.device_sharing: scenario/djinn's server)
    sharing = any(sharing_text(r) for r in done)
    if sharing:
        table.add_column("device sharing")
    table.add_column("status")
    knee_index = (record.knee or {}).get("index")
    for p, r, sp in zip(record.points, results, spreads, strict=True):
        value = f"{p.value:g}" + (" ◀ knee" if knee_index == p.index else "")
        cells = [escape(value), escape(fmt_metric(r.metrics.get(primary))) if r is not None else "–",
                 _spread_cell(sp)]
        for _, names in columns:
            entry = next((r.metrics[n] for n in names if r is not None and n in r.metrics), None)
            cells.append(_cell(entry))
        if sharing:
            cells.append(escape(sharing_text(r) or "–"))
        table.add_row(*cells, _status(p.status, p.error, r, sp) + (f" ({escape(p.note)})" if p.note else ""))
    table.caption = escape(_caption(judged, spreads, plan.scaling is not None, results))
    table.caption_justify = "left"
    return table


def sharing_text(r: Result | None) -> str | None:
    """``context.device_sharing.text`` of a point (how its instances share the device), if it says."""
    entry = r.context.get("device_sharing") if r is not None and isinstance(r.context, dict) else None
    text = entry.get("text") if isinstance(entry, dict) else None
    return text if isinstance(text, str) else None


def _caption(judged: str, spreads: Sequence[dict[str, Any]], scaling: bool,
             results: Sequence[Result | None]) -> str:
    basis = next((s["basis"] for s in spreads if s["spread"] is not None), None)
    lines = [f"spread: {basis} behind {judged} (noisy above 10%)" if basis is not None
             else f"spread: none — {next((s['basis'] for s in spreads if s['basis'] != 'no result'), 'no result')}"]
    if scaling:
        entries = [r.metrics.get("speedup") or {} for r in results if r is not None]
        if any(isinstance(e.get("ci95"), list) and e["ci95"][0] != e["ci95"][1] for e in entries):
            lines.append("speedup and efficiency [95% interval]: the ratio of the ends of the two points' intervals "
                         "(within-run spread only); 'noisy': either point is noisy, so the ratio is not to be "
                         "trusted")
        else:
            why = next((e.get("ci_unavailable") for e in entries if e.get("ci_unavailable")), None)
            if why:
                lines.append(f"speedup and efficiency carry no interval: {why}")
    return "\n".join(lines)


def _spread_cell(sp: dict[str, Any]) -> str:
    if sp["spread"] is None:
        return "–" if not sp["noisy"] else "[yellow]noisy[/yellow]"
    text = f"{sp['spread']:.0%}"
    return f"[yellow]{text} noisy[/yellow]" if sp["noisy"] else text


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None or entry.get("value") is None or entry.get("unit") not in ("ratio", "x"):
        return escape(fmt_metric(entry))
    fmt = "{:.0%}" if entry["unit"] == "ratio" else "{:.2f}x"
    text = fmt.format(entry["value"])
    ci = entry.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and ci[0] != ci[1]:
        lo, hi = fmt.format(ci[0]), fmt.format(ci[1])
        text += f" [{lo.rstrip('x%')}–{hi}]" if entry["unit"] == "x" else f" [{lo.rstrip('%')}–{hi}]"
    text = escape(text)
    if entry.get("valid") is False:
        return f"INVALID {text}"
    return f"{text} [yellow]noisy[/yellow]" if entry.get("noisy") else text


def _status(status: str, error: str | None, r: Result | None, sp: dict[str, Any] | None = None) -> str:
    if status == "ok" and r is not None and r.validity is not None and not r.validity.get("valid", True):
        reasons = "; ".join(r.validity.get("reasons") or []) or "see the result's validity"
        return f"[red]INVALID[/red]: {escape(reasons)}"
    if status == "ok" and sp is not None and sp.get("noisy"):
        return "[yellow]noisy[/yellow]"
    if status == "ok":
        return "ok"
    color = "yellow" if status in ("pending", "interrupted") else "red"
    return f"[{color}]{status}[/{color}]" + (f": {escape(error[:160])}" if error else "")
