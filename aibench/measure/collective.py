"""Timing collectives (all-reduce) across ranks with the kernel timer.

A collective needs every rank to call it the same number of times, while the kernel timer decides block
sizes and when to stop as it goes. So the timer runs in one place and tells the ranks, before each block,
how many calls it holds: the ranks meet at a barrier (a one-element all-reduce), synchronise their device,
run the block, synchronise again, and rank 0's host clock around it is the block time. The barrier and the
command are outside the timed span.

Two ways to have ranks:

- :class:`LocalRanks` (``aibench run micro allreduce --ranks N``): N processes spawned on this machine,
  joined through a ``torch.distributed.TCPStore`` that the parent hosts on a socket bound to 127.0.0.1 (a
  free port, taken atomically); the ranks' gloo/NCCL sockets use the loopback interface. The parent's
  kernel timer sends each block's size over ``multiprocessing`` pipes (a tag byte and an integer; nothing
  pickled) and reads rank 0's elapsed time back. A rank that dies ends the
  measurement with its exit code; the parent never waits for it forever. A rank dies with the parent, even
  when the parent is killed (:func:`aibench.lifetime.die_with_parent`).
- :class:`ProcessGroupRanks` (under torchrun, e.g. ``aibench sweep gpus micro/allreduce`` over nodes): the
  process group exists already; rank 0 runs the kernel timer and broadcasts each block's size (0: stop) to
  the others, which run :func:`follow`.

Backends: gloo on CPU tensors, NCCL on CUDA tensors (rank r on cuda:first+r). Bandwidths follow nccl-tests:
``algbw = S / t`` with S the bytes of one rank's buffer, and ``busbw = algbw × 2(n-1)/n`` for all-reduce
(the traffic per link of a ring algorithm), which is comparable across rank counts.
"""

from __future__ import annotations

import collections
import json
import os
import struct
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing import connection as mp_connection
from typing import Any

from aibench.errors import UnavailableError

LOOPBACK_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
COLLECTIVE_TIMEOUT_S = 300.0  # a rank stuck in a collective this long fails instead of hanging
REPLY_TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0
POLL_S = 0.1


def busbw_factor(ranks: int) -> float:
    """nccl-tests' bus-bandwidth factor for all-reduce: 2(n-1)/n."""
    return 2.0 * (ranks - 1) / ranks


def backend_for(device_type: str, backend: str) -> str:
    """``auto``: NCCL for CUDA tensors, gloo for CPU ones; NCCL on CPU is refused."""
    if backend == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and device_type != "cuda":
        raise UnavailableError("--backend nccl needs CUDA tensors (--device cuda); CPU tensors use gloo")
    return backend


@dataclass(frozen=True)
class RankSpec:
    """What each rank allocates and how it joins the group (plain data, sent as JSON)."""

    ranks: int
    backend: str
    device_type: str  # cpu | cuda
    first_cuda: int
    count: int
    dtype: str
    threads: int = 1

    def device_for(self, rank: int) -> str:
        return "cpu" if self.device_type == "cpu" else f"cuda:{self.first_cuda + rank}"


# -- what every rank does ------------------------------------------------------------------------------------

