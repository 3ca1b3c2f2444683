#!/usr/bin/env python3
"""The gate study: does ``aibench gate`` decide on this machine, and where does the spread come from?

Three source trees of aibench are built from this checkout: ``base``, ``aa`` (an identical copy: A/A) and
``slow`` (a copy whose micro/gemm does 10% more work: m × 1.1 inside its factory — same parameters, same
config hash, more work, as a code change would).

``drift``   one process timing one call in 0.5 s windows: does the call itself drift within seconds?
``causes``  small controlled experiments on the process-to-process spread, interleaved in one run: two
            processes measuring micro/gemm one after the other (what the gate did) or taking turns
            (lockstep), unpinned or both pinned to one CPU; for each, the ratio of several statistics
            (median and minimum of the wall time per call, median of the thread's CPU time per call).
``collect`` a stream of rounds made by the gate's own round code (``Gate._pair_sides``: lockstep, one CPU,
            CPU clock, fresh processes): each round pairs base with aa and base with slow, in a random order.
``analyse`` cuts the stream *sequentially* into gates — each gate consumes rounds until the gate's
            sequential rule (``decide.decide_sequential`` at the gate's defaults, with the budget applied
            to the recorded wall times) decides or runs out of looks or budget, the next gate starts at the
            next round — and counts A/A and +10% outcomes; also fixed-K cuts for comparison.
``e2e``     real end-to-end ``aibench gate`` calls, A/A and +10%, with their wall times.
``simulate`` the decision rule on simulated per-round ratios (interval coverage; the sequential rule's
            error rates).

    python scripts/gate_study.py drift --seconds 40 --out /tmp/gate-study/drift.jsonl
    python scripts/gate_study.py causes --work /tmp/gate-study --n 12
    python scripts/gate_study.py collect --work /tmp/gate-study --rounds 700
    python scripts/gate_study.py analyse /tmp/gate-study/stream.jsonl --gates 50 --json study.json
    python scripts/gate_study.py e2e --work /tmp/gate-study --n 3
    python scripts/gate_study.py simulate --n 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aibench.gate import decide, stats  # noqa: E402  (the study applies the gate's own decision function)

VARIANTS = ("base", "aa", "slow")
WORK_FACTOR = 1.1
# (file, exact text, replacement): the +10% work patch of the "slow" tree.
PATCHES = [
    ("aibench/workloads/micro/gemm.py",
     'm, n, k = params["m"], params["n"], params["k"]',
     f'm, n, k = round(params["m"] * {WORK_FACTOR}), params["n"], params["k"]  # gate study: +10% work'),
]
MICRO = ["micro/gemm", "--m", "256", "--n", "256", "--k", "256", "--max-time", "0.5"]


def build_trees(work: Path) -> dict[str, Path]:
    """Copy this checkout's package into base/, aa/ and slow/ (the latter patched for +10% work)."""
    trees = {}
    for v in VARIANTS:
        dst = work / "trees" / v
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(REPO / "aibench", dst / "aibench", ignore=shutil.ignore_patterns("__pycache__"))
        trees[v] = dst
    for rel, old, new in PATCHES:
        path = trees["slow"] / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"gate study: cannot patch {rel}: expected exactly one {old!r}")
        path.write_text(text.replace(old, new))
    return trees


def _trees(work: Path) -> dict[str, Path]:
    trees = {v: work / "trees" / v for v in VARIANTS}
    return trees if all((t / "aibench").exists() for t in trees.values()) else build_trees(work)


