"""Predicted split choices against the optimum of measured end-to-end split runs (the paper's Table 4;
docs/partition.md, "Evaluation").

For every network (the Tonic nets and VGG) × link (3g, lte, wifi) × device configuration (one thread capped
at each --quotas core share through a cgroup: the device many times slower than the server, which has every
core), the cut chosen from the platform profiles' predictions is compared with the measured optimum: the
least median end-to-end latency over the cuts of real split queries (aibench.partition.evaluate: one split
session per network and device configuration, a branch and bound that measures every cut that could be
the optimum). Reported: whether the choice is optimal, its latency as a percentage of the optimum's, and its
speed-up over all-on-the-server (cut 0, measured).

    python scripts/partition_eval.py --out /tmp/partition-eval                       # fits, then the grid
    python scripts/partition_eval.py --out /tmp/partition-eval --nets imc,pos --quotas 0.1
    python scripts/partition_eval.py --out /tmp/partition-eval --table               # the table from eval.json

The server runs (its fit and its process) with the largest CPU weight, no cap: a dedicated server emulated on
a shared machine (--no-server-priority: the ordinary weight). The platform profiles (partition fit: the
server on every core, each device configuration under its quota; the sweeps exclude the evaluated networks)
are written to --out and reused when there (--refit: again).
Rows go to --out/eval.json as each network finishes, so an interrupted run keeps what it measured. Ctrl-C and
SIGTERM stop the server and remove the cgroups (exit 130, 143); after a SIGKILL the next start removes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

NETS = "imc,dig,face,asr,pos,chk,ner,vgg"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--nets", default=NETS)
    ap.add_argument("--quotas", default="0.25,0.1", help="device configurations: CPU quotas in cores, one thread")
    ap.add_argument("--links", default="3g,lte,wifi", help="named links and RATE_MBIT:RTT_MS ones, comma-separated")
    ap.add_argument("--quick", action="store_true", help="quick fits (a smoke run)")
    ap.add_argument("--refit", action="store_true", help="fit again even where the profiles are in --out")
    ap.add_argument("--table", action="store_true", help="measure nothing: the table from --out/eval.json")
    ap.add_argument("--no-server-priority", action="store_true",
                    help="the server (its fit and its process) at the ordinary CPU weight, not the largest")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "eval.json"
    if not args.table:
        measure(args, store)
    doc = json.loads(store.read_text())
    print_table(doc)
    return 0


def links_of(text: str) -> list[Any]:
    from aibench.partition import decide

    out = []
    for spec in text.split(","):
        if ":" in spec:
            rate, rtt = spec.split(":")
            out.append(decide.custom_link(float(rate), float(rtt)))
        else:
            out.append(decide.named_link(spec))
    return out


def measure(args: argparse.Namespace, store: Path) -> None:
    from aibench import machine
    from aibench.partition.evaluate import evaluate_network
    from aibench.partition.models import run_fit
    from aibench.partition.sides import cpu_priority, side_for

    nets = [n for n in args.nets.split(",") if n]
    quotas = [float(q) for q in args.quotas.split(",") if q]
    links = links_of(args.links)

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)

    doc: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {"sessions": []}
    doc.update({"machine": machine.machine(), "links": [ln.as_dict() for ln in links]})
    say(f"cpu: {machine.machine().get('cpu_model')}")
    profiles = {"server": (args.out / "profile-server.json", side_for("server", device="cpu"))}
    for q in quotas:
        profiles[f"device-q{q:g}"] = (args.out / f"profile-device-q{q:g}.json", side_for("device", cpu_quota=q))
    for label, (path, side) in profiles.items():
        if path.is_file() and not args.refit:
            continue
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if label == "server" and not args.no_server_priority:
                stack.enter_context(cpu_priority())
            fit = run_fit(side, quick=args.quick, exclude_networks=nets)
        path.write_text(json.dumps(fit, indent=1) + "\n")
        say(f"{label}: fitted in {time.perf_counter() - t0:.0f} s")
    from aibench.errors import AibenchError

    for q in quotas:
        for net in nets:
            try:
                session = evaluate_network(net, q, links, str(profiles[f"device-q{q:g}"][0]),
                                           str(profiles["server"][0]), say, not args.no_server_priority)
            except (AibenchError, RuntimeError) as exc:  # one session lost, not the grid
                say(f"{net} at {q:g} core: failed: {exc}")
                doc.setdefault("failed", []).append({"net": net, "device_quota": q, "error": str(exc)})
                store.write_text(json.dumps(doc, indent=1) + "\n")
                continue
            doc["sessions"] = [s for s in doc["sessions"] if (s["net"], s["device_quota"]) != (net, q)]
            doc["sessions"].append(session)
            store.write_text(json.dumps(doc, indent=1) + "\n")


def layer_types(session: dict[str, Any]) -> list[str]:
    """Each layer's model type (a session written before they were recorded: from the network itself)."""
    if "layer_types" in session:
        return session["layer_types"]
    from aibench.partition.layers import layer_type
    from aibench.partition.profile import load_network
    from aibench.partition.sides import side_for

    net = load_network(f"component/{session['net']}", side_for("server", device="cpu"))
    return [layer_type(module) for _, module in net.layers]


