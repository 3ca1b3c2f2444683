"""One rank of a distributed point (``python -m aibench.sweep.worker JOB.json``), started by
:mod:`aibench.sweep.launch`: by aibench itself on one machine, by torchrun across machines.

The job file is plain JSON written by the launching aibench: the benchmark id, its parameters, the run
options, the sweep context and where rank 0 writes its result. The launcher provides ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR``/``MASTER_PORT``). Under aibench's own
launcher (``AIBENCH_LAUNCHER=aibench``) the store at MASTER_ADDR:MASTER_PORT is the one aibench hosts on
127.0.0.1 and every rank joins it as a client (rank 0 hosts none, so nothing of the ranks listens beyond
loopback); under torchrun the ``env://`` rendezvous is torchrun's. Either way the rank dies with the process
that started it (:func:`aibench.lifetime.die_with_parent`).

- ``train``: every rank builds the training task itself (same seed, so the same initial weights, which DDP
  also broadcasts from rank 0), wraps ``task.model`` in ``DistributedDataParallel`` and runs the ``training``
  runner with the same steps; the wrapped model is what ``forward_loss(model, batch)`` receives (the task API,
  aibench/measure/training.py). Rank r trains on batches r, r+W, r+2W, ... of the task's stream, so the ranks
  see different data. Rank 0's result reports the aggregate rate (world size × its samples/s: DDP steps
  run in lockstep) and keeps its own as ``samples_per_s_per_rank``.
- ``collective``: rank 0 runs the all-reduce benchmark (it times blocks and announces them); the other ranks
  follow (:func:`aibench.measure.collective.follow`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aibench.sweep.worker JOB.json (started by aibench sweep gpus)",
              file=sys.stderr)
        return 2
    from aibench.lifetime import die_with_parent
    from aibench.sweep.launch import LAUNCHER_ENV

    die_with_parent()  # $AIBENCH_PARENT_PID: aibench (one machine) or torchrun (several)
    own_launch = os.environ.get(LAUNCHER_ENV) == "aibench"
    if own_launch:  # aibench stops the ranks itself; the terminal's Ctrl-C is its business
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    import importlib

    import torch
    import torch.distributed as dist

    from aibench import registry
    from aibench.measure import collective as coll

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    torch.set_num_threads(int(job["threads"]))
    cuda = job["device_type"] == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    for module in job.get("modules") or ():
        importlib.import_module(module)
    bench = registry.get(job["bench"])
    params = dict(job["params"])
    if "device" in params:
        params["device"] = f"cuda:{local}" if cuda else "cpu"
    if job["kind"] == "train":
        backend = "nccl" if cuda else "gloo"
    else:
        backend = coll.backend_for(job["device_type"], params.get("backend", "auto"))
    timeout = timedelta(seconds=float(job["collective_timeout_s"]))
    if own_launch:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    else:
        dist.init_process_group(backend, timeout=timeout)
    try:
        if job["kind"] == "collective":
            params["ranks"] = world
            if rank != 0:
                spec = coll.RankSpec(ranks=world, backend=backend, device_type=job["device_type"], first_cuda=0,
                                     count=int(params["count"]), dtype=params["dtype"])
                coll.follow(spec, local)
                return 0
            try:
                result = _execute(bench, params, job)
            finally:
                coll.release_followers(job["device_type"])
        else:
            result = _execute(_ddp(bench, rank, world), params, job)
            if rank != 0:
                return 0
            _aggregate(result, world)
        from aibench.sweep.launch import distributed_config

        result.config["distributed"] = distributed_config(job, world)
        from aibench.spec import config_hash

        result.config_hash = config_hash(result.id, result.params, result.config)
        result.context["distributed"] = {
            "world_size": world, "rank": rank, "local_rank": local, "backend": backend,
            "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
            "group_rank": os.environ.get("GROUP_RANK"), "local_world_size": os.environ.get("LOCAL_WORLD_SIZE"),
            "launcher": "aibench (one machine)" if own_launch else "torchrun (torch.distributed.run)"}
        out = Path(job["result_path"])
        tmp = out.with_suffix(".tmp")
        tmp.write_text(result.to_json(), encoding="utf-8")
        os.replace(tmp, out)
        return 0
    finally:
        dist.destroy_process_group()


def _execute(bench: Any, params: dict[str, Any], job: dict[str, Any]) -> Any:
    from aibench.measure.timer import TimerSettings
    from aibench.runner import PlannedRun, RunOptions, execute

    opts = RunOptions(threads=int(job["threads"]), seed=int(job["seed"]), timer=TimerSettings(**job["timer"]))
    return execute(PlannedRun(bench, bench.resolve(params), dict(job.get("context") or {})), opts)


def _ddp(bench: Any, rank: int, world: int) -> Any:
    """``bench`` whose factory returns the task with its model wrapped in DistributedDataParallel."""
    inner = bench.factory

    def factory(params: dict[str, Any], device: Any, seed: int = 0) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        task = inner(params, device=device, seed=seed)
        ids = [device.index] if getattr(device, "type", "cpu") == "cuda" else None
        task.model = DistributedDataParallel(task.model, device_ids=ids)
        stream = task.next_batch
        task.next_batch = lambda step: stream(step * world + rank)
        if task.epoch_steps:
            task.epoch_steps = task.epoch_steps // world if task.epoch_steps % world == 0 else None
        task.info = {**task.info, "ddp": {"world_size": world, "rank": rank,
                                          "batches": "rank r takes batches r, r+W, r+2W, ... of the task's stream"}}
        return task

    factory.__name__ = f"ddp_{getattr(inner, '__name__', 'factory')}"
    return replace(bench, factory=factory)


def _aggregate(result: Any, world: int) -> None:
    """Rank 0's samples/s -> the aggregate over ranks (DDP steps run in lockstep, one batch per rank)."""
    from aibench.results.schema import metric

    per = result.metrics.get("samples_per_s")
    if not per or per.get("value") is None:
        return
    result.metrics["samples_per_s_per_rank"] = dict(per)
    extra = {k: v for k, v in per.items() if k not in ("value", "unit", "direction", "unavailable")}
    if isinstance(extra.get("work"), int | float):  # the declaration's work per step: every rank's samples
        extra["work"] = extra["work"] * world
    result.metrics["samples_per_s"] = metric(per["value"] * world, "samples/s", "higher",
                                             note=f"all {world} ranks: world size × rank 0's samples/s (DDP steps "
                                                  "run in lockstep, one batch per rank per step)", **extra)


if __name__ == "__main__":
    sys.exit(main())
