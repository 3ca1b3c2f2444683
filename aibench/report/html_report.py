"""The HTML report: one self-contained page (inline CSS and SVG, no script, no external URL) that opens
from disk with no network.

Sections appear only when the data for them exist:

- **Results**: one row per run, the primary metric (INVALID runs say so, never a plain number), status.
- **Throughput and latency vs batch**: runs of one benchmark that differ only in ``batch``.
- **Latency distribution**: per LoadGen run, the CDF of the kept per-sample latencies with LoadGen's
  percentiles marked (or the percentiles alone when no samples were kept).
- **Parts**: per run with per-part distributions (``parts``: stages, layers, modules), one box per part.
- **Sweeps**: each sweep (``context["sweep"]``, contract 1) as a curve over its parameter, with the knee from
  its sweep record, the latency bound, and speedup/efficiency for scaling sweeps.
- **Devices**: runs that differ only in ``device``: the speed-up of each device over the CPU (Minsky's GPU gain).
- **Energy**: energy per sample (or per call) where measured; otherwise "unavailable: reason".
- **Comparisons**: ratio bars with 95% CI whiskers from ``aibench compare/gate --json`` files (contract 2).
- **Failures** and **Environment**: errors of failed runs; machine, software, code, threads and load.

Every string that comes from a file is escaped with :func:`html.escape` (plots: matplotlib's SVG writer
escapes). A Content-Security-Policy forbids scripts and every fetch, so even a page edited by hand cannot
reach the network.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aibench import __version__
from aibench.partition.report_section import partition_section
from aibench.report import plots
from aibench.report.djinn_studies import studies_section
from aibench.report.ecommerce_section import ecommerce_section
from aibench.report.load import ReportInputs
from aibench.report.tco_section import tco_section
from aibench.report.view import (
    ENERGY_METRICS,
    LATENCY_PERCENTILES,
    as_dict,
    code_text,
    fmt_metric,
    fmt_number,
    fmt_param,
    invalid_reasons,
    is_invalid,
    metric_entry,
    metric_value,
    num,
    num_pair,
    params_text,
    status_text,
    sweep_of,
    threads_of,
    validity_text,
    varying_params,
)
from aibench.results.schema import Result

log = logging.getLogger(__name__)

MAX_CDF_FIGURES = 30  # per page; the rest of the runs are named in a note (their numbers are in the table)
MAX_BARS = 40  # per bar chart
THROUGHPUT_METRICS = ("samples_per_s", "queries_per_s", "gflops", "gbps")
SCALING_KINDS = ("threads", "gpus", "devices", "instances", "nodes")

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:12px 20px 40px;color:#1a1a1a;line-height:1.4;font-size:14px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:3px}h3{font-size:15px;margin:16px 0 6px}
.meta,.muted{color:#555}.note{background:#fff8e1;border-left:3px solid #f9a825;padding:4px 8px}
nav a{margin-right:12px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:12.5px}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
.invalid,.failed,.worse,.regression,.error{color:#c62828;font-weight:600}.noisy,.inconclusive{color:#ef6c00}
.better,.improved,.pass{color:#2e7d32;font-weight:600}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
figure{margin:0 0 10px;padding:6px;border:1px solid #eee;border-radius:4px;background:#fff}
figure svg{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#444;margin-top:4px}
code{font-size:12px}.wrap{word-break:break-all}.nowrap{white-space:nowrap}
"""


_CONTROL = {c: "\ufffd" for c in (*range(0, 9), 11, 12, *range(14, 32), 127)}


