#!/usr/bin/env python3
"""What serving costs: ``aibench serve`` against the same network in this process (issue 14).

Two measurements, each interleaved over ``--rounds`` (the order alternates, so the machine's drifting load
hits both sides alike); the load average and the CPU model are printed with the figures.

``overhead``: the server's own cost per request, with the null model (4 floats in, their sum out, no sleep),
one row per request, for each protocol (DjiNN binary, HTTP with the binary tensor extension, HTTP JSON) at 1
and 4 requests in flight. Reported: requests/s and p50 latency seen by the client (client and server share
the machine), and the CPU time per request of the server's event-loop process and of its instance, read
from /proc (immune to the wall clock, which other users of the machine distort).

``throughput``: a network at a batch, served (DjiNN binary protocol; ``--in-flight`` connections, each
sending whole batches back to back; one instance with all the cores) against the same network's forward
pass in this process at the same batch and thread count. Reported: the per-batch time on each side (served:
the interval between completions, which with requests always queued is the server's time per batch) and
their ratio = served / in-process throughput (issue 14's goal for IMC at batch 16: >= 0.90). ``--model pos
--batch 1792`` is POS at the paper's 64 sentences of 28 words.

    PYTHONPATH=. python scripts/bench_service.py overhead [--seconds 4] [--rounds 3]
    PYTHONPATH=. python scripts/bench_service.py throughput [--model imc] [--batch 16] [--batches 3] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import numpy as np

from aibench.service.launch import ServerProcess, start_server
from aibench.service.models import SPECS


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- clients -------------------------------------------------------------------------------------------------

async def djinn_loop(addr: tuple[str, int], model: str, x: np.ndarray, out_bytes: int, until: float,
                     lat: list[float], done: list[float], budget: list[int] | None = None) -> None:
    reader, writer = await asyncio.open_connection(*addr)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(6, 1, 1)  # TCP_NODELAY
    writer.write(model.encode().ljust(5, b"\0") + struct.pack("<i", x.size))
    payload = x.tobytes()
    try:
        while time.perf_counter() < until:
            if budget is not None:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(payload)
            await reader.readexactly(out_bytes)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            done.append(t1)
    finally:
        writer.close()


async def http_loop(session: Any, url: str, body: bytes, headers: dict[str, str], until: float,
                    lat: list[float], done: list[float]) -> None:
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        done.append(t1)


def http_body(x: np.ndarray, binary: bool) -> tuple[bytes, dict[str, str]]:
    inp: dict[str, Any] = {"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32"}
    if binary:
        inp["parameters"] = {"binary_data_size": x.nbytes}
        head = json.dumps({"inputs": [inp], "parameters": {"binary_data_output": True}}).encode()
        return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}
    inp["data"] = x.ravel().tolist()
    return json.dumps({"inputs": [inp]}).encode(), {"Content-Type": "application/json"}


async def drive(srv: ServerProcess, protocol: str, model: str, x: np.ndarray, in_flight: int, seconds: float,
                requests: int | None = None) -> tuple[list[float], list[float]]:
    """Requests back to back from ``in_flight`` clients for ``seconds`` (or until ``requests`` were sent):
    (latencies, completion times)."""
    lat: list[float] = []
    done: list[float] = []
    until = time.perf_counter() + seconds
    spec = SPECS[model]
    budget = [requests] if requests is not None else None
    if protocol == "djinn":
        assert srv.djinn_address is not None
        await asyncio.gather(*(djinn_loop(srv.djinn_address, model, x, 4 * x.shape[0] * spec.out_row_elements,
                                          until, lat, done, budget) for _ in range(in_flight)))
    else:
        import aiohttp

        body, headers = http_body(x, protocol == "http-binary")
        url = f"{srv.http_url}/v2/models/{model}/infer"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
            await asyncio.gather(*(http_loop(session, url, body, headers, until, lat, done)
                                   for _ in range(in_flight)))
    return lat, done


# -- overhead ------------------------------------------------------------------------------------------------

def overhead(args: argparse.Namespace) -> dict[str, Any]:
    srv = start_server(["null"], args=["--instances", "1"])
    server_pid, worker_pid = srv.pid, srv.worker_pids[0]
    x = np.ones((1, 4), np.float32)
    cells: dict[str, list[dict[str, float]]] = {}
    try:
        for protocol in ("djinn", "http-binary", "http-json"):  # warm every path
            asyncio.run(drive(srv, protocol, "null", x, 1, 0.5))
        order = [(p, c) for p in ("djinn", "http-binary", "http-json") for c in (1, 4)]
        for r in range(args.rounds):
            for protocol, c in (order if r % 2 == 0 else order[::-1]):
                s0, w0 = cpu_s(server_pid), cpu_s(worker_pid)
                lat, _done = asyncio.run(drive(srv, protocol, "null", x, c, args.seconds))
                s1, w1 = cpu_s(server_pid), cpu_s(worker_pid)
                n = len(lat)
                cells.setdefault(f"{protocol} c={c}", []).append({
                    "req_s": n / args.seconds, "p50_ms": 1e3 * statistics.median(lat),
                    "server_us": 1e6 * (s1 - s0) / n, "instance_us": 1e6 * (w1 - w0) / n})
                print(f"  round {r + 1}: {protocol:12s} c={c}: {n / args.seconds:7.0f} req/s, p50 "
                      f"{1e3 * statistics.median(lat):.2f} ms, server {1e6 * (s1 - s0) / n:.0f} us/req, instance "
                      f"{1e6 * (w1 - w0) / n:.0f} us/req", file=sys.stderr)
    finally:
        code = srv.stop()
    summary = {k: {m: round(statistics.median(v[m] for v in vals), 2) for m in vals[0]} for k, vals in cells.items()}
    return {"cells": summary, "rounds": cells, "server_exit_code": code}


# -- throughput -----------------------------------------------------------------------------------------------

def in_process(net: Any, x: Any, batches: int) -> list[float]:
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(batches):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return times


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds: ``--batches`` forward passes in this process, then ``--batches + 1`` served
    batches (2 connections in flight, so the instance always has the next batch): the intervals between
    served completions are the server's time per batch."""
    import torch

    from aibench.service.models import build
    from aibench.service.server import usable_cores

    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    spec = SPECS[args.model]
    x = np.random.default_rng(0).standard_normal((args.batch, *spec.input_shape), dtype=np.float32)
    net = build(args.model, torch.device("cpu"), torch.float32)
    xt = torch.from_numpy(x)
    srv = start_server([args.model], args=["--instances", "1", "--threads", str(threads), "--max-batch",
                                           str(args.batch)])
    rounds: list[dict[str, Any]] = []
    try:
        in_process(net, xt, 2)  # warm-up, both sides
        asyncio.run(drive(srv, "djinn", args.model, x, args.in_flight, 600, requests=2))
        before = srv.stats(args.model)
        for r in range(args.rounds):
            res: dict[str, Any] = {"load_before": os.getloadavg()[0]}
            for side in (["in_process", "served"] if r % 2 == 0 else ["served", "in_process"]):
                if side == "in_process":
                    t = in_process(net, xt, args.batches)
                    res["in_process_s"] = statistics.median(t)
                    res["in_process_all"] = t
                else:
                    lat, done = asyncio.run(drive(srv, "djinn", args.model, x, args.in_flight, 3600,
                                                  requests=args.batches + 1))
                    done.sort()
                    gaps = [b - a for a, b in itertools.pairwise(done)]
                    res["served_s"] = statistics.median(gaps)
                    res["served_all"] = gaps
                    res["served_latency_p50_s"] = statistics.median(lat)
            res["ratio"] = res["in_process_s"] / res["served_s"]
            res["load_after"] = os.getloadavg()[0]
            rounds.append(res)
            print(f"  round {r + 1}: in-process {res['in_process_s'] * 1e3:.0f} ms/batch, served "
                  f"{res['served_s'] * 1e3:.0f} ms/batch, ratio {res['ratio']:.3f}, load {res['load_before']:.1f}-"
                  f"{res['load_after']:.1f}", file=sys.stderr)
        after = srv.stats(args.model)
    finally:
        code = srv.stop()
    ratios = [r["ratio"] for r in rounds]
    ip_total = sum(sum(r["in_process_all"]) for r in rounds) / sum(len(r["in_process_all"]) for r in rounds)
    sv_total = sum(sum(r["served_all"]) for r in rounds) / sum(len(r["served_all"]) for r in rounds)
    server = {}
    zero = {"count": 0, "ns": 0}
    b0 = {b["batch_size"]: b for b in before["batch_stats"]}
    for b in after["batch_stats"]:
        prev = b0.get(b["batch_size"], {k: zero for k in ("compute_input", "compute_infer", "compute_output")})
        n = b["compute_infer"]["count"] - prev["compute_infer"]["count"]
        if n:
            server[b["batch_size"]] = {k: round((b[k]["ns"] - prev[k]["ns"]) / n / 1e6, 2)
                                       for k in ("compute_input", "compute_infer", "compute_output")}
            server[b["batch_size"]]["batches"] = n
    return {"model": args.model, "batch": args.batch, "threads": threads, "in_flight": args.in_flight,
            "in_process_ms": round(1e3 * statistics.median(r["in_process_s"] for r in rounds), 1),
            "served_ms": round(1e3 * statistics.median(r["served_s"] for r in rounds), 1),
            "ratio_median": round(statistics.median(ratios), 3), "ratios": [round(v, 3) for v in ratios],
            "ratio_of_means": round(ip_total / sv_total, 3),
            "samples_per_s_in_process": round(args.batch / ip_total, 2),
            "samples_per_s_served": round(args.batch / sv_total, 2),
            "server_ms_per_batch": server, "rounds": rounds, "server_exit_code": code}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--seconds", type=float, default=4.0)
    o.add_argument("--rounds", type=int, default=3)
    t = sub.add_parser("throughput")
    t.add_argument("--model", default="imc", choices=sorted(SPECS))
    t.add_argument("--batch", type=int, default=16, help="rows per request and per executed batch")
    t.add_argument("--batches", type=int, default=3, help="batches per side per round")
    t.add_argument("--in-flight", type=int, default=2, help="served: connections sending back to back")
    t.add_argument("--rounds", type=int, default=10)
    t.add_argument("--threads", type=int, help="threads on each side [default: every usable core]")
    for p in (o, t):
        p.add_argument("--json", dest="json_out", help="also write the figures to this file")
    args = ap.parse_args()
    head = {"cpu_model": cpu_model(), "cores": os.cpu_count(), "load_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version()}
    print(f"{head['cpu_model']}, {head['cores']} cores, load average {head['load_start']}", file=sys.stderr)
    out = overhead(args) if args.what == "overhead" else throughput(args)
    out = {**head, **out, "load_end": [round(v, 2) for v in os.getloadavg()]}
    if args.what == "overhead":
        print(f"{'protocol':20s} {'req/s':>8s} {'p50 ms':>8s} {'server us/req':>14s} {'instance us/req':>16s}")
        for k, v in out["cells"].items():
            print(f"{k:20s} {v['req_s']:8.0f} {v['p50_ms']:8.2f} {v['server_us']:14.0f} {v['instance_us']:16.0f}")
    else:
        print(f"{out['model']} batch {out['batch']}, {out['threads']} threads: in-process {out['in_process_ms']} ms "
              f"per batch (median), served {out['served_ms']} ms; served / in-process: median of rounds "
              f"{out['ratio_median']} (rounds {out['ratios']}), of mean throughputs {out['ratio_of_means']} "
              f"({out['samples_per_s_served']} vs {out['samples_per_s_in_process']} samples/s)")
        print(f"server's own account per batch (ms): {out['server_ms_per_batch']}")
    print(f"load average at the end: {out['load_end']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
