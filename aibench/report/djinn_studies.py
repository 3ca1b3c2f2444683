"""The DjiNN studies in the report (DjiNN & Tonic, ISCA 2015), drawn from ordinary result files and sweep
records, so each study is one ``aibench sweep`` (or run) and one ``aibench report``:

- **DNN share** (the paper's Fig. 4): per application, the DNN's part of the application's time against the
  rest, from ``parts.stage`` (``scenario/djinn`` and ``--remote``: ``server_compute`` vs ``client_pre`` +
  ``client_post``, with ``network_queue`` shown apart as the serving's own cost; a component ``--breakdown``
  run: ``dnn`` vs ``preprocess`` + ``postprocess``). Times, not cycles: the paper counted cycles.
- **Bandwidth** (Fig. 13, Table 3): bytes per query both ways, the measured samples/s, and the bandwidth that
  rate needs, against reference link rates held as data (``aibench/data/djinn/links.json``; ``aibench report
  --links FILE.json`` replaces them).
- **Batch** (Fig. 7), **instances** (Figs. 8/9) and **devices** (Figs. 11/12): the sweeps' knees, and per
  point the throughput against the first point with how the instances shared the device
  (``context.device_sharing``) and how the inputs reached the network (``context.inputs``). The same
  instances or devices sweep with inputs transferred (Fig. 11) and resident on the server's devices (Fig. 12,
  ``--resident-inputs N``) is drawn on one plot and paired point by point. The curves themselves are in the
  Sweeps section.

Pure Python over :class:`~aibench.results.schema.Result` (no torch). Every string from a file is escaped by
the ``e`` the page passes in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aibench.errors import UsageError
from aibench.report import plots
from aibench.report.view import as_dict, is_invalid, metric_value, sweep_of
from aibench.results.schema import Result

APPS = ("imc", "dig", "face", "asr", "pos", "chk", "ner")
# Table 3's "input data size", KiB: 4 bytes x (input + output floats) of one query (djinn-service.md)
TABLE3_KIB = {"imc": 604, "dig": 307, "face": 271, "asr": 4594, "pos": 38, "chk": 75, "ner": 43}
# Fig. 4's finding per app, in words (the figure gives no numbers to quote)
FIG4 = {"imc": "almost all", "dig": "almost all", "face": "almost all", "asr": "about half",
        "pos": "over two thirds", "chk": "over two thirds", "ner": "over two thirds"}
DEFAULT_LINKS = Path(__file__).resolve().parent.parent / "data" / "djinn" / "links.json"
MAX_LINKS_BYTES = 1 << 20
RESIDENT_MISSING = (
    "no sweep with inputs resident on the device among these results: run the same sweep with "
    "--resident-inputs N (aibench serve then keeps N input rows per network on each instance's device and the "
    "requests name rows of them instead of carrying tensors) to draw it beside the transferred one")
RESIDENT_CPU = (
    "on a CPU the device is the host: resident inputs remove the request payload, the server's gathering of "
    "rows into a batch and its hand-off to the instance, but there is no host-to-device copy to remove")
MODES = {"transferred": "inputs transferred (Fig. 11)", "resident": "inputs resident (Fig. 12)"}


def inputs_mode(r: Result) -> str:
    """``transferred`` or ``resident``: how a run's inputs reached the network (scenario/djinn's
    ``context.inputs``, else its ``resident_inputs`` parameter)."""
    mode = as_dict(as_dict(r.context).get("inputs")).get("mode")
    if mode in MODES:
        return str(mode)
    return "resident" if r.params.get("resident_inputs") else "transferred"


@dataclass(frozen=True)
class Link:
    name: str
    bytes_per_s: float
    efficiency: float
    source: str

    @property
    def usable(self) -> float:
        return self.bytes_per_s * self.efficiency


def load_links(path: Path | None = None) -> list[Link]:
    """The reference links: ``path`` (``aibench report --links``) or the default table. A file that is not a
    readable links table is one line (:class:`UsageError`, exit 2)."""
    where = path or DEFAULT_LINKS
    try:
        if where.stat().st_size > MAX_LINKS_BYTES:
            raise UsageError(f"--links {where}: larger than {MAX_LINKS_BYTES} bytes")
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--links {where}: not a readable JSON links table ({type(exc).__name__})") from None
    items = doc.get("links") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise UsageError(f"--links {where}: expected {{\"links\": [{{\"name\", \"bytes_per_s\", \"efficiency\"?, "
                         "\"source\"?}}, ...]}}")
    links: list[Link] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("name"), str) or not it["name"].strip():
            raise UsageError(f"--links {where}: link {i} has no name")
        rate, eff = it.get("bytes_per_s"), it.get("efficiency", 1.0)
        if not _positive(rate):
            raise UsageError(f"--links {where}: {it['name']!r}: bytes_per_s must be a positive number")
        if not _positive(eff) or eff > 1:
            raise UsageError(f"--links {where}: {it['name']!r}: efficiency must be in (0, 1]")
        links.append(Link(it["name"][:80], float(rate), float(eff), str(it.get("source") or "")[:200]))
    return links


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def app_of(r: Result) -> str | None:
    """The Tonic application a result ran: scenario/djinn's ``app``, or a component named after one."""
    if r.id == "scenario/djinn":
        app = r.params.get("app")
        return app if isinstance(app, str) else None
    kind, _, name = r.id.partition("/")
    return name if kind == "component" and name in APPS else None