def e(x: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; control characters (terminal escapes, which
    HTML does not allow) show as U+FFFD."""
    return html.escape("" if x is None else str(x), quote=True).translate(_CONTROL)


def _cls(word: str) -> str:
    """A CSS class for a verdict/status word; only known words, so a file cannot inject a class."""
    known = {"INVALID": "invalid", "failed": "failed", "interrupted": "failed", "noisy": "noisy", "better": "better",
             "worse": "worse", "inconclusive": "inconclusive", "pass": "pass", "improved": "improved",
             "regression": "regression", "error": "error"}
    return known.get(word.split(":")[0].strip(), "")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(kind: str, draw: Callable[[], str], caption: str = "") -> str:
    """A plot in a <figure>; a plot that cannot be drawn says so instead of failing the whole page."""
    try:
        svg = draw()
    except Exception as exc:  # a report with one missing plot beats no report
        log.warning("could not draw a %s plot: %s", kind, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        svg = f'<p class="error">plot could not be drawn: {e(type(exc).__name__)}: {e(exc)}</p>'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="plot" data-plot="{e(kind)}">{svg}{cap}</figure>'


def _run_params(r: Result, keys: Sequence[str]) -> str:
    """The varying parameters of a run, plus its sweep point (a threads sweep varies no parameter)."""
    text = params_text(r, keys)
    sweep = sweep_of(r)
    if sweep is not None and sweep.get("param") not in keys:
        text = f"{text} {sweep.get('param')}={fmt_param(sweep.get('value'))}".strip()
    return text


def _label(r: Result, keys: Sequence[str]) -> str:
    return f"{r.id} {_run_params(r, keys)}".strip()


def _by_benchmark(results: Sequence[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[r.id].append(r)
    return groups


# ----------------------------------------------------------------------------------------------- results
def _summary(inputs: ReportInputs) -> str:
    rows = []
    for bench, runs in _by_benchmark(inputs.results).items():
        keys = varying_params(runs)
        for r in runs:
            status = status_text(r)
            primary = fmt_metric(r, r.primary_metric)
            reasons = "; ".join(invalid_reasons(r))
            file = inputs.result_file(r)
            params = params_text(r, keys)
            sweep = sweep_of(r)
            if sweep is not None:
                params = f"{params} · sweep {sweep.get('param')}={fmt_param(sweep.get('value'))}".strip(" ·")
            rows.append([
                e(bench), e(params), e(r.load_scenario or ""),
                f"{e(r.primary_metric or '')}",
                f'<span class="nowrap {_cls(primary)}">{e(primary)}</span>'
                + (f'<br><small class="invalid">{e(reasons)}</small>' if reasons else ""),
                f'<span class="{_cls(validity_text(r))}">{e(validity_text(r))}</span>',
                f'<span class="{_cls(status)}">{e(status)}</span>', e(threads_of(r)),
                e(str(r.started_at)[:19].replace("T", " ")),
                f'<code title="{e(file.name if file else "")}">{e(r.run_id[:8])}</code>',
            ])
    return _table(["benchmark", "parameters (varying)", "load scenario", "primary metric", "value", "validity",
                   "status", "threads", "started (UTC)", "run"], rows)


# ----------------------------------------------------------------------------------------------- kernels
def _kernel_section(results: Sequence[Result]) -> str:
    """Micro benchmarks (kept per-block times): median per call with CI, and the spread of the blocks."""
    rows = []
    for bench, runs in _by_benchmark([r for r in results if r.status == "ok"]).items():
        keys = varying_params(runs)
        for r in runs:
            info = as_dict(r.samples.get("time"))
            values = [v for v in (num(x) for x in info.get("values") or []) if v is not None and v > 0] \
                if isinstance(info.get("values"), list) else []
            summary = as_dict(info.get("summary"))
            median = num(summary.get("median")) or metric_value(r, "time_median")
            if not values or not median or median <= 0:
                continue
            ci = num_pair(summary.get("median_ci95"))
            rows.append((_label(r, keys) if len(runs) > 1 else bench, median, ci, [v / median for v in values],
                         bool(r.noisy)))
    if not rows:
        return ""
    shown = rows[:MAX_BARS]
    caption = (f"{len(rows)} kernel measurement(s); left: median time per call and the 95% CI of the median; "
               "right: every timed block relative to that median. Orange: noisy (IQR above 10% of the median).")
    if len(rows) > MAX_BARS:
        caption += f" The first {MAX_BARS} are drawn; all are in the CSV."
    fig = _figure("kernel", partial(plots.kernel_timings, "Kernel time per call", [x[0] for x in shown],
                                    [x[1] for x in shown], [x[2] for x in shown], [x[3] for x in shown],
                                    [x[4] for x in shown]), caption)
    return f'<section id="kernels"><h2>Kernel timings</h2>{fig}</section>'


# ----------------------------------------------------------------------------------------------- batch
def _throughput_metric(runs: Sequence[Result]) -> str | None:
    first = runs[0]
    prim = metric_entry(first, first.primary_metric) if first.primary_metric else None
    names = ([first.primary_metric] if prim and prim.get("direction") == "higher" else []) + list(THROUGHPUT_METRICS)
    for name in names:
        if name and any(metric_value(r, name) is not None for r in runs):
            return name
    return None


def _latency_metrics(runs: Sequence[Result]) -> list[tuple[str, str]]:
    if any(metric_value(r, "latency_p50") is not None for r in runs):
        return [("latency_p50", "p50"), ("latency_p99", "p99")]
    first = runs[0]
    prim = metric_entry(first, first.primary_metric) if first.primary_metric else None
    if prim and prim.get("direction") == "lower" and prim.get("unit") == "s":
        return [(str(first.primary_metric), "median" if prim.get("statistic") == "median" else "")]
    return [("time_median", "median")] if any(metric_value(r, "time_median") is not None for r in runs) else []


def _config_key(r: Result) -> str:
    others = {k: v for k, v in r.params.items() if k != "batch"}
    return json.dumps([others, r.config], sort_keys=True, default=str)


def _batch_section(results: Sequence[Result]) -> str:
    figures = []
    candidates = [r for r in results if r.status == "ok" and sweep_of(r) is None
                  and num(r.params.get("batch")) is not None]
    for bench, runs in _by_benchmark(candidates).items():
        series_runs: dict[str, dict[float, Result]] = defaultdict(dict)
        for r in runs:  # sorted by start time: a later run of the same point replaces an earlier one
            series_runs[_config_key(r)][float(r.params["batch"])] = r
        series_runs = {k: v for k, v in series_runs.items() if len(v) >= 2}
        if not series_runs:
            continue
        members = [r for pts in series_runs.values() for r in pts.values()]
        label_keys = [k for k in varying_params(members) if k != "batch"]
        cfg_varies = len({json.dumps(r.config, sort_keys=True, default=str) for r in members}) > 1

        def label(r: Result, keys: Sequence[str] = label_keys, cfg: bool = cfg_varies) -> str:
            text = params_text(r, keys)
            if cfg:
                text += " " + " ".join(f"{k}={v}" for k, v in as_dict(r.config).items() if not isinstance(v, dict))
                text += " " + " ".join(f"{k}={v}" for k, v in as_dict(as_dict(r.config).get("loadgen")).items()
                                       if v is not None)
            return text.strip()

        panels = []
        tput = _throughput_metric(members)
        if tput:
            unit = str(as_dict(metric_entry(members[0], tput)).get("unit") or "")
            panels.append(plots.Panel(ylabel=f"{tput}", unit=unit, xlabel="batch", ylim0=True, series=[
                plots.Series(label(next(iter(pts.values()))), [
                    plots.Point(b, y, is_invalid(r)) for b, r in pts.items()
                    if (y := metric_value(r, tput)) is not None]) for pts in series_runs.values()]))
        lat = _latency_metrics(members)
        if lat:
            series = []
            for pts in series_runs.values():
                base = label(next(iter(pts.values())))
                for name, short in lat:
                    series.append(plots.Series(f"{base} {short}".strip(), [
                        plots.Point(b, y, is_invalid(r)) for b, r in pts.items()
                        if (y := metric_value(r, name)) is not None]))
            series = [s for s in series if s.points]
            if series:
                panels.append(plots.Panel(ylabel="latency " + "/".join(s for _, s in lat), unit="s", xlabel="batch",
                                          series=series, ylim0=True))
        if not panels:
            continue
        title = bench
        caption = (f"{e(bench)}: {len(members)} runs. Throughput: <code>{e(tput)}</code>; latency: "
                   + ", ".join(f"<code>{e(n)}</code>" for n, _ in lat) + "."
                   + (' <span class="invalid">Red crosses are INVALID runs.</span>'
                      if any(is_invalid(r) for r in members) else ""))
        figures.append(_figure("batch", partial(plots.panels_plot, title, panels), caption))
    if not figures:
        return ""
    return ('<section id="batch"><h2>Throughput and latency vs batch</h2><p class="muted">Runs of one benchmark '
            'that differ only in <code>batch</code> (sweep points are drawn under Sweeps).</p>'
            f'<div class="plots">{"".join(figures)}</div></section>')


# ----------------------------------------------------------------------------------------------- latency
def _latency_samples(r: Result) -> list[float]:
    values = as_dict(r.samples.get("latency")).get("values")
    if not isinstance(values, list):
        return []
    return [v for v in (num(x) for x in values) if v is not None and v >= 0]


def _latency_section(results: Sequence[Result]) -> str:
    runs = [r for r in results if r.status == "ok" and (
        _latency_samples(r) or any(metric_value(r, m) is not None for m, _ in LATENCY_PERCENTILES))]
    if not runs:
        return ""
    figures = []
    groups = _by_benchmark(runs)
    shown = 0
    for bench, members in groups.items():
        keys = varying_params(members)
        for r in members:
            if shown >= MAX_CDF_FIGURES:
                break
            shown += 1
            samples = _latency_samples(r)
            pcts = [(p, v) for m, p in LATENCY_PERCENTILES if (v := metric_value(r, m)) is not None]
            info = as_dict(r.samples.get("latency"))
            seen = num(info.get("seen"))
            note = f"{len(samples)} of {int(seen)} samples kept" if seen and samples and seen > len(samples) else ""
            title = " ".join(x for x in (bench, _run_params(r, keys), r.load_scenario or "") if x)
            parts = [f"{e(title)} · run <code>{e(r.run_id[:8])}</code>"]
            if pcts:
                parts.append("LoadGen's percentiles of the whole run: " + ", ".join(
                    f"p{p:g} {fmt_number(v, 's')}" for p, v in pcts))
            if samples:
                parts.append("CDF of the per-sample latencies kept in the result file")
            if is_invalid(r):
                reasons = "; ".join(invalid_reasons(r))
                parts.append(f'<span class="invalid">INVALID run{": " + e(reasons) if reasons else ""}</span>')
            figures.append(_figure("latency", partial(plots.latency_cdf, title, samples, pcts, is_invalid(r), note),
                                   " · ".join(parts)))
    more = len(runs) - shown
    tail = f'<p class="muted">{more} more run(s) not drawn; their percentiles are in the CSV.</p>' if more else ""
    return ('<section id="latency"><h2>Latency distribution per run</h2>'
            f'<div class="plots">{"".join(figures)}</div>{tail}</section>')


# ----------------------------------------------------------------------------------------------- parts
PART_TITLES = {"stage": "stages", "layer": "layers", "module": "modules"}


def _part_values(entry: dict[str, Any]) -> list[float]:
    values = entry.get("values")
    return [v for v in (num(x) for x in values) if v is not None] if isinstance(values, list) else []


def _parts_section(results: Sequence[Result]) -> str:
    """Each run's parts (``parts``: the stages a system timed per batch, a network's layers, a pipeline's
    modules), one figure per run and kind: the distribution of each part's values and its share."""
    figures = []
    runs = [r for r in results if r.status == "ok" and isinstance(r.parts, dict) and r.parts]
    shown = 0
    for bench, members in _by_benchmark(runs).items():
        keys = varying_params(members)
        for r in members:
            for kind, group in r.parts.items():
                if not isinstance(group, dict) or shown >= MAX_CDF_FIGURES:
                    continue
                entries = {str(n): x for n, x in group.items() if isinstance(x, dict) and _part_values(x)}
                if not entries:
                    continue
                shown += 1
                totals = {n: num(x.get("total")) for n, x in entries.items()}
                whole = sum(t for t in totals.values() if t is not None)
                shares = [t / whole if t is not None and whole > 0 else None for t in totals.values()]
                first = next(iter(entries.values()))
                unit, per = str(first.get("unit") or ""), str(first.get("per") or "value")
                title = " ".join(x for x in (bench, _run_params(r, keys), r.load_scenario or "",
                                             PART_TITLES.get(kind, kind)) if x)
                kept = ", ".join(f"{e(n)}: {len(_part_values(x))} of {e(x.get('seen'))}"
                                 for n, x in entries.items() if num(x.get("seen")) and
                                 num(x.get("seen")) > len(_part_values(x)))
                caption = (f"{e(title)} · run <code>{e(r.run_id[:8])}</code> · the time of each {e(per)} in each "
                           f"of its {e(PART_TITLES.get(kind, kind))}" + (f" (values kept: {kept})" if kept else ""))
                if is_invalid(r):
                    caption += ' · <span class="invalid">INVALID run</span>'
                figures.append(_figure("parts", partial(
                    plots.part_distributions, title, list(entries), [_part_values(x) for x in entries.values()],
                    unit, per, shares, is_invalid(r)), caption))
    if not figures:
        return ""
    more = sum(1 for r in runs for g in r.parts.values() if isinstance(g, dict) and g) - shown
    tail = f'<p class="muted">{more} more not drawn; every value is in the result files.</p>' if more > 0 else ""
    return ('<section id="parts"><h2>Stages, layers and modules</h2><p class="muted">Per-part distributions '
            '(<code>parts</code> in the result file: e.g. the stages a LoadGen run timed with <code>--breakdown'
            f'</code>).</p><div class="plots">{"".join(figures)}</div>{tail}</section>')


