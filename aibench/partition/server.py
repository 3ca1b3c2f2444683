"""The server side of a split network: a process of its own (``python -m aibench.partition.server SPEC``),
started by the device side (:mod:`aibench.partition.split`) and dying with it.

It builds the whole network as the device does (:func:`aibench.partition.wire.build`, same resolved
parameters), listens on 127.0.0.1 (a free port), prints one JSON line (its port, pid, threads and the
weights' fingerprint) and takes one connection. For each activation frame it runs the layers after the cut
(the frame's ``key``) and answers with its stamps and the result, through its own token bucket at the link's
rate after half the round trip (the download is shaped like the upload). It ends when the device closes the
connection, on a bad frame (one line on stderr, exit 1), or with its parent.

**Background load** (``server_load`` K > 0): K threads in this process, each running the whole network on
one of its inputs in a loop, as fast as they can: K jobs as heavy as a query sharing the server with it, the
decision's ``(1 + K)`` processor-sharing model made real. They share the process's intra-op threads.
``load_steps`` (a list of K): the load starts at the first and, from the measured run's first query (a ``W``
frame carrying the step's seconds), steps through them on the server's own clock; the device does not
follow the schedule, it learns the load by pinging.

**The load, learned by pinging** (Neurosurgeon §5.2: the server's load is learned by pinging it): before
its ready line, and before the background load starts, the server times a reference computation (a
matrix product on its intra-op threads, :data:`REF_SHAPE`; the least of 7 calls) as its idle time; a
``G`` frame asks it to time the same computation now (the least of 3) and answer ``S`` with the ratio, the
*load factor* (1: idle; 3: each piece of its work takes three times as long), which the device's decision
uses as ``1 + K``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

ACCEPT_TIMEOUT_S = 120.0

REF_SHAPE = (384, 1024, 1024)  # (m, k, n) of the reference product: 0.8 GFLOP, ~10 ms on 2 cores
REF_IDLE_REPS = 7
REF_PING_REPS = 3


def reference_op() -> Any:
    """The reference computation a ping times (the same every time: seeded operands)."""
    import torch

    m, k, n = REF_SHAPE
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    return lambda: torch.mm(a, b)


def time_reference(op: Any, reps: int) -> float:
    """The least seconds of ``reps`` calls of ``op`` (after one warm-up call): the least, because a call that
    others' work preempted once says little about the load, while a loaded server slows every call."""
    import torch

    with torch.inference_mode():
        op()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
    return min(times)



