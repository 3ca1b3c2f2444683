"""Adapter overhead: a null model through aibench's LoadGen adapter vs. a null SUT written directly
against LoadGen, side by side in one run (interleaved repeats, medians reported).

Targets (issue 3): aibench >= 90% of raw LoadGen's Offline samples/s and of its Server completed QPS at a
target raw LoadGen sustains, and <= 10 us added to the p50 per-query latency. Issue 13: SingleStream and
MultiStream add <= 10 us p50 (a lone query is computed inline on LoadGen's thread when the system is idle),
Server <= 30 us p50 at 20k QPS. Figures and their history: docs/loadgen.md ("Overhead").

    PYTHONPATH=. python scripts/bench_loadgen_adapter.py [--repeats 3] [--duration-s 2] [--server-qps 20000]

Both sides use ConstructFastSUT, trace off, the same TestSettings and the same log parser. The aibench
side is the real path: the batching worker thread (or inline computation), InProcessSystem (collate,
inference_mode, postprocess) on a null InferenceTask, per-sample latency log, QuerySamplesComplete.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg

from aibench.loadgen import logparse
from aibench.loadgen.drive import calibrate, run_loadgen
from aibench.loadgen.settings import LoadgenOptions, Scenario, Sizing, test_settings

try:
    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.task import InferenceTask
except ImportError:  # a tree from before issue 13, measured side by side with a later one (PYTHONPATH)
    from aibench.loadgen.sut import InProcessSystem  # type: ignore[no-redef]
    from aibench.loadgen.task import InferenceTask  # type: ignore[no-redef]

NUM_SAMPLES = 1024
RAW_CHUNK = 16384


def null_system() -> InProcessSystem:
    import torch

    task = InferenceTask(model=lambda x: x, device=torch.device("cpu"), num_samples=NUM_SAMPLES,
                         load_sample=lambda i: i, collate=list, to_device=lambda x, _d: x)
    return InProcessSystem(task, name="null")


def raw_run(s: Scenario, sizing: Sizing, out: Path, pooled: bool = False) -> dict[str, Any]:
    """The baseline: a null SUT straight on LoadGen, completing inline on LoadGen's thread (what a LoadGen
    user would write). ``pooled`` also reuses response objects, as aibench's adapter does."""
    complete, response = lg.QuerySamplesComplete, lg.QuerySampleResponse
    pool: list[Any] = []

    def issue(ids: list[int], _idx: list[int]) -> None:
        # In chunks: one list of millions of responses (a whole Offline query) runs ~40% slower.
        for lo in range(0, len(ids), RAW_CHUNK):
            part = ids[lo:lo + RAW_CHUNK]
            if not pooled:
                complete([response(i, 0, 0) for i in part])
                continue
            if len(pool) < len(part):
                pool.extend(response(0, 0, 0) for _ in range(len(part) - len(pool)))
            out = pool[:len(part)]
            for r, i in zip(out, part, strict=True):
                r.id = i
            complete(out)

    sut = lg.ConstructFastSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(NUM_SAMPLES, NUM_SAMPLES, lambda _s: None, lambda _s: None)
    ls = lg.LogSettings()
    ls.enable_trace = False
    ls.log_output.outdir = str(out)
    out.mkdir(parents=True)
    lg.StartTestWithLogSettings(sut, qsl, test_settings(lg, s, sizing), ls, str(out / "audit.config"))
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    log = logparse.read_detail(out)
    return _figures(log, s)


def _figures(log: dict[str, Any], s: Scenario) -> dict[str, Any]:
    v = logparse.validity(log, s.scenario)
    m = logparse.metrics(log, s.scenario, s.samples_per_query, None, None, v["valid"])
    return {"valid": v["valid"], "samples_per_s": m["samples_per_s"]["value"],
            "p50_s": m["latency_p50"]["value"], "p99_s": m["latency_p99"]["value"]}


def aibench_run(s: Scenario, sizing: Sizing, batch: int, out: Path, inline: bool | None = None) -> dict[str, Any]:
    """``inline``: let the system compute a lone query on LoadGen's thread (None: the driver's default, inline
    in SingleStream and MultiStream only)."""
    system = null_system()
    kw: dict[str, Any] = {} if inline is None else {"inline": inline}  # a tree from before issue 13 has no inline
    if inline is None and "one_sample_s" in inspect.signature(run_loadgen).parameters:
        # as `aibench run` does: the calibrated one-sample time decides inline computation in Server
        kw["one_sample_s"] = calibrate(system, batch).per_sample_s
    o = run_loadgen(system, s, batch, sizing, out, **kw)
    if o.error is not None:
        raise o.error
    return _figures(o.log, s) | {"mean_batch": o.adapter["mean_batch"], "inline": o.adapter.get("inline")}