# ----------------------------------------------------------------------------------------------- sweeps
def _sweep_section(results: Sequence[Result], records: Sequence[dict[str, Any]]) -> str:
    by_id: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        sweep = sweep_of(r)
        if sweep is not None and r.status == "ok":
            by_id[sweep["id"]].append(r)
    rec_by_id = {str(rec.get("id")): rec for rec in records}
    if not by_id and not rec_by_id:
        return ""
    blocks = []
    for sid in sorted(set(by_id) | set(rec_by_id)):
        runs = sorted(by_id.get(sid, []), key=lambda r: num(sweep_of(r)["value"]) or 0.0)
        rec = rec_by_id.get(sid, {})
        first_sweep = sweep_of(runs[0]) if runs else {}
        kind = str(as_dict(first_sweep).get("kind") or rec.get("kind") or "param")
        param = str(as_dict(first_sweep).get("param") or rec.get("param") or "value")
        bench = runs[0].id if runs else str(rec.get("benchmark") or "?")
        failed = [p for p in rec.get("points", []) if isinstance(p, dict) and p.get("status") not in ("ok", None)]
        caption = [f"sweep <code>{e(sid)}</code> of {e(bench)} over <code>{e(param)}</code> ({e(kind)})"]
        if failed:
            caption.append('<span class="failed">failed points: ' + "; ".join(
                f"{e(fmt_param(p.get('value')))} ({e(p.get('status'))}"
                + (f": {e(p.get('error'))})" if p.get("error") else ")") for p in failed) + "</span>")
        if not runs:
            caption.append("no result file of this sweep was found beside its record")
            blocks.append(f'<figure class="plot-missing">{"<br>".join(caption)}</figure>')
            continue
        xs = {id(r): float(num(sweep_of(r)["value"]) or 0.0) for r in runs}
        metric = runs[0].primary_metric or ""
        unit = str(as_dict(metric_entry(runs[0], metric)).get("unit") or "")
        knee = as_dict(rec.get("knee"))
        failed_x = [float(v) for p in failed if (v := num(p.get("value"))) is not None]
        vlines = [(float(kv), f"knee ({param}={fmt_param(knee.get('value'))})")] \
            if (kv := num(knee.get("value"))) is not None else []
        panels = [plots.Panel(ylabel=metric, unit=unit, xlabel=param, vlines=vlines, ylim0=True, failed_x=failed_x,
                              series=[
            plots.Series("", [plots.Point(xs[id(r)], y, is_invalid(r)) for r in runs
                                 if (y := metric_value(r, metric)) is not None])])]
        lat_metric = str(knee.get("latency_metric") or "latency_p99")
        if lat_metric != metric and any(metric_value(r, lat_metric) is not None for r in runs):
            bound = num(knee.get("latency_bound_ms"))
            panels.append(plots.Panel(ylabel=lat_metric, unit="s", xlabel=param, vlines=vlines, ylim0=True,
                                      hlines=[(bound / 1000.0, f"latency bound {bound:g} ms")] if bound else [],
                                      failed_x=failed_x, series=[plots.Series("", [
                                          plots.Point(xs[id(r)], y, is_invalid(r)) for r in runs
                                          if (y := metric_value(r, lat_metric)) is not None])]))
        scaling = kind in SCALING_KINDS or any(metric_entry(r, "speedup") for r in runs)
        if scaling:
            x0 = xs[id(runs[0])] or 1.0
            sp = [plots.Point(xs[id(r)], y, is_invalid(r), *_ci(r, "speedup")) for r in runs
                  if (y := metric_value(r, "speedup")) is not None]
            ef = [plots.Point(xs[id(r)], y, is_invalid(r), *_ci(r, "efficiency")) for r in runs
                  if (y := metric_value(r, "efficiency")) is not None]
            noisy = [r for r in runs if as_dict(metric_entry(r, "speedup")).get("noisy")]
            if noisy:
                caption.append('<span class="noisy">speedup rests on a noisy point at ' + ", ".join(
                    e(fmt_param(sweep_of(r)["value"])) for r in noisy) + "</span>")
            if sp:
                panels.append(plots.Panel(ylabel="speedup (x)", xlabel=param, series=[plots.Series("", sp)],
                                          failed_x=failed_x,
                                          ideal=[(x, x / x0) for x in sorted(xs.values())], ylim0=True))
            if ef:
                panels.append(plots.Panel(ylabel="efficiency", xlabel=param, series=[plots.Series("", ef)],
                                          failed_x=failed_x,
                                          ideal_y=1.0, ylim0=True))
            missing = [r for r in runs if metric_value(r, "speedup") is None and metric_entry(r, "speedup")]
            if missing:
                caption.append("speedup unavailable at " + "; ".join(
                    f"{e(fmt_param(sweep_of(r)['value']))}: {e(as_dict(metric_entry(r, 'speedup')).get('unavailable'))}"
                    for r in missing))
        if knee:
            caption.append(f"knee: {e(param)}={e(fmt_param(knee.get('value')))} by <code>{e(knee.get('metric'))}</code>"
                           + (f" within {e(knee.get('latency_bound_ms'))} ms of <code>{e(knee.get('latency_metric'))}"
                              "</code>" if knee.get("latency_bound_ms") is not None else ""))
        title = f"{bench} · sweep over {param}"
        blocks.append(_figure("sweep", partial(plots.panels_plot, title, panels, width_per_panel=2.9),
                              "<br>".join(caption)))
    return ('<section id="sweeps"><h2>Sweeps and scaling</h2><div class="plots" style="grid-template-columns:1fr">'
            f'{"".join(blocks)}</div></section>')