def verdict(r: dict[str, Any]) -> str:
    """exact; the same split of the work; a tie (its queries not slower than the optimum's at 5%); slower."""
    from aibench.partition.evaluate import ALPHA

    if r["exact"]:
        return "yes"
    if r["same_split"]:
        return "yes (same split)"
    return f"tie (p {r['slower_p']:.2f})" if r["slower_p"] >= ALPHA else f"no (p {r['slower_p']:.3f})"


def print_table(doc: dict[str, Any]) -> None:
    from aibench.partition.evaluate import ALPHA, same_split, slower_p

    print("| device | net | link | chosen (j layer) | measured optimum | optimal | % of optimum | chosen ms | "
          "optimum ms | all-on-server ms | speed-up over all-on-server | cuts measured | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for s in doc["sessions"]:
        kinds = layer_types(s)
        for r in s["rows"]:
            r["same_split"] = same_split(kinds, r["chosen"]["j"], r["optimum"]["j"])
            if "slower_p" not in r:  # written before it was: from the recorded queries
                c, b = (r["cuts_measured"][str(r[k]["j"])]["latencies_s"] for k in ("chosen", "optimum"))
                r["slower_p"] = 1.0 if r["exact"] else slower_p(c, b)
            rows.append(r)
            ok = verdict(r)
            print(f"| {s['device_quota']:g} core | {s['net']} | {r['link']} | "
                  f"{r['chosen']['j']} {r['chosen']['layer']} | {r['optimum']['j']} {r['optimum']['layer']} | "
                  f"{ok} | {100 * r['pct_of_optimum']:.1f}% | "
                  f"{r['chosen']['measured_s'] * 1e3:.1f} | {r['optimum']['measured_s'] * 1e3:.1f} | "
                  f"{r['server_only_s'] * 1e3:.1f} | {r['speedup_over_server']:.2f}× | "
                  f"{len(r['cuts_measured'])}/{r['layers'] + 1} | {r['loadavg'][0]:.1f} |")
    if not rows:
        return
    n_exact = sum(r["exact"] for r in rows)
    n_same = sum(r["same_split"] and not r["exact"] for r in rows)
    n_tie = sum(r["slower_p"] >= ALPHA and not (r["exact"] or r["same_split"]) for r in rows)
    mean_pct = sum(r["pct_of_optimum"] for r in rows) / len(rows)
    geo = math.exp(sum(math.log(r["speedup_over_server"]) for r in rows) / len(rows))
    interior = sum(1 for r in rows if 0 < r["optimum"]["j"] < r["layers"])
    interior_chosen = sum(1 for r in rows if 0 < r["chosen"]["j"] < r["layers"])
    spreads = sorted((max(m["latencies_s"]) - min(m["latencies_s"])) / m["median_s"]
                     for r in rows for m in r["cuts_measured"].values() if m["median_s"] > 0)
    loads = [r["loadavg"][0] for r in rows]
    n_cuts = sum(len(r["cuts_measured"]) for r in rows)
    print(f"\n{n_exact + n_same} of {len(rows)} choices optimal ({n_exact} the exact cut, {n_same} the same split "
          f"of the work: the cuts apart only by layers without arithmetic); {n_tie} more a tie (their queries "
          f"not slower than the optimum's at {ALPHA:g} significance, one-sided Mann-Whitney U), "
          f"{len(rows) - n_exact - n_same - n_tie} slower; "
          f"{100 * mean_pct:.1f}% of the optimal latency on average; geometric-mean speed-up of the "
          f"choice over all-on-server {geo:.2f}× (max {max(r['speedup_over_server'] for r in rows):.1f}×); "
          f"{interior} interior optima, {interior_chosen} interior choices; {n_cuts} "
          f"cuts measured end to end; their (max - min) / median: median {100 * spreads[len(spreads) // 2]:.1f}%; "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")


def run() -> int:
    """``main`` with SIGTERM handled as Ctrl-C is (aibench.lifetime): either unwinds the run, so the server
    process is stopped and the cgroups of the device's quota and the server's priority are removed (a SIGKILL
    cannot be caught: the next start sweeps those groups); the rows finished so far stay in eval.json."""
    from aibench import lifetime

    with lifetime.handling_signals():
        try:
            return main()
        except KeyboardInterrupt as exc:
            print(f"partition_eval: {lifetime.verb(exc)}; the sessions finished so far are in --out/eval.json",
                  file=sys.stderr, flush=True)
            return lifetime.exit_code(exc)


if __name__ == "__main__":
    sys.exit(run())
