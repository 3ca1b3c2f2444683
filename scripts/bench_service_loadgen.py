#!/usr/bin/env python3
"""Issue 14's "how good it must be", measured with aibench's own client (RemoteSystem) under LoadGen.

``overhead``: a network at a batch through ``aibench serve`` (DjiNN binary protocol by default), driven by
LoadGen Offline, against the same network in this process under LoadGen Offline, side by side: rounds
alternate in-process and served (the order flips each round) so the machine's drifting load hits both
alike. Reported: samples/s of each run, the medians and their ratio served / in-process (the goal for IMC
at batch 16: >= 0.90; POS at 64 sentences of 28 words is where the protocol costs most).

``ceiling``: the null model (4 floats in, their sum out) served; LoadGen Server with --find-peak at
p99 <= 10 ms per protocol (DjiNN binary, HTTP binary tensors, HTTP JSON): the highest VALID target QPS,
and where the time goes (client and server CPU per query from /proc; the request's parts).

``peer``: the same aibench client against ``aibench serve`` and MLServer (``--mlserver-venv``, MLServer
1.7.1 with uvloop<0.22; its IMC runtime imports aibench's network): the null model's highest VALID Server
QPS at p99 <= 10 ms, and IMC Offline throughput at batch 16, as ratios aibench / MLServer, in one run. Both
servers: one worker process beside the HTTP process, the cores split the same way.

    PYTHONPATH=. python scripts/bench_service_loadgen.py overhead --model imc --rounds 3 --seconds 8
    PYTHONPATH=. python scripts/bench_service_loadgen.py overhead --model pos --rounds 3 --seconds 8
    PYTHONPATH=. python scripts/bench_service_loadgen.py ceiling --budget-s 60
    PYTHONPATH=. python scripts/bench_service_loadgen.py peer --mlserver-venv /work/venvs/mlserver
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import cpu_model

from aibench.service.launch import ServerProcess, start_server


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_s(pid)
        except OSError:
            pass
    return total


def component_task(app: str, batch: int, **extra: Any) -> Any:
    import torch

    from aibench.registry import get

    bench = get(f"component/{app}")
    params = bench.resolve({"batch": batch, "stage": "dnn", "data": "synthetic", **extra})
    return bench.factory(params, device=torch.device("cpu"), dtype=torch.float32)


def null_task(num_samples: int = 1024) -> Any:
    import torch

    from aibench.sut.task import InferenceTask

    rows = [torch.full((1, 4), float(i)) for i in range(num_samples)]
    return InferenceTask(model=lambda x: x.sum(dim=1, keepdim=True), device=torch.device("cpu"),
                         num_samples=num_samples, load_sample=rows.__getitem__,
                         collate=lambda xs: torch.cat(list(xs)), stage="dnn")


def offline_rate(sut: Any, batch: int, seconds: float, out: Path) -> float:
    """One LoadGen Offline test of ``sut``: completed samples/s."""
    from aibench.loadgen.drive import calibrate, run_loadgen
    from aibench.loadgen.settings import LoadgenOptions, size_run

    s = LoadgenOptions(scenario="offline", duration_s=seconds, out_dir=out).resolve()
    cal = calibrate(sut, batch, budget_s=0.5)
    sut.reset_report()
    res = run_loadgen(sut, s, batch, size_run(s, cal.per_sample_s, cal.batch_sample_s), out)
    if res.error is not None:
        raise res.error
    return float(res.metrics["samples_per_s"]["value"])


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from aibench.sut.inprocess import InProcessSystem
    from aibench.sut.remote import RemoteSystem

    if args.threads:  # the same threads on both sides: the server's instance and this process's forward pass
        import torch

        torch.set_num_threads(args.threads)
    extra = {"words": 28} if args.model in ("pos", "chk", "ner") else {}
    task = component_task(args.model, args.batch, num_samples=max(2 * args.batch, 32), **extra)
    tmp = Path(tempfile.mkdtemp(prefix="aibench-bench-"))
    env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.server_env))  # e.g. the old spin-wait
    srv = start_server([args.model], args=["--threads", str(args.threads)] if args.threads else [], env=env)
    try:
        address = srv.djinn_address if args.protocol == "djinn" else None
        url = "djinn://{}:{}".format(*address) if address else str(srv.http_url)
        remote = RemoteSystem(task, url, args.model, in_flight=args.in_flight)
        local = InProcessSystem(task)
        rates: dict[str, list[float]] = {"in_process": [], "served": []}
        loads: list[str] = []
        for r in range(args.rounds):
            order = [("in_process", local), ("served", remote)]
            if r % 2:
                order.reverse()
            for name, sut in order:
                loads.append(loadavg())
                rates[name].append(offline_rate(sut, args.batch, args.seconds, tmp / f"{r}-{name}"))
                print(f"round {r + 1} {name}: {rates[name][-1]:.2f} samples/s (load {loads[-1]})", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in rates.items()}
        return {"what": f"{args.model} batch {args.batch}: served ({args.protocol}) vs in-process, LoadGen Offline",
                "rates": rates, "median": med, "ratio_served_over_in_process": med["served"] / med["in_process"],
                "per_round_ratios": (ratios := [s / i for s, i in zip(rates["served"], rates["in_process"],
                                                                      strict=True)]),
                "median_of_round_ratios": statistics.median(ratios),
                "seconds": args.seconds, "rounds": args.rounds, "in_flight": args.in_flight,
                "threads": {"server_instance": srv.describe().get("threads_per_instance"),
                            "in_process": local._threads}, "cpu": cpu_model(), "loadavg": loads}
    finally:
        srv.stop()


def find_peak(sut: Any, seconds: float, budget_s: float, out: Path, start_qps: float | None = None,
              bound_ms: float = 10.0) -> dict[str, Any]:
    """LoadGen Server --find-peak at p99 <= ``bound_ms``; the peak VALID target QPS and the probes."""
    from aibench.loadgen.run import drive_system
    from aibench.loadgen.settings import LoadgenOptions
    from aibench.results.schema import Result

    lo = LoadgenOptions(scenario="server", find_peak=True, latency_bound_ms=bound_ms, duration_s=seconds,
                        find_peak_budget_s=budget_s, target_qps=start_qps, out_dir=out,
                        explicit=("target_qps",) if start_qps else ())
    s = lo.resolve()
    result = Result(benchmark={"id": "bench/null", "kind": "bench", "name": "null"}, params={}, config_hash="bench")
    result.config["loadgen"] = s.config()
    from aibench.errors import UnavailableError

    for _attempt in range(3):  # a calibration taken at a loaded moment may refuse the bound: take it again
        try:
            drive_system(sut, s, 1, result)
            break
        except UnavailableError as exc:
            print(f"calibration refused the bound ({exc.message[:80]}...); again in 2 s", file=sys.stderr)
            time.sleep(2)
    else:
        return {"peak_qps": None, "bracket": [None, None], "probes": [], "refused": "calibration, 3 times"}
    fp = result.method["find_peak"]
    return {"peak_qps": fp["peak_target_qps"], "bracket": fp["bracket"], "probes": [
        {k: p[k] for k in ("target_qps", "valid", "latency_p99_s", "completed_samples_per_s")} for p in fp["probes"]]}


def where_time_goes(sut: Any, server_pids: list[int], seconds: float, qps: float, out: Path) -> dict[str, Any]:
    """One Server test at ``qps``: CPU per query of this process and of the server, and the parts' medians."""
    from aibench.loadgen.drive import run_loadgen
    from aibench.loadgen.settings import LoadgenOptions, size_run

    s = LoadgenOptions(scenario="server", target_qps=qps, latency_bound_ms=10.0, duration_s=seconds,
                       out_dir=out).resolve()
    sut.reset_report()
    c0, s0 = tree_cpu_s([os.getpid()]), tree_cpu_s(server_pids)
    res = run_loadgen(sut, s, 1, size_run(s, 1e-4, 1e-4), out)
    c1, s1 = tree_cpu_s([os.getpid()]), tree_cpu_s(server_pids)
    n = max(1, res.latencies.seen)
    rep = sut.report()
    return {"target_qps": qps, "valid": bool(res.validity and res.validity["valid"]),
            "p99_s": res.metrics["latency_p99"]["value"], "queries": n,
            "client_cpu_us_per_query": (c1 - c0) / n * 1e6, "server_cpu_us_per_query": (s1 - s0) / n * 1e6,
            "parts_median_us": {k: statistics.median(v) * 1e6 for k, v in rep.stages.items() if v},
            "server_batches": rep.extra.get("server_stats")}


