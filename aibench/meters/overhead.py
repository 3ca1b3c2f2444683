"""What the background sampler costs a ~1 ms operation, measured side by side in one run.

    python -m aibench.meters.overhead [--rounds 12] [--calls 500] [--interval 0.25] [--json]

Each round times ``calls`` back-to-back calls of ``torch.relu`` on a 32×64×56×56 float32 tensor (one
thread; about 1 ms a call on a 2-core VM) three times, in random order: sampler off, sampler off again
(the A/A pair that shows the noise) and sampler on. Per round it takes the ratio of medians and of p99s
(on/off and off-again/off) and reports their geometric means with a 95% bootstrap interval. The sampler
samples the real GPUs through NVML where it can (``--device cuda``); elsewhere it samples the fake NVML of
:mod:`aibench.meters.fake`, which costs the same thread wake-ups and Python work but no driver calls.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from typing import Any

from aibench.meters.core import DEFAULT_INTERVAL_S, Sampler
from aibench.meters.fake import FakeGpu, FakeNvml
from aibench.meters.nvml import NvmlMeter
from aibench.results.stats import percentile


def _geomean_ci(ratios: list[float], rng: random.Random, n_boot: int = 2000) -> dict[str, float]:
    logs = [math.log(r) for r in ratios]
    boots = sorted(math.exp(statistics.fmean(rng.choices(logs, k=len(logs)))) for _ in range(n_boot))
    return {"geomean": math.exp(statistics.fmean(logs)), "ci95_low": boots[int(0.025 * n_boot)],
            "ci95_high": boots[int(0.975 * n_boot) - 1]}


def measure(rounds: int = 12, calls: int = 500, interval_s: float = DEFAULT_INTERVAL_S, device: str = "cpu",
            seed: int = 0) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    dev = torch.device(device)
    x = torch.randn(32, 64, 56, 56, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    use_real = dev.type == "cuda"

    def block() -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            torch.relu(x)
            sync()
            out.append(time.perf_counter() - t0)
        return out

    for _ in range(3):  # warm-up
        block()
    rng = random.Random(seed)
    med: dict[str, list[float]] = {"off": [], "off_again": [], "on": []}
    p99: dict[str, list[float]] = {k: [] for k in med}
    ticks = 0
    busy = 0.0
    backend = None
    for _ in range(rounds):
        for mode in rng.sample(list(med), 3):
            sampler = None
            if mode == "on":
                sampler = Sampler(interval_s)
                nvml = None if use_real else FakeNvml([FakeGpu(energy_mj=None, power_mw=[100_000.0])])
                meter = NvmlMeter((dev.index or 0,), nvml=nvml)
                meter.start(sampler)
                backend = "fake NVML" if nvml is not None else "NVML"
                sampler.start()
            times = block()
            if sampler is not None:
                sampler.stop()
                meter.stop()
                ticks += sampler.ticks
                busy += sampler.busy_s
            xs = sorted(times)
            med[mode].append(percentile(xs, 50))
            p99[mode].append(percentile(xs, 99))
    boot = random.Random(seed + 1)
    out: dict[str, Any] = {
        "op": f"torch.relu 32x64x56x56 float32 on {device}, 1 thread",
        "rounds": rounds, "calls_per_block": calls, "interval_s": interval_s, "sampler_backend": backend,
        "median_call_s": statistics.median(med["off"]),
        "sampler_ticks": ticks, "sampler_busy_per_tick_s": busy / ticks if ticks else None,
    }
    for stat, d in (("median", med), ("p99", p99)):
        out[f"{stat}_on_over_off"] = _geomean_ci([a / b for a, b in zip(d["on"], d["off"], strict=True)], boot)
        out[f"{stat}_aa_off_again_over_off"] = _geomean_ci(
            [a / b for a, b in zip(d["off_again"], d["off"], strict=True)], boot)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = measure(a.rounds, a.calls, a.interval, a.device)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['op']}: median call {res['median_call_s'] * 1e3:.3f} ms; sampler every {a.interval} s "
          f"({res['sampler_backend']}), {res['sampler_ticks']} ticks, "
          f"{(res['sampler_busy_per_tick_s'] or 0) * 1e6:.0f} µs of sampling per tick")
    for stat in ("median", "p99"):
        on, aa = res[f"{stat}_on_over_off"], res[f"{stat}_aa_off_again_over_off"]
        print(f"  {stat:6s} on/off {on['geomean']:.4f} [{on['ci95_low']:.4f}, {on['ci95_high']:.4f}]   "
              f"A/A {aa['geomean']:.4f} [{aa['ci95_low']:.4f}, {aa['ci95_high']:.4f}]")


if __name__ == "__main__":
    main()