def make_buffer(spec: RankSpec, rank: int) -> tuple[Any, Any, Any]:
    """(buffer, barrier tensor, device) for ``rank``. The buffer is zeros, so repeated in-place sums stay
    finite (the values never matter to the timing)."""
    import torch

    device = torch.device(spec.device_for(rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    buf = torch.zeros(spec.count, dtype=getattr(torch, spec.dtype), device=device)
    flag = torch.zeros(1, dtype=torch.float32, device=device)
    return buf, flag, device


def run_block(buf: Any, flag: Any, device: Any, number: int) -> float:
    """Barrier, then ``number`` all-reduces timed on the host clock with the device synchronised."""
    import torch
    import torch.distributed as dist

    cuda = device.type == "cuda"
    dist.all_reduce(flag)  # the barrier: every rank starts the block together
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(number):
        dist.all_reduce(buf)
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


# -- ranks spawned by this process ---------------------------------------------------------------------------

T_BLOCK = b"B"  # + uint64 calls
T_STOP = b"S"
T_READY = b"R"
T_ELAPSED = b"T"  # + float64 seconds (rank 0 only)
T_ERROR = b"E"  # + JSON


def _rank_main(conn: Any, spec_json: str, rank: int, port: int, parent_pid: int | None = None) -> None:
    """Entry point of one spawned rank. It dies with the parent, however the parent ends (even SIGKILL);
    Ctrl-C is the parent's business."""
    import signal

    from aibench.lifetime import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)  # keep the parent's stdout (e.g. --json) clean
    for var in LOOPBACK_ENV:  # the ranks talk over loopback only (unless the environment says otherwise)
        os.environ.setdefault(var, "lo")
    try:
        import torch
        import torch.distributed as dist

        spec = RankSpec(**json.loads(spec_json))
        torch.set_num_threads(spec.threads)
        store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=START_TIMEOUT_S))
        dist.init_process_group(spec.backend, store=store, rank=rank, world_size=spec.ranks,
                                timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        buf, flag, device = make_buffer(spec, rank)
        run_block(buf, flag, device, 1)  # the first collective sets up connections: not part of any block
    except BaseException as exc:
        _send_error(conn, exc)
        return
    conn.send_bytes(T_READY)
    try:
        while True:
            try:
                msg = conn.recv_bytes()
            except (EOFError, OSError):
                break
            if msg[:1] != T_BLOCK:
                break
            elapsed = run_block(buf, flag, device, struct.unpack("<Q", msg[1:9])[0])
            if rank == 0:
                conn.send_bytes(T_ELAPSED + struct.pack("<d", elapsed))
    except BaseException as exc:
        _send_error(conn, exc)
        return
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - teardown after a failure
            pass
    from aibench.lifetime import quick_exit

    quick_exit(0)  # stopped: no interpreter teardown for the parent to wait on


def _send_error(conn: Any, exc: BaseException) -> None:
    text = str(exc).strip()
    doc = {"type": type(exc).__name__, "message": text.splitlines()[0][:2000] if text else type(exc).__name__,
           "refused": isinstance(exc, UnavailableError), "traceback": traceback.format_exc(limit=6)}
    try:
        conn.send_bytes(T_ERROR + json.dumps(doc).encode())
    except (OSError, ValueError):
        pass


class RankError(RuntimeError):
    """A rank failed or died during a collective measurement."""


class LocalRanks:
    """``spec.ranks`` processes on this machine forming one process group; the caller times blocks."""

    name = "host-clock on rank 0, blocks after a barrier"

    def __init__(self, spec: RankSpec) -> None:
        self.spec = spec
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.inbox: list[collections.deque[bytes]] = []
        self.store: Any = None
        self.port = 0
        self._busy = True  # starting, or inside a block: a stop message would wait for it to finish

    def start(self) -> LocalRanks:
        import multiprocessing as mp
        import socket

        import torch.distributed as dist

        # The store listens on a socket bound here to 127.0.0.1 and a port the OS picks (TCPStore alone would
        # listen on every interface): no other machine can reach it, and no race for the port.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.store = dist.TCPStore("127.0.0.1", self.port, is_master=True, wait_for_workers=False,
                                   master_listen_fd=listener.fileno(), timeout=timedelta(seconds=START_TIMEOUT_S))
        listener.detach()  # the store owns the socket now (and closes it)
        ctx = mp.get_context("spawn")
        try:
            for rank in range(self.spec.ranks):
                parent, child = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_rank_main, name=f"aibench-rank-{rank}", daemon=True,
                                args=(child, json.dumps(self.spec.__dict__), rank, self.port, os.getpid()))
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)
                self.inbox.append(collections.deque())
            for rank in range(self.spec.ranks):
                self._expect(rank, T_READY, START_TIMEOUT_S)
            self._busy = False
        except BaseException:
            self.close()
            raise
        return self

    def _expect(self, rank: int, tag: bytes, timeout_s: float) -> bytes:
        """The next message of ``rank``, which must be ``tag``; a failing or dead rank (any rank) raises."""
        deadline = time.monotonic() + timeout_s
        while True:
            mp_connection.wait([*self.conns, *(p.sentinel for p in self.procs)], timeout=POLL_S)
            for r, c in enumerate(self.conns):  # an error from any rank ends the wait, not only the awaited one
                while c.poll():
                    try:
                        msg = c.recv_bytes()
                    except (EOFError, OSError):
                        break
                    if msg[:1] == T_ERROR:
                        self._raise(r, json.loads(msg[1:]))
                    self.inbox[r].append(msg)
            while self.inbox[rank]:
                msg = self.inbox[rank].popleft()
                if msg[:1] == tag:
                    return msg
            for r, p in enumerate(self.procs):
                if not p.is_alive():
                    p.join(1.0)
                    raise RankError(f"rank {r} (pid {p.pid}, {self.spec.device_for(r)}) exited with code "
                                    f"{p.exitcode}")
            if time.monotonic() > deadline:
                raise RankError(f"rank {rank} did not answer within {timeout_s:g} s")

    def _raise(self, rank: int, doc: dict[str, Any]) -> None:
        text = f"rank {rank} ({self.spec.device_for(rank)}): {doc.get('type')}: {doc.get('message')}"
        if doc.get("refused"):
            raise UnavailableError(text)
        raise RankError(text)

    def time_block(self, _fn: Any, number: int) -> float:
        """The kernel timer's BlockTimer: every rank runs ``number`` calls; rank 0's elapsed seconds."""
        msg = T_BLOCK + struct.pack("<Q", number)
        self._busy = True
        for c in self.conns:
            c.send_bytes(msg)
        reply = self._expect(0, T_ELAPSED, REPLY_TIMEOUT_S)
        self._busy = False
        return struct.unpack("<d", reply[1:9])[0]

    def close(self) -> None:
        """Stop the ranks: idle ones end on a stop message; ranks still starting or inside a block (the
        measurement was cut short: Ctrl-C, SIGTERM, a failing rank) are killed at once: nothing they are
        doing is wanted."""
        for c in self.conns:
            try:
                c.send_bytes(T_STOP)
            except (OSError, ValueError):
                pass
        if self._busy:
            for p in self.procs:
                if p.is_alive():
                    p.kill()
        deadline = time.monotonic() + 10.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.procs, self.conns, self.store = [], [], None