def _total(parts: dict[str, Any], name: str) -> float | None:
    entry = parts.get(name)
    t = entry.get("total") if isinstance(entry, dict) else None
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) else None


def dnn_split(r: Result) -> dict[str, Any] | None:
    """Seconds in the DNN, the application's pre- and post-processing and (served) the network and queue,
    summed over the run's requests or batches, and the DNN's share; None without per-part figures, and for a
    run with resident inputs (its requests moved no inputs: it is Fig. 12's, not the application's)."""
    if r.status != "ok" or inputs_mode(r) == "resident":
        return None
    parts = as_dict(as_dict(r.parts).get("stage"))
    pre, post = _total(parts, "client_pre"), _total(parts, "client_post")
    if pre is not None and post is not None:
        dnn, net = _total(parts, "server_compute"), _total(parts, "network_queue")
        basis = "served: server_compute vs client_pre + client_post (network_queue apart)"
        if dnn is None:  # DjiNN's wire: the round trip is whole; the server's statistics give its mean compute
            rt, mean = _total(parts, "round_trip"), metric_value(r, "server_compute_mean_s")
            seen = as_dict(parts.get("round_trip")).get("seen")
            if rt is None or mean is None or not isinstance(seen, int) or seen <= 0:
                return None
            dnn, net = mean * seen, max(0.0, rt - mean * seen)
            basis = "served (DjiNN wire): server statistics' mean compute x requests vs client_pre + client_post"
    else:
        dnn, pre, post, net = (_total(parts, "dnn"), _total(parts, "preprocess"), _total(parts, "postprocess"),
                               None)
        basis = "in-process --breakdown: dnn vs preprocess + postprocess"
        if dnn is None or pre is None or post is None:
            return None
    app_time = dnn + pre + post
    if app_time <= 0:
        return None
    return {"dnn_s": dnn, "pre_s": pre, "post_s": post, "network_queue_s": net, "dnn_share": dnn / app_time,
            "basis": basis}


def bandwidth(r: Result, links: Sequence[Link]) -> dict[str, Any] | None:
    """Bytes per query (up, down), the measured samples/s and the bandwidth that rate needs, with its share
    of each link's usable rate; None when the result carries no byte counts, and for a run with resident
    inputs (it names rows instead of sending them: its bytes are not the application's)."""
    if r.status != "ok" or inputs_mode(r) == "resident":
        return None
    up, down = metric_value(r, "bytes_up_per_query"), metric_value(r, "bytes_down_per_query")
    if up is None or down is None:
        b = as_dict(as_dict(as_dict(r.method).get("remote")).get("bytes"))
        up, down = b.get("up_per_sample"), b.get("down_per_sample")
    rate = metric_value(r, "samples_per_s")
    if not (_positive(up) or _positive(down)) or not isinstance(up, int | float) or not isinstance(down, int | float):
        return None
    need = (up + down) * rate if rate else None
    return {"up": float(up), "down": float(down), "rate": rate, "required": need,
            "shares": {ln.name: need / ln.usable for ln in links} if need else {}}