def _steal() -> int | None:
    """Steal time of the whole VM so far (USER_HZ ticks, /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            return int(fh.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return None


def _prefix(tree: Path) -> str:
    return f"env PYTHONPATH={tree} {sys.executable}"


# -- causes ---------------------------------------------------------------------------------------------------
CAUSE_CHILD = r'''
# One measuring process of the causes experiment: micro/gemm (m x factor) with aibench's kernel timer's
# warm-up and calibration, then blocks timed on its own for 0.5 s ("solo") or in the turns a parent grants
# over two pipes ("turns"); wall and thread CPU time per block, page faults over the timed blocks.
import json, os, resource, statistics as st, sys, time
mode, factor, cpu = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if cpu != "-":
    os.sched_setaffinity(0, {int(cpu)})
import torch
torch.set_num_threads(1)
from aibench.measure.kernel import fix_allocator
from aibench.measure.timer import KernelTimer, TimerSettings
alloc = fix_allocator()
a, b = torch.randn(round(256 * factor), 256), torch.randn(256, 256)
fn = lambda: a @ b
kt = KernelTimer(fn, TimerSettings(max_time_s=0.5))
kt.warmup()
number = kt.calibrate()
W, C = [], []
def block():
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(number):
        fn()
    W.append((time.perf_counter() - w0) / number)
    C.append((time.thread_time() - c0) / number)
r0 = resource.getrusage(resource.RUSAGE_SELF)
if mode == "solo":
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        block()
else:
    rfd, wfd = (int(x) for x in os.environ["STUDY_PIPES"].split(","))
    os.write(wfd, b"ready\n")
    for line in os.fdopen(rfd):
        if line.startswith("stop"):
            break
        t0 = time.perf_counter()
        while True:
            block()
            if time.perf_counter() - t0 >= 0.02:
                break
        os.write(wfd, b"done\n")
r1 = resource.getrusage(resource.RUSAGE_SELF)
calls = len(W) * number
print(json.dumps({"wmed": st.median(W), "wmin": min(W), "cmed": st.median(C), "n": len(W), "number": number,
                  "faults_per_call": (r1.ru_minflt - r0.ru_minflt + r1.ru_majflt - r0.ru_majflt) / calls,
                  "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw, "allocator": alloc["setting"]}))
'''
CAUSE_STATS = ("wmed", "wmin", "cmed")
CAUSE_CONDS = ("seq", "seq_pin", "lockstep", "lockstep_pin")


def _cause_solo(child: Path, tree: Path, factor: float, cpu: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(child), "solo", str(factor), cpu], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tree)), timeout=600)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout)


def _cause_lockstep(child: Path, trees: list[Path], factors: list[float], cpu: str, total_s: float = 1.0
                    ) -> list[dict[str, Any]]:
    procs = []
    for tree, factor in zip(trees, factors, strict=True):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(tree), STUDY_PIPES=f"{to_r},{from_w}")
        p = subprocess.Popen([sys.executable, str(child), "turns", str(factor), cpu], env=env,
                             pass_fds=(to_r, from_w), stdout=subprocess.PIPE, text=True)
        os.close(to_r)
        os.close(from_w)
        procs.append((p, os.fdopen(to_w, "w", buffering=1), os.fdopen(from_r)))
    for _p, _w, r in procs:
        if not r.readline().startswith("ready"):
            raise SystemExit("causes: a child did not start")
    t0, i = time.monotonic(), 0
    while time.monotonic() - t0 < total_s:
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            procs[j][1].write("go\n")
            procs[j][2].readline()
        i += 1
    res = []
    for p, w, _r in procs:
        w.write("stop\n")
        w.close()
        res.append(json.loads(p.stdout.read() if p.stdout else "{}"))
        p.wait()
    return res


def causes(args: argparse.Namespace) -> int:
    """Each iteration runs every condition for A/A and for +10%, in a shuffled order; one JSON line each."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    trees = _trees(work)
    child = work / "cause_child.py"
    child.write_text(CAUSE_CHILD)
    rng = random.Random(args.seed)
    cpus = sorted(os.sched_getaffinity(0))
    log = work / "causes.jsonl"
    for i in range(args.n):
        for cand in ("aa", "slow"):
            factor = WORK_FACTOR if cand == "slow" else 1.0
            conds = list(args.conds)
            rng.shuffle(conds)
            for cond in conds:
                cpu = str(rng.choice(cpus)) if cond.endswith("_pin") else "-"
                load, steal0, t0 = os.getloadavg()[0], _steal(), time.monotonic()
                base_first = rng.random() < 0.5
                if cond.startswith("seq"):
                    sides = [("base", 1.0), (cand, factor)]
                    if not base_first:
                        sides.reverse()
                    got = {name: _cause_solo(child, trees[name], f, cpu) for name, f in sides}
                    b, c = got["base"], got[cand]
                else:
                    names = ["base", cand] if base_first else [cand, "base"]
                    res = _cause_lockstep(child, [trees[n] for n in names],
                                          [1.0 if n == "base" else factor for n in names], cpu)
                    b, c = (res[0], res[1]) if base_first else (res[1], res[0])
                steal1 = _steal()
                row = {"i": i, "cand": cand, "cond": cond, "cpu": cpu, "load": round(load, 2),
                       "steal_ticks": None if steal0 is None or steal1 is None else steal1 - steal0,
                       "wall_s": round(time.monotonic() - t0, 2), "base_wmed": b["wmed"],
                       "faults_per_call": [b["faults_per_call"], c["faults_per_call"]],
                       "nivcsw": [b["nivcsw"], c["nivcsw"]], "blocks": [b["n"], c["n"]],
                       **{f"r_{k}": c[k] / b[k] for k in CAUSE_STATS}}
                with log.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    return 0


