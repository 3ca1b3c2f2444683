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

**The load, learned by pinging** (Neurosurgeon §5.2: the server's load is learned by pinging it): a ``G``
frame asks for the *load factor* (1: idle; 3: the network's layers take three times as long here now), which
the device's decision uses as ``1 + K``; :class:`LoadGauge` answers it (``S``) from the served network's own
layers, measured idle before the background load starts: from the queries answered in the last 2 s when
there were some (their layers' time over idle: free), else by timing a slice of the network now.
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import sys
import threading
import time
from typing import Any

ACCEPT_TIMEOUT_S = 120.0

IDLE_PASSES = 5  # passes of the whole network, layer by layer, that time each layer idle (the median)
PING_BUDGET_S = 0.005  # a ping's slice: about this much idle time of the network's own layers (at least 1 layer),
PING_SHARE = 0.05  # ... or this share of the whole network's idle time ...
PING_BUDGET_MAX_S = 0.010  # ... up to this much
PING_MIN_S = 0.04  # a ping runs its slice again and again until this long has passed (once at least) ...
PING_IDLE_S = 0.2  # ... and the idle reference, this long
QUERY_WINDOW_S = 2.0  # the queries answered within this long before a ping estimate the load without one ...
QUERY_RECENT = 5  # ... the last this many of them (the load may have just changed)


def ping_slice(idle: list[float], budget_s: float) -> tuple[int, int]:
    """The layers ``a..b-1`` a ping times: the whole network when its idle time is within ``budget_s``, else
    the contiguous run of layers within the budget with the most idle time (the network's heaviest stretch,
    whose slowdown most of a query's server time shares); the lightest layer alone when no layer fits."""
    n = len(idle)
    if math.fsum(idle) <= budget_s:
        return 0, n
    lightest = min(range(n), key=idle.__getitem__)
    best, best_s = (lightest, lightest + 1), -1.0
    b, total = 0, 0.0
    for a in range(n):
        if b < a:
            b, total = a, 0.0
        while b < n and total + idle[b] <= budget_s:
            total += idle[b]
            b += 1
        if b > a:
            if total > best_s:
                best, best_s = (a, b), total
            total -= idle[a]
    return best


class LoadGauge:
    """The server's load factor: how many times longer than idle the served network's own layers take now (1:
    idle; 3: a query's server part takes three times as long). Two sources, recorded in what it answers:

    * **queries** (passive, free): each query's layers ``key+1..N`` timed as it runs; over the last
      :data:`QUERY_RECENT` queries answered in the last :data:`QUERY_WINDOW_S`, when they hold at least a
      ping's worth of idle work, their seconds over the idle seconds of the same layers (the per-layer idle
      profile taken at start);
    * **ping** (active, otherwise: no query ran here lately, e.g. every layer on the device): a slice of the
      network (:func:`ping_slice`, about :data:`PING_BUDGET_S` of idle time, or :data:`PING_SHARE` of the
      network's up to :data:`PING_BUDGET_MAX_S`: a network of a few big layers, ASR's, then gets one of its
      fully connected layers rather than a lone activation, which read twice the slowdown) run on its cached
      input once untimed, then again and again for :data:`PING_MIN_S` (once at least): its mean time over its
      idle mean.

    The network's own layers, because the background jobs (threads in this process running the network)
    slow a query through intra-op thread contention as well as CPU share, and that depends on the ops. A
    ratio of sums (means), because under oversubscription a short piece of work is slowed by anything from
    nothing to many times, as it happens to get the CPUs or not, and a query is the sum of its pieces: the
    least (or the median) of a few short timings, as the matrix product this replaced was timed, reads low."""

    def __init__(self, layers: list[tuple[str, Any]], x: Any, passes: int = IDLE_PASSES,
                 budget_s: float = PING_BUDGET_S, window: tuple[int, int] | None = None) -> None:
        import statistics

        import torch

        self.layers = layers
        n = len(layers)
        per: list[list[float]] = [[] for _ in range(n)]
        acts: list[Any] = []
        with torch.inference_mode():
            for p in range(passes):
                a = x
                for i, (_, layer) in enumerate(layers):
                    if p == 0:
                        acts.append(a)
                    t0 = time.perf_counter()
                    a = layer(a)
                    per[i].append(time.perf_counter() - t0)
        self.idle = [statistics.median(v) for v in per]
        self.suffix = [math.fsum(self.idle[j:]) for j in range(n + 1)]  # idle seconds of layers j+1..N
        budget = min(PING_BUDGET_MAX_S, max(budget_s, PING_SHARE * self.suffix[0]))
        self.window = window if window is not None else ping_slice(self.idle, budget)
        self.ping_input = acts[self.window[0]]
        del acts
        self.idle_ping_s = self.time_slice(PING_IDLE_S)[0]
        self.recent: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=1024)
        self.lock = threading.Lock()
        self.pings = 0

    def time_slice(self, seconds: float) -> tuple[float, int]:
        """The mean seconds of a run of the ping's slice, run again and again for ``seconds`` (once at least)
        after one untimed run; and how many runs. The untimed run: after the server sat idle (every layer on
        the device), the first run alone sometimes took 10x its idle time with no load at all."""
        import torch

        a, b = self.window
        reps = 0
        with torch.inference_mode():
            y = self.ping_input
            for _, layer in self.layers[a:b]:
                y = layer(y)
            t0 = time.perf_counter()
            while True:
                y = self.ping_input
                for _, layer in self.layers[a:b]:
                    y = layer(y)
                reps += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    return elapsed / reps, reps

    def observe(self, key: int, seconds: float, at: float) -> None:
        """A query ran layers ``key+1..N`` in ``seconds``, ending at ``at`` (the wire clock)."""
        if 0 <= key < len(self.suffix) - 1 and self.suffix[key] > 0:
            with self.lock:
                self.recent.append((at, seconds, self.suffix[key]))

    def from_queries(self, now: float) -> dict[str, Any] | None:
        """The passive estimate over the queries answered in the last window, when they hold at least a ping's
        worth of idle work; else None."""
        with self.lock:
            mine = [(s, idle) for at, s, idle in self.recent if now - at <= QUERY_WINDOW_S][-QUERY_RECENT:]
        work = math.fsum(w for _, w in mine)
        if not mine or work < self.idle_ping_s:
            return None
        return {"factor": math.fsum(s for s, _ in mine) / work, "queries": len(mine), "seconds": math.fsum(
                s for s, _ in mine), "idle_s": work, "window_s": QUERY_WINDOW_S}

    def ping(self) -> dict[str, Any]:
        """The active estimate: the slice timed now against idle."""
        s, reps = self.time_slice(PING_MIN_S)
        self.pings += 1
        a, b = self.window
        return {"factor": s / self.idle_ping_s, "slice_s": s, "idle_slice_s": self.idle_ping_s,
                "layers": [self.layers[a][0], self.layers[b - 1][0]], "runs": reps}

    def estimate(self, now: float) -> dict[str, Any]:
        """The load factor now and what it is made of (``made_of``: ``queries`` or ``ping``)."""
        q = self.from_queries(now)
        if q is not None:
            return {"factor": q["factor"], "made_of": "queries", "queries": q, "ping": None}
        p = self.ping()
        return {"factor": p["factor"], "made_of": "ping", "queries": None, "ping": p}

    def describe(self) -> dict[str, Any]:
        a, b = self.window
        return {"idle_network_s": self.suffix[0], "idle_layer_s": self.idle, "ping_slice": [a, b],
                "ping_layers": [self.layers[a][0], self.layers[b - 1][0]], "idle_slice_s": self.idle_ping_s,
                "ping_budget_s": PING_BUDGET_S, "ping_min_s": PING_MIN_S, "query_window_s": QUERY_WINDOW_S,
                "query_recent": QUERY_RECENT, "active_pings": self.pings}


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
    gauge = LoadGauge(built.layers, x)  # idle: before any background load starts
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
                        a = wire.frame_tensor(frame)
                        ran = wire.clock()
                        y = run_layers(network, a, frame.key)
                        done = wire.clock()
                    gauge.observe(frame.key, done - ran, done)
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
                elif frame.tag == wire.TAG_PING:  # the load, learned: the recent queries', or a slice timed now
                    load = {**gauge.estimate(wire.clock()), "jobs": background.k if background is not None else 0}
                    send_frame(conn, Frame(wire.TAG_STATS, json.dumps(load).encode(), id=frame.id))
                else:  # TAG_QUERY: the counters, unshaped (control, not the link)
                    times = os.times()
                    stats = {"queries": queries, "compute_s": compute_s, "cpu_s": times.user + times.system,
                             "threads": torch.get_num_threads(), "gauge": gauge.describe(),
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
