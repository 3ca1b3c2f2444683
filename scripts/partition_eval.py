"""Predicted split choices against the optimum of the measured per-layer profiles (docs/partition.md).

For every network (the Tonic nets and VGG) × link (3g, lte, wifi) × device configuration, the cut chosen from
the platform profiles' *predictions* is compared with the best cut when the same cost model is priced with
the *measured* per-layer medians of `partition profile` on each side: whether the choice is optimal, its
measured cost as a percentage of the optimum's, and the speed-up of the optimum over all-on-the-server.

This is not yet the paper's Table 4: its "measured" side is the per-layer profile priced by the link model,
not an end-to-end split run over a shaped link (that needs the split-execution scenario).

    python scripts/partition_eval.py --out /tmp/partition-eval [--nets imc,vgg] [--quick]
    python scripts/partition_eval.py --out /tmp/partition-eval --reprice --links 3g,lte,wifi,100:5
                                     (price again from the profiles already in --out, with other links)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--nets", default="imc,dig,face,asr,pos,chk,ner,vgg")
    ap.add_argument("--quick", action="store_true", help="quick sweeps and few repetitions (a smoke run)")
    ap.add_argument("--device-quota", type=float, default=0.25,
                    help="CPU quota (cores) of the second device configuration (cgroup; skipped where refused)")
    ap.add_argument("--links", default="3g,lte,wifi",
                    help="named links and RATE_MBIT:RTT_MS ones, comma-separated")
    ap.add_argument("--reprice", action="store_true",
                    help="measure nothing: price again from the platform profiles and results in --out")
    args = ap.parse_args()

    from aibench import machine
    from aibench.partition import decide
    from aibench.partition.models import predict

    args.out.mkdir(parents=True, exist_ok=True)
    nets = [n for n in args.nets.split(",") if n]
    if not args.reprice:
        measure(args, nets)
    fits: dict[str, Any] = {p.stem.removeprefix("profile-"): json.loads(p.read_text())
                            for p in sorted(args.out.glob("profile-*.json"))}
    layers: dict[tuple[str, str], list[dict[str, Any]]] = {}
    shapes: dict[str, dict[str, Any]] = {}
    for path in sorted((args.out / "results").glob("*.json")):
        doc = json.loads(path.read_text())
        part, params, net = doc["method"]["partition"], doc["params"], doc["benchmark"]["name"]
        if net not in nets:
            continue
        label = "server" if params["side"] == "server" else \
            "device-1t" if params["cpu_quota"] is None else f"device-q{params['cpu_quota']:g}"
        shapes[net] = part
        layers[(label, net)] = [{**la, "median_s": doc["parts"]["layer"][la["name"]]["summary"]["median"]}
                                for la in part["layers"]]
    links = []
    for spec in args.links.split(","):
        if ":" in spec:
            rate, rtt = spec.split(":")
            links.append(decide.custom_link(float(rate), float(rtt)))
        else:
            links.append(decide.named_link(spec))
    rows = []
    for dev in (k for k in fits if k.startswith("device")):
        for net in nets:
            ls = layers[(dev, net)]
            names = [la["name"] for la in ls]
            sizes = [shapes[net]["input_bytes"], *[la["out_bytes"] for la in ls]]
            tm_pred = [predict(fits[dev], la) for la in ls]
            tc_pred = [predict(fits["server"], la) for la in ls]
            tm_meas = [la["median_s"] for la in ls]
            tc_meas = [la["median_s"] for la in layers[("server", net)]]
            for link in links:
                link_name = link.name
                pred = decide.price_cuts(names, tm_pred, tc_pred, sizes, link)
                meas = decide.price_cuts(names, tm_meas, tc_meas, sizes, link)
                chosen, best = decide.choose(pred), decide.choose(meas)
                rows.append({"device": dev, "net": net, "link": link_name, "layers": len(names),
                             "chosen": f"{chosen.j} {chosen.layer}", "optimum": f"{best.j} {best.layer}",
                             "optimal": math.isclose(meas[chosen.j].total_s, best.total_s, rel_tol=1e-12),
                             "pct_of_optimum": best.total_s / meas[chosen.j].total_s,
                             "speedup_over_server": meas[0].total_s / best.total_s,
                             "chosen_speedup_over_server": meas[0].total_s / meas[chosen.j].total_s})
    (args.out / "eval.json").write_text(json.dumps({"rows": rows, "machine": machine.machine(),
                                                    "loadavg_end": os.getloadavg()}, indent=1) + "\n")
    print("| device | net | link | chosen (j layer) | measured optimum | optimal | % of optimum | "
          "optimum's speed-up over all-on-server |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["optimal"] else "no"
        print(f"| {r['device']} | {r['net']} | {r['link']} | {r['chosen']} | {r['optimum']} | {ok} | "
              f"{100 * r['pct_of_optimum']:.1f}% | {r['speedup_over_server']:.2f}× |")
    n_opt = sum(r["optimal"] for r in rows)
    mean_pct = sum(r["pct_of_optimum"] for r in rows) / len(rows)
    geo = math.exp(sum(math.log(r["chosen_speedup_over_server"]) for r in rows) / len(rows))
    interior = sum(1 for r in rows if 0 < int(r["optimum"].split()[0]) < r["layers"])
    print(f"\n{n_opt} of {len(rows)} choices optimal; {100 * mean_pct:.1f}% of the optimal latency on average; "
          f"geometric-mean speed-up of the choice over all-on-server {geo:.2f}×; {interior} interior optima")
    return 0


def measure(args: argparse.Namespace, nets: list[str]) -> None:
    """Fit every side and profile every network on it; files into ``args.out``."""
    from aibench import machine
    from aibench.errors import AibenchError
    from aibench.partition.models import run_fit
    from aibench.partition.profile import profile
    from aibench.partition.sides import quota_interface, side_for
    from aibench.results.store import write_result

    reps = {"min_reps": 2, "max_reps": 5, "min_time_s": 0.0} if args.quick else \
        {"min_reps": 5, "max_reps": 200, "min_time_s": 0.1}
    sides = {"device-1t": side_for("device"), "server": side_for("server")}
    found = quota_interface()
    if isinstance(found, str):
        print(f"second device configuration skipped: {found}", file=sys.stderr)
    else:
        try:
            sides[f"device-q{args.device_quota:g}"] = side_for("device", cpu_quota=args.device_quota)
        except AibenchError as exc:
            print(f"second device configuration skipped: {exc.format_message()}", file=sys.stderr)
    print(f"cpu: {machine.machine().get('cpu_model')} · loadavg {os.getloadavg()}", file=sys.stderr)
    for label, side in sides.items():
        t0 = time.perf_counter()
        fit = run_fit(side, quick=args.quick, exclude_networks=nets)
        (args.out / f"profile-{label}.json").write_text(json.dumps(fit, indent=1) + "\n")
        print(f"{label}: fitted in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for net in nets:
            t0 = time.perf_counter()
            result = profile(f"component/{net}", side, **reps)
            write_result(result, args.out / "results")
            print(f"{label} {net}: profiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
