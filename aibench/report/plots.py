"""Plots as inline SVG, drawn with matplotlib's object API and the Agg/SVG backends (no pyplot state, no
display). Each function takes plain data, prepared by :mod:`aibench.report.html_report`, and returns the
text of one ``<svg>`` element, ready to inline.

Small pages: text stays text (``svg.fonttype: none``, not glyph paths), figures are a few inches wide, a CDF
is drawn through at most :data:`MAX_CDF_POINTS` quantiles whatever the number of samples, and nothing is
rasterised. ``text.parse_math`` is off, so a benchmark named ``$x$`` is drawn as written, not as TeX, and
matplotlib's SVG writer escapes every string it writes. Element ids are salted per figure so the clip
paths of several SVGs on one page never collide, and deterministic so the same inputs give the same page.
"""

from __future__ import annotations

import html
import io
import math
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_CDF_POINTS = 200
VERDICT_COLOURS = {"better": "#2e7d32", "worse": "#c62828", "same": "#757575", "inconclusive": "#ef6c00",
                   "refused": "#9e9e9e"}
INVALID_COLOUR = "#c62828"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4.5,
    "figure.dpi": 72,
}
_counter = [0]


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # never a GUI backend, even with a DISPLAY
    return matplotlib


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    mpl = _mpl()
    from matplotlib.figure import Figure

    with mpl.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def to_svg(fig: Any, label: str = "plot") -> str:
    """The figure as an ``<svg>`` element (no XML prolog or DOCTYPE, which are invalid inside HTML)."""
    mpl = _mpl()
    _counter[0] += 1
    buf = io.StringIO()
    with mpl.rc_context({**_RC, "svg.hashsalt": f"aibench-{_counter[0]}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    # Comments (matplotlib's version) and the RDF <metadata> block (namespace URLs only) go; so does the
    # whitespace between tags. What is left references nothing outside the element itself.
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label, quote=True)}" ', 1)
    return re.sub(r">\s+<", ">\n<", svg).strip()


def wrap(title: str, width: int = 70, lines: int = 2) -> str:
    """A title that fits its figure: wrapped on words, at most ``lines`` lines, the rest elided."""
    return textwrap.fill(title, width=width, max_lines=lines, placeholder=" …")


def _draw(fn: Any) -> Any:
    """Run a drawing function under the report's style (rc settings apply when artists are created)."""

    def wrapper(*args: Any, **kwargs: Any) -> str:
        mpl = _mpl()
        with mpl.rc_context(_RC), warnings.catch_warnings():
            # Text stays text in the SVG and the browser picks a font that has the glyph (an emoji in a
            # benchmark name); matplotlib only measures with DejaVu Sans for layout, and says so each time.
            warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
            return fn(*args, **kwargs)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


# ---------------------------------------------------------------------------------------------- scaling
_SI_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def si_scale(values: Sequence[float]) -> tuple[float, str]:
    """(divisor, prefix) that puts the typical (median) magnitude between 1 and 1000; at most 1 (no k/M)."""
    vals = sorted(abs(v) for v in values if v)
    typical = vals[len(vals) // 2] if vals else 1.0
    for scale, prefix in _SI_PREFIXES:
        if typical >= scale:
            return scale, prefix
    return 1e-9, "n"


def unit_scale(values: Sequence[float], unit: str) -> tuple[float, str]:
    """Seconds and joules get an SI prefix (ms, µJ, ...); other units are drawn as they are."""
    if unit in ("s", "J"):
        scale, prefix = si_scale(values)
        return scale, prefix + unit
    return 1.0, unit


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis tick labels as plain numbers (matplotlib's default writes TeX, and parse_math is off)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log2_axis(ax: Any, xs: Sequence[float]) -> None:
    """Log-2 x axis labelled with the values themselves, when they are positive and span 4x or more."""
    pos = sorted({x for x in xs if x > 0})
    if len(pos) == len(set(xs)) and len(pos) >= 3 and pos[-1] / pos[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(xs)))
    ax.set_xticklabels([f"{x:g}" for x in sorted(set(xs))])
    ax.minorticks_off()


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Point:
    x: float
    y: float
    invalid: bool = False
    lo: float | None = None  # a 95% interval of y, drawn as an error bar (e.g. a sweep's speedup)
    hi: float | None = None


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)