def _best(results: Sequence[Result], keep: Callable[[Result], Any]) -> dict[tuple[str, str], Result]:
    """Per (benchmark, app): the result with the highest samples/s among those ``keep`` accepts (VALID ones
    first: an INVALID run is only taken when nothing else is there)."""
    best: dict[tuple[str, str], Result] = {}
    for r in results:
        app = app_of(r)
        if app is None or keep(r) is None:
            continue
        key = (r.id, app)
        old = best.get(key)
        rank = (not is_invalid(r), metric_value(r, "samples_per_s") or 0.0)
        if old is None or rank > (not is_invalid(old), metric_value(old, "samples_per_s") or 0.0):
            best[key] = r
    return dict(sorted(best.items(), key=lambda kv: (APPS.index(kv[0][1]), kv[0][0])))


def study_figures(r: Result, links: Sequence[Link]) -> list[dict[str, Any]]:
    """The studies' derived figures of one result, as CSV rows' metric fields (``study.*`` metrics)."""
    out: list[dict[str, Any]] = []
    split = dnn_split(r)
    if split is not None:
        out.append({"metric": "study.dnn_share", "value": split["dnn_share"], "unit": "fraction",
                    "statistic": "ratio", "of": "parts.stage", "direction": None})
    bw = bandwidth(r, links)
    if bw is not None and bw["required"]:
        out.append({"metric": "study.required_bandwidth", "value": bw["required"], "unit": "B/s",
                    "statistic": "rate", "of": None, "direction": "lower"})
        for name, share in bw["shares"].items():
            out.append({"metric": f"study.link_share[{name}]", "value": share, "unit": "fraction",
                        "statistic": "ratio", "of": None, "direction": "lower"})
    return out


