#!/usr/bin/env python3
"""Fidelity of aibench's kernel timer against torch.utils.benchmark.Timer.blocked_autorange.

For each operation both timers measure the *same* closure (built by the registered micro benchmark), one
thread, interleaved in a randomised order for R rounds; the figure is the median of the per-round ratios
aibench/torch. Target: within ±5% for every operation. Ratios taken side by side are what survives the
noise of a shared 2-core machine; absolute times from separate moments are not compared.

    python scripts/fidelity.py            # default sizes, 7 rounds
    python scripts/fidelity.py --rounds 11 --json fidelity.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from typing import Any

CASES: list[tuple[str, dict[str, Any]]] = [
    ("micro/gemm", {"m": 128, "n": 128, "k": 128}),
    ("micro/gemm", {"m": 512, "n": 512, "k": 512}),
    ("micro/gemm", {"m": 1024, "n": 1024, "k": 1024}),
    ("micro/conv", {"batch": 1, "in_channels": 64, "height": 56, "width": 56, "out_channels": 64}),
    ("micro/conv", {"batch": 4, "in_channels": 3, "height": 224, "width": 224, "out_channels": 64,
                    "kernel_h": 7, "kernel_w": 7, "stride_h": 2, "stride_w": 2, "pad_h": 3, "pad_w": 3}),
    ("micro/relu", {"batch": 1, "channels": 64, "height": 32, "width": 32}),
    ("micro/relu", {"batch": 32, "channels": 64, "height": 56, "width": 56}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--time", type=float, default=0.4, help="seconds each timer spends per round")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_out", help="also write the figures here")
    args = ap.parse_args()

    import torch
    from torch.utils.benchmark import Timer

    from aibench import registry
    from aibench.measure.device import pinned_threads
    from aibench.measure.timer import KernelTimer, TimerSettings

    rng = random.Random(args.seed)
    settings = TimerSettings(warmup_s=0.05, min_time_s=args.time, max_time_s=args.time, target_rel_ci=0.0)
    rows = []
    with pinned_threads(1):
        for bench_id, given in CASES:
            bench = registry.get(bench_id)
            params = bench.resolve(given)
            op = bench.factory(params, device=torch.device("cpu"), dtype=torch.float32)
            fn = op.fn
            ratios, ours, theirs = [], [], []
            for _ in range(args.rounds):
                order = ["aibench", "torch"]
                rng.shuffle(order)
                got: dict[str, float] = {}
                for who in order:
                    if who == "aibench":
                        got[who] = KernelTimer(fn, settings).measure().median
                    else:
                        t = Timer(stmt="fn()", globals={"fn": fn}, num_threads=1)
                        got[who] = t.blocked_autorange(min_run_time=args.time).median
                ratios.append(got["aibench"] / got["torch"])
                ours.append(got["aibench"])
                theirs.append(got["torch"])
            ratio = statistics.median(ratios)
            label = bench_id + " " + " ".join(f"{k}={v}" for k, v in given.items())
            rows.append({"case": label, "ratio": ratio, "min_ratio": min(ratios), "max_ratio": max(ratios),
                         "aibench_median_s": statistics.median(ours), "torch_median_s": statistics.median(theirs),
                         "ok": abs(ratio - 1) <= args.tolerance})
            print(f"{label:<100} aibench/torch = {ratio:.3f}  (rounds {min(ratios):.3f}..{max(ratios):.3f}; "
                  f"aibench {statistics.median(ours) * 1e3:.4g} ms, torch {statistics.median(theirs) * 1e3:.4g} ms)"
                  f"  {'OK' if rows[-1]['ok'] else 'OUT OF TOLERANCE'}", flush=True)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"\nworst deviation {worst:.1%} (tolerance ±{args.tolerance:.0%}); rounds={args.rounds}, 1 thread")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"rounds": args.rounds, "tolerance": args.tolerance, "cases": rows}, fh, indent=2)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