@dataclass
class Panel:
    """One axes: series of points with a y label; optional dashed reference lines."""

    ylabel: str
    series: list[Series]
    xlabel: str = ""
    unit: str = ""  # the unit of y before scaling ("s" and "J" are rescaled)
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label), in ``unit``
    vlines: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    ideal: list[tuple[float, float]] | None = None  # a dashed reference curve, e.g. linear speedup
    ideal_y: float | None = None  # a dashed reference level, e.g. efficiency 1
    failed_x: list[float] = field(default_factory=list)  # sweep points that produced no result
    ylim0: bool = False  # start the y axis at 0


def _plot_panel(ax: Any, panel: Panel) -> bool:
    """Draw a panel; True when it drew an INVALID point (the caller adds a legend entry)."""
    all_y = [p.y for s in panel.series for p in s.points] + [y for y, _ in panel.hlines]
    factor, ylabel_unit = unit_scale(all_y, panel.unit)
    xs_all: list[float] = []
    top: dict[float, float] = {}  # x -> highest INVALID point there
    for i, s in enumerate(panel.series):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(s.points, key=lambda p: p.x)
        xs = [p.x for p in pts]
        ys = [p.y / factor for p in pts]
        xs_all.extend(xs)
        ax.plot(xs, ys, "-o", color=colour, label=s.label or None)
        bars = [(p.x, p.y, p.lo, p.hi) for p in pts if p.lo is not None and p.hi is not None]
        if bars:
            ax.errorbar([b[0] for b in bars], [b[1] / factor for b in bars], fmt="none", ecolor=colour, capsize=3,
                        yerr=[[max(0.0, (y - lo) / factor) for _, y, lo, _ in bars],
                              [max(0.0, (hi - y) / factor) for _, y, _, hi in bars]], label="95% interval")
        bad = [(p.x, p.y / factor) for p in pts if p.invalid]
        if bad:
            ax.plot([b[0] for b in bad], [b[1] for b in bad], "X", color=INVALID_COLOUR, markersize=9,
                    zorder=5)
            for bx, by in bad:
                top[bx] = max(top.get(bx, by), by)
    for bx, by in top.items():  # one "INVALID" label per x, above the highest INVALID point there
        ax.annotate("INVALID", (bx, by), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize=7, color=INVALID_COLOUR, fontweight="bold")
    if panel.ideal:
        ax.plot([a for a, _ in panel.ideal], [b for _, b in panel.ideal], "--", color="#555555",
                linewidth=1.0, label="ideal (linear)")
    if panel.ideal_y is not None:
        ax.axhline(panel.ideal_y, linestyle="--", color="#555555", linewidth=1.0, label="ideal")
    if panel.failed_x:
        xs_all.extend(panel.failed_x)
        ax.plot(panel.failed_x, [0.0] * len(panel.failed_x), "x", color="#616161", markersize=8, mew=2,
                clip_on=False, zorder=6, label="failed point (no result)")
    for y, label in panel.hlines:
        ax.axhline(y / factor, linestyle=":", color="#c62828", linewidth=1.0, label=label)
    for x, label in panel.vlines:
        ax.axvline(x, linestyle="--", color="#6a1b9a", linewidth=1.0, label=label)
    if xs_all:
        _log2_axis(ax, xs_all)
    unit_text = f" ({ylabel_unit})" if ylabel_unit else ""
    ax.set_ylabel(panel.ylabel + unit_text)
    ax.set_xlabel(panel.xlabel)
    if panel.ylim0:
        ax.set_ylim(bottom=0)
    return bool(top)


