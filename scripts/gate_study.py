#!/usr/bin/env python3
"""The gate study: how often does a gating rule cry wolf on identical code, and how often does it catch a
real 10% slowdown, on this machine? aibench gate's rule beside asv's and pytest-benchmark's, on the same data.

Three source trees of aibench are built from this checkout: ``base``, ``aa`` (an identical copy: A/A) and
``slow`` (a copy whose benchmarks do 10% more work: micro/gemm multiplies m by 1.1 inside its factory,
component/dig puts 1.1× the digit images in every request — same parameters, same config hash, more work,
as a code change would). One *stream* of rounds is collected: each round runs the three trees in a
randomised order, each as a fresh process (``env PYTHONPATH=<tree> python child.py``) that measures the
micro and the component benchmark through ``aibench run`` (two benchmarks per process halves the start-up
cost). Every round is appended to ``stream.jsonl`` with the figures and the raw samples, so any rule can be
re-applied later.

``analyse`` cuts the stream into disjoint gates of K consecutive rounds and applies *exactly* the gate's
decision function (``aibench.gate.decide.decide_rounds``) to each gate's per-round ratios aa/base (A/A) and
slow/base (+10%). asv's rule (ratio of medians beyond 1.1 and Mann-Whitney p < 0.002 on the raw samples)
and pytest-benchmark's ``--benchmark-compare-fail=mean:5%`` are applied to the raw samples of the first
round of each gate (one baseline process against one candidate process: what those tools compare), and
also to every round for a tighter estimate.

``e2e`` times real end-to-end ``aibench gate`` calls for the micro benchmark (the target: ≤ 3 min each).
``simulate`` checks the decision rule on simulated per-round ratios (interval coverage, false alarms and
detection of the plain and the trimmed geometric mean) — what chose the gate's defaults before the study.

    python scripts/gate_study.py collect --work /tmp/gate-study --rounds 500
    python scripts/gate_study.py analyse /tmp/gate-study/stream.jsonl --k 10 --gates 50 --json study.json
    python scripts/gate_study.py e2e --work /tmp/gate-study --n 3
    python scripts/gate_study.py simulate --n 1000
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aibench.gate import decide, stats  # noqa: E402  (the study applies the gate's own decision function)

VARIANTS = ("base", "aa", "slow")
WORK_FACTOR = 1.1
# (file, exact text, replacement): the +10% work patches of the "slow" tree.
PATCHES = [
    ("aibench/workloads/micro/gemm.py",
     'm, n, k = params["m"], params["n"], params["k"]',
     f'm, n, k = round(params["m"] * {WORK_FACTOR}), params["n"], params["k"]  # gate study: +10% work'),
    ("aibench/workloads/tonic/_apps.py",
     'per = params["images_per_request"]',
     f'per = round(params["images_per_request"] * {WORK_FACTOR})  # gate study: +10% work'),
]
MICRO = ["micro/gemm", "--m", "256", "--n", "256", "--k", "256", "--max-time", "0.5"]
COMPONENT = ["component/dig", "--threads", "1", "--images-per-request", "40", "--scenario", "single-stream",
             "--duration-s", "1.5"]
# (benchmark key, metric, direction, samples key) gated in the study. The first two are the figures a gate
# on this machine should use (gemm's primary metric; dig's minimum latency, robust to other jobs' bursts);
# the others are analysed to show why: dig's primary metric in single-stream (latency_early_stopping,
# LoadGen's p90 estimate), its median latency and its throughput swing with the machine's load by ±30%
# from process to process.
GATED = [("gemm", "time_median", "lower", "time"), ("dig", "latency_min", "lower", "latency"),
         ("gemm", "time_min", "lower", "time"), ("dig", "latency_early_stopping", "lower", "latency"),
         ("dig", "latency_p50", "lower", "latency"), ("dig", "samples_per_s", "higher", "latency")]

CHILD = '''
import contextlib, io, sys
from aibench.cli import main

def run(args):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise SystemExit(f"aibench {{' '.join(args)}} exited {{exc.code}}")

out = sys.argv[1]
run(["-q", "run", *{micro!r}, "--out", out + "/gemm"])
run(["-q", "run", *{component!r}, "--out", out + "/dig"])
'''


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
    (work / "child.py").write_text(CHILD.format(micro=MICRO, component=COMPONENT))
    return trees


def _figures(out: Path) -> dict[str, Any]:
    from aibench.results.store import load_results

    fig: dict[str, Any] = {}
    for key in ("gemm", "dig"):
        (r,) = load_results([out / key], skip_foreign=True)
        samples = next(iter(r.samples.values()))["values"]
        fig[key] = {"metrics": {m: e.get("value") for m, e in r.metrics.items()},
                    "valid": (r.validity or {}).get("valid"), "noisy": r.noisy, "config_hash": r.config_hash,
                    "samples": [float(f"{x:.6g}") for x in samples]}
    return fig


def collect(args: argparse.Namespace) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stream = work / "stream.jsonl"
    done = 0
    if stream.exists() and args.resume:
        done = sum(1 for _ in stream.open())
        trees = {v: work / "trees" / v for v in VARIANTS}
    else:
        if stream.exists():
            raise SystemExit(f"{stream} exists: pass --resume to extend it, or another --work")
        trees = build_trees(work)
    rng = random.Random(f"{args.seed}-{done}")
    runs = work / "runs"
    for idx in range(done, args.rounds):
        order = list(VARIANTS)
        rng.shuffle(order)
        entry: dict[str, Any] = {"index": idx, "order": order, "started": time.time(),
                                 "loadavg": os.getloadavg()[0], "variants": {}, "wall_s": {}}
        for v in order:
            out = runs / f"r{idx:04d}-{v}"
            t = time.monotonic()
            env = dict(os.environ, PYTHONPATH=str(trees[v]))
            proc = subprocess.run([sys.executable, str(work / "child.py"), str(out)], env=env,
                                  capture_output=True, text=True, timeout=600)
            entry["wall_s"][v] = round(time.monotonic() - t, 2)
            if proc.returncode != 0:
                raise SystemExit(f"round {idx} {v} failed: {proc.stderr[-2000:]}")
            entry["variants"][v] = _figures(out)
            shutil.rmtree(out, ignore_errors=True)
        with stream.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        r = entry["variants"]
        print(f"round {idx + 1}/{args.rounds} {'>'.join(order)} load {entry['loadavg']:.2f} "
              + " ".join(f"{b}.{m} aa {r['aa'][b]['metrics'][m] / r['base'][b]['metrics'][m]:.3f} "
                         f"slow {r['slow'][b]['metrics'][m] / r['base'][b]['metrics'][m]:.3f}"
                         for b, m, _, _ in GATED[:2])
              + f" wall {sum(entry['wall_s'].values()):.0f}s", flush=True)
    return 0


# -- the rules -------------------------------------------------------------------------------------------
def asv_rule(base: list[float], cand: list[float]) -> str:
    """asv compare: a change when the ratio of the results (asv's result is the median of its samples)
    is beyond the factor 1.1 and, with raw samples kept, Mann-Whitney U rejects at p < 0.002."""
    from scipy.stats import mannwhitneyu

    ratio = statistics.median(cand) / statistics.median(base)
    if 1 / 1.1 <= ratio <= 1.1:
        return "same"
    p = mannwhitneyu(base, cand, alternative="two-sided").pvalue
    if p >= 0.002:
        return "same"
    return "worse" if ratio > 1.1 else "better"


def pytest_benchmark_rule(base: list[float], cand: list[float]) -> str:
    """pytest-benchmark --benchmark-compare-fail=mean:5%: fails when the mean grew by more than 5%. It only
    fails on slowdowns; its mirror image (mean shrank by more than 5%) is counted as 'better'."""
    ratio = statistics.fmean(cand) / statistics.fmean(base)
    if ratio > 1.05:
        return "worse"
    if ratio < 1 / 1.05:
        return "better"
    return "same"


def torchbench_rule(base: list[float], cand: list[float]) -> str:
    """TorchBench's CI: a regression when the median grew by more than 7%."""
    ratio = statistics.median(cand) / statistics.median(base)
    return "worse" if ratio > 1.07 else ("better" if ratio < 1 / 1.07 else "same")


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _counts(verdicts: Iterable[str]) -> dict[str, int]:
    out = {"worse": 0, "better": 0, "same": 0, "inconclusive": 0}
    for v in verdicts:
        out[v] = out.get(v, 0) + 1
    return out


def analyse(args: argparse.Namespace) -> int:
    rounds = _load(Path(args.stream))[args.skip:]
    report: dict[str, Any] = {"stream": str(args.stream), "skipped_pilot_rounds": args.skip,
                              "rounds": len(rounds), "threshold": args.threshold,
                              "work_factor": WORK_FACTOR, "micro": MICRO, "component": COMPONENT,
                              "by_k": {}, "baselines": {}, "spread": {}}
    for b, m, _direction, _ in GATED:
        name = f"{b}.{m}"
        for cand in ("aa", "slow"):
            logs = [math.log(r["variants"][cand][b]["metrics"][m] / r["variants"]["base"][b]["metrics"][m])
                    for r in rounds]
            report["spread"][f"{name} {cand}/base"] = {
                "geomean_ratio": math.exp(statistics.fmean(logs)), "sd_log_ratio": statistics.stdev(logs),
                "median_ratio": math.exp(statistics.median(logs)),
                "share_beyond_5pct": sum(abs(x) > math.log(1.05) for x in logs) / len(logs)}
    ks = sorted({args.k, *args.also_k})
    for k in ks:
        n_gates = min(args.gates, len(rounds) // k)
        if n_gates == 0:
            continue
        per_k: dict[str, Any] = {"gates": n_gates}
        for b, m, direction, _ in GATED:
            for cand in ("aa", "slow"):
                # "gate": exactly the gate's defaults; "gate@98%": the same at --confidence 0.98;
                # "geomean+BCa": the plain geometric mean with a 95% BCa bootstrap interval, the rule of
                # reference/measurement.md, for comparison.
                for label, conf, method, trim in (("gate", stats.CONFIDENCE, "trimmed-t", stats.TRIM),
                                                  ("gate@98%", 0.98, "trimmed-t", stats.TRIM),
                                                  ("geomean+BCa", stats.CONFIDENCE, "BCa", 0.0)):
                    verdicts = []
                    for g in range(n_gates):
                        chunk = rounds[g * k:(g + 1) * k]
                        ratios = [r["variants"][cand][b]["metrics"][m] / r["variants"]["base"][b]["metrics"][m]
                                  for r in chunk]
                        verdicts.append(decide.decide_rounds(ratios, direction, args.threshold, confidence=conf,
                                                             seed=g, method=method, trim=trim).verdict)
                    per_k[f"{b}.{m} {cand} {label}"] = _counts(verdicts)
        report["by_k"][str(k)] = per_k
    # asv / pytest-benchmark / TorchBench: one baseline process against one candidate process, raw samples.
    k = args.k
    n_gates = min(args.gates, len(rounds) // k)
    for b in ("gemm", "dig"):
        for cand in ("aa", "slow"):
            for rule_name, rule in (("asv", asv_rule), ("pytest-benchmark", pytest_benchmark_rule),
                                    ("torchbench", torchbench_rule)):
                first = [rule(rounds[g * k]["variants"]["base"][b]["samples"],
                              rounds[g * k]["variants"][cand][b]["samples"]) for g in range(n_gates)]
                every = [rule(r["variants"]["base"][b]["samples"], r["variants"][cand][b]["samples"])
                         for r in rounds]
                report["baselines"][f"{b} {cand} {rule_name}"] = {
                    "first_round_of_each_gate": {"trials": n_gates, **_counts(first)},
                    "every_round": {"trials": len(rounds), **_counts(every)}}
    if args.e2e:
        report["e2e"] = [json.loads(line) for line in Path(args.e2e).read_text().splitlines() if line.strip()]
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    _print_summary(report, args.k)
    if args.markdown:
        Path(args.markdown).write_text(markdown_summary(report, args.k))
    return 0


def markdown_summary(rep: dict[str, Any], k: int) -> str:
    """The study's result tables in markdown (what docs/gate.md shows)."""
    per = rep["by_k"][str(k)]
    n = per["gates"]
    lines = [f"Rounds analysed: {rep['rounds']} (after {rep['skipped_pilot_rounds']} pilot rounds); "
             f"{n} disjoint gates of K = {k} rounds; threshold {rep['threshold'] * 100:g}%.", "",
             "| benchmark · metric | rule | A/A: false alarms | A/A: pass · inconclusive | +10%: detected | "
             "+10%: inconclusive · pass |", "|---|---|--:|--:|--:|--:|"]
    for b, m, _d, _s in GATED:
        for label in ("gate", "gate@98%", "geomean+BCa"):
            a, sl = per[f"{b}.{m} aa {label}"], per[f"{b}.{m} slow {label}"]
            name = {"gate": "**aibench gate** (defaults)", "gate@98%": "aibench gate, `--confidence 0.98`",
                    "geomean+BCa": "geomean + 95% BCa bootstrap (measurement.md)"}[label]
            lines.append(f"| {b} · {m} | {name} | {a['worse'] + a['better']}/{n} | {a['same']} · "
                         f"{a['inconclusive']} | {sl['worse']}/{n} | {sl['inconclusive']} · {sl['same']} |")
    lines += ["", "One baseline process against one candidate process (the first round of each gate; in brackets: "
              f"every one of the {rep['rounds']} rounds):", "",
              "| benchmark (raw samples) | rule | A/A: false alarms | +10%: detected |", "|---|---|--:|--:|"]
    names = {"asv": "asv: ×1.1 and Mann-Whitney p < 0.002", "pytest-benchmark": "pytest-benchmark `mean:5%`",
             "torchbench": "TorchBench: median +7%"}
    for b in ("gemm", "dig"):
        for rule, name in names.items():
            a, sl = rep["baselines"][f"{b} aa {rule}"], rep["baselines"][f"{b} slow {rule}"]
            fa, fe = a["first_round_of_each_gate"], a["every_round"]
            da, de = sl["first_round_of_each_gate"], sl["every_round"]
            lines.append(f"| {b} ({'time per call' if b == 'gemm' else 'latency per query'}) | {name} | "
                         f"{fa['worse'] + fa['better']}/{fa['trials']} "
                         f"({(fe['worse'] + fe['better']) / fe['trials'] * 100:.0f}%) | "
                         f"{da['worse']}/{da['trials']} ({de['worse'] / de['trials'] * 100:.0f}%) |")
    lines += ["", "Spread of the per-round ratios over the whole stream:", "",
              "| ratio | geometric mean | sd of log ratio | rounds beyond ±5% |", "|---|--:|--:|--:|"]
    for key, sp in rep["spread"].items():
        lines.append(f"| {key} | {sp['geomean_ratio']:.3f} | {sp['sd_log_ratio']:.3f} | "
                     f"{sp['share_beyond_5pct'] * 100:.0f}% |")
    if rep.get("e2e"):
        lines += ["", "Real `aibench gate` calls (micro benchmark, K = 10):", "",
                  "| candidate | outcome | exit | ratio | 95% CI | wall time |", "|---|---|--:|--:|---|--:|"]
        for e in rep["e2e"]:
            ci = f"[{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e.get("ci") else "–"
            ratio = f"{e['ratio']:.3f}" if e.get("ratio") else "–"
            lines.append(f"| {e['candidate']} | {e['outcome']} | {e['exit']} | {ratio} | {ci} | "
                         f"{e['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def _print_summary(rep: dict[str, Any], k: int) -> None:
    print(f"{rep['rounds']} rounds; threshold {rep['threshold'] * 100:g}%")
    for key, s in rep["spread"].items():
        print(f"  {key}: geomean {s['geomean_ratio']:.4f}, sd(log ratio) {s['sd_log_ratio']:.4f}, "
              f"|ratio-1| > 5% in {s['share_beyond_5pct'] * 100:.0f}% of rounds")
    for kk, per in rep["by_k"].items():
        print(f"K = {kk} ({per['gates']} gates):")
        for key, c in per.items():
            if key == "gates":
                continue
            print(f"  {key:48s} worse {c['worse']:3d}  better {c['better']:3d}  same {c['same']:3d}  "
                  f"inconclusive {c['inconclusive']:3d}")
    print(f"one process per side (first round of each of the K={k} gates | every round):")
    for key, c in rep["baselines"].items():
        f, e = c["first_round_of_each_gate"], c["every_round"]
        print(f"  {key:32s} worse {f['worse']:3d} better {f['better']:3d} of {f['trials']:3d} | "
              f"worse {e['worse'] / e['trials'] * 100:5.1f}% better {e['better'] / e['trials'] * 100:5.1f}% "
              f"of {e['trials']}")


def e2e(args: argparse.Namespace) -> int:
    """Real `aibench gate` calls for the micro benchmark, timed end to end."""
    work = Path(args.work)
    trees = {v: work / "trees" / v for v in VARIANTS}
    if not all((t / "aibench").exists() for t in trees.values()):
        trees = build_trees(work)
    log = work / "e2e.jsonl"
    for i in range(args.n):
        for cand in args.kinds:
            out = work / f"e2e-{cand}-{i}.json"
            cmd = [sys.executable, "-m", "aibench", "gate",
                   "--baseline", f"env PYTHONPATH={trees['base']} {sys.executable}", "--baseline-label", "base",
                   "--candidate", f"env PYTHONPATH={trees[cand]} {sys.executable}", "--candidate-label", cand,
                   "--rounds", str(args.rounds), "--seed", str(1000 + i), "--json", str(out), *MICRO]
            t = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            wall = time.monotonic() - t
            doc = json.loads(out.read_text()) if out.exists() else {}
            pair = (doc.get("pairs") or [{}])[0]
            row = {"candidate": cand, "i": i, "exit": proc.returncode, "outcome": doc.get("outcome"),
                   "ratio": pair.get("ratio"), "ci": pair.get("ci"), "wall_s": round(wall, 1),
                   "rounds": doc.get("rounds"), "loadavg": doc.get("load")}
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
    c = sub.add_parser("collect", help="build the trees and collect (or extend) the stream of rounds")
    c.add_argument("--work", required=True)
    c.add_argument("--rounds", type=int, default=500)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--resume", action="store_true")
    a = sub.add_parser("analyse", help="apply the rules to a stream")
    a.add_argument("stream")
    a.add_argument("--k", type=int, default=10, help="rounds per gate (the gate's default)")
    a.add_argument("--also-k", type=int, nargs="*", default=[5, 15, 20])
    a.add_argument("--gates", type=int, default=50)
    a.add_argument("--skip", type=int, default=0, help="leave out the first N rounds (the pilot)")
    a.add_argument("--threshold", type=float, default=decide.DEFAULT_THRESHOLD)
    a.add_argument("--e2e", help="e2e.jsonl to include")
    a.add_argument("--json", dest="json_out")
    a.add_argument("--markdown", help="write the result tables in markdown here")
    e = sub.add_parser("e2e", help="time real aibench gate calls for the micro benchmark")
    e.add_argument("--work", required=True)
    e.add_argument("--n", type=int, default=3)
    e.add_argument("--rounds", type=int, default=10)
    e.add_argument("--kinds", nargs="+", default=["aa", "slow"])
    s = sub.add_parser("simulate", help="simulated gates: interval coverage and the rule's error rates")
    s.add_argument("--n", type=int, default=1000, help="simulated gates per case")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    return {"collect": collect, "analyse": analyse, "e2e": e2e, "simulate": simulate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