def _ci(r: Result, name: str) -> tuple[float | None, float | None]:
    """A sweep metric's 95% interval (``ci95``), where the sweep computed one."""
    ci = as_dict(metric_entry(r, name)).get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(num(x) is not None for x in ci):
        return num(ci[0]), num(ci[1])
    return None, None


# ----------------------------------------------------------------------------------------------- energy
def _energy_section(results: Sequence[Result]) -> str:
    measured: dict[str, list[Result]] = defaultdict(list)
    unavailable: Counter[str] = Counter()
    for r in results:
        if r.status != "ok":
            continue
        for name in ENERGY_METRICS:
            entry = metric_entry(r, name)
            if entry is None:
                continue
            if num(entry.get("value")) is not None:
                measured[name].append(r)
            else:
                unavailable[f"{name}: {entry.get('unavailable') or 'no reason given'}"] += 1
    if not measured and not unavailable:
        return ""
    parts = []
    figures = []
    for name, runs in measured.items():
        keys_by = {b: varying_params(rs) for b, rs in _by_benchmark(runs).items()}
        shown = runs[:MAX_BARS]
        labels = [_label(r, keys_by[r.id]) for r in shown]
        values = [metric_value(r, name) or 0.0 for r in shown]
        unit = str(as_dict(metric_entry(shown[0], name)).get("unit") or "J")
        provenance = sorted({str(as_dict(metric_entry(r, name)).get("provenance") or "") for r in shown} - {""})
        caption = f"<code>{e(name)}</code> of {len(runs)} run(s)"
        if provenance:
            caption += f"; provenance: {e(', '.join(provenance))}"
        if len(runs) > MAX_BARS:
            caption += f"; the first {MAX_BARS} drawn, all in the CSV"
        pretty = name.replace("_", " ")
        figures.append(_figure("energy", partial(plots.bars, pretty, labels, values, unit, pretty,
                                                 [is_invalid(r) for r in shown]), caption))
    if figures:
        parts.append(f'<div class="plots">{"".join(figures)}</div>')
    if unavailable:
        items = "".join(f"<li>unavailable: {e(why)} ({n} run{'s' if n > 1 else ''})</li>"
                        for why, n in unavailable.most_common())
        parts.append(f"<p>Not measured:</p><ul>{items}</ul>")
    return f'<section id="energy"><h2>Energy per sample</h2>{"".join(parts)}</section>'