def _legend(fig: Any, axes: Sequence[Any], invalid: bool) -> None:
    from matplotlib.lines import Line2D

    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if invalid:
        handles.append(Line2D([], [], marker="X", linestyle="", color=INVALID_COLOUR, markersize=8))
        labels.append("INVALID run (LoadGen)")
    if len(labels) > 1 or invalid:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), frameon=False)


@_draw
def panels_plot(title: str, panels: Sequence[Panel], width_per_panel: float = 2.95, height: float = 2.7) -> str:
    """Side-by-side panels sharing an x quantity: metric vs batch, a sweep, speedup and efficiency."""
    n_series = max((len(p.series) for p in panels), default=1)
    extra = 0.25 * math.ceil((n_series + 1) / 4) if n_series > 1 else 0.0
    fig, axes = new_figure(width_per_panel * len(panels), height + extra, ncols=len(panels))
    invalid = False
    for ax, panel in zip(axes, panels, strict=True):
        invalid |= _plot_panel(ax, panel)
    fig.suptitle(wrap(title, int(24 * width_per_panel * len(panels) / 2.95)), fontsize=9, fontweight="bold")
    _legend(fig, axes, invalid)
    return to_svg(fig, title)


@_draw
def latency_cdf(title: str, samples: Sequence[float], percentiles: Sequence[tuple[float, float]],
                invalid: bool = False, note: str = "") -> str:
    """CDF of one run's per-sample latencies (seconds), with LoadGen's percentiles marked.

    ``percentiles`` are (percentile, seconds) pairs; either input may be empty, not both.
    """
    fig, (ax,) = new_figure(5.8, 2.7)
    values = sorted(samples)
    everything = values + [v for _, v in percentiles]
    scale, unit = unit_scale(everything, "s")
    if values:
        n = len(values)
        if n > MAX_CDF_POINTS:  # quantiles at evenly spaced probabilities: same curve, bounded size
            idx = [round(i * (n - 1) / (MAX_CDF_POINTS - 1)) for i in range(MAX_CDF_POINTS)]
        else:
            idx = list(range(n))
        xs, ys = [values[i] / scale for i in idx], [100.0 * (i + 1) / n for i in idx]
        label = f"per-sample latency (n={n})"
        if n <= 50:  # few samples: the honest empirical step function
            ax.step(xs, ys, where="post", color=PALETTE[0], label=label)
        else:  # many: a line through the quantiles (half the path of a step at this resolution)
            ax.plot(xs, ys, color=PALETTE[0], label=label)
    if percentiles:
        ax.plot([v / scale for _, v in percentiles], [p for p, _ in percentiles], "o",
                color=INVALID_COLOUR if invalid else "#222222", label="LoadGen percentiles")
        for p, v in percentiles:  # the upper percentiles crowd together: only p50 and p99 are named here
            if p in (50.0, 99.0):
                ax.annotate(f"p{p:g}", (v / scale, p), textcoords="offset points", xytext=(-4, 3), ha="right",
                            fontsize=7)
    if everything and min(everything) > 0 and max(everything) / min(everything) > 50:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"latency ({unit})")
    ax.set_ylabel("percentile (%)")
    ax.set_ylim(0, 102)
    ax.set_title(wrap(("INVALID · " if invalid else "") + title, 75), color=INVALID_COLOUR if invalid else "black",
                 loc="left")
    if note:
        ax.text(0.98, 0.04, note, transform=ax.transAxes, ha="right", fontsize=6.5, color="#555555")
    ax.legend(loc="lower right" if not note else "center right", frameon=False)
    return to_svg(fig, f"latency CDF: {title}")


