"""A worker process of the pool (:mod:`aibench.sut.pool`): it builds its own copy of a benchmark's task and
answers batches of sample indices sent over its pipe.

The process is started with ``spawn`` (a fresh interpreter: no forked torch or CUDA state). It builds the
benchmark's :class:`~aibench.sut.task.InferenceTask` itself from the benchmark id and its parameters, on its
own device and with its own thread count, stages every sample in its own memory (an
:class:`~aibench.sut.inprocess.InProcessSystem`), and then only ever receives sample indices.

The pipe protocol is a tag byte, a sequence number and int64 indices (JSON for the few control replies):
nothing is unpickled from it. This module is light at import (torch only once the worker builds).
"""

from __future__ import annotations

import collections
import json
import os
import time
import traceback
from array import array
from typing import Any

from aibench.errors import AibenchError, UsageError

# Parent -> worker
T_BATCH = b"B"  # seq (8 bytes) + int64 indices: answer these samples
T_CANCEL = b"C"  # + seq: answer messages numbered up to seq without computing (a run was aborted)
T_STATS = b"Q"  # reply with counters since the last query, then reset them
T_STOP = b"S"
# Worker -> parent
T_READY = b"R"  # + JSON: what the worker built
T_DONE = b"D"  # + seq
T_ERROR = b"E"  # + JSON {type, message, exit_code, traceback}; the worker then exits
T_STATS_REPLY = b"T"  # + JSON counters


def worker_main(conn: Any, config_json: str, parent_pid: int | None = None) -> None:
    """Entry point of a worker process (spawned). Ctrl-C is the parent's business: the worker ignores
    SIGINT and ends when told to, or when its pipe closes; and it dies with the parent, however the parent
    ends, even in the middle of a batch (:func:`aibench.lifetime.die_with_parent`)."""
    import signal

    from aibench.lifetime import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)  # anything a workload prints goes to stderr, never into the parent's --json output
    cfg = json.loads(config_json)
    try:
        system, info, batch = build(cfg)
    except BaseException as exc:
        _send_error(conn, exc)
        return
    conn.send_bytes(T_READY + json.dumps(info).encode())
    _serve(conn, system, batch, info)
    from aibench.lifetime import quick_exit

    quick_exit(0)  # told to stop (or the parent is gone): no teardown for the parent to wait on


def build(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any], int]:
    """The worker's system (an InProcessSystem with every sample staged), what it tells the parent, and the
    benchmark's batch."""
    import importlib

    import torch

    from aibench import registry
    from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype
    from aibench.sut.inprocess import InProcessSystem

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    for module in cfg.get("modules") or ():
        importlib.import_module(module)
    bench = registry.get(cfg["bench_id"])
    given = dict(cfg["params"])
    if "device" in bench.params:
        given["device"] = cfg["device"]
    elif cfg["device"] != "cpu":
        raise UsageError(f"{bench.id} has no --device parameter: it cannot run on {cfg['device']}")
    params = bench.resolve(given)
    device = resolve_device(params.get("device", "cpu"))
    dtype = resolve_dtype(params["dtype"], device) if "dtype" in params else None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(int(cfg.get("seed", 0)))
    with refusing_unsupported(device, dtype):
        task = bench.factory(params, device=device, dtype=dtype)
        task.run_batch()  # one untimed batch: an unsupported dtype is refused before any load
    system = InProcessSystem(task, name=f"{bench.id}#worker{cfg['index']}")
    system.stage(range(task.num_samples))
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info = {"index": cfg["index"], "pid": os.getpid(), "device": str(device), "threads": torch.get_num_threads(),
            "affinity": affinity, **system.describe()}
    return system, info, max(1, int(params.get("batch", 1) or 1))


def _serve(conn: Any, system: Any, batch: int, info: dict[str, Any]) -> None:
    import resource

    inbox: collections.deque[bytes] = collections.deque()
    cancel_upto = 0  # batch messages numbered up to this are answered without computing (an aborted run)
    counters = {"messages": 0, "batches": 0, "samples": 0, "busy_s": 0.0}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_mark = ru0.ru_utime + ru0.ru_stime
    cuda = str(info.get("device", "")).startswith("cuda")
    perf = time.perf_counter
    execute = system.execute
    while True:
        try:
            msg = inbox.popleft() if inbox else conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        tag = msg[:1]
        if tag == T_STOP:
            return
        if tag == T_CANCEL:
            cancel_upto = max(cancel_upto, int.from_bytes(msg[1:9], "little"))
            continue
        if tag == T_STATS:
            reply = dict(counters)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu = ru.ru_utime + ru.ru_stime
            reply.update(pid=os.getpid(), cpu_s=cpu - cpu_mark, peak_rss_bytes=ru.ru_maxrss * 1024)
            cpu_mark = cpu
            if cuda:
                import torch

                reply["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            counters.update(messages=0, batches=0, samples=0, busy_s=0.0)
            conn.send_bytes(T_STATS_REPLY + json.dumps(reply).encode())
            continue
        if tag != T_BATCH:
            continue
        seq = msg[1:9]
        number = int.from_bytes(seq, "little")
        idx = array("q")
        idx.frombytes(msg[9:])
        indices = idx.tolist()
        t0 = perf()
        try:
            for pos in range(0, len(indices), batch):
                if number <= cancel_upto:
                    break
                execute(indices[pos:pos + batch])
                counters["batches"] += 1
                counters["samples"] += min(batch, len(indices) - pos)
                while conn.poll():  # a cancel ends this message early; other messages wait their turn
                    nxt = conn.recv_bytes()
                    if nxt[:1] == T_CANCEL:
                        cancel_upto = max(cancel_upto, int.from_bytes(nxt[1:9], "little"))
                    else:
                        inbox.append(nxt)
        except BaseException as exc:
            _send_error(conn, exc)
            return
        counters["busy_s"] += perf() - t0
        counters["messages"] += 1
        conn.send_bytes(T_DONE + seq)


def _send_error(conn: Any, exc: BaseException) -> None:
    text = str(exc).strip()
    doc = {"type": type(exc).__name__, "message": text.splitlines()[0][:2000] if text else type(exc).__name__,
           "exit_code": exc.exit_code if isinstance(exc, AibenchError) else None,
           "traceback": traceback.format_exc(limit=8)}
    try:
        conn.send_bytes(T_ERROR + json.dumps(doc).encode())
    except (OSError, ValueError):
        pass