class Background:
    """Background jobs, each a thread running the whole network in a loop until stopped; their number can be
    changed while queries run (:meth:`set`, and a schedule of steps: :meth:`start_schedule`). Counts passes."""

    def __init__(self, k: int, network: Any, x: Any) -> None:
        self.network, self.x = network, x
        self.lock = threading.Lock()
        self.jobs: list[tuple[threading.Thread, threading.Event]] = []
        self.passes: list[int] = []
        self.max_k = 0
        self.t0 = time.monotonic()
        self.schedule_stop = threading.Event()
        self.schedule: threading.Thread | None = None
        self.set(k)

    @property
    def k(self) -> int:
        return len(self.jobs)

    def _loop(self, i: int, stop: threading.Event) -> None:
        import torch

        with torch.inference_mode():
            while not stop.is_set():
                self.network(self.x)
                self.passes[i] += 1

    def set(self, k: int) -> None:
        """Run ``k`` jobs from now on (starting or stopping the difference)."""
        with self.lock:
            while len(self.jobs) < k:
                stop = threading.Event()
                self.passes.append(0)
                t = threading.Thread(target=self._loop, args=(len(self.passes) - 1, stop), daemon=True,
                                     name=f"aibench-split-load-{len(self.passes) - 1}")
                t.start()
                self.jobs.append((t, stop))
            ending = self.jobs[k:]
            del self.jobs[k:]
            self.max_k = max(self.max_k, k)
        for _, stop in ending:
            stop.set()
        for t, _ in ending:
            t.join(timeout=30)

    def start_schedule(self, steps: list[int], step_s: float) -> None:
        """Step through ``steps`` jobs, ``step_s`` seconds each, from now (the last step stays)."""
        self.stop_schedule()
        self.schedule_stop = threading.Event()

        def run(stop: threading.Event = self.schedule_stop) -> None:
            for i, k in enumerate(steps):
                self.set(k)
                if i < len(steps) - 1 and stop.wait(step_s):
                    return

        self.schedule = threading.Thread(target=run, daemon=True, name="aibench-split-load-steps")
        self.schedule.start()

    def stop_schedule(self) -> None:
        self.schedule_stop.set()
        if self.schedule is not None:
            self.schedule.join(timeout=30)

    def stats(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        return {"jobs": self.k, "max_jobs": self.max_k, "passes": sum(self.passes), "seconds": seconds,
                "passes_per_s": sum(self.passes) / seconds if seconds > 0 else None,
                "what": "threads in the server process, each running the whole network on one input in a loop"}

    def stop(self) -> None:
        self.stop_schedule()
        self.set(0)


def serve(spec: dict[str, Any]) -> int:
    import torch

    from aibench.networks import run_layers
    from aibench.partition import wire
    from aibench.partition.link import ShapedSender, TokenBucket
    from aibench.sut.transport import Frame, FrameError, recv_frame, send_frame

    torch.set_num_threads(int(spec["threads"]))
    built = wire.build(spec["net"], spec["params"], spec["dtype"])
    network, n = built.network, len(built.layers)
    t = built.task
    rows = int(spec["params"].get("batch", 1))
    x = t.to_device(t.collate([t.load_sample(i % t.num_samples) for i in range(rows)]), t.device)
    with torch.inference_mode():
        network(x)  # one untimed pass: the first query at any cut does not pay the allocations
    ref = reference_op()
    ref_idle_s = time_reference(ref, REF_IDLE_REPS)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(ACCEPT_TIMEOUT_S)
    ready = {"ready": True, "port": lsock.getsockname()[1], "pid": os.getpid(), "threads": torch.get_num_threads(),
             "layers": built.names, "fingerprint": wire.fingerprint(built)}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        conn, _ = lsock.accept()
    except TimeoutError:
        sys.stderr.write(f"aibench split server: no connection within {ACCEPT_TIMEOUT_S:g} s\n")
        return 1
    finally:
        lsock.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtt_s = float(spec["rtt_ms"]) / 1e3
    sender = ShapedSender(conn, TokenBucket(float(spec["rate_bit_s"])), rtt_s)
    steps = [int(k) for k in spec.get("load_steps") or []]
    background = None
    if int(spec["server_load"]) > 0 or steps:
        background = Background(steps[0] if steps else int(spec["server_load"]), network, x)
    queries = 0
    compute_s = 0.0
    code = 0
    try:
        with conn, conn.makefile("rb") as src:
            while True:
                try:
                    frame = recv_frame(src, int(spec["max_frame"]), tags=wire.TO_SERVER)
                except EOFError:
                    break
                received = wire.clock()
                if frame.tag == wire.TAG_ACT:
                    if not 0 <= frame.key < n:
                        sender.send(Frame(wire.TAG_ERROR, f"no cut {frame.key} to run after: the network has "
                                          f"cuts 0..{n - 1} with layers after them".encode(), id=frame.id))
                        continue
                    with torch.inference_mode():
                        y = run_layers(network, wire.frame_tensor(frame), frame.key)
                    out = wire.tensor_frame(wire.TAG_RESULT, y, ident=frame.id)
                    computed = wire.clock()
                    queries += 1
                    compute_s += computed - received
                    if rtt_s > 0:
                        time.sleep(rtt_s / 2)
                    sender.rtt_s = 0.0  # slept here, so that the stamp below is when pacing starts
                    sending = wire.clock()
                    sender.send_all([wire.stamps_frame(wire.TAG_TIMES, [received, computed, sending], frame.id), out])
                    sender.rtt_s = rtt_s
                elif frame.tag == wire.TAG_PROBE:
                    if rtt_s > 0:
                        time.sleep(rtt_s / 2)
                    sender.rtt_s = 0.0
                    sending = wire.clock()
                    sender.send_all([wire.stamps_frame(wire.TAG_PROBE_ACK, [received, sending], frame.id),
                                     Frame(wire.TAG_PROBE, bytearray(frame.nbytes if frame.key == 0 else 0),
                                           id=frame.id)])
                    sender.rtt_s = rtt_s
                elif frame.tag == wire.TAG_RATE:  # a bandwidth trace replayed: the download follows it
                    sender.bucket = TokenBucket(wire.frame_stamps(frame)[0])
                elif frame.tag == wire.TAG_LOAD_START:  # the measured run starts: the load steps from its first
                    if background is not None and steps:
                        background.start_schedule(steps, wire.frame_stamps(frame)[0])
                elif frame.tag == wire.TAG_PING:  # the load, learned: the reference timed now against idle
                    ref_s = time_reference(ref, REF_PING_REPS)
                    load = {"ref_s": ref_s, "idle_ref_s": ref_idle_s, "factor": ref_s / ref_idle_s,
                            "jobs": background.k if background is not None else 0}
                    send_frame(conn, Frame(wire.TAG_STATS, json.dumps(load).encode(), id=frame.id))
                else:  # TAG_QUERY: the counters, unshaped (control, not the link)
                    times = os.times()
                    stats = {"queries": queries, "compute_s": compute_s, "cpu_s": times.user + times.system,
                             "threads": torch.get_num_threads(), "idle_ref_s": ref_idle_s,
                             "background": background.stats() if background is not None else None}
                    send_frame(conn, Frame(wire.TAG_STATS, json.dumps(stats).encode(), id=frame.id))
    except (FrameError, OSError) as exc:
        sys.stderr.write(f"aibench split server: {exc}\n")
        code = 1
    finally:
        if background is not None:
            background.stop()
    return code


def main(argv: list[str] | None = None) -> None:
    from aibench.lifetime import die_with_parent, quick_exit

    die_with_parent()  # first thing: never outlive the device side, however it ends
    args = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(args[0])
        code = serve(spec)
    except Exception as exc:  # one line for the device side to show; it reads our stderr
        from aibench.errors import AibenchError

        msg = exc.message if isinstance(exc, AibenchError) else f"{type(exc).__name__}: {exc}"
        sys.stderr.write(f"aibench split server: {msg}\n".replace("\n", " ").rstrip() + "\n")
        code = 1
    quick_exit(code)


if __name__ == "__main__":
    main()
