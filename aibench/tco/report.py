"""The TCO study as a document (the ``--json`` file, schema ``aibench-tco`` version 1), as text for the
terminal and as CSV. ``aibench report`` draws the document (:mod:`aibench.report.tco_section`)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from aibench import __version__
from aibench.results.schema import now_iso
from aibench.tco import model
from aibench.tco.inputs import Figure, Side
from aibench.tco.params import Value

SCHEMA = "aibench-tco"
SCHEMA_VERSION = 1


def document(resolved: Mapping[str, Value], cpu: Mapping[str, Figure], acc: Mapping[str, Figure],
             cpu_side: Side, acc_side: Side | None, speedups: Sequence[str], param_files: Sequence[Any],
             notes: Sequence[str], shares: Sequence[float] | None = None) -> dict[str, Any]:
    """Run the model on the figures and parameters, and say everything that went into it."""
    values = {name: v.value for name, v in resolved.items()}
    st = model.study(values, {a: f.value for a, f in cpu.items()}, {a: f.value for a, f in acc.items()}, shares)
    base = model.DESIGN["cpu-only"]
    per_server = {part: v for part, v in model.monthly_cost(values, values["server_price"],
                                                            values["server_power"]).items()}
    series = []
    for mix, designs in st.points.items():
        for name, pts in designs.items():
            counts = sorted({k for pt in pts for k in pt.counts()})
            series.append({"mix": mix, "design": name, "tco": st.ratio(mix, name),
                           "monthly_cost": [pt.total for pt in pts],
                           "counts": {k: [pt.counts().get(k, 0.0) for pt in pts] for k in counts}})
    throughput = {a: {"cpu": cpu[a].to_dict(), "accelerator": acc[a].to_dict(),
                      "cpu_per_server": st.cpu[a], "speedup_per_accelerator": acc[a].value / st.cpu[a]}
                  for a in cpu}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created_at": now_iso(), "aibench_version": __version__,
        "reconstruction": model.RECONSTRUCTION,
        "inputs": {"cpu": cpu_side.paths, "accelerator": acc_side.paths if acc_side else None,
                   "speedup": list(speedups) or None, "params_files": [os.fspath(p) for p in param_files],
                   "skipped": {"cpu": cpu_side.note(), "accelerator": acc_side.note() if acc_side else None}},
        "throughput": throughput,
        "params": {name: v.to_dict() for name, v in resolved.items()},
        "mixes": {m: {"apps": info["apps"], "weights": info["weights"], "missing": info["missing"],
                      "weighting": "equal shares of the CPU-only datacenter's servers per DNN service"}
                  for m, info in st.mixes.items()},
        "designs": [{"name": d.name, "kind": d.kind, "interconnect": d.interconnect, "network": d.network,
                     "description": d.description} for d in model.DESIGNS],
        "baseline": base.name,
        "cpu_server_monthly_cost": per_server,
        "shares": [round(s * 100, 6) for s in st.shares],
        "series": series,
        "crossovers": [{**c, "share": round(c["share"] * 100, 4)} for c in st.crossovers],
        "notes": list(notes),
    }


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _plain(text: Any) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _figure_text(f: Mapping[str, Any]) -> str:
    what = f"{_fmt(f['value'])} {f['unit']}  {f['provenance']}: {f['source']}"
    if f.get("benchmark"):
        extra = ", ".join(str(x) for x in (f["benchmark"], f.get("load_scenario"), f.get("device")) if x)
        per = f", divided by {f['devices']} devices" if f.get("devices", 1) > 1 else ""
        what += f" ({extra}{per})"
    return what


def crossover_text(c: Mapping[str, Any]) -> str:
    verb = {"cheaper": "becomes cheaper than", "dearer": "becomes dearer than", "equal": "equals"}[c["becomes"]]
    return f"{c['mix']}: {c['design']} {verb} {c['versus']} at {c['share']:.1f}% DNN share"


def text(doc: Mapping[str, Any], table_shares: Sequence[int]) -> str:
    """What the terminal shows: the reconstruction note, every input with its source, the table of a subset
    of shares, the crossovers."""
    lines = [f"aibench tco: {doc['reconstruction']}.", "", "Throughput per application (the CPU figure per "
             "CPU-only server, the accelerator's per device):"]
    for app, t in doc["throughput"].items():
        lines.append(f"  {app:<5} CPU          {_figure_text(t['cpu'])}")
        lines.append(f"  {'':<5} accelerator  {_figure_text(t['accelerator'])}  "
                     f"[{t['speedup_per_accelerator']:.3g}x the CPU-only server]")
    for note in doc["notes"]:
        lines.append(f"  note: {note}")
    lines += ["", "Per application: the DNN's share of a query's time on the CPU-only server, and bytes per query "
              "(value, source):"]
    for app in doc["throughput"]:
        for name in (f"dnn_share_{app}", f"query_bytes_{app}"):
            p = doc["params"].get(name)
            if p is not None:
                lines.append(f"  {app:<5} {name.rsplit('_', 1)[0]:<11} {p['value']:>10.6g} {p['unit']:<9} "
                             f"{p['source']}")
    lines += ["", "Parameters (value, unit, source):"]
    width = max(len(n) for n in doc["params"])
    for name, p in doc["params"].items():
        lines.append(f"  {name:<{width}}  {p['value']:>10.6g} {p['unit']:<17} {p['source']}")
    shares = list(doc["shares"])
    cols = [shares.index(s) for s in table_shares if s in shares]
    for mix, info in doc["mixes"].items():
        apps = " ".join(info["apps"])
        partial = f"; PARTIAL: no figure for {' '.join(info['missing'])}" if info["missing"] else ""
        lines += ["", f"{mix} ({apps}: equal shares{partial}): TCO / CPU-only (lower is better) by DNN share "
                      "of the datacenter"]
        names = [s["design"] for s in doc["series"] if s["mix"] == mix]
        w = max(len(n) for n in names)
        lines.append(f"  {'design':<{w}}  " + " ".join(f"{shares[i]:>7g}%" for i in cols))
        for s in doc["series"]:
            if s["mix"] == mix:
                lines.append(f"  {s['design']:<{w}}  " + " ".join(f"{s['tco'][i]:>8.3f}" for i in cols))
    lines += ["", "Crossovers (DNN share where a design's TCO crosses another's):"]
    cross = [crossover_text(c) for c in doc["crossovers"]]
    lines += [f"  {c}" for c in cross] or ["  none within 0..100%"]
    return "\n".join(_plain(line) for line in lines) + "\n"


def csv_text(doc: Mapping[str, Any]) -> str:
    """One row per mix, design and DNN share: the normalised TCO, the monthly cost and what is built."""
    kinds = sorted({k for s in doc["series"] for k in s["counts"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mix", "design", "dnn_share_percent", "tco_vs_cpu_only", "monthly_cost_per_cpu_server",
                *[f"count_{k}" for k in kinds]])
    for s in doc["series"]:
        for i, share in enumerate(doc["shares"]):
            w.writerow([s["mix"], s["design"], f"{share:g}", f"{s['tco'][i]:.6g}", f"{s['monthly_cost'][i]:.6g}",
                        *[f"{s['counts'].get(k, [0.0] * len(doc['shares']))[i]:.6g}" for k in kinds]])
    return buf.getvalue()