def causes_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per candidate and condition: the sd of the log ratio of each statistic (and its geometric mean)."""
    out = []
    for cand in ("aa", "slow"):
        for cond in CAUSE_CONDS:
            rs = [r for r in rows if r["cand"] == cand and r["cond"] == cond]
            if len(rs) < 2:
                continue
            row: dict[str, Any] = {"cand": cand, "cond": cond, "n": len(rs),
                                   "load": round(statistics.fmean(r["load"] for r in rs), 2),
                                   "faults_per_call": round(statistics.fmean(sum(r["faults_per_call"]) / 2
                                                                             for r in rs), 4)}
            for k in CAUSE_STATS:
                logs = [math.log(r[f"r_{k}"]) for r in rs]
                row[k] = {"sd_log": round(statistics.stdev(logs), 4),
                          "geomean": round(math.exp(statistics.fmean(logs)), 4),
                          "range": [round(math.exp(min(logs)), 3), round(math.exp(max(logs)), 3)]}
            out.append(row)
    return out


def drift(args: argparse.Namespace) -> int:
    """One process times micro/gemm 256³ (1 thread) for ``--seconds`` in 0.5 s windows: per window the median
    wall and thread CPU time per call, the minimum, the steal ticks. Shows whether the call itself drifts."""
    import torch

    from aibench.measure.timer import KernelTimer, TimerSettings

    torch.set_num_threads(1)
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def fn() -> Any:
        return a @ b

    kt = KernelTimer(fn, TimerSettings())
    kt.warmup()
    number = kt.calibrate()
    t_end = time.monotonic() + args.seconds
    with open(args.out, "a") as fh:
        while time.monotonic() < t_end:
            wall, cpu = [], []
            s0, t0 = _steal(), time.monotonic()
            while time.monotonic() - t0 < 0.5:
                c0, w0 = time.thread_time(), time.perf_counter()
                for _ in range(number):
                    fn()
                wall.append((time.perf_counter() - w0) / number)
                cpu.append((time.thread_time() - c0) / number)
            s1 = _steal()
            row = {"t": round(time.monotonic(), 2), "wall_median": statistics.median(wall), "wall_min": min(wall),
                   "cpu_median": statistics.median(cpu), "blocks": len(wall), "load": round(os.getloadavg()[0], 2),
                   "steal_ticks": None if s0 is None or s1 is None else s1 - s0}
            fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


# -- the stream of gate rounds ----------------------------------------------------------------------------------
def _figures(results: list[Any]) -> dict[str, Any]:
    (r,) = results
    pf = r.method.get("page_faults") or {}
    return {"time_median": r.metrics["time_median"]["value"], "time_min": r.metrics["time_min"]["value"],
            "config_hash": r.config_hash, "clock": (r.method.get("paced") or {}).get("clock", "host-clock"),
            "faults_per_call": (pf.get("minor_per_call") or 0) + (pf.get("major_per_call") or 0),
            "blocks": r.method.get("rounds"), "noisy": r.noisy}


def collect(args: argparse.Namespace) -> int:
    """Rounds made by the gate's own code: per round, base against aa and base against slow (random order)."""
    from aibench.gate.gate import BenchSpec, Gate, GateConfig, SideSpec

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stream = work / "stream.jsonl"
    done = sum(1 for _ in stream.open()) if stream.exists() else 0
    if done and not args.resume:
        raise SystemExit(f"{stream} exists: pass --resume to extend it, or another --work")
    trees = _trees(work) if done else build_trees(work)
    bench = BenchSpec.from_words(MICRO)
    gates = {cand: Gate(GateConfig(baseline=SideSpec.from_prefix("baseline", _prefix(trees["base"]), "base"),
                                   candidate=SideSpec.from_prefix("candidate", _prefix(trees[cand]), cand),
                                   benches=[bench], seed=args.seed, paced=not args.sequential))
             for cand in ("aa", "slow")}
    rng = random.Random(f"{args.seed}-{done}")
    runs = work / "runs"
    for idx in range(done, args.rounds):
        order = ["aa", "slow"]
        rng.shuffle(order)
        entry: dict[str, Any] = {"index": idx, "started": round(time.time(), 1),
                                 "loadavg": [round(x, 2) for x in os.getloadavg()], "steal_ticks": _steal(),
                                 "order": order, "pairs": {}}
        for cand in order:
            base_first = rng.random() < 0.5
            t = time.monotonic()
            got, sched = gates[cand]._pair_sides(idx, 0, bench, base_first, runs)
            entry["pairs"][cand] = {"first": sched["first"], "paced": sched["paced"], "turns": sched["turns"],
                                    "wall_s": round(time.monotonic() - t, 2),
                                    "base": _figures(got["baseline"]), "cand": _figures(got["candidate"])}
            for side in ("baseline", "candidate"):
                shutil.rmtree(runs / f"r{idx:03d}-b0-{side}", ignore_errors=True)
        steal = _steal()
        entry["steal_ticks"] = None if steal is None or entry["steal_ticks"] is None else steal - entry["steal_ticks"]
        entry["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        with stream.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        p = entry["pairs"]
        print(f"round {idx + 1}/{args.rounds} load {entry['loadavg'][0]:.2f} "
              + " ".join(f"{c} {p[c]['cand']['time_median'] / p[c]['base']['time_median']:.3f}" for c in ("aa", "slow"))
              + f" wall {sum(p[c]['wall_s'] for c in p):.0f}s", flush=True)
    return 0


# -- analysis ---------------------------------------------------------------------------------------------------
def compact(args: argparse.Namespace) -> int:
    """The stream with only what ``analyse`` reads, figures to 6 significant digits (small enough for docs/)."""
    def fig(d: dict[str, Any]) -> dict[str, Any]:
        return {k: float(f"{d[k]:.6g}") for k in ("time_median", "time_min")} | {
            "faults_per_call": round(d.get("faults_per_call") or 0.0, 4)}

    out = []
    for r in _load(Path(args.stream)):
        out.append(json.dumps({
            "index": r["index"], "started": r["started"], "loadavg": r["loadavg"], "steal_ticks": r["steal_ticks"],
            "order": r["order"], "pairs": {c: {"first": p["first"], "paced": p["paced"], "turns": p["turns"],
                                               "wall_s": p["wall_s"], "base": fig(p["base"]), "cand": fig(p["cand"])}
                                           for c, p in r["pairs"].items()}}, separators=(",", ":")))
    Path(args.out).write_text("\n".join(out) + "\n")
    return 0


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sequential_cut(ratios: list[float], walls: list[float], looks: list[int], budget_s: float | None,
                   start_s: float, n_gates: int, confidence: float = stats.CONFIDENCE,
                   threshold: float = decide.DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Cut one stream of per-round ratios into consecutive gates, as the gate would run them: each gate
    consumes rounds up to a look, decides at the corrected confidence, and goes on to the next look only
    while undecided, within the schedule and within ``budget_s`` (``start_s`` stands for its preflight; the
    rounds' recorded wall times for the rest). The next gate starts at the round after."""
    gates, p = [], 0
    while len(gates) < n_gates and p + looks[0] <= len(ratios):
        verdict, used, elapsed, taken = "inconclusive", 0, start_s, 0
        for li, n in enumerate(looks):
            if p + n > len(ratios):
                break
            taken += 1
            used = n
            elapsed = start_s + sum(walls[p:p + n])
            d = decide.decide_rounds(ratios[p:p + n], "lower", threshold,
                                     decide.look_confidence(confidence, len(looks), li))
            verdict = d.verdict
            if verdict != "inconclusive" or li + 1 == len(looks):
                break
            per_round = (elapsed - start_s) / n
            if budget_s is not None and elapsed + per_round * (looks[li + 1] - n) > budget_s:
                break
        if p + used > len(ratios) or used == 0:
            break
        gates.append({"start": p, "rounds": used, "looks": taken, "verdict": verdict, "wall_s": round(elapsed, 1)})
        p += used
    return gates


def _tally(gates: list[dict[str, Any]], first: int) -> dict[str, Any]:
    out: dict[str, Any] = {"gates": len(gates), "worse": 0, "better": 0, "same": 0, "inconclusive": 0}
    for g in gates:
        out[g["verdict"]] += 1
    if gates:
        rounds = [g["rounds"] for g in gates]
        walls = [g["wall_s"] for g in gates]
        out.update(rounds_median=statistics.median(rounds), rounds_max=max(rounds),
                   extended=sum(r > first for r in rounds),
                   wall_s_median=round(statistics.median(walls), 1), wall_s_max=max(walls))
    return out


def analyse(args: argparse.Namespace) -> int:
    rounds = _load(Path(args.stream))[args.skip:]
    looks = decide.look_schedule(args.k, args.max_rounds or decide.DEFAULT_MAX_ROUNDS_FACTOR * args.k)
    report: dict[str, Any] = {"stream": Path(args.stream).name, "skipped_rounds": args.skip, "rounds": len(rounds),
                              "threshold": args.threshold, "work_factor": WORK_FACTOR, "micro": MICRO,
                              "looks": looks,
                              "look_confidence": [decide.look_confidence(stats.CONFIDENCE, len(looks), i)
                                                  for i in range(len(looks))],
                              "budget_s": args.budget_s, "preflight_s": args.preflight_s,
                              "loadavg": {}, "spread": {}, "sequential": {}, "fixed_k": {}}
    loads = [r["loadavg"][0] for r in rounds]
    report["loadavg"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    for metric in ("time_median", "time_min"):
        for cand in ("aa", "slow"):
            ratios = [r["pairs"][cand]["cand"][metric] / r["pairs"][cand]["base"][metric] for r in rounds]
            walls = [r["pairs"][cand]["wall_s"] for r in rounds]
            logs = [math.log(x) for x in ratios]
            report["spread"][f"{metric} {cand}/base"] = {
                "geomean_ratio": round(math.exp(statistics.fmean(logs)), 4),
                "sd_log_ratio": round(statistics.stdev(logs), 4),
                "range": [round(min(ratios), 3), round(max(ratios), 3)],
                "share_beyond_5pct": round(sum(abs(x) > math.log(1.05) for x in logs) / len(logs), 3),
                "round_wall_s_median": statistics.median(walls)}
            gates = sequential_cut(ratios, walls, looks, args.budget_s, args.preflight_s, args.gates,
                                   threshold=args.threshold)
            report["sequential"][f"{metric} {cand}"] = {"tally": _tally(gates, looks[0]), "gates": gates}
            for k in sorted({args.k, *args.also_k}):
                fixed = sequential_cut(ratios, walls, [k], None, args.preflight_s, args.gates,
                                       threshold=args.threshold)
                report["fixed_k"][f"{metric} {cand} K={k}"] = _tally(fixed, k)
    # The sequential rule's error rates on many more gates than the stream holds: gates drawn from the
    # recorded ratios (rounds resampled with replacement, seeded), no budget.
    rng = random.Random(args.seed)
    report["resampled"] = {"gates": args.resample}
    for metric in ("time_median",):
        for cand in ("aa", "slow"):
            ratios = [r["pairs"][cand]["cand"][metric] / r["pairs"][cand]["base"][metric] for r in rounds]
            verdicts, used = [], []
            for _ in range(args.resample):
                draw = [rng.choice(ratios) for _ in range(looks[-1])]
                seq = decide.decide_sequential(draw, "lower", args.threshold, looks)
                verdicts.append(seq.decision.verdict)
                used.append(seq.rounds_used)
            tally = {v: verdicts.count(v) for v in ("worse", "better", "same", "inconclusive")}
            report["resampled"][f"{metric} {cand}"] = {**tally, "rounds_mean": round(statistics.fmean(used), 2),
                                                       "extended": sum(u > looks[0] for u in used)}
    if args.causes:
        report["causes"] = causes_summary(_load(Path(args.causes)))
    if args.e2e:
        report["e2e"] = _load(Path(args.e2e))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    print(json.dumps({k: v for k, v in report.items() if k not in ("sequential",)}, indent=1))
    for key, v in report["sequential"].items():
        print(key, v["tally"])
    return 0


COND_NAMES = {"seq": "one after the other (what the gate did)",
              "seq_pin": "one after the other, both pinned to one CPU",
              "lockstep": "lockstep (20 ms turns), unpinned", "lockstep_pin": "lockstep, both pinned to one CPU"}
STAT_NAMES = {"wmed": "median wall time", "wmin": "minimum wall time", "cmed": "median thread CPU time"}


def markdown(rep: dict[str, Any]) -> str:
    """The study's tables in markdown (what docs/gate.md shows)."""
    lines: list[str] = []
    if rep.get("causes"):
        lines += ["Where the spread comes from: sd of the log of the per-round ratio (A/A · +10%), by how the two "
                  "processes ran and by the statistic of each process (in brackets: the range of the A/A ratio):",
                  "", "| two processes of a round | " + " | ".join(STAT_NAMES.values()) + " | pairs | load average |",
                  "|---|" + "--:|" * len(STAT_NAMES) + "--:|--:|"]
        rows = {(c["cand"], c["cond"]): c for c in rep["causes"]}
        for cond, name in COND_NAMES.items():
            a, sl = rows.get(("aa", cond)), rows.get(("slow", cond))
            if not a or not sl:
                continue
            cells = [f"{a[k]['sd_log']:.3f} · {sl[k]['sd_log']:.3f} ({a[k]['range'][0]:.2f}-{a[k]['range'][1]:.2f})"
                     for k in STAT_NAMES]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {a['n']} · {sl['n']} | "
                         f"{min(a['load'], sl['load']):.1f}-{max(a['load'], sl['load']):.1f} |")
        lines.append("")
    n = rep["rounds"]
    lines += [f"Stream: {n} rounds (each: base against aa and base against slow, in lockstep), load average "
              f"{rep['loadavg']['min']:.1f}-{rep['loadavg']['max']:.1f} (median {rep['loadavg']['median']:.1f}).", "",
              "| ratio | geometric mean | sd of log ratio | range | rounds beyond ±5% | wall time per round (median) |",
              "|---|--:|--:|---|--:|--:|"]
    for key, sp in rep["spread"].items():
        lines.append(f"| {key} | {sp['geomean_ratio']:.3f} | {sp['sd_log_ratio']:.3f} | {sp['range'][0]:.3f}-"
                     f"{sp['range'][1]:.3f} | {sp['share_beyond_5pct'] * 100:.0f}% | "
                     f"{sp['round_wall_s_median']:.1f} s |")
    lines += ["", f"Gates cut sequentially from the stream at the gate's defaults (looks after "
              f"{', '.join(map(str, rep['looks']))} rounds, budget {rep['budget_s']:g} s, "
              f"{rep['preflight_s']:g} s of preflight counted):", "",
              "| metric | candidate | gates | pass | regression | improved | inconclusive | rounds: median (max) | "
              "extended | decision time: median (max) |", "|---|---|--:|--:|--:|--:|--:|---|--:|---|"]
    for key, v in rep["sequential"].items():
        metric, cand = key.split()
        t = v["tally"]
        lines.append(f"| {metric} | {'A/A' if cand == 'aa' else '+10%'} | {t['gates']} | {t['same']} | "
                     f"{t['worse']} | {t['better']} | {t['inconclusive']} | {t.get('rounds_median', 0):g} "
                     f"({t.get('rounds_max', 0)}) | {t.get('extended', 0)} | {t.get('wall_s_median', 0):.0f} s "
                     f"({t.get('wall_s_max', 0):.0f} s) |")
    res = rep.get("resampled")
    if res:
        lines += ["", f"The sequential rule on {res['gates']} gates drawn from the recorded ratios (rounds resampled "
                  "with replacement, no budget):", "",
                  "| candidate | pass | regression | improved | inconclusive | mean rounds | extended |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for key, t in res.items():
            if key == "gates":
                continue
            lines.append(f"| {'A/A' if key.endswith('aa') else '+10%'} | {t['same']} | {t['worse']} | {t['better']} | "
                         f"{t['inconclusive']} | {t['rounds_mean']:.1f} | {t['extended']} |")
    if rep.get("e2e"):
        lines += ["", "Real `aibench gate` calls at the defaults (micro/gemm, `--max-time 0.5`):", "",
                  "| candidate | outcome | exit | ratio | CI | rounds | stopped | lockstep rounds | wall time | "
                  "load average |", "|---|---|--:|--:|---|--:|---|--:|--:|--:|"]
        for e in rep["e2e"]:
            ci = f"[{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e.get("ci") else "–"
            ratio = f"{e['ratio']:.3f}" if e.get("ratio") else "–"
            lines.append(f"| {'A/A' if e['candidate'] == 'aa' else '+10%'} | {e['outcome']} | {e['exit']} | {ratio} | "
                         f"{ci} | {e.get('rounds')} | {e.get('stopped')} | {e.get('paced_rounds')} | "
                         f"{e['wall_s']:.0f} s | {e.get('loadavg_start', 0):.1f} |")
    return "\n".join(lines) + "\n"


def e2e(args: argparse.Namespace) -> int:
    """Real `aibench gate` calls at the defaults for the micro benchmark, timed end to end."""
    work = Path(args.work)
    trees = _trees(work)
    log = work / "e2e.jsonl"
    for i in range(args.n):
        for cand in args.kinds:
            out = work / f"e2e-{cand}-{i}.json"
            cmd = [sys.executable, "-m", "aibench", "gate",
                   "--baseline", _prefix(trees["base"]), "--baseline-label", "base",
                   "--candidate", _prefix(trees[cand]), "--candidate-label", cand,
                   "--seed", str(1000 + i), "--json", str(out), *args.extra, *MICRO]
            load = os.getloadavg()[0]
            t = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            wall = time.monotonic() - t
            doc = json.loads(out.read_text()) if out.exists() else {}
            pair = (doc.get("pairs") or [{}])[0]
            row = {"candidate": cand, "i": i, "exit": proc.returncode, "outcome": doc.get("outcome"),
                   "ratio": pair.get("ratio"), "ci": pair.get("ci"), "wall_s": round(wall, 1),
                   "rounds": doc.get("rounds"), "stopped": doc.get("stopped"), "looks": doc.get("looks_taken"),
                   "paced_rounds": (doc.get("paced") or {}).get("rounds"), "loadavg_start": round(load, 2),
                   "loadavg": doc.get("load")}
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


def simulate(args: argparse.Namespace) -> int:
    """Simulated gates (log-normal per-round ratios, a share of rounds hit by a burst): the interval's
    coverage per method and K, and false alarms / detection of the decision rule per estimator."""
    rng_master = random.Random(args.seed)
    print("coverage of the 95% interval of the geometric mean (true ratio 1; σ = 0.3 per round):")
    for k in (3, 5, 10, 15):
        row = []
        for method, trim in (("BCa", 0.0), ("BCa", 0.2), ("trimmed-t", 0.0), ("trimmed-t", 0.2)):
            miss = 0
            for g in range(args.n):
                rng = random.Random(rng_master.random())
                ratios = [math.exp(rng.gauss(0, 0.3)) for _ in range(k)]
                lo, hi = stats.geomean_ci(ratios, seed=g, method=method, trim=trim, n_resamples=1999)
                miss += lo > 1 or hi < 1
            row.append(f"{method}/trim {trim:g}: misses {miss / args.n * 100:4.1f}%")
        print(f"  K={k:2d}  " + "  ".join(row))
    print(f"decision rule at K={args.k}, threshold 5% (A/A false alarms; +10% detected):")
    for sigma, share, burst in ((0.03, 0.1, 0.3), (0.05, 0.0, 0.0), (0.05, 0.1, 0.3), (0.08, 0.0, 0.0)):
        row = []
        for label, method, trim in (("geomean+BCa", "BCa", 0.0), ("gate", "trimmed-t", stats.TRIM)):
            fa = det = 0
            for g in range(args.n):
                rng = random.Random(rng_master.random())
                noise = [rng.gauss(0, burst) if rng.random() < share else rng.gauss(0, sigma)
                         for _ in range(args.k)]
                a = decide.decide_rounds([math.exp(x) for x in noise], "lower", 0.05, seed=g, method=method,
                                         trim=trim)
                b = decide.decide_rounds([1.1 * math.exp(x) for x in noise], "lower", 0.05, seed=g,
                                         method=method, trim=trim)
                fa += a.verdict in ("worse", "better")
                det += b.verdict == "worse"
            row.append(f"{label}: false alarms {fa / args.n * 100:4.1f}%, detected {det / args.n * 100:3.0f}%")
        print(f"  σ={sigma:.2f}, {share * 100:.0f}% of rounds at σ={burst:.1f}:  " + "  ".join(row))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("causes", help="controlled experiments on the process-to-process spread")
    c.add_argument("--work", required=True)
    c.add_argument("--n", type=int, default=12, help="iterations (each: every condition, A/A and +10%%)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--conds", nargs="+", default=list(CAUSE_CONDS), choices=CAUSE_CONDS)
    c = sub.add_parser("drift", help="one process, one call, timed in 0.5 s windows: does the call drift?")
    c.add_argument("--seconds", type=float, default=40.0)
    c.add_argument("--out", required=True)
    c = sub.add_parser("collect", help="build the trees and collect (or extend) the stream of gate rounds")
    c.add_argument("--work", required=True)
    c.add_argument("--rounds", type=int, default=700)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--resume", action="store_true")
    c.add_argument("--sequential", action="store_true", help="no lockstep: the two sides one after the other")
    a = sub.add_parser("analyse", help="cut the stream into sequential gates and count their outcomes")
    a.add_argument("stream")
    a.add_argument("--k", type=int, default=10, help="rounds of the first look (the gate's default)")
    a.add_argument("--max-rounds", type=int, default=None, help="[default: 3 x K, as the gate]")
    a.add_argument("--budget-s", type=float, default=decide.DEFAULT_BUDGET_S)
    a.add_argument("--preflight-s", type=float, default=6.0, help="a gate's time before round 1 (dry runs)")
    a.add_argument("--also-k", type=int, nargs="*", default=[5, 6, 8])
    a.add_argument("--gates", type=int, default=50)
    a.add_argument("--skip", type=int, default=0, help="leave out the first N rounds")
    a.add_argument("--threshold", type=float, default=decide.DEFAULT_THRESHOLD)
    a.add_argument("--resample", type=int, default=2000, help="gates drawn from the recorded ratios")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--causes", help="causes.jsonl to summarise")
    a.add_argument("--e2e", help="e2e.jsonl to include")
    a.add_argument("--json", dest="json_out")
    a.add_argument("--markdown", help="write the result tables in markdown here")
    c = sub.add_parser("compact", help="the stream with only what analyse reads (for docs/studies)")
    c.add_argument("stream")
    c.add_argument("out")
    e = sub.add_parser("e2e", help="time real aibench gate calls for the micro benchmark")
    e.add_argument("--work", required=True)
    e.add_argument("--n", type=int, default=3)
    e.add_argument("--kinds", nargs="+", default=["aa", "slow"])
    e.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more gate options (last)")
    s = sub.add_parser("simulate", help="simulated gates: interval coverage and the rules' error rates")
    s.add_argument("--n", type=int, default=1000, help="simulated gates per case")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    return {"causes": causes, "drift": drift, "collect": collect, "analyse": analyse, "compact": compact, "e2e": e2e,
            "simulate": simulate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