# ----------------------------------------------------------------------------------------------- comparisons
def _comparison_section(docs: Sequence[dict[str, Any]]) -> str:
    if not docs:
        return ""
    blocks = []
    for doc in docs:
        schema = str(doc.get("schema"))
        pairs = [p for p in doc.get("pairs", []) if isinstance(p, dict)]
        title = f"{doc.get('candidate')} vs {doc.get('baseline')}"
        head = f"<h3>{'gate' if schema == 'aibench-gate' else 'comparison'}: {e(title)}</h3>"
        meta = [f"file <code>{e(doc.get('_source'))}</code>"]
        if doc.get("created_at"):
            meta.append(f"created {e(doc.get('created_at'))}")
        if schema == "aibench-gate":
            outcome = str(doc.get("outcome") or "")
            meta.append(f'outcome <span class="{_cls(outcome)}">{e(outcome)}</span>')
            if doc.get("rounds") is not None:
                meta.append(f"{e(doc.get('rounds'))} rounds")
        items = []
        rows = []
        for p in pairs:
            direction = p.get("direction")
            arrow = "↓" if direction == "lower" else "↑" if direction == "higher" else ""
            label = f"{p.get('benchmark')} · {p.get('metric')} {arrow}".strip()
            ratio = num(p.get("ratio"))
            ci = num_pair(p.get("ci"))
            verdict = str(p.get("verdict") or "")
            rounds = p.get("rounds")
            items.append(plots.RatioBar(label, ratio, ci, verdict, rounds=[
                v for v in (num(x) for x in rounds) if v is not None] if isinstance(rounds, list) else []))
            unit = str(p.get("unit") or "")
            base, cand = num(p.get("baseline")), num(p.get("candidate"))
            conf = num(p.get("confidence"))
            rows.append([
                e(p.get("benchmark")), e(p.get("metric")), e(direction),
                e(fmt_number(base, unit) if base is not None else "–"),
                e(fmt_number(cand, unit) if cand is not None else "–"),
                e(f"{ratio:.4g}" if ratio is not None else "–"),
                e(f"[{ci[0]:.4g}, {ci[1]:.4g}]" + (f" ({conf:.0%})" if conf else "") if ci else "–"),
                f'<span class="{_cls(verdict)}">{e(verdict)}</span>', e(p.get("reason") or ""),
            ])
        fig = ""
        drawable = [it for it in items if it.ratio is not None]
        if drawable:
            shown = items[:MAX_BARS]
            fig = _figure("comparison", partial(plots.ratio_bars, title, shown),
                          "Bars start at 1 (no change); ↓ lower is better, ↑ higher is better. "
                          + (f"The first {MAX_BARS} pairs are drawn." if len(items) > MAX_BARS else ""))
        warnings = doc.get("warnings")
        warn = "<br>".join(f"warning: {e(w)}" for w in warnings) if isinstance(warnings, list) else ""
        table = _table(["benchmark", "metric", "better", "baseline", "candidate", "ratio", "CI", "verdict", "reason"],
                       rows, numeric=(3, 4, 5, 6))
        blocks.append(head + f'<p class="meta">{" · ".join(meta)}</p>' + fig + table
                      + (f'<p class="note">{warn}</p>' if warn else ""))
    return f'<section id="comparisons"><h2>Comparisons</h2>{"".join(blocks)}</section>'


