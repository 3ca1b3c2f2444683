"""Harness overhead: Offline throughput of a real CNN at batch 16 on CPU through aibench (LoadGen + adapter)
vs. a bare ``torch.inference_mode()`` loop over the same batches, side by side in one run.

Target (issue 3): aibench >= 97% of the bare loop. The network is a registered component benchmark's,
built by its own factory (default: the Tonic IMC CaffeNet, network stage, seeded weights).

    PYTHONPATH=. python scripts/bench_loadgen_harness.py [--benchmark component/imc] [--repeats 2]
        [--duration-s 10] [--batch 16] [--threads 1]

Each repeat runs aibench's Offline test and the bare loop over as many batches of the same staged samples
(the order alternates between repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from aibench.loadgen.drive import calibrate, run_loadgen
from aibench.loadgen.settings import LoadgenOptions, size_run

try:
    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.task import InferenceTask
except ImportError:  # a tree from before issue 13, measured side by side with a later one (PYTHONPATH)
    from aibench.loadgen.sut import InProcessSystem  # type: ignore[no-redef]
    from aibench.loadgen.task import InferenceTask  # type: ignore[no-redef]


def make_task(bench_id: str, num_samples: int, batch: int, seed: int = 0) -> InferenceTask:
    """The benchmark's own InferenceTask (network stage, synthetic inputs), exactly what `aibench run` uses."""
    from aibench import registry

    bench = registry.get(bench_id)
    torch.manual_seed(seed)
    params = bench.resolve({"batch": batch, "num_samples": num_samples, "stage": "dnn", "data": "synthetic"})
    return bench.factory(params, device=torch.device("cpu"), dtype=torch.float32)


def bare_loop(task: InferenceTask, batch: int, batches: int, in_thread: bool = True) -> float:
    """Samples/s of a plain loop over pre-stacked batches of the same samples, run on a fresh thread like
    aibench's worker (on the 2-core VM, torch in the main thread ran a CNN 2x slower than in any other
    thread under load: comparing threads with threads keeps that out of the harness figure)."""
    if in_thread:
        import threading

        box: list[float] = []
        threads = torch.get_num_threads()

        def target() -> None:
            torch.set_num_threads(threads)
            box.append(bare_loop(task, batch, batches, in_thread=False))

        t = threading.Thread(target=target)
        t.start()
        t.join()
        return box[0]
    n = task.num_samples
    stacked = [torch.stack([task.load_sample((b * batch + j) % n) for j in range(batch)])
               for b in range(min(batches, max(1, n // batch)))]
    with torch.inference_mode():
        task.model(stacked[0])  # warm
        t0 = time.perf_counter()
        for b in range(batches):
            task.model(stacked[b % len(stacked)])
        dt = time.perf_counter() - t0
    return batches * batch / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="component/imc", help="a load-generated benchmark with a dnn stage")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = make_task(args.benchmark, num_samples=64, batch=args.batch)
    # Time every model call (a perf_counter pair per 16-image batch): splits the gap into the model running
    # slower in one run than in the other, and time the harness spends outside the model.
    inner = task.model
    model_s: list[float] = []

    def timed_model(x: Any) -> Any:
        t0 = time.perf_counter()
        y = inner(x)
        model_s.append(time.perf_counter() - t0)
        return y

    task.model = timed_model
    system = InProcessSystem(task, name=args.benchmark)
    s = LoadgenOptions(scenario="offline", duration_s=args.duration_s).resolve()
    base = Path(tempfile.mkdtemp(prefix="aibench-harness-"))
    cal = calibrate(system, args.batch, budget_s=1.0, max_rounds=5)
    rows: list[dict[str, Any]] = []
    # Offline runs ~1.1 x duration at the calibrated rate: size the first bare loop the same way.
    batches = max(1, round(1.1 * args.duration_s / (cal.batch_sample_s * args.batch)))
    for rep in range(args.repeats):
        fig: dict[str, Any] = {}
        order = ("aibench", "bare") if rep % 2 == 0 else ("bare", "aibench")
        for side in order:
            model_s.clear()
            if side == "bare":
                fig["bare"] = bare_loop(task, args.batch, batches)
                fig["bare_batches"] = batches
                fig["bare_model_only"] = batches * args.batch / sum(model_s[1:])  # [0] is the warm-up call
                continue
            out = run_loadgen(system, s, args.batch, size_run(s, cal.per_sample_s, cal.batch_sample_s),
                              base / f"rep{rep + 1}")
            if out.error:
                raise out.error
            fig["aibench"] = out.metrics["samples_per_s"]["value"]
            fig["valid"] = out.validity["valid"] if out.validity else None
            fig["samples"] = out.adapter["samples"]
            fig["mean_batch"] = out.adapter["mean_batch"]
            fig["aibench_model_only"] = out.adapter["samples"] / sum(model_s)
            batches = -(-out.adapter["samples"] // args.batch)
        fig["ratio"] = fig["aibench"] / fig["bare"]
        fig["aibench_outside_model"] = 1 - fig["aibench"] / fig["aibench_model_only"]
        fig["model_speed_ratio"] = fig["aibench_model_only"] / fig["bare_model_only"]
        rows.append(fig)
        print(f"rep {rep + 1}: {json.dumps(fig)}", flush=True)
    med_ratio = statistics.median(r["ratio"] for r in rows)
    each = ", ".join(f"{r['ratio']:.1%}" for r in rows)
    outside = statistics.median(r["aibench_outside_model"] for r in rows)
    speed = statistics.median(r["model_speed_ratio"] for r in rows)
    print(f"\n{args.benchmark} (network stage, seeded weights) batch {args.batch}, CPU, torch threads "
          f"{torch.get_num_threads()}: aibench Offline / bare inference_mode loop = {med_ratio:.1%} "
          f"(median of {len(rows)}; each: {each})\n  of which: share of aibench's run spent outside the model "
          f"{outside:.2%}; model-only speed in aibench's run / in the bare loop {speed:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "median_ratio": med_ratio, "median_outside_model": outside,
                                         "median_model_speed_ratio": speed, "logs": str(base)}, indent=2))


if __name__ == "__main__":
    main()
