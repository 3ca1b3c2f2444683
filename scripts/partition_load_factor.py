"""The split server's load factor against the real slowdown of the network it serves (docs/partition.md, "The
load, learned").

In one process set up as ``python -m aibench.partition.server`` sets itself up (every usable core for intra-op
threads, the network built from the same parameters, K background jobs as threads running the whole network:
:class:`aibench.partition.server.Background`), for each K in --jobs, rounds of, interleaved:

* a query at cut 0: the whole network, layer by layer (``run_layers``), as the server runs one; its median
  over the rounds relative to K = 0's is the **real slowdown**;
* the **old** factor: a 384×1024 by 1024×1024 matrix product, the least of 3 over the least of 7 idle (the
  reference the server timed before :class:`~aibench.partition.server.LoadGauge`);
* the **new** factor as a ping answers it: the gauge's slice of the network, median of 3 over idle;
* the **new** factor from queries: the gauge's weighted median over the round's cut-0 queries, and over
  queries at a middle cut (the layers after it only: what a split's queries give the server).

    python scripts/partition_load_factor.py --nets imc,asr --jobs 0,2,4,8,16 --rounds 7 --out /tmp/load.json

The process takes the largest CPU weight (as ``--server-priority true`` does for the server) unless
--no-priority; the machine's CPU model and load average are recorded beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def measure(net: str, jobs: list[int], rounds: int, threads: int) -> dict[str, Any]:
    import torch

    from aibench.networks import run_layers
    from aibench.partition import wire
    from aibench.partition.server import Background, LoadGauge

    torch.set_num_threads(threads)
    built = wire.build(net, {"batch": 1, "num_samples": 8, "data": "synthetic"}, "float32")
    t = built.task
    x = t.collate([t.load_sample(0)])
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(384, 1024, generator=g), torch.randn(1024, 1024, generator=g)

    def timed(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def matmul(reps: int) -> float:
        torch.mm(a, b)
        return min(timed(lambda: torch.mm(a, b)) for _ in range(reps))

    with torch.inference_mode():
        built.network(x)
        idle_mm = matmul(7)
        gauge = LoadGauge(built.layers, x)
        half = gauge.suffix[0] / 2  # the middle cut: the first whose later layers take half the idle time or less
        mid = next(j for j in range(len(built.layers) + 1) if gauge.suffix[j] <= half)
        mid_in = run_layers(built.network, x, 0, mid)
        rows = []
        for k in jobs:
            background = Background(k, built.network, x)
            time.sleep(0.5)
            load0 = loadavg()
            q0, old, ping, from_q0, from_mid = [], [], [], [], []
            try:
                for _ in range(rounds):
                    gauge.recent.clear()
                    for _ in range(2):
                        s = timed(lambda: run_layers(built.network, x, 0))
                        q0.append(s)
                        gauge.observe(0, s, wire.clock())
                    got = gauge.from_queries(wire.clock())
                    from_q0.append(got["factor"] if got else None)
                    gauge.recent.clear()
                    for _ in range(2):
                        gauge.observe(mid, timed(lambda: run_layers(built.network, mid_in, mid)), wire.clock())
                    got = gauge.from_queries(wire.clock())
                    from_mid.append(got["factor"] if got else None)
                    old.append(matmul(3) / idle_mm)
                    ping.append(gauge.ping()["factor"])
            finally:
                background.stop()

            def med(v: list[Any]) -> float | None:
                v = [e for e in v if e is not None]
                return statistics.median(v) if v else None

            rows.append({"jobs": k, "query_cut0_median_s": statistics.median(q0), "old_matmul_least": med(old),
                         "new_ping": med(ping), "new_from_cut0_queries": med(from_q0),
                         "new_from_mid_queries": med(from_mid), "loadavg": [load0, loadavg()],
                         "per_round": {"query_cut0_s": q0, "old": old, "ping": ping, "from_cut0": from_q0,
                                       "from_mid": from_mid}})
            base = rows[0]["query_cut0_median_s"]
            r = rows[-1]
            q = r["query_cut0_median_s"]
            print(f"{net} K={k:2d} real {q / base:5.2f} ({q * 1e3:6.1f} ms)  old {r['old_matmul_least']:5.2f}  "
                  f"ping {r['new_ping']:5.2f}  from cut-0 queries {r['new_from_cut0_queries'] or 0:5.2f}  "
                  f"from cut-{mid} queries {r['new_from_mid_queries'] or 0:5.2f}  load {load0} -> {loadavg()}",
                  flush=True)
    base = rows[0]["query_cut0_median_s"]
    for r in rows:
        r["real_slowdown"] = r["query_cut0_median_s"] / base
    return {"net": net, "threads": threads, "gauge": gauge.describe(), "mid_cut": mid,
            "mid_layer": built.names[mid - 1] if mid else "input", "idle_matmul_s": idle_mm, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="imc,asr")
    ap.add_argument("--jobs", default="0,2,4,8,16")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: every usable core, the server's)")
    ap.add_argument("--no-priority", action="store_true", help="the ordinary CPU weight, not the largest")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from aibench.partition.sides import cpu_priority, usable_cpus

    doc: dict[str, Any] = {"cpu": cpu_model(), "cpus": usable_cpus(), "loadavg_start": loadavg(), "nets": []}
    with contextlib.ExitStack() as stack:
        if not args.no_priority:
            doc["priority"] = stack.enter_context(cpu_priority())  # this process, moved back after
        for net in args.nets.split(","):
            doc["nets"].append(measure(net, [int(k) for k in args.jobs.split(",")], args.rounds,
                                       args.threads or usable_cpus()))
    doc["loadavg_end"] = loadavg()
    print(f"{doc['cpu']}, {doc['cpus']} CPUs; load average {doc['loadavg_start']} at the start, "
          f"{doc['loadavg_end']} at the end")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
