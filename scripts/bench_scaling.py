#!/usr/bin/env python3
"""Inference scale-out on this CPU: 1 vs 2 worker processes (1 thread each) under one LoadGen, interleaved.

A control runs beside it in every round: the same network in 1 and 2 bare processes (each builds the task
and loops over its batches for the same time, no LoadGen, no parent), so a shortfall can be told apart:
if bare processes do not scale either, the machine (other users, the VM's cores) is the limit, not aibench.

One pool of worker processes is started once; every round measures the same Offline run with one worker and
with two (the order alternates between rounds, so drift in the machine's load hits both alike). Each point is
a real aibench result (written under --out). Reported: samples/s of each point, the per-round ratio 2 / 1
and its median (target on a quiet 2-core machine: >= 1.7x), and what explains a shortfall: each worker's busy
share of the measured run (time inside the model / the LoadGen test's wall time) its CPU share (CPU time /
that wall time: below the busy share when it waited for a core), and the machine's load average, which counts
other users' processes competing for the same two cores.

    python scripts/bench_scaling.py [--bench component/imc] [--batch 16] [--duration-s 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="component/imc")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--duration-s", type=float, default=5.0, help="LoadGen minimum duration per point")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/bench-scaling"))
    ap.add_argument("--json", dest="json_out", type=Path, help="also write the figures here")
    ap.add_argument("--no-control", action="store_true", help="skip the bare-process control")
    args = ap.parse_args()

    from aibench import registry
    from aibench.harness import PlannedRun, RunOptions, execute, plan
    from aibench.loadgen.settings import LoadgenOptions
    from aibench.results.store import ensure_writable_dir, write_result
    from aibench.sut.pool import WorkerConfig, WorkerPool
    from aibench.sweep.scaleout import RUNNER, PoolRunOptions

    out = ensure_writable_dir(args.out)
    bench = registry.get(args.bench)
    given = {"batch": args.batch}
    if "data" in bench.params:
        given["data"] = "synthetic"
    (run,) = plan(bench, given)
    params = run.params
    lg = LoadgenOptions(profile="quick", duration_s=args.duration_s, out_dir=out)
    pool = WorkerPool([WorkerConfig(i, "cpu", 1, bench.id, params) for i in range(2)]).start()
    bare = None if args.no_control else Bare([WorkerConfig(i, "cpu", 1, bench.id, params) for i in range(2)])
    print(f"{bench.id} batch {args.batch}, Offline {args.duration_s:g} s per point, 1 thread per worker; "
          f"pool of 2 workers started in {pool.start_s:.1f} s", flush=True)
    rounds = []
    try:
        for k in range(args.rounds):
            figures = {}
            for n in ((1, 2) if k % 2 == 0 else (2, 1)):
                opts = RunOptions(threads=1).with_options(loadgen=lg, scale_out=PoolRunOptions(
                    pool=pool, workers=tuple(range(n)),
                    scale={"devices": ["cpu"] * n, "instances_per_device": 1, "workers": n, "worker_threads": 1}))
                r = execute(PlannedRun(replace(bench, runner=RUNNER), params,
                                       {"study": "scripts/bench_scaling.py", "round": k}), opts)
                write_result(r, out)
                if r.status != "ok":
                    print(f"round {k + 1}: {n} worker(s) {r.status}: {r.error and r.error['message']}")
                    return 1
                wall = r.method["adapter"]["test_wall_s"]
                stats = r.context["scale_out"].get("worker_stats") or []
                figures[n] = {"samples_per_s": r.metrics["samples_per_s"]["value"],
                              "valid": bool((r.validity or {}).get("valid")),
                              "busy_share": [round(s["busy_s"] / wall, 2) for s in stats] if wall else None,
                              "cpu_share": [round(s["cpu_s"] / wall, 2) for s in stats] if wall else None,
                              "loadavg_1m": (r.load.get("loadavg_end") or [None])[0]}
            ratio = figures[2]["samples_per_s"] / figures[1]["samples_per_s"]
            control = bare.ratio(args.duration_s) if bare is not None else None
            rounds.append({"round": k + 1, "one": figures[1], "two": figures[2], "ratio": ratio,
                           "bare_control": control})
            print(f"round {k + 1}: 1 worker {figures[1]['samples_per_s']:8.2f} samples/s (busy "
                  f"{figures[1]['busy_share']}, cpu {figures[1]['cpu_share']}), 2 workers "
                  f"{figures[2]['samples_per_s']:8.2f} samples/s (busy {figures[2]['busy_share']}, cpu "
                  f"{figures[2]['cpu_share']}): {ratio:.2f}x; load average {figures[2]['loadavg_1m']}", flush=True)
            if control is not None:
                print(f"         bare control: 1 process {control['one']:8.2f} samples/s, 2 processes "
                      f"{control['two']:8.2f} samples/s: {control['ratio']:.2f}x", flush=True)
    finally:
        pool.close()
        if bare is not None:
            bare.close()
    median = statistics.median(r["ratio"] for r in rounds)
    print(f"\nmedian ratio, 2 workers / 1 worker: {median:.2f}x over {len(rounds)} rounds (target >= 1.7x on a "
          f"quiet 2-core machine); usable CPUs {len(os.sched_getaffinity(0))}")
    if bare is not None:
        bare_median = statistics.median(r["bare_control"]["ratio"] for r in rounds)
        print(f"median ratio of the bare control, 2 processes / 1: {bare_median:.2f}x (what the machine allowed)")
    if args.json_out:
        args.json_out.write_text(json.dumps({"bench": bench.id, "batch": args.batch, "duration_s": args.duration_s,
                                             "rounds": rounds, "median_ratio": median}, indent=2))
    return 0


def _bare_main(conn: Any, config_json: str) -> None:
    """A bare process: build the task as a pool worker does, then on each request loop over its batches for
    the given seconds and answer how many samples it did."""
    import time

    from aibench.sut.worker import build

    system, _info, batch = build(json.loads(config_json))
    indices = [i % system.num_samples for i in range(batch)]
    system.execute(indices)  # warm-up
    conn.send_bytes(b"R")
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        if not msg:
            return
        seconds = float(msg.decode())
        done = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            system.execute(indices)
            done += batch
        conn.send_bytes(json.dumps({"samples": done, "seconds": time.perf_counter() - t0}).encode())


class Bare:
    """Two bare processes, started once; ``ratio`` runs one alone, then both together."""

    def __init__(self, configs: list[Any]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        for cfg in configs:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_bare_main, args=(child, cfg.to_json()), daemon=True)
            p.start()
            self.procs.append(p)
            self.conns.append(parent)
        for c in self.conns:
            c.recv_bytes()

    def _run(self, n: int, seconds: float) -> float:
        for c in self.conns[:n]:
            c.send_bytes(str(seconds).encode())
        docs = [json.loads(c.recv_bytes()) for c in self.conns[:n]]
        return sum(d["samples"] / d["seconds"] for d in docs)

    def ratio(self, seconds: float) -> dict[str, float]:
        one = self._run(1, seconds)
        two = self._run(2, seconds)
        return {"one": one, "two": two, "ratio": two / one}

    def close(self) -> None:
        for c in self.conns:
            c.send_bytes(b"")
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
