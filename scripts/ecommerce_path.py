"""Serve a store's queries one after another through the in-process path and print each module's latency.

Not the load test (that is ``aibench run scenario ecommerce``, with closed-loop users): this is the
unloaded service time of each module, one query at a time on one thread, the figure docs/ecommerce.md
quotes. Usage: ``python scripts/ecommerce_path.py STORE [N] [WINDOW]``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aibench.ecommerce.path import MODULES, RECOMMENDER_PARTS, ShopPath


def main() -> None:
    store = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    window = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    torch.set_num_threads(1)
    path = ShopPath(store, window=window)
    queries = path.sample(n + 100, seed=0)
    for q in queries[:100]:  # warm-up: caches, torch's first calls
        path.handle(q)
    rows: dict[str, list[float]] = {k: [] for k in (*MODULES, *RECOMMENDER_PARTS, "total")}
    statuses: dict[str, int] = {}
    hits: list[int] = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for q in queries[100:]:
        s = time.perf_counter()
        page, seconds = path.handle(q)
        rows["total"].append(time.perf_counter() - s)
        for k, v in seconds.items():
            rows[k].append(v)
        statuses[page.status] = statuses.get(page.status, 0) + 1
        hits.append(page.hits)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                 platform.processor())
    print(f"cpu: {model}; loadavg {os.getloadavg()[0]:.2f}; {n} queries, window {window}; "
          f"statuses {statuses}; median hits {int(np.median(hits))}")
    print(f"serial throughput {n / wall:.1f} queries/s; cpu {cpu / wall:.2f} cores")
    print(f"{'module':<24}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}  (ms)  share of mean")
    total_mean = float(np.mean(rows["total"]))
    for k, v in rows.items():
        a = np.array(v) * 1e3
        print(f"{k:<24}{a.mean():9.3f}{np.percentile(a, 50):9.3f}{np.percentile(a, 90):9.3f}"
              f"{np.percentile(a, 99):9.3f}{np.percentile(a, 99.9):9.3f}   {a.mean() / 1e3 / total_mean:6.1%}")
    path.close()


if __name__ == "__main__":
    main()
