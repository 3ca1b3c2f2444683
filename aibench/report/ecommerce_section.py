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
    updates = info.get("updates") if isinstance(info, dict) else None
    if isinstance(updates, dict) and isinstance(updates.get("list"), list) and updates["list"]:
        def cell(x: Any, fmt: str) -> str:
            v = num(x)
            return "–" if v is None else e(format(v, fmt))

        rows_u = [[cell(u.get("version"), ".0f"), cell(u.get("at_window_s"), ".3f"), cell(u.get("seconds"), ".3f"),
                   cell(u.get("cpu_s"), ".3f"), cell(u.get("sessions"), ".0f"), cell(u.get("loss_before"), ".4f"),
                   cell(u.get("loss_after"), ".4f"), cell(u.get("ndcg10"), ".4f")]
                  for u in updates["list"] if isinstance(u, dict)]
        parts.append(f'<p class="note">Streaming updates every {e(updates.get("every_s"))} s (held-out NDCG@10 '
                     f'before the first: {cell(updates.get("ndcg10_start"), ".4f")})'
                     + (f'; error: {e(updates["error"])}' if updates.get("error") else "") + "</p>"
                     + table(["version", "start (s from the window)", "seconds", "CPU s", "lists", "loss before",
                              "loss after", "NDCG@10 after"], rows_u, numeric=tuple(range(8))))
    bars = [n for n in ("queue", *TOP, "communication", "whole_path")
            if n in summaries and num(summaries[n].get("p99")) is not None]
    if bars:
        title = f"{BENCHMARK} run {str(r.run_id)[:8]}: mean and p99 per module"
        parts.append(figure("ecommerce", partial(module_bars, title, bars,
                                                 [num(summaries[n]["mean"]) or 0.0 for n in bars],
                                                 [num(summaries[n]["p99"]) or 0.0 for n in bars]),
                            e(title)))
    return "".join(parts)


def _size_study(runs: Sequence[Any], e: Callable[[Any], str], figure: Callable[..., str],
                table: Callable[..., str]) -> str:
    """The model-size study (the paper's 184 -> 253 MB preference model): one row per run, by the preference
    network's size, with the recommender's tail; "" unless the runs served at least two sizes."""
    rows = []
    for r in runs:
        store = (r.context or {}).get("store") if isinstance(r.context, dict) else None
        models = store.get("models") if isinstance(store, dict) else None
        sizes = models.get("sizes") if isinstance(models, dict) else None
        pref = sizes.get("preference") if isinstance(sizes, dict) else None
        size = num(pref.get("bytes")) if isinstance(pref, dict) else None
        modules = (r.parts or {}).get("module") if isinstance(r.parts, dict) else None
        if size is None or not isinstance(modules, dict):
            continue

        def stat(part: str, key: str, modules: dict[str, Any] = modules) -> Any:
            entry = modules.get(part)
            return entry.get("summary", {}).get(key) if isinstance(entry, dict) else None

        rows.append((size, r, models, stat))
    if len({size for size, *_ in rows}) < 2:
        return ""
    rows.sort(key=lambda x: x[0])
    body = []
    for size, r, models, stat in rows:
        body.append([e(str(r.run_id)[:8]), e(models.get("pref_hidden")), e(models.get("folder")),
                     f"{size / 1e6:.2f}", *(_ms(stat("recommender/preference", k)) for k in ("mean", "p99", "p99_9")),
                     *(_ms(stat("recommender", k)) for k in ("mean", "p99")), _ms(stat("whole_path", "p99")),
                     e(f"{v:.4g}" if (v := _value(r, "samples_per_s")) is not None else "–")])
    title = f"{BENCHMARK}: the preference network's mean and p99 by its size"
    labels = [f"{models.get('pref_hidden')} units, {size / 1e6:.1f} MB" for size, _r, models, _ in rows]
    return ("<h3>Model size: the preference network and the recommender's tail</h3><p class=\"muted\">The paper "
            "grew its preference model from 184 to 253 MB: the model server's average went from 30.78 to 125.71 ms "
            "and its p99 from 149 to 5,335 ms. Here: the runs of this report by the preference network's size "
            "(<code>train --pref-hidden N --size-study</code>, <code>run --pref-hidden N</code>).</p>"
            + table(["run", "hidden", "models", "preference MB", "preference mean (ms)", "preference p99 (ms)",
                     "preference p99.9 (ms)", "recommender mean (ms)", "recommender p99 (ms)",
                     "whole path p99 (ms)", "queries/s"], body, numeric=tuple(range(3, 11)))
            + figure("ecommerce", partial(module_bars, title, labels,
                                          [num(stat("recommender/preference", "mean")) or 0.0 for *_, stat in rows],
                                          [num(stat("recommender/preference", "p99")) or 0.0 for *_, stat in rows]),
                     e(title)))


def ecommerce_section(results: Sequence[Any], e: Callable[[Any], str], figure: Callable[..., str],
                      table: Callable[..., str]) -> str:
    """The section's HTML, or "" when no result is of scenario/ecommerce."""
    runs = [r for r in results if getattr(r, "id", None) == BENCHMARK and r.status == "ok"]
    blocks = [b for b in (_one(r, e, figure, table) for r in runs) if b]
    if blocks:
        blocks.append(_size_study(runs, e, figure, table))
    if not blocks:
        return ""
    return ('<section id="ecommerce"><h2>E-commerce search: per-module breakdown</h2><p class="muted">Each '
            "module's latency per query (<code>parts.module</code>): the five modules add up to the path; the "
            "indented parts break the recommender and the ranker down; <code>queue</code> is the wait for a free "
            "worker; <code>communication</code> (services only) is every hop's round trip minus the callee's own "
            "work, summed, then each hop; <code>whole_path</code> is submit to answer.</p>" + "".join(blocks)
            + "</section>")