@_draw
def bars(title: str, labels: Sequence[str], values: Sequence[float], unit: str, xlabel: str,
         invalid: Sequence[bool] = ()) -> str:
    """Horizontal bars, one per run (energy per sample)."""
    scale, unit_label = unit_scale(values, unit)
    vals = [v / scale for v in values]
    fig, (ax,) = new_figure(5.8, 0.9 + 0.28 * len(labels))
    colours = [INVALID_COLOUR if (invalid and invalid[i]) else PALETTE[0] for i in range(len(vals))]
    ys = list(range(len(vals)))[::-1]
    ax.barh(ys, vals, color=colours, height=0.6)
    ax.set_yticks(ys)
    ax.set_yticklabels([wrap(lab, 45, 1) for lab in labels])
    for y, v, bad in zip(ys, vals, [bool(invalid and invalid[i]) for i in range(len(vals))], strict=True):
        ax.annotate(("INVALID " if bad else "") + f"{v:.3g} {unit_label}", (v, y), textcoords="offset points",
                    xytext=(3, -3), fontsize=7, color=INVALID_COLOUR if bad else "#222222")
    ax.set_xlabel(f"{xlabel} ({unit_label})")
    ax.set_title(wrap(title, 70), loc="left")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.2)
    return to_svg(fig, title)


@dataclass
class RatioBar:
    label: str
    ratio: float | None
    ci: tuple[float, float] | None
    verdict: str
    note: str = ""
    rounds: list[float] = field(default_factory=list)  # a gate's per-round ratios, drawn as dots


