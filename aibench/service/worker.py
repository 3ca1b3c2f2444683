"""One service instance: a worker process that hosts every served model and runs the batches it is sent.

Started by the server as ``python -m aibench.service.worker FD CONFIG_JSON`` (a fresh interpreter: no forked
event loop, sockets or CUDA state), it inherits one end of a socket pair as file descriptor ``FD`` and talks
over it in frames of :mod:`aibench.sut.transport` (nothing is pickled):

- server → worker: ``X`` (key = model number, id = batch id, a float32 tensor of rows) runs one batch; an
  ``X`` of int32 ``[rows]`` runs the batch of those rows of the model's *resident inputs* (``aibench serve
  --resident-inputs``: rows the worker made on its device at start, so no input crosses to it); ``S`` stops
  the worker.
- worker → server: ``R`` ready (JSON: what it built, its pid and threads); for each batch ``T`` (int64
  [4]: ``time.monotonic_ns`` when it began, when the input was on the device, when the forward pass had
  finished with the device synchronised, when the output was on the host) then ``O`` (the output rows);
  ``E`` (JSON) an error: for a batch (its id; the worker goes on) or while starting (id 0; the worker then
  exits). Batches are answered in the order they were sent.

The worker dies with the server: it asks the kernel for SIGKILL when its parent dies, and it exits when
its socket reaches EOF. It ignores SIGINT and SIGTERM (a Ctrl-C in the terminal reaches the whole process
group): ending is the server's decision, told with ``S``, after in-flight batches are done.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback
from array import array
from typing import Any

from aibench.lifetime import die_with_parent
from aibench.sut.transport import (
    BufferPool,
    Frame,
    FrameError,
    recv_frame,
    send_frame,
    send_frames,
)

T_RUN = b"X"
T_STOP = b"S"
T_READY = b"R"
T_TIMES = b"T"
T_OUTPUT = b"O"
T_ERROR = b"E"
TO_WORKER = (T_RUN, T_STOP)
FROM_WORKER = (T_READY, T_TIMES, T_OUTPUT, T_ERROR)
# Environment variables that choose how idle OpenMP threads wait (libgomp, Intel's OpenMP); the server sets
# OMP_WAIT_POLICY=PASSIVE when none is set (aibench.service.instances.worker_environment).
WAIT_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def error_frame(exc: BaseException, ident: int = 0) -> Frame:
    from aibench.errors import AibenchError

    text = str(exc).strip()
    doc = {"type": type(exc).__name__, "message": text.splitlines()[0][:2000] if text else type(exc).__name__,
           "exit_code": exc.exit_code if isinstance(exc, AibenchError) else None,
           "traceback": traceback.format_exc(limit=6)}
    return Frame(T_ERROR, json.dumps(doc).encode(), id=ident)


class Host:
    """The models of one instance, built once and used read-only by every batch."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import torch

        from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype
        from aibench.service.models import SPECS, add_model_dirs, build, resident_inputs

        self.torch = torch
        threads = int(cfg["threads"])
        torch.set_num_threads(threads)
        self.device = resolve_device(cfg["device"])
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dtype = resolve_dtype(cfg.get("dtype", "float32"), self.device)
        self.names: list[str] = list(cfg["models"])
        add_model_dirs(dict(cfg.get("model_dirs") or {}))  # the server's --model-dir models, as it read them
        self.specs = [SPECS[n] for n in self.names]
        self.models: list[Any] = []
        resident_rows = {str(k): int(v) for k, v in dict(cfg.get("resident_rows") or {}).items()}
        self.resident: list[Any] = []  # per model: its resident input rows on the device, or None
        self.out_dtypes = {"float32": torch.float32, "int64": torch.int64}
        with refusing_unsupported(self.device, self.dtype):
            for spec in self.specs:
                model = build(spec.name, self.device, self.dtype, float(cfg.get("null_delay_us", 0)) / 1e6)
                self.models.append(model)
                n = resident_rows.get(spec.name, 0)
                self.resident.append(resident_inputs(spec.name, n).to(self.device, self.dtype) if n else None)
                # One untimed row: an unsupported dtype is refused now, and the first request is not slow.
                self.run(len(self.models) - 1, torch.zeros((1, *spec.input_shape)), warm_up=True)
        self.info = {"pid": os.getpid(), "device": str(self.device), "threads": torch.get_num_threads(),
                     "dtype": str(self.dtype).removeprefix("torch."), "models": self.names,
                     "torch": torch.__version__,
                     "resident_rows": {n: int(r.shape[0]) for n, r in zip(self.names, self.resident, strict=True)
                                       if r is not None},
                     "omp_wait": {k: os.environ[k] for k in WAIT_POLICY_VARS if k in os.environ}}

    def run(self, key: int, x: Any, resident: bool = False, warm_up: bool = False) -> tuple[Any, list[int]]:
        """One batch: (output rows on the host, [t_begin, t_input, t_infer, t_output]): ``time.monotonic_ns``
        when it began, when the input was on the device, when the forward pass had finished (device
        synchronised) and when the output was on the host. CLOCK_MONOTONIC is one clock for every process of
        the machine, so the server places these among its own stamps. ``resident``: ``x`` holds row numbers of
        the model's resident inputs (int32), gathered into the batch on the device (its only input copy).
        ``warm_up``: the untimed row before the instance is ready, through the model's ``warm_up`` where it has
        one (the null model's skips its fixed delay: a stand-in's sleep warms nothing)."""
        torch = self.torch
        clock = time.monotonic_ns
        spec = self.specs[key]
        t0 = clock()
        if resident:
            rows = self.resident[key]
            if rows is None:
                raise ValueError(f"{spec.name} has no resident inputs")
            x = rows.index_select(0, x.to(self.device, torch.long, non_blocking=True))
        else:
            x = x.to(self.device, self.dtype, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = clock()
        model = self.models[key]
        with torch.inference_mode():
            y = getattr(model, "warm_up", model)(x) if warm_up else model(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = clock()
        y = y.to("cpu").to(self.out_dtypes[spec.output_dtype]).reshape(x.shape[0], *spec.output_shape)
        y = y.contiguous()
        t3 = clock()
        return y, [t0, t1, t2, t3]


def serve(sock: socket.socket, host: Host, max_bytes: int) -> None:
    """Answer batches until told to stop or the server is gone. A reader thread receives the next batch
    while this one computes (the server sends a full batch ahead: see :mod:`aibench.service.instances`), so
    the forward pass starts as soon as the previous one ends, without waiting for megabytes to cross."""
    import queue
    import threading

    import torch

    inbox: queue.SimpleQueue[Frame | None] = queue.SimpleQueue()
    # Batches arrive in reused buffers: a fresh multi-megabyte allocation per batch made the allocator hand
    # memory back to the system and fault it in again inside the next forward pass (measured: POS at 1792
    # rows ran far slower on freshly allocated inputs than on reused ones).
    pool = BufferPool(keep=4)

    def read() -> None:
        stream = sock.makefile("rb", buffering=1 << 16)  # a small frame arrives whole in one system call
        while True:
            try:
                frame = recv_frame(stream, max_bytes, TO_WORKER, alloc=pool.take)
            except (EOFError, OSError, FrameError):
                inbox.put(None)  # the server is gone (or spoke nonsense): nothing to answer
                return
            inbox.put(frame)
            if frame.tag == T_STOP:
                return

    threading.Thread(target=read, name="aibench-instance-reader", daemon=True).start()
    while True:
        frame = inbox.get()
        if frame is None or frame.tag == T_STOP:
            return
        try:
            spec = host.specs[frame.key]
            resident = frame.dtype == "int32" and len(frame.shape) == 1
            if not resident and (frame.dtype != "float32" or tuple(frame.shape[1:]) != spec.input_shape):
                raise ValueError(f"batch of {frame.dtype}{list(frame.shape)} for {spec.name}")
            x = torch.frombuffer(frame.payload, dtype=torch.int32 if resident else torch.float32).view(frame.shape)
            y, times = host.run(frame.key, x, resident)
            send_frames(sock, [Frame(T_TIMES, array("q", times), "int64", (4,), frame.key, frame.id),
                               Frame(T_OUTPUT, y.numpy(), spec.output_dtype, tuple(y.shape), frame.key, frame.id)])
        except OSError:
            return  # the server is gone
        except Exception as exc:
            send_frame(sock, error_frame(exc, frame.id))
        finally:
            x = y = None
            pool.give(frame.payload)  # sent: nothing refers to the buffer any more


def main(argv: list[str]) -> int:
    fd, cfg = int(argv[0]), json.loads(argv[1])
    die_with_parent(int(cfg["parent_pid"]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.dup2(2, 1)  # nothing a library prints may reach the server's stdout (its --json lines)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        host = Host(cfg)
    except BaseException as exc:
        try:
            send_frame(sock, error_frame(exc))
        except OSError:
            pass
        return 1
    try:
        send_frame(sock, Frame(T_READY, json.dumps(host.info).encode()))
        serve(sock, host, int(cfg["max_bytes"]))
    except OSError:
        pass  # the server went away mid-reply
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
