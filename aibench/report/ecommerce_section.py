"""The e-commerce section of the HTML report: for each scenario/ecommerce result, the per-module breakdown of
the search path (the paper's Fig. 3): every module's average, p50, p90, p99 and p99.9 and its share of the
path's mean, the AI vs non-AI split, throughput, queries without hits and failed (by module), and the models'
quality; one bar figure per run of each module's mean and p99. Every string from a file is escaped; a part
without numbers is skipped."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from aibench.report import plots
from aibench.report.view import num

BENCHMARK = "scenario/ecommerce"
TOP = ("planner", "recommender", "searcher", "ranker", "fetch")
STATS = (("mean", "average"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"))


def _ms(x: Any) -> str:
    v = num(x)
    return "–" if v is None else f"{v * 1e3:.3f}"


def _value(r: Any, name: str) -> float | None:
    entry = r.metrics.get(name) if isinstance(r.metrics, dict) else None
    return num(entry.get("value")) if isinstance(entry, dict) else None


@plots._draw
def module_bars(title: str, names: Sequence[str], means: Sequence[float], p99s: Sequence[float]) -> str:
    """Each module's mean and p99 (ms), side by side, one row per module."""
    fig, (ax,) = plots.new_figure(5.6, 0.35 * len(names) + 1.2)
    ys = list(range(len(names)))
    ax.barh([y - 0.2 for y in ys], [m * 1e3 for m in means], height=0.4, color=plots.PALETTE[0], label="mean")
    ax.barh([y + 0.2 for y in ys], [p * 1e3 for p in p99s], height=0.4, color=plots.PALETTE[1], label="p99")
    ax.set_yticks(ys)
    ax.set_yticklabels(list(names))
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside right center", frameon=False, fontsize=7)
    return plots.to_svg(fig, title)


def _one(r: Any, e: Callable[[Any], str], figure: Callable[..., str], table: Callable[..., str]) -> str:
    modules = (r.parts or {}).get("module") if isinstance(r.parts, dict) else None
    if not isinstance(modules, dict):
        return ""
    summaries = {str(n): x["summary"] for n, x in modules.items()
                 if isinstance(x, dict) and isinstance(x.get("summary"), dict) and num(x["summary"].get("mean"))
                 is not None}
    if not summaries:
        return ""
    means = {n: num(summaries[n].get("mean")) for n in TOP if n in summaries}
    whole = math.fsum(v for v in means.values() if v is not None)
    rows = []
    for name, s in summaries.items():
        share = means.get(name)
        cell = f"{100 * share / whole:.1f}%" if share is not None and whole > 0 else ""
        label = e(name) if "/" not in name else "&nbsp;&nbsp;· " + e(name.split("/", 1)[1])
        rows.append([label, *(_ms(s.get(k)) for k, _ in STATS), e(s.get("n")), cell])
    params = r.params if isinstance(r.params, dict) else {}
    head = (f"<h3>run <code>{e(str(r.run_id)[:8])}</code> · {e(r.load_scenario or '')} · "
            + " ".join(f"{e(k)}={e(v)}" for k, v in params.items()
                       if k in ("store", "deploy", "workers", "think", "queries"))
            + "</h3>")
    parts = [head, table(["part", *(f"{label} (ms)" for _, label in STATS), "n", "share of the modules' mean"],
                         rows, numeric=(1, 2, 3, 4, 5, 6, 7))]
    stages = (r.parts or {}).get("stage") or {}
    split = []
    for side, label in (("ai", "AI (the models)"), ("non_ai", "non-AI"), ("communication", "communication (services)")):
        s = (stages.get(side) or {}).get("summary") if isinstance(stages.get(side), dict) else None
        if isinstance(s, dict):
            split.append([e(label), _ms(s.get("mean")), _ms(s.get("p90")), _ms(s.get("p99"))])
    if split:
        share = _value(r, "share_ai")
        parts.append(table(["time per query", "average (ms)", "p90 (ms)", "p99 (ms)"], split, numeric=(1, 2, 3)))
        info = r.method.get("ecommerce") if isinstance(r.method, dict) else None
        note = info.get("ai_note") if isinstance(info, dict) else None
        parts.append(f'<p class="note">AI share of the path: {e(f"{100 * share:.1f}%" if share is not None else "–")}'
                     + (f". {e(note)}" if note else "") + "</p>")
    counts = []
    for name, label in (("samples_per_s", "throughput (queries/s)"), ("latency_p99", "user-seen p99 (ms)"),
                        ("queries_ok", "queries answered"), ("queries_no_hits", "queries without hits"),
                        ("queries_failed", "queries failed"), ("classifier_accuracy", "classifier accuracy"),
                        ("preference_category_accuracy", "preference category accuracy"),
                        ("ranker_ndcg10", "ranker NDCG@10"), ("ranker_ndcg10_baseline", "popularity NDCG@10")):
        v = _value(r, name)
        if v is not None:
            counts.append([e(label), e(_ms(v) if name == "latency_p99" else f"{v:.4g}")])
    info = r.method.get("ecommerce") if isinstance(r.method, dict) else None
    failed = info.get("failed_by_module") if isinstance(info, dict) else None
    if isinstance(failed, dict) and failed:
        counts.append([e("failed by module"), e(", ".join(f"{k}: {v}" for k, v in failed.items()))])
    if counts:
        parts.append(table(["figure", "value"], counts, numeric=(1,)))
    bars = [n for n in ("queue", *TOP, "communication", "whole_path")
            if n in summaries and num(summaries[n].get("p99")) is not None]
    if bars:
        title = f"{BENCHMARK} run {str(r.run_id)[:8]}: mean and p99 per module"
        parts.append(figure("ecommerce", partial(module_bars, title, bars,
                                                 [num(summaries[n]["mean"]) or 0.0 for n in bars],
                                                 [num(summaries[n]["p99"]) or 0.0 for n in bars]),
                            e(title)))
    return "".join(parts)


def ecommerce_section(results: Sequence[Any], e: Callable[[Any], str], figure: Callable[..., str],
                      table: Callable[..., str]) -> str:
    """The section's HTML, or "" when no result is of scenario/ecommerce."""
    runs = [r for r in results if getattr(r, "id", None) == BENCHMARK and r.status == "ok"]
    blocks = [b for b in (_one(r, e, figure, table) for r in runs) if b]
    if not blocks:
        return ""
    return ('<section id="ecommerce"><h2>E-commerce search: per-module breakdown</h2><p class="muted">Each '
            "module's latency per query (<code>parts.module</code>): the five modules add up to the path; the "
            "indented parts break the recommender and the ranker down; <code>queue</code> is the wait for a free "
            "worker; <code>communication</code> (services only) is every hop's round trip minus the callee's own "
            "work, summed, then each hop; <code>whole_path</code> is submit to answer.</p>" + "".join(blocks)
            + "</section>")