# ----------------------------------------------------------------------------------------------- devices
def _device_section(results: Sequence[Result]) -> str:
    """The Minsky-style device gain: runs of one benchmark that differ only in ``device`` (same other
    parameters and harness config), each device's primary metric against the CPU run's (or, with no CPU
    run, the first device's), as a speed-up in the metric's own direction."""
    groups: dict[str, dict[str, Result]] = defaultdict(dict)
    for r in results:
        if r.status != "ok" or is_invalid(r) or "device" not in r.params or not r.primary_metric:
            continue
        others = {k: v for k, v in r.params.items() if k != "device"}
        key = json.dumps([r.id, others, r.config], sort_keys=True, default=str)
        groups[key][str(r.params["device"])] = r  # a later run of the same point replaces an earlier one
    labels: list[str] = []
    gains: list[float] = []
    rows = []
    for by_dev in groups.values():
        if len(by_dev) < 2:
            continue
        ref_dev = "cpu" if "cpu" in by_dev else sorted(by_dev)[0]
        ref = by_dev[ref_dev]
        name = str(ref.primary_metric)
        ref_value = metric_value(ref, name)
        entry = as_dict(metric_entry(ref, name))
        unit = str(entry.get("unit") or "")
        keys = [k for k in varying_params(list(by_dev.values())) if k != "device"]
        for dev, r in sorted(by_dev.items()):
            if dev == ref_dev:
                continue
            value = metric_value(r, name)
            gain = None
            if ref_value and value:
                gain = value / ref_value if entry.get("direction") == "higher" else ref_value / value
            label = f"{r.id} {params_text(r, keys)} {dev} vs {ref_dev}".replace("  ", " ")
            if gain is not None:
                labels.append(label)
                gains.append(gain)
            rows.append([e(r.id), e(dev), e(ref_dev), e(name),
                         e(fmt_number(value, unit) if value is not None else "–"),
                         e(fmt_number(ref_value, unit) if ref_value is not None else "–"),
                         e(f"{gain:.3g}×" if gain is not None else "–")])
    if not rows:
        return ""
    fig = ""
    if gains:
        shown = min(len(gains), MAX_BARS)
        fig = _figure("devices", partial(plots.bars, "speed-up over the reference device", labels[:shown],
                                         gains[:shown], "x", "speed-up"),
                      "Each device's primary metric against the reference device's, in the metric's direction "
                      "(above 1: faster).")
    table = _table(["benchmark", "device", "reference", "metric", "value", "reference value", "speed-up"], rows,
                   numeric=(4, 5, 6))
    return ('<section id="devices"><h2>Devices</h2><p class="muted">Runs of one benchmark that differ only in '
            f"<code>device</code>.</p>{fig}{table}</section>")


