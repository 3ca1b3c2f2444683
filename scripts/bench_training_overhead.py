"""Training-loop overhead: a workload's samples/s as aibench reports it vs. a bare training loop (same model,
optimizer, batches and threads), interleaved in one process, several rounds, median of per-round ratios.

Target (issue 5): aibench >= 97% of the bare loop. The aibench side is the whole runner path a user gets
(``aibench.harness.execute``: meters window, per-step clock, loss kept per step); the bare side builds the
same task with the benchmark's own factory and seed and runs ``zero_grad / forward_loss / backward /
(gradient hook) / step`` with one clock read before and after the timed steps. Both warm up the same number
of steps; the order alternates between rounds.

    PYTHONPATH=. python scripts/bench_training_overhead.py [--benchmarks component/fathom-lenet,...]
        [--rounds 5] [--steps N] [--warmup-steps W] [--threads 1] [--json out.json]

The small workloads are the default: a fixed per-step cost of the harness shows most where steps are short.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from aibench import registry
from aibench.harness import RunOptions, execute, plan

DEFAULT = "component/fathom-lenet,component/fathom-autoenc,component/fathom-memnet"


def bare_loop(bench: registry.Benchmark, params: dict[str, Any], seed: int) -> float:
    """Samples/s of a plain training loop over the task the benchmark's factory builds (same seed)."""
    torch.manual_seed(seed)
    task = bench.factory(params, device=torch.device("cpu"), seed=seed)
    model = task.model
    opt = task.make_optimizer(model.parameters())
    model.train()
    hook, after = task.grad_hook, task.after_step

    def step(i: int) -> None:
        batch = task.next_batch(i)
        opt.zero_grad(set_to_none=True)
        loss = task.forward_loss(model, batch)
        loss.backward()
        if hook is not None:
            hook(model)
        opt.step()
        if after is not None:
            after(i)

    warm, steps = params["warmup_steps"], params["steps"]
    for i in range(warm):
        step(i)
    t0 = time.perf_counter()
    for i in range(warm, warm + steps):
        step(i)
    return steps * task.samples_per_batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmarks", default=DEFAULT, help="comma-separated training benchmarks")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: each benchmark's)")
    ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads, "rounds": args.rounds, "benchmarks": {}}
    for bench_id in args.benchmarks.split(","):
        bench = registry.get(bench_id.strip())
        given: dict[str, Any] = {"mode": "train"}
        if bench.params.by_name.get("data") is not None:
            given["data"] = "auto"
        if args.steps:
            given["steps"] = args.steps
        if args.warmup_steps is not None:
            given["warmup_steps"] = args.warmup_steps
        (run,) = plan(bench, given)
        rows = []
        for r in range(args.rounds):
            fig: dict[str, float] = {}
            for side in (("aibench", "bare") if r % 2 == 0 else ("bare", "aibench")):
                if side == "aibench":
                    result = execute(run, RunOptions(threads=args.threads, seed=args.seed))
                    if result.status != "ok":
                        raise SystemExit(f"{bench.id}: {result.error}")
                    fig["aibench"] = result.metrics["samples_per_s"]["value"]
                else:
                    fig["bare"] = bare_loop(bench, run.params, args.seed)
            fig["ratio"] = fig["aibench"] / fig["bare"]
            rows.append(fig)
            print(f"{bench.id} round {r + 1}: aibench {fig['aibench']:.1f} samples/s, bare {fig['bare']:.1f}, "
                  f"ratio {fig['ratio']:.3f}", flush=True)
        med = statistics.median(x["ratio"] for x in rows)
        out["benchmarks"][bench.id] = {"params": run.params, "rows": rows, "median_ratio": med}
        print(f"==> {bench.id} (batch {run.params['batch']}, {run.params['steps']} timed steps, "
              f"{args.threads} thread(s)): aibench / bare = {med:.1%} (median of {len(rows)}; each: "
              + ", ".join(f"{x['ratio']:.1%}" for x in rows) + ")", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