@_draw
def ratio_bars(title: str, items: Sequence[RatioBar]) -> str:
    """Comparison bars: candidate/baseline ratio from 1, 95% CI whiskers, coloured by verdict; the ratio and
    verdict are written right of each bar (a pair with no ratio, e.g. refused, is the word alone)."""
    fig, (ax,) = new_figure(7.5, 1.0 + 0.32 * len(items))
    ys = list(range(len(items)))[::-1]
    span = [1.0]
    ends = []
    for y, it in zip(ys, items, strict=True):
        colour = VERDICT_COLOURS.get(it.verdict, "#9e9e9e")
        end = 1.0
        if it.ratio is not None:
            ax.barh(y, it.ratio - 1.0, left=1.0, color=colour, height=0.55, alpha=0.85)
            span.append(it.ratio)
            end = max(end, it.ratio)
            if it.ci is not None:
                lo, hi = it.ci
                ax.errorbar(it.ratio, y, xerr=[[max(it.ratio - lo, 0.0)], [max(hi - it.ratio, 0.0)]], fmt="none",
                            ecolor="#222222", elinewidth=1.0, capsize=3)
                span.extend([lo, hi])
                end = max(end, hi)
        if it.rounds:
            ax.plot(it.rounds, [y] * len(it.rounds), "|", color="#222222", markersize=7, alpha=0.7,
                    label="per-round ratio (gate)")
            span.extend(it.rounds)
            end = max(end, *it.rounds)
        ends.append((y, end, it, colour))
    lo, hi = min(span), max(span)
    width = max(hi - lo, 0.02)
    ax.set_xlim(lo - 0.08 * width, hi + 0.45 * width)  # room on the right for the words
    for y, end, it, colour in ends:
        text = f"×{it.ratio:.3g} {it.verdict}" if it.ratio is not None else it.verdict
        if it.note:
            text += f" ({it.note})"
        ax.annotate(wrap(text, 40, 1), (end, y), textcoords="offset points", xytext=(5, 0), va="center",
                    fontsize=7.5, color=colour, fontweight="bold")
    ax.axvline(1.0, color="#222222", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([wrap(it.label, 55, 1) for it in items])
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set_xlabel("candidate / baseline (whiskers: 95% CI" + ("; ticks: per-round ratios)" if any(
        it.rounds for it in items) else ")"))
    ax.set_title(wrap(title, 90), loc="left")
    ax.grid(axis="y", visible=False)
    return to_svg(fig, title)


@_draw
def kernel_timings(title: str, labels: Sequence[str], medians: Sequence[float],
                   cis: Sequence[tuple[float, float] | None], spreads: Sequence[Sequence[float]],
                   noisy: Sequence[bool]) -> str:
    """Micro benchmarks side by side: the median time per call with its 95% CI (log scale, seconds), and the
    spread of the timed blocks relative to that median (box: quartiles; whiskers: 1.5 IQR), so a noisy
    measurement is seen at a glance. Noisy results are drawn in orange."""
    fig, (left, right) = new_figure(9.6, 0.9 + 0.3 * len(labels), ncols=2)
    ys = list(range(len(labels)))[::-1]
    scale, unit = unit_scale(medians, "s")
    for y, med, ci, bad in zip(ys, medians, cis, noisy, strict=True):
        colour = "#ef6c00" if bad else PALETTE[0]
        xerr = None if ci is None else [[max(med - ci[0], 0.0) / scale], [max(ci[1] - med, 0.0) / scale]]
        left.errorbar(med / scale, y, xerr=xerr, fmt="o", color=colour, ecolor="#222222", elinewidth=1.0,
                      capsize=2.5)
    left.set_xscale("log")
    _plain_log_ticks(left.xaxis)
    left.set_yticks(ys)
    left.set_yticklabels([wrap(lab, 48, 1) for lab in labels])
    left.set_xlabel(f"median time per call ({unit}, log scale; whiskers: 95% CI)")
    left.grid(axis="y", visible=False)
    left.set_ylim(-0.7, len(labels) - 0.3)
    boxes = right.boxplot([list(s) for s in spreads], positions=ys, orientation="horizontal", widths=0.55,
                          patch_artist=True, showfliers=True, flierprops={"markersize": 2.5, "alpha": 0.6})
    for patch, bad in zip(boxes["boxes"], noisy, strict=True):
        patch.set_facecolor("#ffe0b2" if bad else "#cfe3f3")
        patch.set_edgecolor("#444444")
    right.axvspan(0.95, 1.05, color="#2e7d32", alpha=0.08, label="±5% of the median")
    right.axvline(1.0, color="#222222", linewidth=0.8)
    right.set_xscale("log", base=2)  # a block 8x the median and a tight ±1% box both stay readable
    _plain_log_ticks(right.xaxis)
    right.set_yticks(ys)
    right.set_yticklabels([])
    right.set_xlabel("time of each timed block / median (log scale; box: quartiles)")
    right.grid(axis="y", visible=False)
    right.set_ylim(-0.7, len(labels) - 0.3)
    right.legend(loc="upper right", frameon=False)
    fig.suptitle(wrap(title, 110), fontsize=9, fontweight="bold")
    return to_svg(fig, title)


@_draw
def part_distributions(title: str, names: Sequence[str], values: Sequence[Sequence[float]], unit: str, per: str,
                       shares: Sequence[float | None], invalid: bool = False) -> str:
    """The parts of one run (its stages, layers or modules), one box each: the distribution of the part's
    values (box: quartiles; whiskers: 1.5 IQR; dot: median), on a log scale when they span more than 20x,
    with each part's share of the total beside its name."""
    fig, (ax,) = new_figure(6.4, 0.9 + 0.32 * len(names))
    ys = list(range(len(names)))[::-1]
    flat = [v for vs in values for v in vs]
    scale, shown_unit = unit_scale(flat, unit)
    boxes = ax.boxplot([[v / scale for v in vs] for vs in values], positions=ys, orientation="horizontal",
                       widths=0.55, patch_artist=True, showfliers=True,
                       flierprops={"markersize": 2.5, "alpha": 0.6}, medianprops={"color": "#222222"})
    for patch in boxes["boxes"]:
        patch.set_facecolor("#f8d0d0" if invalid else "#cfe3f3")
        patch.set_edgecolor("#444444")
    positive = [v for v in flat if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_yticks(ys)
    ax.set_yticklabels([wrap(name, 32, 1) + (f" ({share:.1%})" if share is not None else "")
                        for name, share in zip(names, shares, strict=True)])
    ax.set_xlabel(f"{shown_unit} per {per} (box: quartiles; bracketed: share of the total)")
    ax.grid(axis="y", visible=False)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_title(wrap(("INVALID · " if invalid else "") + title, 80))
    return to_svg(fig, title)
