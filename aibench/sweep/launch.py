"""Distributed points: DistributedDataParallel training and the all-reduce benchmark, one process per rank.

Each point of ``aibench sweep gpus`` on a training benchmark (runner ``training``) or on ``micro/allreduce`` is
one launch of ``python -m aibench.sweep.worker JOB.json`` in ``nproc`` = the point's device count processes.
Rank 0 measures and writes its result as plain JSON to a file this process reads back (nothing is pickled);
the other ranks take part (DDP steps, or the blocks of all-reduces rank 0 announces). Backends: gloo for CPU
processes, NCCL for GPUs (``CUDA_VISIBLE_DEVICES`` names the point's GPUs; local rank r uses the r-th of
them).

**One machine** (the default): aibench starts the ranks itself, with torchrun's environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ...), and hosts their rendezvous store: a ``torch.distributed.TCPStore`` on a
socket this process binds to 127.0.0.1 at a port the OS picks (as :class:`aibench.measure.collective.LocalRanks`
does; a TCPStore left to bind itself listens on every interface, and torchrun offers no way to bind its store
to one address). The ranks' gloo/NCCL sockets are put on the loopback interface. So nothing listens beyond
127.0.0.1 while a point runs. A rank that fails ends the launch (the others are stopped).

**Several machines**: the same ``aibench sweep gpus ...`` on each, with ``--nnodes M --node-rank R
--rdzv-endpoint HOST:PORT`` (HOST is node 0's address), launched through torchrun with its ``static``
rendezvous, so global ranks follow ``--node-rank`` (node 0 holds rank 0 and writes the results); point ``i``
meets at ``PORT + i``, so a node that reaches the next point first never joins the previous point's store. On
node 0 torchrun's store listens at that port on every interface (PyTorch gives it no bind address); the ranks'
own sockets use the interface ``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME`` name (the default route's if unset).
Nodes other than 0 record their points without result files.

A launch that fails (a rank raises, dies, or the launch exits non-zero without a result) gives a ``failed``
result with the exit code and the tail of the log. Ctrl-C (or SIGTERM) stops the ranks (or torchrun) and
propagates. Every process of a launch dies with this one even if it is killed (:mod:`aibench.lifetime`):
the ranks, torchrun, and torchrun's workers. The job files and logs live in ``$TMPDIR/aibench-dist-<pid>-*``,
removed when the sweep ends; one left by an aibench killed with SIGKILL is removed by the next launch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aibench import lifetime
from aibench.errors import UsageError
from aibench.sweep.plan import COLLECTIVES

if TYPE_CHECKING:
    from aibench.results.schema import Result
    from aibench.sweep.engine import PointPlan, SweepPlan

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
TERMINATE_GRACE_S = 30.0  # torchrun, told to stop, stops its workers first
RANK_GRACE_S = 5.0  # a rank of a local launch, told to stop (SIGTERM), before SIGKILL
COLLECTIVE_TIMEOUT_S = 300.0
POLL_S = 0.2
LAUNCHER_ENV = "AIBENCH_LAUNCHER"  # "aibench" in the ranks of a local launch (torchrun sets nothing)


def job_kind(bench: Any) -> str:
    """``train`` (DDP over a training task) or ``collective``; UsageError for anything else."""
    if bench.runner == "training":
        return "train"
    if bench.id in COLLECTIVES:
        return "collective"
    raise UsageError(f"'aibench sweep gpus' scales load-generated (inference), training and collective benchmarks; "
                     f"{bench.id} (runner {bench.runner!r}) is none of them")


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--rdzv-endpoint must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def distributed_executor(plan: SweepPlan, nnodes: int = 1, node_rank: int = 0,
                         rdzv_endpoint: str | None = None) -> DistributedExecutor:
    """Check the plan fits a torchrun launch and return the executor for its points."""
    kind = job_kind(plan.bench)
    if node_rank >= nnodes:
        raise UsageError(f"--node-rank {node_rank} must be below --nnodes {nnodes}")
    if nnodes > 1 and rdzv_endpoint is None:
        raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address and a port)")
    endpoint = parse_endpoint(rdzv_endpoint) if rdzv_endpoint else None
    for p in plan.points:
        if p.extra.get("instances_per_device", 1) != 1:
            raise UsageError("--instances-per-device applies to inference workers; distributed ranks take one "
                             "device each")
    if kind == "train":
        params = plan.points[0].run.params
        if params.get("mode", "train") != "train":
            raise UsageError("a distributed sweep trains with DistributedDataParallel: --mode train (inference "
                             "scales out with load-generated benchmarks)")
        if params.get("ttq"):
            raise UsageError("--ttq evaluates on one rank between steps, which DistributedDataParallel cannot "
                             "follow; sweep throughput (without --ttq)")
    return DistributedExecutor(kind, nnodes, node_rank, endpoint)


class DistributedExecutor:
    def __init__(self, kind: str, nnodes: int, node_rank: int, endpoint: tuple[str, int] | None) -> None:
        self.kind = kind
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.endpoint = endpoint
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        """Job files, rank 0's result and the log of each point (removed when the sweep ends)."""
        if self._workdir is None:
            self._workdir = lifetime.private_tempdir("dist")
        return self._workdir

    def command(self, point: PointPlan, job_path: Path) -> list[str]:
        """One machine: the command of each rank; several: torchrun's command."""
        worker = ["-m", "aibench.sweep.worker", str(job_path)]
        if self.endpoint is None:
            return [sys.executable, *worker]
        nproc = len(point.extra["devices"])
        host, port = self.endpoint
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0",
                "--monitor-interval=0.5", f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                "--rdzv-backend=static", f"--rdzv-endpoint={host}:{port + point.index}", f"--master-addr={host}",
                f"--master-port={port + point.index}", *worker]

    def job(self, point: PointPlan, result_path: Path) -> dict[str, Any]:
        opts = point.opts
        devices = point.extra["devices"]
        device_type = "cpu" if devices[0] == "cpu" else "cuda"
        return {
            "kind": self.kind, "bench": point.run.bench.id, "params": point.run.params,
            "context": point.run.context, "seed": opts.seed, "threads": opts.threads or 1,
            "timer": opts.timer.to_json(), "device_type": device_type, "result_path": str(result_path),
            "nnodes": self.nnodes, "nproc_per_node": len(devices), "devices": devices,
            "collective_timeout_s": COLLECTIVE_TIMEOUT_S,
            "modules": _modules(point.run.bench),
        }

    def run(self, point: PointPlan) -> Result | None:
        from aibench.results.store import load_result

        tag = f"point-{point.index}-{os.getpid()}-{time.monotonic_ns()}"
        job_path = self.workdir / f"{tag}.job.json"
        result_path = self.workdir / f"{tag}.result.json"
        log_path = self.workdir / f"{tag}.log"
        job = self.job(point, result_path)
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(job["threads"])
        env.setdefault("PYTHONUNBUFFERED", "1")
        if job["device_type"] == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(d.partition(":")[2] for d in job["devices"])
        if self.endpoint is None:  # one machine: the ranks' own sockets on loopback (unless set otherwise)
            for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
                env.setdefault(var, "lo")
        cmd = self.command(point, job_path)
        t0 = time.perf_counter()
        with open(log_path, "wb") as out:
            if self.endpoint is None:
                rc, launch = _launch_local(cmd, len(job["devices"]), env, out)
            else:
                launch = {"launcher": "torchrun (torch.distributed.run)",
                          "rendezvous": f"torchrun static rendezvous at {self.endpoint[0]}:"
                                        f"{self.endpoint[1] + point.index} (on node 0 its store listens at that "
                                        "port on every interface)"}
                proc = subprocess.Popen(lifetime.bound_command(cmd, env), stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
                try:
                    rc = _wait(proc)
                except BaseException:
                    _stop(proc)
                    raise
        tail = _tail(log_path)
        launch.update(command=cmd, exit_code=rc, wall_s=time.perf_counter() - t0, log_tail=tail)
        who = "the launch" if self.endpoint is None else "torchrun"
        if self.node_rank != 0:
            if rc != 0:
                return _failed(point, job, f"{who} exited with code {rc}: {_last_error(tail)}", launch)
            return None
        if result_path.is_file():
            r = load_result(result_path)
            r.method["launch"] = launch
            return r
        why = f"{who} exited with code {rc} and rank 0 wrote no result: {_last_error(tail)}"
        return _failed(point, job, why, launch)

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _modules(bench: Any) -> list[str]:
    module = getattr(bench.factory, "__module__", "") or ""
    return [module] if module and not module.startswith("aibench.") and module != "__main__" else []


def _loopback_store() -> tuple[Any, int]:
    """A TCPStore server on a socket bound here to 127.0.0.1 at a port the OS picks (no race for the port):
    left to itself a TCPStore listens on every interface whatever host it is given."""
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                              master_listen_fd=listener.fileno(), timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    except BaseException:
        listener.close()
        raise
    listener.detach()  # the store owns the socket now (and closes it)
    return store, port


def _launch_local(cmd: list[str], nproc: int, env: dict[str, str], out: Any) -> tuple[int, dict[str, Any]]:
    """Run ``nproc`` ranks of ``cmd`` on this machine around a loopback store; the exit code (the first
    failing rank's, else 0) and what the result records of the launch. A failing rank stops the others."""
    store, port = _loopback_store()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(nproc):
            rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                        "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port), LAUNCHER_ENV: "aibench",
                        lifetime.PARENT_ENV: str(os.getpid())}
            # A session of its own: the terminal's Ctrl-C reaches aibench, which stops the ranks.
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=rank_env,
                                          start_new_session=True))
        rc = 0
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                rc = failed[0]
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(POLL_S)
    finally:
        _stop_all(procs)
        del store  # the store's server stops with its last reference
    return rc, {"launcher": "aibench (one machine: one process per rank)",
                "rendezvous": f"TCPStore hosted by aibench at 127.0.0.1:{port} (loopback only)"}


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every rank still running, then SIGKILL to what is left after RANK_GRACE_S."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(OSError):
            p.terminate()
    deadline = time.monotonic() + RANK_GRACE_S
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait(timeout=10)


