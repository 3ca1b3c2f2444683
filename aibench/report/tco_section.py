"""The TCO section of the HTML report: each ``aibench tco --json`` file (schema ``aibench-tco``) drawn as TCO
normalised to CPU-only vs the DNN share of the datacenter, one plot per workload mix (log scale, as the
paper's Fig. 15), with its crossovers and every input with its source. The model is a reconstruction and the
section says so. Every string from the file is escaped; malformed parts are skipped with a note."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from aibench.report import plots


def _numbers(xs: Any, n: int) -> list[float] | None:
    if not isinstance(xs, list) or len(xs) != n:
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in xs):
        return None
    return [float(x) for x in xs]


@plots._draw
def tco_plot(title: str, shares: Sequence[float], series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """TCO / CPU-only vs DNN share (%), one line per design, log y axis, the CPU-only level dashed."""
    fig, (ax,) = plots.new_figure(5.6, 3.4)
    for i, (name, ys) in enumerate(series):
        pts = [(x, y) for x, y in zip(shares, ys, strict=True) if y > 0]
        style = "--" if name == "cpu-only" else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=plots.PALETTE[i % len(plots.PALETTE)],
                label=name)
    ax.set_yscale("log")
    plots._plain_log_ticks(ax.yaxis)
    ax.set_xlim(0, 100)
    ax.set_xlabel("DNN share of the datacenter (%)")
    ax.set_ylabel("TCO / CPU-only (lower is better)")
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside right center", frameon=False, fontsize=7)
    return plots.to_svg(fig, title)


def _one(doc: dict[str, Any], e: Callable[[Any], str], figure: Callable[..., str],
         table: Callable[..., str]) -> str:
    source = doc.get("_source", "")
    shares = _numbers(doc.get("shares"), len(doc.get("shares") or []))
    skipped = 0
    by_mix: dict[str, list[tuple[str, list[float]]]] = {}
    for s in doc.get("series") or []:
        ys = _numbers(s.get("tco") if isinstance(s, dict) else None, len(shares or []))
        if shares is None or ys is None or not isinstance(s.get("mix"), str) or not isinstance(s.get("design"), str):
            skipped += 1
            continue
        by_mix.setdefault(s["mix"], []).append((s["design"], ys))
    parts = [f'<h3>{e(source)}</h3><p class="note">{e(doc.get("reconstruction") or "a reconstruction")}. '
             "Counts are in units of the CPU-only datacenter's servers.</p>"]
    figs = []
    mixes = doc.get("mixes") if isinstance(doc.get("mixes"), dict) else {}
    for mix, series in by_mix.items():
        info = mixes.get(mix) if isinstance(mixes.get(mix), dict) else {}
        apps = " ".join(str(a) for a in _list(info.get("apps")))
        missing = _list(info.get("missing"))
        partial = f" — PARTIAL: no figure for {' '.join(str(a) for a in missing)}" if missing else ""
        title = f"{mix} ({apps}){partial}"
        figs.append(figure("tco", lambda t=title, ss=series: tco_plot(t, shares or [], ss), e(title)))
    if figs:
        parts.append(f'<div class="plots">{"".join(figs)}</div>')
    cross = [c for c in doc.get("crossovers") or [] if isinstance(c, dict)]
    if cross:
        rows = [[e(c.get("mix")), e(c.get("design")), e(c.get("becomes")), e(c.get("versus")),
                 e(f"{c['share']:.1f}%" if isinstance(c.get("share"), int | float) else c.get("share"))]
                for c in cross]
        parts.append("<h3>Crossovers</h3>" + table(["mix", "design", "becomes", "than", "at DNN share"], rows,
                                                     numeric=(4,)))
    thr = doc.get("throughput") if isinstance(doc.get("throughput"), dict) else {}
    rows = []
    for app, t in thr.items():
        for side in ("cpu", "accelerator"):
            f = t.get(side) if isinstance(t, dict) else None
            if isinstance(f, dict):
                value = f.get("value")
                shown = f"{value:.4g}" if isinstance(value, int | float) else value
                rows.append([e(app), e(side), e(f"{shown} {f.get('unit', '')}"), e(f.get("provenance")),
                             f'<span class="wrap">{e(f.get("source"))}</span>'])
    if rows:
        parts.append("<h3>Throughput inputs</h3>" + table(["app", "side", "throughput", "provenance", "source"],
                                                          rows, numeric=(2,)))
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    prow = [[e(name), e(p.get("value")), e(p.get("unit")), e(p.get("source"))]
            for name, p in params.items() if isinstance(p, dict)]
    if prow:
        parts.append("<details><summary>Cost parameters</summary>"
                     + table(["parameter", "value", "unit", "source"], prow, numeric=(1,)) + "</details>")
    notes = [n for n in doc.get("notes") or [] if isinstance(n, str)]
    if skipped:
        notes.append(f"{skipped} malformed series skipped")
    if notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def tco_section(docs: Sequence[dict[str, Any]], e: Callable[[Any], str], figure: Callable[..., str],
                table: Callable[..., str]) -> str:
    """The section for every TCO file, or '' when there is none. ``e``, ``figure`` and ``table`` are the
    page's escaping, figure and table helpers (aibench.report.html_report)."""
    if not docs:
        return ""
    body = "".join(_one(d, e, figure, table) for d in docs)
    return ('<section id="tco"><h2>Total cost of ownership (DjiNN &amp; Tonic §6, reconstructed)</h2>'
            '<p class="muted">TCO of each datacenter design normalised to CPU-only, by the share of the '
            "datacenter serving DNN work; lower is better. From <code>aibench tco --json</code>.</p>"
            f"{body}</section>")


def _list(value: Any) -> list[Any]:
    """A field that should be a list, from a file that may be damaged: anything else is an empty list."""
    return value if isinstance(value, list) else []
