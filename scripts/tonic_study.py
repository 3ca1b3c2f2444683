#!/usr/bin/env python3
"""The DjiNN & Tonic studies on this machine: a batch sweep per application (throughput rising then
flattening, batch latency flat then rising; batch-1 vs best-batch gain) and the application breakdown
(share of time in pre-processing, DNN and post-processing, beside the paper's Fig. 4).

Every point is a real `aibench` result (Offline scenario under LoadGen, network stage for the sweep, the
whole application with --breakdown for the breakdown), written under --out so it can be reported later.
Batch latency is the time one batch takes at the measured rate: batch / (samples/s).

    python scripts/tonic_study.py --out results/tonic-study [--duration-s 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SWEEP = {
    "imc": (1, 2, 4, 8, 16, 32),
    "dig": (1, 2, 4, 8, 16, 32),
    "face": (1, 2, 4, 8),
    "asr": (1, 2, 4, 8),
    "pos": (1, 4, 16, 64, 256),
    "chk": (1, 4, 16, 64, 256),
    "ner": (1, 4, 16, 64, 256),
}
PAPER_DNN_SHARE = {"imc": "~100%", "dig": "~100%", "face": "~100%", "asr": "about half",
                   "pos": "about two thirds", "chk": "about two thirds", "ner": "about two thirds"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/tonic-study"))
    ap.add_argument("--duration-s", type=float, default=2.0, help="LoadGen minimum duration per point")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads [default: torch's]")
    ap.add_argument("--apps", default=",".join(SWEEP), help="comma-separated subset")
    ap.add_argument("--json", dest="json_out", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from aibench import registry
    from aibench.harness import RunOptions, execute, plan
    from aibench.loadgen.settings import LoadgenOptions
    from aibench.results.store import ensure_writable_dir, write_result

    out = ensure_writable_dir(args.out)
    lg = LoadgenOptions(profile="quick", duration_s=args.duration_s, out_dir=out)
    lg_breakdown = LoadgenOptions(profile="quick", duration_s=args.duration_s, out_dir=out, breakdown=True)
    figures: dict[str, dict] = {}
    for app in args.apps.split(","):
        bench = registry.get(f"component/{app}")
        points = []
        for batch in SWEEP[app]:
            (run,) = plan(bench, {"batch": batch, "stage": "dnn", "data": "synthetic"})
            r = execute(run, RunOptions(threads=args.threads).with_options(loadgen=lg))
            write_result(r, out)
            rate = r.metrics["samples_per_s"]["value"] if r.status == "ok" else None
            points.append({"batch": batch, "samples_per_s": rate,
                           "batch_latency_s": batch / rate if rate else None,
                           "valid": (r.validity or {}).get("valid"), "status": r.status})
            print(f"{app:5s} batch {batch:4d}: {rate or float('nan'):10.1f} samples/s  "
                  f"batch latency {1e3 * batch / rate if rate else float('nan'):8.2f} ms", flush=True)
        rates = [p["samples_per_s"] for p in points if p["samples_per_s"]]
        best = max(points, key=lambda p: p["samples_per_s"] or 0)
        gain = best["samples_per_s"] / points[0]["samples_per_s"] if rates and points[0]["samples_per_s"] else None
        (run,) = plan(bench, {"stage": "app"})
        r = execute(run, RunOptions(threads=args.threads).with_options(loadgen=lg_breakdown))
        write_result(r, out)
        shares = {s: r.metrics.get(f"share_{s}", {}).get("value") for s in ("preprocess", "dnn", "postprocess")}
        figures[app] = {"sweep": points, "best_batch": best["batch"], "gain_best_vs_batch1": gain,
                        "app_breakdown": shares, "app_batch": run.params["batch"],
                        "app_data": r.context.get("task", {}).get("data", {}).get("source")}
        print(f"{app:5s} best batch {best['batch']} gives {gain:.2f}x batch 1; app stage at batch "
              f"{run.params['batch']}: pre {shares['preprocess']:.0%} dnn {shares['dnn']:.0%} "
              f"post {shares['postprocess']:.0%} (paper: DNN {PAPER_DNN_SHARE[app]})", flush=True)

    print("\napp   batch-1 → best batch (gain)        DNN share of the app (paper's Fig. 4)")
    for app, f in figures.items():
        p0 = f["sweep"][0]["samples_per_s"] or float("nan")
        best = max(p["samples_per_s"] or 0 for p in f["sweep"])
        dnn = f["app_breakdown"]["dnn"]
        print(f"{app:5s} {p0:9.1f} → {best:9.1f} samples/s at batch {f['best_batch']:<4d} "
              f"({f['gain_best_vs_batch1']:.1f}x)   {dnn:.0%} ({PAPER_DNN_SHARE[app]})")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