def server_pids(srv: ServerProcess) -> list[int]:
    return [srv.pid, *srv.worker_pids]


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    from aibench.sut.remote import RemoteSystem

    task = null_task()
    tmp = Path(tempfile.mkdtemp(prefix="aibench-ceiling-"))
    out: dict[str, Any] = {"cpu": cpu_model(), "loadavg_start": loadavg(), "protocols": {}}
    srv = start_server(["null"])
    try:
        assert srv.djinn_address is not None
        for proto in args.protocols.split(","):
            url = "djinn://{}:{}".format(*srv.djinn_address) if proto == "djinn" else str(srv.http_url)
            sut = RemoteSystem(task, url, "null", in_flight=args.in_flight)
            if proto == "http-json":
                sut.binary = False
            peak = find_peak(sut, args.seconds, args.budget_s, tmp / proto, args.start_qps)
            at = peak["peak_qps"] or (peak["bracket"][1] or 100) / 2
            peak["at_peak"] = where_time_goes(sut, server_pids(srv), args.seconds, at, tmp / f"{proto}-at-peak")
            peak["loadavg"] = loadavg()
            out["protocols"][proto] = peak
            print(f"{proto}: peak {peak['peak_qps']} QPS (load {peak['loadavg']})", file=sys.stderr)
    finally:
        srv.stop()
    return out