def _wait(proc: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to torchrun (it stops its workers), then SIGKILL to its whole session."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait(timeout=10)
    except OSError:
        pass


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _last_error(tail: list[str]) -> str:
    for line in reversed(tail):
        s = line.strip()
        if s and ("Error" in s or "error" in s or "exited with" in s):
            return s[:500]
    return (tail[-1].strip()[:500] if tail else "no output")


def distributed_config(job: dict[str, Any], world_size: int | None = None) -> dict[str, Any]:
    """``config.distributed`` of a launched point: what changes the measured work (enters the hash)."""
    from aibench.measure.collective import backend_for

    backend = ("nccl" if job["device_type"] == "cuda" else "gloo") if job["kind"] == "train" else \
        backend_for(job["device_type"], job["params"].get("backend", "auto"))
    return {"world_size": world_size or job["nnodes"] * job["nproc_per_node"], "nnodes": job["nnodes"],
            "nproc_per_node": job["nproc_per_node"], "device_type": job["device_type"], "backend": backend,
            "wrapper": "DistributedDataParallel" if job["kind"] == "train" else None,
            "threads_per_rank": job["threads"]}


def _failed(point: PointPlan, job: dict[str, Any], why: str, launch: dict[str, Any]) -> Result:
    """A failed result for a launch that produced none (a crashed or killed rank, a refused torchrun)."""
    from aibench import system
    from aibench.results.schema import now_iso
    from aibench.runner import new_result

    config = {"threads": job["threads"], "distributed": distributed_config(job)}
    r = new_result(point.run.bench, point.run.params, config, point.run.context)
    r.status = "failed"
    r.error = {"type": "DistributedLaunchError", "message": why, "traceback": "".join(traceback.format_stack(limit=3))}
    r.method["launch"] = launch
    r.finished_at = now_iso()
    r.duration_s = launch.get("wall_s")
    r.machine = system.fingerprint()
    r.code = system.code_version()
    return r