# -- ranks of an existing process group (torchrun) -----------------------------------------------------------

class ProcessGroupRanks:
    """Rank 0 of a running process group: broadcasts each block's size, then times it like the others.
    ``device_rank`` picks the device (torchrun's LOCAL_RANK: the rank within this machine)."""

    name = "host-clock on rank 0, blocks after a barrier"

    def __init__(self, spec: RankSpec, device_rank: int) -> None:
        self.spec = spec
        self.buf, self.flag, self.device = make_buffer(spec, device_rank)
        self._cmd_device = self.device

    def _command(self, number: int) -> None:
        import torch
        import torch.distributed as dist

        cmd = torch.tensor([number], dtype=torch.int64, device=self._cmd_device)
        dist.broadcast(cmd, 0)

    def time_block(self, _fn: Any, number: int) -> float:
        self._command(number)
        return run_block(self.buf, self.flag, self.device, number)

    def close(self) -> None:
        global _released
        if not _released:
            self._command(0)
            _released = True


_released = False  # rank 0 has told the followers to stop (a process runs one measurement per launch)


def release_followers(device_type: str = "cpu") -> None:
    """Rank 0, after its measurement however it ended: make sure the followers were told to stop, so a
    measurement that failed before its first block does not leave them waiting for the collective timeout."""
    global _released
    if _released or not in_process_group():
        return
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", local_rank()) if device_type == "cuda" else torch.device("cpu")
    dist.broadcast(torch.zeros(1, dtype=torch.int64, device=device), 0)
    _released = True


def follow(spec: RankSpec, device_rank: int) -> None:
    """Ranks other than 0 under torchrun: run each block rank 0 announces, until it announces 0."""
    import torch
    import torch.distributed as dist

    buf, flag, device = make_buffer(spec, device_rank)
    cmd = torch.zeros(1, dtype=torch.int64, device=device)
    while True:
        dist.broadcast(cmd, 0)
        number = int(cmd.item())
        if number <= 0:
            return
        run_block(buf, flag, device, number)


def in_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def group_rank() -> tuple[int, int]:
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def visible_cuda() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def launcher() -> str:
    """Who started this process group's ranks: ``aibench`` (one machine) or ``torchrun`` (several)."""
    return "aibench launch" if os.environ.get("AIBENCH_LAUNCHER") == "aibench" else "torchrun"