# -- the MLServer peer ------------------------------------------------------------------------------------

NULL_RUNTIME = '''
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class NullModel(MLModel):
    """aibench's null model: each row of 4 floats -> its sum (FP32 [rows, 1])."""

    async def load(self):
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("OUTPUT0", x.sum(axis=1, keepdims=True))])
'''

IMC_RUNTIME = '''
import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


def _threads():
    torch.set_num_threads(THREADS)


class ImcModel(MLModel):
    """aibench's IMC network (the same seeded CaffeNet as aibench serve), float32 on CPU. The forward pass
    runs on one thread of its own (as aibench serve's instance; not the event loop's main thread)."""

    async def load(self):
        from aibench.networks import tonic as _nets
        self.pool = ThreadPoolExecutor(1, initializer=_threads)
        self.net = _nets.build("imc", seed=0, device="cpu", dtype=torch.float32)
        await asyncio.get_running_loop().run_in_executor(self.pool, self._forward, np.zeros((1, 3, 227, 227),
                                                                                               np.float32))
        return True

    def _forward(self, x):
        with torch.inference_mode():
            return self.net(torch.from_numpy(x)).numpy().astype(np.int64)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        ids = await asyncio.get_running_loop().run_in_executor(self.pool, self._forward, x)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT0", ids)])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlserver(venv: Path, threads: int, workers: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    root = Path(tempfile.mkdtemp(prefix="aibench-mlserver-"))
    http, grpc, metrics = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
        "parallel_workers": workers, "debug": False}))
    for name, impl, code in (("null", "runtime_null.NullModel", NULL_RUNTIME),
                             ("imc", "runtime_imc.ImcModel", IMC_RUNTIME.replace("THREADS", str(threads)))):
        d = root / name
        d.mkdir()
        (d / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": impl,
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4] if name == "null" else
                        [-1, 3, 227, 227]}],
            "outputs": [{"name": "OUTPUT0", "datatype": "FP32" if name == "null" else "INT64",
                         "shape": [-1, 1] if name == "null" else [-1]}]}))
        (d / f"runtime_{name}.py").write_text(textwrap.dedent(code))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # aibench's networks for the IMC runtime
    env["OMP_NUM_THREADS"] = str(threads)
    log = open(root / "mlserver.log", "wb")
    proc = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(root)], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlserver exited {proc.returncode}: see {root / 'mlserver.log'}")
        try:
            ok = all(urllib.request.urlopen(f"{url}/v2/models/{m}/ready", timeout=2).status == 200
                     for m in ("null", "imc"))
            if ok:
                return proc, url, root
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlserver was not ready in 300 s: see {root / 'mlserver.log'}")


def mlserver_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    out = [proc.pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        out += [int(k) for k in kids]
    except OSError:
        pass
    return out


def peer(args: argparse.Namespace) -> dict[str, Any]:
    from aibench.sut.remote import RemoteSystem

    tmp = Path(tempfile.mkdtemp(prefix="aibench-peer-"))
    imc = component_task("imc", args.batch, num_samples=32)
    null = null_task()
    res: dict[str, Any] = {"cpu": cpu_model(), "loadavg_start": loadavg(), "servers": {},
                           "null_bound": f"p99 <= {args.latency_bound_ms:g} ms"}
    ml, ml_url, ml_root = start_mlserver(Path(args.mlserver_venv), args.threads, 1)
    srv = start_server(["null", "imc"], args=["--threads", str(args.threads)])
    try:
        version = json.load(urllib.request.urlopen(f"{ml_url}/v2", timeout=5))
        res["mlserver"] = {"metadata": version, "settings": "parallel_workers 1 (one worker process beside the "
                           "HTTP process, as aibench serve's one instance), no adaptive batching",
                           "folder": str(ml_root)}
        targets = {"aibench": (str(srv.http_url), server_pids(srv)), "mlserver": (ml_url, mlserver_pids(ml))}
        for r in range(args.rounds):
            names = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in names:
                url, _ = targets[name]
                entry = res["servers"].setdefault(name, {"null_peak_qps": [], "imc_samples_per_s": []})
                sut = RemoteSystem(null, url, "null", in_flight=args.in_flight)
                entry["null_encoding"] = sut.remote_info()["encoding"]
                peak = find_peak(sut, args.seconds, args.budget_s, tmp / f"{r}-{name}-null", args.start_qps,
                                 args.latency_bound_ms)
                entry["null_peak_qps"].append(peak["peak_qps"])
                entry.setdefault("null_probes", []).append(peak["probes"])
                if "imc" in args.parts:
                    isut = RemoteSystem(imc, url, "imc", in_flight=args.in_flight)
                    entry["imc_samples_per_s"].append(offline_rate(isut, args.batch, args.seconds,
                                                                   tmp / f"{r}-{name}-imc"))
                print(f"round {r + 1} {name}: null peak {peak['peak_qps']} QPS, IMC "
                      f"{(entry['imc_samples_per_s'] or [float('nan')])[-1]:.2f} samples/s (load {loadavg()})",
                      file=sys.stderr)
        a, m = res["servers"]["aibench"], res["servers"]["mlserver"]

        def med(xs: list[float | None]) -> float | None:
            vals = [x for x in xs if x is not None]
            return statistics.median(vals) if vals else None

        an, mn = med(a["null_peak_qps"]), med(m["null_peak_qps"])
        ai, mi = med(a["imc_samples_per_s"]), med(m["imc_samples_per_s"])
        res["ratios_aibench_over_mlserver"] = {"null_peak_qps": an / mn if an and mn else None,
                                               "imc_samples_per_s": ai / mi if ai and mi else None}
        res["loadavg_end"] = loadavg()
    finally:
        srv.stop()
        ml.terminate()
        try:
            ml.wait(30)
        except subprocess.TimeoutExpired:
            ml.kill()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--model", default="imc")
    o.add_argument("--batch", type=int, default=None, help="samples per request (default: IMC 16, POS 64)")
    o.add_argument("--protocol", choices=("djinn", "http"), default="djinn")
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--seconds", type=float, default=8.0)
    o.add_argument("--in-flight", type=int, default=4)
    o.add_argument("--threads", type=int, default=0)
    o.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment of the server and its instance (GOMP_SPINCOUNT=300000: libgomp's "
                        "spin-wait, the instances' policy before they were made passive)")
    c = sub.add_parser("ceiling")
    c.add_argument("--protocols", default="djinn,http,http-json")
    c.add_argument("--seconds", type=float, default=3.0)
    c.add_argument("--budget-s", type=float, default=60.0)
    c.add_argument("--start-qps", type=float, default=None)
    c.add_argument("--in-flight", type=int, default=16)
    p = sub.add_parser("peer")
    p.add_argument("--mlserver-venv", default="/work/venvs/mlserver")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--budget-s", type=float, default=60.0)
    p.add_argument("--start-qps", type=float, default=None)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latency-bound-ms", type=float, default=10.0, help="the p99 bound of the null-model search")
    p.add_argument("--parts", default="null,imc", help="null: the null model's peak; imc: IMC Offline (both)")
    args = ap.parse_args()
    if args.cmd == "overhead" and args.batch is None:
        args.batch = {"imc": 16, "pos": 64, "chk": 64, "ner": 64}.get(args.model, 16)
    fn = {"overhead": overhead, "ceiling": ceiling, "peer": peer}[args.cmd]
    print(json.dumps(fn(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
