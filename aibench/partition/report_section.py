"""The Neurosurgeon section of the HTML report: split runs (``scenario/neurosurgeon``) at several server loads
drawn as the paper's Fig. 15: each series' end-to-end latency against the server's load, each point labelled
with the cut it ran at (``--cut auto``: the decision's, from the load factor learned by pinging the server; a fixed
cut: ``input`` is all-on-the-server, the paper's "cloud-only"). A run at one load (``--server-load K``, or a
``sweep server_load``) is one point; a run whose load was stepped (``--server-load-steps``) is one point per
step (its queries' median latency: the four parts, without the pings).

Runs are grouped by what is held fixed (network, link, device and server configuration, batch, dtype, trace);
a group is drawn when it has runs at two loads or more. Every string from a file is escaped by the caller's
``e``; a run without a latency is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aibench.report import plots
from aibench.report.view import num

BENCHMARK = "scenario/neurosurgeon"
FIXED = ("net", "network", "rtt_ms", "device_threads", "device_cpu_quota", "server_threads", "dtype", "batch",
         "trace")


def _value(r: Any, name: str) -> float | None:
    entry = r.metrics.get(name) if isinstance(r.metrics, dict) else None
    return num(entry.get("value")) if isinstance(entry, dict) else None


def _points(r: Any) -> list[dict[str, Any]]:
    """A run's points: one per run at a constant load; one per step of a load stepped during the run."""
    params = r.params if isinstance(r.params, dict) else {}
    ns = (r.method or {}).get("neurosurgeon") if isinstance(r.method, dict) else None
    if not isinstance(ns, dict):
        return []
    auto = params.get("cut") == "auto"
    series = "Neurosurgeon (--cut auto)" if auto else \
        "all on the server (--cut input)" if params.get("cut") in ("input", "0") else f"--cut {params.get('cut')}"
    steps = ns.get("load_steps") if isinstance(ns.get("load_steps"), dict) else None
    if steps is not None:
        out = []
        for st in steps.get("per_step") or []:
            if not isinstance(st, dict) or num(st.get("latency_p50_s")) is None or num(st.get("jobs")) is None:
                continue
            made = st.get("pings_made_of") if isinstance(st.get("pings_made_of"), dict) else {}
            out.append({"series": f"{series}, stepped in one run", "jobs": num(st["jobs"]),
                        "factor": num(st.get("factor_pinged")),
                        "made_of": ", ".join(f"{k} ×{v}" for k, v in made.items()) or "–",
                        "p50": num(st["latency_p50_s"]), "p90": num(st.get("latency_p90_s")),
                        "predicted": num(st.get("predicted_s")), "cut": str(st.get("cut", "?")), "j": st.get("j"),
                        "run": f"{str(r.run_id)[:8]} step {st.get('step')}"})
        return out
    p50 = _value(r, "latency_p50")
    jobs = num(params.get("server_load"))
    if p50 is None or jobs is None:
        return []
    cut = ns.get("cut") if isinstance(ns.get("cut"), dict) else {}
    server = ns.get("server") if isinstance(ns.get("server"), dict) else {}
    load = server.get("load") if isinstance(server.get("load"), dict) else {}
    measured = load.get("measured") if isinstance(load.get("measured"), dict) else {}
    return [{"series": series, "jobs": jobs, "factor": _value(r, "server_load_factor"),
             "made_of": str(measured.get("made_of") or "–"), "p50": p50,
             "p90": _value(r, "latency_p90"), "predicted": _value(r, "predicted_latency_s"),
             "cut": str(cut.get("layer", "?")), "j": cut.get("j"), "run": str(r.run_id)[:8]}]


@plots._draw
def load_plot(title: str, series: dict[str, list[dict[str, Any]]]) -> str:
    """p50 latency (ms) against the server's background jobs, one line per series, each point labelled with
    its cut."""
    fig, (ax,) = plots.new_figure(6.4, 3.2)
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda p: p["jobs"])
        xs, ys = [p["jobs"] for p in pts], [p["p50"] * 1e3 for p in pts]
        ax.plot(xs, ys, marker="o", color=plots.PALETTE[i % len(plots.PALETTE)], label=name)
        for x, y, p in zip(xs, ys, pts, strict=True):
            ax.annotate(p["cut"], (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6.5,
                        color=plots.PALETTE[i % len(plots.PALETTE)])
    ax.set_xlabel("server load: background jobs K (each the whole network in a loop)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside lower center", frameon=False, fontsize=7, ncols=2)
    return plots.to_svg(fig, title)


def partition_section(results: Sequence[Any], e: Callable[[Any], str], figure: Callable[..., str],
                      table: Callable[..., str]) -> str:
    """The section's HTML, or "" when no group of split runs has two loads or more."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in results:
        if getattr(r, "id", None) != BENCHMARK or r.status != "ok":
            continue
        params = r.params if isinstance(r.params, dict) else {}
        groups.setdefault(tuple(f"{k}={params.get(k)}" for k in FIXED), []).extend(_points(r))
    blocks = []
    for key, pts in groups.items():
        if len({p["jobs"] for p in pts}) < 2:
            continue
        series: dict[str, list[dict[str, Any]]] = {}
        for p in pts:
            series.setdefault(p["series"], []).append(p)
        title = "split latency vs server load · " + ", ".join(k for k in key if not k.endswith(("=None", "=")))
        rows = [[e(p["series"]), e(f"{p['jobs']:g}"), e(f"{p['factor']:.2f}" if p["factor"] is not None else "–"),
                 e(p["made_of"]), e(f"{p['j']} {p['cut']}"), e(f"{p['p50'] * 1e3:.1f}"),
                 e(f"{p['p90'] * 1e3:.1f}" if p["p90"] is not None else "–"),
                 e(f"{p['predicted'] * 1e3:.1f}" if p["predicted"] is not None else "–"), f"<code>{e(p['run'])}</code>"]
                for p in sorted(pts, key=lambda p: (p["series"], p["jobs"]))]
        blocks.append(figure("neurosurgeon-load", lambda t=title, s=series: load_plot(t, s), e(title))
                      + table(["series", "jobs K", "load factor (pinged)", "factor from", "cut (j layer)", "p50 ms",
                               "p90 ms", "predicted ms", "run"], rows, numeric=(1, 2, 5, 6, 7)))
    if not blocks:
        return ""
    return ('<section id="neurosurgeon"><h2>Neurosurgeon: the split under server load</h2><p class="muted">The '
            "paper's Fig. 15: end-to-end latency of split runs (<code>scenario/neurosurgeon</code>) as the "
            "server's background load rises; each point is labelled with the cut it ran at. With "
            "<code>--cut auto</code> the cut is the decision's for the load learned by pinging the server "
            "(how many times longer than idle the network's own layers take there: from its recent queries, or a "
            "slice of the network timed at the ping; the load factor).</p>" + "".join(blocks) + "</section>")