def _median(values: list[Any]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration-s", type=float, default=2.0)
    ap.add_argument("--server-qps", type=float, default=20000.0)
    ap.add_argument("--spin-us", type=float, default=None, help="aibench worker's idle poll window "
                    "[default: aibench's per-scenario default]")
    ap.add_argument("--cases", default="offline,server,single-stream,multi-stream", help="comma-separated subset")
    ap.add_argument("--samples-per-query", type=int, default=8, help="MultiStream samples per query (and batch)")
    ap.add_argument("--offline-qps", type=float, default=4e6, help="Offline expected QPS (sizes the query)")
    ap.add_argument("--offline-batch", type=int, default=1024)
    ap.add_argument("--server-batch", type=int, default=64)
    ap.add_argument("--inline", choices=("auto", "on", "off"), default="auto", help="compute a lone query on "
                    "LoadGen's thread when the system is idle: auto = as `aibench run` decides (SingleStream, "
                    "MultiStream, and Server where the target rate x the calibrated one-sample time is low)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aibench-adapter-"))
    d = args.duration_s
    cases = {
        "offline": (LoadgenOptions(scenario="offline", duration_s=d, spin_us=args.spin_us).resolve(),
                    args.offline_batch, Sizing(1, 0, 0, expected_qps=args.offline_qps)),
        "server": (LoadgenOptions(scenario="server", duration_s=d, target_qps=args.server_qps,
                                  spin_us=args.spin_us).resolve(),
                   args.server_batch, Sizing(0, 0, 0)),
        "single-stream": (LoadgenOptions(scenario="single-stream", duration_s=d, spin_us=args.spin_us).resolve(), 1,
                          Sizing(0, 0, 0, expected_latency_ns=4000)),
        "multi-stream": (LoadgenOptions(scenario="multi-stream", duration_s=d, spin_us=args.spin_us,
                                        samples_per_query=args.samples_per_query).resolve(),
                         args.samples_per_query, Sizing(0, 0, 0, expected_latency_ns=8000)),
    }
    cases = {k: v for k, v in cases.items() if k in args.cases.split(",")}
    sides = ("raw", "raw_pooled", "aibench")
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {k: {side: [] for side in sides} for k in cases}
    n = 0
    for rep in range(args.repeats):
        for name, (s, batch, sizing) in cases.items():
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                n += 1
                out = base / f"{n:03d}-{name}-{side}"
                if side == "aibench":
                    fig = aibench_run(s, sizing, batch, out, {"auto": None, "on": True, "off": False}[args.inline])
                else:
                    fig = raw_run(s, sizing, out, pooled=side == "raw_pooled")
                rows[name][side].append(fig)
                print(f"  {name:13s} {side:7s} rep {rep + 1}: {json.dumps(fig)}", flush=True)
    report: dict[str, Any] = {"duration_s": d, "repeats": args.repeats, "logs": str(base), "cases": {}}
    print("\nmedians over repeats (raw LoadGen null SUT, the same reusing responses, aibench adapter + null model):")
    for name, sides in rows.items():
        med = {side: {k: _median([f[k] for f in figs]) for k in ("samples_per_s", "p50_s", "p99_s")}
               for side, figs in sides.items()}
        ours, raw, pooled = (med[side]["samples_per_s"] for side in ("aibench", "raw", "raw_pooled"))
        ratio = ours / raw if ours and raw else float("nan")  # MultiStream: LoadGen reports no samples/s
        ratio_pooled = ours / pooled if ours and pooled else float("nan")
        added_us = (med["aibench"]["p50_s"] - med["raw"]["p50_s"]) * 1e6
        valid = {side: [f["valid"] for f in figs] for side, figs in sides.items()}
        spread = {side: [round(f["samples_per_s"] or 0) for f in figs] for side, figs in sides.items()}
        report["cases"][name] = {"median": med, "throughput_ratio": ratio, "throughput_ratio_vs_pooled":
                                 ratio_pooled, "p50_added_us": added_us,
                                 "valid": valid, "samples_per_s_each": spread, "batch": cases[name][1]}
        print(f"{name:13s} samples/s raw {raw or 0:10.0f} raw-pooled {pooled or 0:10.0f} aibench {ours or 0:10.0f}  "
              f"ratio {ratio:6.1%} (vs pooled {ratio_pooled:6.1%})   p50 raw "
              f"{med['raw']['p50_s'] * 1e6:8.1f} us  aibench {med['aibench']['p50_s'] * 1e6:8.1f} us  "
              f"added {added_us:+7.1f} us   valid {valid}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
