#!/usr/bin/env python3
"""Does the kernel runner's fixed allocator setting remove the swing of grouped and depthwise conv timings?

Each iteration runs every configuration twice through the real CLI (``aibench -q run … --json --out``), once
with glibc's default malloc behaviour (``AIBENCH_ALLOCATOR=default``) and once with the kernel runner's fixed
mmap/trim thresholds (the default), in a shuffled order, each as a fresh process. One JSON line per run:
median and minimum time per call, page faults per call (``method.page_faults``), the noisy flag, the load.

    python scripts/allocator_study.py --n 6 --out /tmp/alloc.jsonl
    python scripts/allocator_study.py --summary /tmp/alloc.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIGS = {
    "conv depthwise (--groups 64)": ["micro/conv", "--groups", "64"],
    "conv grouped (--groups 8)": ["micro/conv", "--groups", "8"],
    "conv (--groups 1)": ["micro/conv"],
    "gemm 256": ["micro/gemm", "--m", "256", "--n", "256", "--k", "256"],
}
SETTINGS = ("default", "fixed")


def run_one(args: list[str], setting: str, max_time: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="alloc-study-") as out:
        env = dict(os.environ, AIBENCH_ALLOCATOR=setting)
        proc = subprocess.run([sys.executable, "-m", "aibench", "-q", "run", *args, "--max-time", str(max_time),
                               "--json", "--out", out], capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"{args} {setting}: exit {proc.returncode}: {proc.stderr[-1500:]}")
        (path,) = Path(out).glob("*.json")
        r = json.loads(path.read_text())
    pf = r["method"]["page_faults"]
    return {"median": r["metrics"]["time_median"]["value"], "min": r["metrics"]["time_min"]["value"],
            "faults_per_call": pf["minor_per_call"] + pf["major_per_call"], "dominant": pf["dominant"],
            "fault_cost_s": pf.get("fault_cost_s"), "noisy": r["noisy"],
            "allocator": r["method"]["allocator"]["setting"], "loadavg": r["load"].get("loadavg_start")}


def summary(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | allocator | runs | median per call: range (geomean) | page faults per call | "
             "flagged noisy by faults | load average |", "|---|---|--:|---|--:|--:|---|"]
    for name in CONFIGS:
        for setting in SETTINGS:
            rs = [r for r in rows if r["config"] == name and r["setting"] == setting]
            if not rs:
                continue
            med = [r["median"] for r in rs]
            gm = math.exp(statistics.fmean(math.log(x) for x in med))
            loads = [r["loadavg"][0] for r in rs if r.get("loadavg")]
            lines.append(f"| {name} | {setting} | {len(rs)} | {min(med) * 1e3:.2f}-{max(med) * 1e3:.2f} ms "
                         f"({gm * 1e3:.2f} ms) | {statistics.fmean(r['faults_per_call'] for r in rs):,.1f} | "
                         f"{sum(r['dominant'] for r in rs)}/{len(rs)} | "
                         f"{min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="iterations (each runs every configuration both ways)")
    ap.add_argument("--out", help="append one JSON line per run here")
    ap.add_argument("--max-time", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary", help="print the markdown table of a JSON-lines file and exit")
    args = ap.parse_args()
    if args.summary:
        rows = [json.loads(line) for line in Path(args.summary).read_text().splitlines() if line.strip()]
        sys.stdout.write(summary(rows))
        return 0
    if not args.out:
        ap.error("--out is required to collect")
    rng = random.Random(args.seed)
    for i in range(args.n):
        jobs = [(name, setting) for name in CONFIGS for setting in SETTINGS]
        rng.shuffle(jobs)
        for name, setting in jobs:
            row = {"i": i, "config": name, "setting": setting, **run_one(CONFIGS[name], setting, args.max_time)}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