# ----------------------------------------------------------------------------------------------- failures
def _failure_section(results: Sequence[Result]) -> str:
    bad = [r for r in results if r.status != "ok" or is_invalid(r)]
    if not bad:
        return ""
    rows = []
    for r in bad:
        err = as_dict(r.error)
        if r.status != "ok":
            what = f"{err.get('type') or ''}: {err.get('message') or ''}".strip(": ")
        else:
            what = "; ".join(invalid_reasons(r)) or "LoadGen judged the run INVALID"
        status = "INVALID" if r.status == "ok" else str(r.status)
        rows.append([e(r.id), e(params_text(r, varying_params([x for x in results if x.id == r.id]))),
                     f'<span class="{_cls(status)}">{e(status)}</span>', f'<span class="wrap">{e(what)}</span>',
                     f"<code>{e(r.run_id[:8])}</code>"])
    return ('<section id="failures"><h2>Failed and INVALID runs</h2>'
            + _table(["benchmark", "parameters", "status", "why", "run"], rows) + "</section>")


# ----------------------------------------------------------------------------------------------- environment
def _fmt_bytes(n: Any) -> str:
    x = num(n)
    return f"{x / (1 << 30):.1f} GiB" if x is not None else ""


def _env_cells(r: Result) -> tuple[str, ...]:
    """The machine and software of a run as table cells (escaped); runs with equal cells share an env id."""
    machine = as_dict(r.machine)
    m, s = as_dict(machine.get("machine")), as_dict(machine.get("software"))
    gpus = s.get("gpus") if isinstance(s.get("gpus"), list) else []
    gpu_text = "; ".join(" ".join(str(as_dict(g).get(k) or "") for k in ("name", "driver")).strip() or str(g)
                         for g in gpus) or "none"
    torch_text = " ".join(x for x in (
        str(s.get("torch") or ""), f"CUDA {s['torch_cuda']}" if s.get("torch_cuda") else "",
        f"cuDNN {s['cudnn']}" if s.get("cudnn") else "", f"BLAS {s['blas']}" if s.get("blas") else "",
        str(s.get("cpu_capability") or "")) if x)
    cpus = f"{m.get('logical_cpus')} logical / {m.get('usable_cpus')} usable CPUs" if m.get("logical_cpus") else ""
    return (
        e(m.get("hostname")), e(m.get("os")),
        e(" · ".join(x for x in (str(m.get("cpu_model") or ""), cpus) if x)
          + (" (virtualised)" if m.get("virtualised") else "")),
        e(_fmt_bytes(m.get("memory_bytes"))), e(gpu_text), e(f"Python {s.get('python') or '?'}"), e(torch_text),
        e(s.get("aibench")), e(" ".join(f"{k}={v}" for k, v in as_dict(s.get("env")).items())),
    )


def _load1(x: Any) -> str:
    return f"{x[0]:.2f}" if isinstance(x, list) and x and num(x[0]) is not None else "?"