# --------------------------------------------------------------------------------------------- plots
@plots._draw
def share_plot(title: str, labels: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """One horizontal stacked bar per run: DNN, pre, post (and network + queue) as shares of its time."""
    fig, (ax,) = plots.new_figure(6.2, 0.5 + 0.38 * len(labels))
    names = (("dnn_s", "DNN"), ("pre_s", "pre-processing"), ("post_s", "post-processing"),
             ("network_queue_s", "network + queue"))
    for i, row in enumerate(rows):
        total = sum(row[k] or 0.0 for k, _ in names)
        left = 0.0
        for j, (k, label) in enumerate(names):
            width = (row[k] or 0.0) / total if total else 0.0
            ax.barh(i, width, left=left, color=plots.PALETTE[j], label=label if i == 0 else None)
            left += width
    ax.set_yticks(range(len(labels)), [plots.wrap(x, 28) for x in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the request's (or batch's) time")
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside right center", frameon=False, fontsize=7)
    return plots.to_svg(fig, title)


@plots._draw
def bandwidth_plot(title: str, labels: Sequence[str], required: Sequence[float], links: Sequence[Link]) -> str:
    """Required bandwidth per run (log scale), the links' usable rates as vertical lines."""
    fig, (ax,) = plots.new_figure(6.2, 0.8 + 0.38 * len(labels))
    ax.barh(range(len(labels)), required, color=plots.PALETTE[0])
    for i, ln in enumerate(links):
        ax.axvline(ln.usable, color=plots.PALETTE[(i + 1) % len(plots.PALETTE)], linestyle="--", linewidth=1,
                   label=f"{ln.name} ({ln.efficiency:.0%})")
    ax.set_xscale("log")
    ax.set_yticks(range(len(labels)), [plots.wrap(x, 28) for x in labels])
    ax.invert_yaxis()
    ax.set_xlabel("bandwidth needed at the measured rate (B/s)")
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside right center", frameon=False, fontsize=7)
    return plots.to_svg(fig, title)


@plots._draw
def scaling_plot(title: str, xlabel: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> str:
    """Samples/s against the swept count, one line per series (transferred and resident inputs)."""
    fig, (ax,) = plots.new_figure(5.6, 3.0)
    for i, (label, xs, ys) in enumerate(series):
        ax.plot(xs, ys, marker="o", color=plots.PALETTE[i % len(plots.PALETTE)], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples/s")
    ax.set_ylim(bottom=0)
    ax.set_title(plots.wrap(title, 80))
    fig.legend(loc="outside right center", frameon=False, fontsize=7)
    return plots.to_svg(fig, title)


# --------------------------------------------------------------------------------------------- section
def _fmt(x: Any, spec: str = ".3g", unit: str = "") -> str:
    return f"{x:{spec}}{unit}" if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) \
        else "–"


def _label(r: Result, app: str) -> str:
    return f"{app} · {r.id}" + (" (INVALID)" if is_invalid(r) else "")


def _share_part(results: Sequence[Result], e: Callable[[Any], str], figure: Callable[..., str],
                table: Callable[..., str]) -> str:
    picked = _best(results, dnn_split)
    if not picked:
        return ""
    rows, labels, splits = [], [], []
    for (_, app), r in picked.items():
        s = dnn_split(r)
        assert s is not None
        labels.append(_label(r, app))
        splits.append(s)
        net = s["network_queue_s"]
        whole = s["dnn_s"] + s["pre_s"] + s["post_s"] + (net or 0.0)
        rows.append([e(app), e(r.id), e(f"{s['dnn_share']:.0%}"), e(f"{1 - s['dnn_share']:.0%}"),
                     e(f"{net / whole:.0%}" if net is not None and whole else "–"), e(FIG4.get(app, "–")),
                     e(s["basis"]), e(r.run_id or "")])
    return ("<h3>DNN share of each application (Fig. 4)</h3>"
            '<p class="note">The DNN\'s share of the application\'s own time (DNN + pre- + post-processing); '
            "served runs also spend time in the network and the server's queue, shown apart. These are times "
            "summed over the run's requests, not cycles as in the paper; per (benchmark, app) the run with the "
            "highest samples/s.</p>"
            + figure("djinn-share", lambda: share_plot("time per part, share of the whole", labels, splits))
            + table(["app", "benchmark", "DNN share", "rest of the app", "network + queue (of all)",
                     "paper (Fig. 4)", "from", "run"], rows, numeric=(2, 3, 4)))


def _bandwidth_part(results: Sequence[Result], links: Sequence[Link], links_source: str, e: Callable[[Any], str],
                    figure: Callable[..., str], table: Callable[..., str]) -> str:
    picked = _best(results, lambda r: bandwidth(r, links))
    if not picked:
        return ""
    rows, labels, needs = [], [], []
    for (_, app), r in picked.items():
        bw = bandwidth(r, links)
        assert bw is not None
        if bw["required"]:
            labels.append(_label(r, app))
            needs.append(bw["required"])
        shares = "; ".join(f"{name} {share:.2%}" for name, share in bw["shares"].items())
        rows.append([e(app), e(r.id), e(_fmt(bw["up"] / 1024, ".1f")), e(_fmt(bw["down"] / 1024, ".1f")),
                     e(_fmt((bw["up"] + bw["down"]) / 1024, ".1f")), e(_fmt(TABLE3_KIB.get(app), "d")),
                     e(_fmt(bw["rate"], ".4g")), e(_fmt(bw["required"], ".3g")), e(shares or "–")])
    link_rows = [[e(ln.name), e(_fmt(ln.bytes_per_s, ".4g")), e(f"{ln.efficiency:.0%}"), e(_fmt(ln.usable, ".4g")),
                  e(ln.source)] for ln in links]
    plot = figure("djinn-bandwidth", lambda: bandwidth_plot("bandwidth needed at the measured rate", labels, needs,
                                                            links)) if needs else ""
    return ("<h3>Bandwidth per query and at the measured rate (Fig. 13, Table 3)</h3>"
            '<p class="note">Bytes per query as sent and received (request and response bodies, headers '
            "included); the paper's Table 3 counts 4 bytes per float in and out. Needed bandwidth = bytes per "
            "query x measured samples/s; the share of each link is of its usable rate (rate x efficiency). "
            f"Links from {e(links_source)}.</p>"
            + plot
            + table(["app", "benchmark", "KiB up", "KiB down", "KiB per query", "paper KiB (Table 3)",
                     "samples/s", "needed B/s", "share of each link"], rows, numeric=(2, 3, 4, 5, 6, 7))
            + "<h4>Reference links</h4>"
            + table(["link", "B/s", "efficiency", "usable B/s", "source"], link_rows, numeric=(1, 2, 3)))


def _resident_part(by_sweep: dict[str, list[tuple[Any, Result]]], params: dict[str, str], e: Callable[[Any], str],
                   figure: Callable[..., str], table: Callable[..., str]) -> str:
    """Figs. 11 and 12 side by side: per (app, swept count), the sweep with transferred inputs and the one with
    resident inputs, drawn on one plot and paired point by point (the latest sweep of each kind)."""
    groups: dict[tuple[str, str], dict[str, list[tuple[Any, Result]]]] = {}
    for sid, pts in by_sweep.items():
        if params[sid] not in ("instances", "instances_per_device", "devices"):
            continue
        app = app_of(pts[0][1])
        groups.setdefault((str(app), params[sid]), {})[inputs_mode(pts[0][1])] = pts
    out = []
    for (app, param), modes in groups.items():
        if len(modes) < 2:
            continue
        series, rates = [], {}
        for mode in MODES:
            pts = [(v, metric_value(r, "samples_per_s")) for v, r in modes[mode]]
            pts = [(v, y) for v, y in pts if isinstance(v, int | float) and y is not None]
            rates[mode] = dict(pts)
            series.append((MODES[mode], [v for v, _ in pts], [y for _, y in pts]))
        rows = []
        for v in sorted(set(rates["transferred"]) | set(rates["resident"])):
            t, res = rates["transferred"].get(v), rates["resident"].get(v)
            rows.append([e(_fmt(v, "g")), e(_fmt(t, ".4g")), e(_fmt(res, ".4g")),
                         e(_fmt(res / t, ".2f", "x") if t and res else "–")])
        cpu = any(str(r.params.get("devices", "cpu")).startswith("cpu") for pts in modes.values() for _, r in pts)
        note = f" {RESIDENT_CPU}." if cpu else ""
        title = f"{app}: samples/s by {param}, inputs transferred vs resident"
        out.append(f"<h4>{e(app)}: {e(param)}, inputs transferred (Fig. 11) and resident (Fig. 12)</h4>"
                   f'<p class="note">The gap between the lines is what moving the inputs costs (the request '
                   f"payload and its copies): where it grows with the count, the host link, not the compute, is "
                   f"the ceiling.{e(note)}</p>"
                   + figure(f"djinn-resident-{app}-{param}", lambda t=title, p=param, s=series: scaling_plot(t, p, s))
                   + table([param, "transferred samples/s", "resident samples/s", "resident / transferred"], rows,
                           numeric=(0, 1, 2, 3)))
    return "".join(out)


def _sweep_part(results: Sequence[Result], records: Sequence[dict[str, Any]], e: Callable[[Any], str],
                table: Callable[..., str], figure: Callable[..., str] | None = None) -> str:
    """Batch knees (Fig. 7) and the instance/device sweeps (Figs. 8/9, 11/12) of the apps, point by point."""
    by_sweep: dict[str, list[tuple[Any, Result]]] = {}
    params: dict[str, str] = {}
    for r in results:
        sw = sweep_of(r)
        if not sw or app_of(r) is None or not isinstance(sw.get("id"), str):
            continue
        by_sweep.setdefault(sw["id"], []).append((sw.get("value"), r))
        params[sw["id"]] = str(sw.get("param"))
    knees = {str(d.get("id")): d for d in records if isinstance(d, dict)}
    out = []
    batch_rows = []
    for sid, pts in by_sweep.items():
        if params[sid] not in ("batch", "server_max_batch"):
            continue
        rec = knees.get(sid) or {}
        knee = as_dict(rec.get("knee"))
        req = as_dict(rec.get("knee_request"))
        r0 = pts[0][1]
        batch_rows.append([e(app_of(r0)), e(r0.id), e(params[sid]), e(", ".join(_fmt(v, "g") for v, _ in pts)),
                           e(_fmt(knee.get("value"), "g")), e(_fmt(knee.get("throughput"), ".4g")),
                           e(_fmt(knee.get("latency_ms"), ".3g")),
                           e(_fmt(knee.get("latency_bound_ms") or req.get("latency_bound_ms"), "g")),
                           e(rec.get("knee_note") or ("no knee asked (--latency-bound-ms)" if not req else "")),
                           e(sid)])
    if batch_rows:
        out.append("<h3>Batch size per application (Fig. 7)</h3><p class=\"note\">The knee: the highest "
                   "samples/s whose latency is within the bound (the sweep record's); the curves are under "
                   "Sweeps.</p>" + table(["app", "benchmark", "swept", "values", "knee", "samples/s at knee",
                                          "latency at knee (ms)", "bound (ms)", "note", "sweep"], batch_rows,
                                         numeric=(4, 5, 6, 7)))
    scale_rows = []
    for sid, pts in by_sweep.items():
        if params[sid] not in ("instances", "instances_per_device", "devices"):
            continue
        base = metric_value(pts[0][1], "samples_per_s")
        for value, r in pts:
            rate = metric_value(r, "samples_per_s")
            sharing = as_dict(as_dict(r.context).get("device_sharing")).get("text")
            scale_rows.append([e(app_of(r)), e(params[sid]), e(_fmt(value, "g")), e(inputs_mode(r)),
                               e(_fmt(rate, ".4g")), e(_fmt(rate / base, ".2f", "x") if rate and base else "–"),
                               e(sharing if isinstance(sharing, str) else "–"),
                               e("INVALID" if is_invalid(r) else r.status), e(sid)])
    if scale_rows:
        out.append("<h3>Instances and devices (Figs. 8/9, 11/12)</h3><p class=\"note\">Throughput per point "
                   "against the sweep's first, how the inputs reached the network (transferred with each request, "
                   "or resident on the server's devices), and how the server's instances shared the device (on a "
                   "CPU they split the cores; on a GPU they time-share it unless NVIDIA MPS runs, as in the "
                   "paper).</p>"
                   + table(["app", "swept", "value", "inputs", "samples/s", "vs first", "device sharing", "status",
                            "sweep"], scale_rows, numeric=(2, 4, 5)))
        paired = _resident_part(by_sweep, params, e, figure, table) if figure is not None else ""
        if paired:
            out.append(paired)
        elif not any(inputs_mode(r) == "resident" for pts in by_sweep.values() for _, r in pts):
            out.append(f'<p class="note">Fig. 12: {e(RESIDENT_MISSING)}.</p>')
    return "".join(out)


def studies_section(results: Sequence[Result], records: Sequence[dict[str, Any]], e: Callable[[Any], str],
                    figure: Callable[..., str], table: Callable[..., str], links: Sequence[Link] | None = None,
                    links_source: str | None = None) -> str:
    """The "DjiNN studies" section, or "" when no result feeds any study."""
    links = list(links) if links is not None else load_links()
    source = links_source or "the default table (aibench/data/djinn/links.json)"
    body = (_sweep_part(results, records, e, table, figure) + _share_part(results, e, figure, table)
            + _bandwidth_part(results, links, source, e, figure, table))
    if not body:
        return ""
    return f'<section id="studies"><h2>DjiNN studies</h2>{body}</section>'