def _environment_section(results: Sequence[Result]) -> str:
    if not results:
        return ""
    envs: dict[tuple[str, ...], str] = {}
    for r in results:
        envs.setdefault(_env_cells(r), f"E{len(envs) + 1}")
    env_rows = [[f"<b>{name}</b>", *cells] for cells, name in envs.items()]
    run_rows = []
    for bench, runs in _by_benchmark(results).items():
        keys = varying_params(runs)
        for r in runs:
            load = as_dict(r.load)
            dur = num(r.duration_s)
            run_rows.append([
                f"<code>{e(r.run_id[:8])}</code>", e(bench), e(_run_params(r, keys)), f"<b>{envs[_env_cells(r)]}</b>",
                f"<code>{e(code_text(r))}</code>", e(threads_of(r)),
                e(f"{_load1(load.get('loadavg_start'))} → {_load1(load.get('loadavg_end'))}"),
                e(str(r.started_at)[:19].replace("T", " ")), e(f"{dur:.1f} s" if dur is not None else ""),
            ])
    return ('<section id="environment"><h2>Environment</h2><h3>Machines and software</h3>'
            + _table(["env", "host", "OS", "CPU", "memory", "GPUs", "Python", "torch", "aibench", "environment"],
                     env_rows)
            + "<h3>Runs</h3>"
            + _table(["run", "benchmark", "parameters", "env", "code", "threads", "load avg (1 min) start → end",
                      "started (UTC)", "duration"], run_rows, numeric=(5, 8))
            + "</section>")


# ----------------------------------------------------------------------------------------------- page
SECTIONS = (("summary", "Results"), ("kernels", "Kernels"), ("batch", "Batch"), ("latency", "Latency"),
            ("parts", "Parts"), ("ecommerce", "E-commerce"), ("neurosurgeon", "Neurosurgeon"),
            ("sweeps", "Sweeps"), ("studies", "DjiNN studies"),
            ("devices", "Devices"),
            ("energy", "Energy"),
            ("comparisons", "Comparisons"), ("tco", "TCO"), ("failures", "Failures"), ("environment", "Environment"))


def render_html(inputs: ReportInputs, title: str = "aibench report", links: Sequence[Any] | None = None,
                links_source: str | None = None) -> str:
    """The whole page as a string (``links``: the DjiNN studies' reference links, default their table)."""
    results = inputs.results
    body: dict[str, str] = {}
    if results:
        n_invalid = sum(is_invalid(r) for r in results)
        n_failed = sum(r.status != "ok" for r in results)
        counts = f"{len(results)} run(s) of {len(_by_benchmark(results))} benchmark(s)"
        if n_failed or n_invalid:
            counts += f" · {n_failed} failed · {n_invalid} INVALID"
        body["summary"] = (f'<section id="summary"><h2>Results</h2><p class="meta">{e(counts)}</p>'
                           f"{_summary(inputs)}</section>")
    body["kernels"] = _kernel_section(results)
    body["batch"] = _batch_section(results)
    body["latency"] = _latency_section(results)
    body["parts"] = _parts_section(results)
    body["ecommerce"] = ecommerce_section(results, e, _figure, _table)
    body["neurosurgeon"] = partition_section(results, e, _figure, _table)
    body["sweeps"] = _sweep_section(results, inputs.sweeps)
    body["studies"] = studies_section(results, inputs.sweeps, e, _figure, _table, links, links_source)
    body["devices"] = _device_section(results)
    body["energy"] = _energy_section(results)
    body["comparisons"] = _comparison_section(inputs.comparisons)
    body["tco"] = tco_section(inputs.tco, e, _figure, _table)
    body["failures"] = _failure_section(results)
    body["environment"] = _environment_section(results)
    present = [(k, name) for k, name in SECTIONS if body.get(k)]
    absent = [name.lower() for k, name in SECTIONS if not body.get(k) and k not in ("failures", "summary")]
    nav = " ".join(f'<a href="#{k}">{e(name)}</a>' for k, name in present)
    sources = ", ".join(str(p) for p in inputs.paths)
    meta = (f"generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by aibench {e(__version__)} from "
            f"<code>{e(sources)}</code>: {len(results)} result(s), {len(inputs.sweeps)} sweep record(s), "
            f"{len(inputs.comparisons)} comparison file(s)")
    note = inputs.note()
    header = (f"<header><h1>{e(title)}</h1><p class=\"meta\">{meta}</p>"
              + (f'<p class="note">{e(note)}</p>' if note else "")
              + f"<nav>{nav}</nav>"
              + (f'<p class="muted">Nothing to draw for: {e(", ".join(absent))}.</p>' if absent else "")
              + "</header>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
            + header + "\n" + "\n".join(body[k] for k, _ in present)
            + '\n<footer class="muted"><p>Figures of INVALID LoadGen runs are marked INVALID; unmeasured figures say '
            "why. Every figure is in the result files named above.</p></footer></body></html>\n")
