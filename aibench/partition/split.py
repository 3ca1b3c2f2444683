"""The split, run for real (Neurosurgeon): the device side in this process, the server side in another,
over TCP on loopback through a shaped link. ``aibench run scenario neurosurgeon`` (docs/partition.md).

:func:`split_run` builds the network here (layers ``1..j`` run here), starts the server process
(:mod:`aibench.partition.server`, dying with this one), checks that both built the same weights, connects,
verifies the link's rate with a probe, and yields :class:`SplitSystem`, a
:class:`~aibench.sut.SystemUnderTest` the load generator drives. On leaving (however the run ends: a
failure, Ctrl-C) it records the run's figures and stops the server.

Per query (one batch the system computes), on one clock for both processes (CLOCK_MONOTONIC):

* ``device_compute``: collation and layers ``1..j`` here;
* ``upload``: from the activation's first byte offered to the link (half the round trip is slept first)
  until the server has received all of it;
* ``server_compute``: the server's layers ``j+1..N`` (and reading the frame into a tensor);
* ``download``: from the end of the server's compute until the result is here (half the round trip, then
  the stamps and the result, shaped at the same rate).

The four parts tile the query from the start of its collation to its result. Cut N computes everything here
and sends nothing (the other parts are 0); cut 0 sends the input.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aibench.errors import AibenchError, ResultIOError, UnavailableError, UsageError
from aibench.partition import wire
from aibench.partition.decide import PAPER_UPLOAD_S, Link, custom_link, named_link
from aibench.partition.server import PING_IDLE_S, PING_MIN_S, QUERY_RECENT, QUERY_WINDOW_S
from aibench.results.stats import percentile
from aibench.sut import Capabilities
from aibench.sut.batcher import BatchingSystem
from aibench.sut.transport import HEADER_SIZE, Frame, FrameError, recv_frame, send_frame
from aibench.workloads.scenario.neurosurgeon import DEFAULT_LOAD_STEP_S, DEFAULT_NETWORK

STAGES = ("device_compute", "upload", "server_compute", "download")
SERVER_MODULE = "aibench.partition.server"
READY_TIMEOUT_S = 300.0  # building VGG-16 on a loaded 2-core machine takes a while
RATE_TOLERANCE = 0.05
IN_RUN_MIN_S = 0.02  # frames whose ideal transfer is at least this long measure the rate in the run
STATS_TIMEOUT_S = 5.0
ADAPT_PROBE_EVERY_S = 1.0  # adapting: the rate is probed when no query measured it for this long
ADAPT_PROBE_S = 0.02  # ... with about this much data (upload only)
ADAPT_MIN_TRANSFER_S = 0.005  # a query's upload measures the rate when its paced time is at least this
LOAD_PING_EVERY_S = 2.0  # the server's load stepped during a run: it is pinged at most this often
LOAD_HOW = ("pinged before the run: how many times longer than idle the network's own layers take at the server "
            "now (idle: a per-layer profile and a slice timed before any background load). made_of 'queries': "
            f"the server seconds of the last {QUERY_RECENT} queries answered in the last "
            f"{QUERY_WINDOW_S:g} s over the idle seconds of the same layers; 'ping': no query ran there "
            "lately, so the slice of layers in ping.layers was run once untimed, then again and again for "
            f"{PING_MIN_S * 1e3:g} ms: its mean over its idle mean ({PING_IDLE_S:g} s of runs). The "
            "decision prices the server at factor = 1 + K")
PART_NOTES = {
    "device_compute": "collation and layers 1..j in this process, per query",
    "upload": "the activation from its first byte offered to the shaped link (after half the round trip) until "
              "the server received all of it (one clock for both processes: CLOCK_MONOTONIC)",
    "server_compute": "layers j+1..N in the server process (its own clock reads), per query",
    "download": "half the round trip, then the server's stamps and the result through its shaped link, until "
                "received here",
}


class SplitServerError(RuntimeError):
    """The server process ended or broke the protocol during a run (the run fails: exit 1, recorded)."""


def link_of(network: str, rtt_ms: float) -> Link:
    """``3g``/``lte``/``wifi`` (derived from the paper's upload times) or a rate in Mbit/s."""
    if network in PAPER_UPLOAD_S:
        return named_link(network, rtt_ms)
    try:
        rate = float(network)
    except ValueError:
        raise UsageError(f"--network must be 3g, lte, wifi or a rate in Mbit/s, not {network!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError(f"--network: a link's rate must be above 0 Mbit/s, not {network}")
    return custom_link(rate, rtt_ms)


# -- the server process ------------------------------------------------------------------------------------

class ServerProcess:
    """The server side, started from the main thread (it dies with this process: ``die_with_parent``)."""

    def __init__(self, spec: dict[str, Any], module: str | None = None, timeout_s: float = READY_TIMEOUT_S,
                 on_start: Any = None) -> None:
        from aibench.lifetime import PARENT_ENV

        module = module or SERVER_MODULE
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", module, json.dumps(spec)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        except OSError as exc:
            self.stderr.close()
            raise UnavailableError(f"the split's server could not be started: {exc.strerror or exc}") from None
        self.pid = self.proc.pid
        try:
            if on_start is not None:  # before it builds anything or times its idle reference
                on_start(self.pid)
            self.ready = self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError(f"the split's server (pid {self.pid}) was not ready within {timeout_s:g} s")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise UnavailableError(f"the split's server could not start: {self.why()}")
                line += chunk
        try:
            ready = json.loads(line)
        except ValueError:
            raise UnavailableError(f"the split's server said {line[:200]!r} instead of its ready line") from None
        return ready

    def why(self, exc: BaseException | None = None) -> str:
        """What is known of the server's end: its exit status and the last line it wrote on stderr."""
        code = self.proc.poll()
        if code is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout=1.0)
        status = "still running" if code is None else (f"killed by signal {-code}" if code < 0 else f"exit {code}")
        try:
            self.stderr.seek(0)
            lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        last = lines[-1].strip()[:300] if lines else "nothing on stderr"
        seen = f"; {type(exc).__name__}: {exc}" if exc is not None else ""
        return f"pid {self.pid}, {status}: {last}{seen}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """End the server (SIGTERM, then SIGKILL); its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(OSError):
            self.stderr.close()
        return self.proc.returncode


def probe_bytes(rate_bit_s: float, seconds: float) -> int:
    """The size of a link check of about ``seconds`` at the rate (4 KiB to 64 MiB)."""
    return int(min(64 << 20, max(4096, rate_bit_s / 8 * seconds)))


# -- the system under test ---------------------------------------------------------------------------------

def _wire_bytes(frame: Frame) -> int:
    return HEADER_SIZE + 8 * len(frame.shape) + frame.nbytes


class SplitSystem(BatchingSystem):
    """Layers ``1..j`` here, the rest in the server, one query at a time over the shaped link (batched by the
    one batching worker, :class:`~aibench.sut.batcher.BatchingSystem`)."""

    def __init__(self, built: wire.Built, j: int, sock: Any, sender: Any, server: ServerProcess | None,
                 max_frame: int, threads: int, name: str, trace: Any = None,
                 adapt: dict[str, Any] | None = None, load_steps: dict[str, Any] | None = None) -> None:
        import torch

        stages = (*STAGES, *(("link_probe",) if adapt is not None else ()),
                  *(("load_ping",) if load_steps is not None else ()))
        super().__init__(name, built.task.num_samples, Capabilities(stages=stages, reports_bytes=True, remote=True,
                                                                     inline_ok=True))
        self.trace, self.adapt = trace, adapt
        # the server's load stepped during the run: {"steps", "step_s", "decide": per-layer predictions with
        # --cut auto, else None}; the device learns the load by pinging (self.load: the last answer)
        self.load_steps = load_steps
        self.load: dict[str, Any] = {"k": 0.0, "factor": 1.0, "jobs": 0}
        self._t_load: float | None = None
        self._pinged_at = -math.inf
        self.load_timeline: list[list[float]] = []
        self.ping_log: list[dict[str, Any]] = []  # the pings during the measured run (stepped load)
        self._t_start: float | None = None
        self._estimate: float | None = None  # the measured upload rate the cut is chosen from (adapting)
        self._measured_at = -math.inf
        self.timeline: list[list[float]] = []
        self.built, self.j, self.n = built, j, len(built.layers)
        self.sock, self.sender, self.server = sock, sender, server
        self.src = sock.makefile("rb") if sock is not None else None
        self.max_frame = max_frame
        self.threads = threads
        self._torch = torch
        self._staged: dict[int, Any] = {}
        self._qid = 0
        self._transfers: dict[str, list[tuple[int, float, float]]] = {"up": [], "down": []}
        # False while an exchange is under way: one cut short (Ctrl-C in the middle of a frame, a failure) leaves
        # the stream out of step, and nothing more is asked on it
        self.in_step = True

    # -- the contract's rest ---------------------------------------------------------------------------
    def worker_init(self) -> None:
        self._torch.set_num_threads(self.threads)  # OpenMP's count is per thread

    def describe(self) -> dict[str, Any]:
        t = self.built.task
        return {"num_samples": t.num_samples, "stage": "dnn", "data": t.data, "flops_per_sample": t.flops_per_sample,
                "flops_note": t.flops_note, "device": f"cpu (layers 1..{self.j} here, the rest in the server)"}

    def stage(self, indices: Sequence[int]) -> None:
        for i in indices:
            if i not in self._staged:
                self._staged[i] = self.built.task.load_sample(i)

    def unstage(self, indices: Sequence[int]) -> None:
        for i in indices:
            self._staged.pop(i, None)

    def reset_report(self) -> None:
        super().reset_report()
        self.bytes_out = 0
        if hasattr(self, "_transfers"):
            self._transfers = {"up": [], "down": []}
            self._t_start = None  # a trace replays from its start with the measured run
            self.timeline = []
            self._t_load = None  # so does the server's load schedule, with a ping at its first query
            self._pinged_at = -math.inf
            self.load_timeline = []
            self.ping_log = []

    # -- computing -------------------------------------------------------------------------------------
    def execute(self, indices: Sequence[int]) -> Sequence[Any] | None:
        probe_s = ping_s = 0.0
        if self.trace is not None or self.adapt is not None:
            probe_s = self._follow()
        if self.load_steps is not None:
            ping_s = self._follow_load()
        t0 = wire.clock()
        t = self.built.task
        x = t.to_device(t.collate([self._staged[i] for i in indices]), t.device)
        _, parts = self.compute(x, t0)
        st = self.stage_times
        for name in STAGES:
            st[name].append(parts[name])
        j_used, rate = self.j, self.sender.bucket.rate * 8 if self.sender is not None else 0.0
        if self.adapt is not None:
            st["link_probe"].append(probe_s)
            self._rechoose(parts)
        if (self.trace is not None or self.adapt is not None) and len(self.timeline) < 10_000:
            self.timeline.append([t0 - (self._t_start or t0), rate, self._estimate or 0.0, j_used])
        if self.load_steps is not None:
            st["load_ping"].append(ping_s)
            if len(self.load_timeline) < 10_000:
                self.load_timeline.append([t0 - (self._t_load or t0), self.load["jobs"], self.load["factor"], j_used,
                                           math.fsum(parts[name] for name in STAGES)])
        self.bytes_in = (self.bytes_in or 0) + parts["bytes_up"]
        self.bytes_out = (self.bytes_out or 0) + parts["bytes_down"]
        return None

    # -- a bandwidth trace, and the cut re-chosen from the measured rate (Neurosurgeon's Fig. 14) ----------
    def set_rate(self, rate_bit_s: float) -> None:
        """The link's rate from now on, both ways (the server's bucket is told over the control frame)."""
        from aibench.partition.link import TokenBucket

        self.sender.bucket = TokenBucket(rate_bit_s)
        self.in_step = False
        try:
            send_frame(self.sock, wire.stamps_frame(wire.TAG_RATE, [rate_bit_s]))
        except OSError as exc:
            raise self._broken(exc) from None
        self.in_step = True

    def _follow(self) -> float:
        """Before a query: the trace's rate for now; when adapting and the cut sends too little to measure the
        rate (cut N sends nothing), a short probe once a second. Returns the probe's seconds."""
        now = wire.clock()
        if self._t_start is None:
            self._t_start = now
        if self.trace is not None:
            rate = self.trace.rate_at(now - self._t_start)
            if rate != self.sender.bucket.rate * 8:
                self.set_rate(rate)
        if self.adapt is None or now - self._measured_at < ADAPT_PROBE_EVERY_S:
            return 0.0
        est = self._estimate or self.sender.bucket.rate * 8
        self._qid += 1
        self.in_step = False
        try:
            up = self.sender.send(Frame(wire.TAG_PROBE, bytearray(probe_bytes(est, ADAPT_PROBE_S)), key=1,
                                        id=self._qid))
            paced = self.sender.paced_at
            ack = self._recv()
            self._recv()
        except (OSError, EOFError, FrameError) as exc:
            raise self._broken(exc) from None
        self.in_step = True
        received, _ = wire.frame_stamps(ack)
        self._estimate, self._measured_at = 8 * up / (received - paced), received
        return wire.clock() - now

    def _follow_load(self) -> float:
        """Before a query: at the measured run's first, the server's load schedule starts; at most once a
        two seconds the server is pinged for its load and, with --cut auto, the cut is chosen again for it (the
        decision's per-layer predictions priced at the link's current rate). Returns the seconds spent."""
        now = wire.clock()
        steps = self.load_steps
        assert steps is not None
        if self._t_load is None:
            self._t_load = now
            self.in_step = False
            try:
                send_frame(self.sock, wire.stamps_frame(wire.TAG_LOAD_START, [float(steps["step_s"])]))
            except OSError as exc:
                raise self._broken(exc) from None
            self.in_step = True
        if now - self._pinged_at < LOAD_PING_EVERY_S:
            return 0.0
        try:
            self.load = self.ping_load()
        except UnavailableError as exc:
            raise SplitServerError(exc.message) from None
        self._pinged_at = wire.clock()
        if len(self.ping_log) < 10_000:
            self.ping_log.append({"t_s": now - self._t_load, "jobs": self.load["jobs"], "factor": self.load["factor"],
                                  "made_of": self.load.get("made_of"), "seconds": self._pinged_at - now})
        if steps.get("decide") is not None:
            self.j = self._choose(self._estimate or self.sender.bucket.rate * 8, steps["decide"])
        return wire.clock() - now

    def _choose(self, rate_bit_s: float, per: dict[str, Any]) -> int:
        """The decision's cut for a link at ``rate_bit_s`` (both ways) and the server's last pinged load."""
        from aibench.partition import decide

        mbit = rate_bit_s / 1e6
        link = decide.Link("measured", mbit, mbit, per["rtt_ms"], "measured during the run")
        cuts = decide.price_cuts(self.built.names, per["device_s"], per["server_s"], per["bytes"], link,
                                 self.load["k"])
        return decide.choose(cuts, "latency").j

    def _rechoose(self, parts: dict[str, Any]) -> None:
        """After a query: the upload's own rate when it was long enough to measure, then the decision's cut
        for that rate (the per-layer predictions priced again) for the next query."""
        up = self._transfers["up"]
        if parts["bytes_up"] and up and up[-1][1] >= ADAPT_MIN_TRANSFER_S:  # (bytes, paced seconds, rate)
            self._estimate, self._measured_at = 8 * up[-1][0] / up[-1][1], wire.clock()
        a = self.adapt
        assert a is not None
        if self._estimate is not None:
            self.j = self._choose(self._estimate, a)

    def _recv(self) -> Frame:
        frame = recv_frame(self.src, self.max_frame, tags=wire.TO_DEVICE)
        if frame.tag == wire.TAG_ERROR:
            text = bytes(frame.payload).decode(errors="replace")
            raise SplitServerError(f"the split's server refused a query: {text}")
        return frame

    def _broken(self, exc: BaseException) -> SplitServerError:
        why = self.server.why(exc) if self.server is not None else f"{type(exc).__name__}: {exc}"
        return SplitServerError(f"the split's server is gone or broke the link ({why})")

    def compute(self, x: Any, t0: float | None = None) -> tuple[Any, dict[str, Any]]:
        """One query: ``x`` through the split network; (the result, its parts in seconds and bytes)."""
        torch = self._torch
        t0 = wire.clock() if t0 is None else t0
        with torch.inference_mode():
            from aibench.networks import run_layers

            a = run_layers(self.built.network, x, 0, self.j)
        t1 = wire.clock()
        if self.j == self.n:
            return a, {"device_compute": t1 - t0, "upload": 0.0, "server_compute": 0.0, "download": 0.0,
                       "bytes_up": 0, "bytes_down": 0}
        self._qid += 1
        frame = wire.tensor_frame(wire.TAG_ACT, a, key=self.j, ident=self._qid)
        self.in_step = False
        try:
            up = self.sender.send(frame)
            paced = self.sender.paced_at
            times = self._recv()
            result = self._recv()
        except (OSError, EOFError, FrameError) as exc:
            raise self._broken(exc) from None
        t2 = wire.clock()
        self.in_step = True
        if times.tag != wire.TAG_TIMES or result.tag != wire.TAG_RESULT or times.id != self._qid != result.id:
            raise SplitServerError(f"the split's server answered {times.tag!r}/{result.tag!r} for query {self._qid}")
        received, computed, sending = wire.frame_stamps(times)
        down = _wire_bytes(times) + _wire_bytes(result)
        rate = self.sender.bucket.rate * 8  # both ways (a trace changes both buckets together)
        self._transfers["up"].append((up, received - paced, rate))
        self._transfers["down"].append((down, t2 - sending, rate))
        return wire.frame_tensor(result), {"device_compute": t1 - t0, "upload": received - t1,
                                           "server_compute": computed - received, "download": t2 - computed,
                                           "bytes_up": up, "bytes_down": down}

    # -- the link and the server's counters (outside the measured window) ----------------------------------
    def ping_load(self) -> dict[str, Any]:
        """The server's load, learned by pinging it (unshaped control): how many times longer than idle the
        network's own layers take there now (:class:`aibench.partition.server.LoadGauge`: its recent
        queries' server compute when there were some, else a slice of the network timed now; ``made_of``
        says which); ``factor`` 1 is idle, ``k`` = factor - 1 (at least 0) is what the decision's ``(1 + K)``
        takes."""
        self._qid += 1
        self.in_step = False
        try:
            send_frame(self.sock, Frame(wire.TAG_PING, b"", id=self._qid))
            frame = recv_frame(self.src, wire.CONTROL_MAX, tags=(wire.TAG_STATS,))
            load = json.loads(bytes(frame.payload))
        except (OSError, EOFError, FrameError, ValueError) as exc:
            raise UnavailableError(f"the split's server did not answer a load ping: {self._broken(exc)}") from None
        self.in_step = True
        return {**load, "k": max(0.0, float(load["factor"]) - 1.0)}

    def probe(self, seconds: float) -> dict[str, Any]:
        """About ``seconds`` of data each way through the shaped link; the rates measured to the receiver's
        receipt of the last byte (its clock), the configured round trip left out."""
        rate = self.sender.bucket.rate * 8
        nbytes = probe_bytes(rate, seconds)
        self._qid += 1
        self.in_step = False
        try:
            up = self.sender.send(Frame(wire.TAG_PROBE, bytearray(nbytes), id=self._qid))
            paced = self.sender.paced_at
            ack = self._recv()
            back = self._recv()
        except (OSError, EOFError, FrameError) as exc:
            raise UnavailableError(f"the link to the split's server broke while checking it: "
                                   f"{self._broken(exc)}") from None
        t2 = wire.clock()
        self.in_step = True
        received, sending = wire.frame_stamps(ack)
        down = _wire_bytes(ack) + _wire_bytes(back)
        up_rate, down_rate = 8 * up / (received - paced), 8 * down / (t2 - sending)
        return {"configured_bit_s": rate, "bytes_each_way": nbytes, "up_bit_s": up_rate, "down_bit_s": down_rate,
                "up_error": up_rate / rate - 1, "down_error": down_rate / rate - 1,
                "within_5pct": max(abs(up_rate / rate - 1), abs(down_rate / rate - 1)) <= RATE_TOLERANCE}

    def in_run_rates(self) -> dict[str, Any]:
        """The link's rate over the run's own transfers: wire bytes over the paced time (first byte offered
        to the receipt of the last), over the transfers long enough to measure (ideally at least 20 ms);
        ``error``: the time the configured rate(s) would take over the time taken, less 1."""
        out: dict[str, Any] = {"min_ideal_s": IN_RUN_MIN_S}
        for way, xs in self._transfers.items():
            long = [(b, s, r) for b, s, r in xs if 8 * b / r >= IN_RUN_MIN_S]
            secs = math.fsum(s for _b, s, _r in long)
            if long and secs > 0:
                ideal = math.fsum(8 * b / r for b, _s, r in long)  # the time at the configured rate(s)
                out[way] = {"bit_s": 8 * sum(b for b, _s, _r in long) / secs, "error": ideal / secs - 1,
                            "transfers": len(long), "of": len(xs)}
            else:
                out[way] = {"bit_s": None, "transfers": 0, "of": len(xs),
                            "unavailable": "no transfer of the run was long enough to measure the rate (each one "
                                           f"under {IN_RUN_MIN_S * 1e3:g} ms at the configured rate)" if xs else
                                           "nothing crossed the link"}
        return out

    def server_stats(self) -> dict[str, Any] | None:
        """The server's counters, when the stream is in step (not after an exchange cut short) and the server
        answers within seconds."""
        if self.sock is None or self.server is None or not self.server.alive() or not self.in_step:
            return None
        self.in_step = False
        try:
            self.sock.settimeout(STATS_TIMEOUT_S)
            send_frame(self.sock, Frame(wire.TAG_QUERY, b""))
            frame = recv_frame(self.src, wire.CONTROL_MAX, tags=(wire.TAG_STATS,))
            self.sock.settimeout(None)
            self.in_step = True
            return json.loads(bytes(frame.payload))
        except (OSError, EOFError, FrameError, ValueError):
            return None

    def close(self) -> None:
        for f in (self.src, self.sock):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def parse_load_steps(text: str) -> list[int]:
    """``--server-load-steps 0,2,4,8``: background jobs per step (0..64); [] when not given."""
    if not text.strip():
        return []
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--server-load-steps must be background job counts like 0,2,4,8, not {text!r}") from None
    if not all(0 <= k <= 64 for k in steps):
        raise UsageError(f"--server-load-steps: each step is 0 to 64 background jobs, not {text!r}")
    return steps


def load_step_summary(rows: Sequence[Sequence[float]], steps: Sequence[int], step_s: float,
                      names: Sequence[str], pings: Sequence[dict[str, Any]] = (),
                      price: Callable[[int, float], float] | None = None) -> dict[str, Any]:
    """Per step of the server's load schedule (by the query's time since the measured run's start): its jobs,
    the load factor the device learned (median over its queries of the last ping's), the queries at each cut,
    the median latency of the query's parts, and what the step's pings were made of (recent queries or a
    slice of the network timed). ``rows``: [t, jobs pinged, factor pinged, j, latency s]; ``pings``: the
    device's ping log (``t_s``, ``jobs``, ``factor``, ``made_of``, ``seconds``); ``price(j, factor)``: the
    decision's predicted latency of cut j at a load factor (with the platform profiles), beside each step's."""
    per: list[dict[str, Any]] = []
    for i, k in enumerate(steps):
        lo = i * step_s
        hi = (i + 1) * step_s if i < len(steps) - 1 else math.inf
        mine = [r for r in rows if lo <= r[0] < hi]
        if not mine:
            continue
        cuts: dict[str, int] = {}
        for r in mine:
            name = "input" if int(r[3]) == 0 else names[int(r[3]) - 1]
            cuts[name] = cuts.get(name, 0) + 1
        top = max(cuts, key=lambda c: cuts[c])
        made_of: dict[str, int] = {}
        for p in pings:
            if lo <= p["t_s"] < hi:
                made_of[str(p.get("made_of"))] = made_of.get(str(p.get("made_of")), 0) + 1
        factor = statistics.median(r[2] for r in mine)
        j = names.index(top) + 1 if top != "input" else 0
        latencies = sorted(r[4] for r in mine)
        per.append({"step": i, "jobs": k, "queries": len(mine), "factor_pinged": factor,
                    "jobs_pinged": sorted({int(r[1]) for r in mine}), "queries_by_cut": cuts, "cut": top, "j": j,
                    "latency_p50_s": statistics.median(latencies),
                    "latency_p90_s": percentile(latencies, 90),
                    "predicted_s": price(j, factor) if price is not None else None, "pings_made_of": made_of})
    return {"per_step": per, "columns": ["t_s", "jobs_pinged", "factor_pinged", "j", "latency_s"],
            "queries": [list(r) for r in rows], "pings": list(pings),
            "note": "per query (at most 10000): its time since the measured run's start, the jobs and load factor "
                    "of the last ping answered before it, the cut it ran at and its latency (the four parts)"}


# -- the decision, when the platform profiles are there ----------------------------------------------------

def predicted(built: wire.Built, x: Any, link: Link, server_load: float, device_profile: str,
              server_profile: str) -> dict[str, Any]:
    """Every cut priced from the platform profiles' predictions and the choice (``partition choose``'s)."""
    from aibench.partition import decide
    from aibench.partition.models import predict, read_profile
    from aibench.partition.profile import Network, describe_network

    dev, srv = read_profile(device_profile), read_profile(server_profile)
    shape = describe_network(Network(built.bench, built.params, built.layers, x, built.network))
    layers = shape["layers"]
    sizes = [shape["input_bytes"], *[la["out_bytes"] for la in layers]]
    cuts = decide.price_cuts(built.names, [predict(dev, la) for la in layers], [predict(srv, la) for la in layers],
                             sizes, link, server_load)
    chosen = decide.choose(cuts, "latency")
    return {"profiles": {"device": device_profile, "server": server_profile},
            "sides": {"device": dev.get("side"), "server": srv.get("side")},
            "cuts": [c.as_dict() for c in cuts], "chosen": {"j": chosen.j, "layer": chosen.layer},
            "per_layer": {"device_s": [predict(dev, la) for la in layers],
                          "server_s": [predict(srv, la) for la in layers], "bytes": sizes}}


def _decide(built: wire.Built, x: Any, link: Link, params: dict[str, Any],
            server_load: float | None = None) -> tuple[int, dict[str, Any] | None]:
    """The cut (j) and the decision's table (None when the profiles are absent and the cut was given), for the
    server load ``server_load`` (the K of ``(1 + K)``; default: the jobs given, ``--server-load``)."""
    from aibench.partition.decide import cut_index

    load = float(params["server_load"]) if server_load is None else server_load
    paths = (params["device_profile"], params["server_profile"])
    missing = [p for p in paths if not Path(p).is_file()]
    if params["cut"] == "auto":
        if missing:
            fits = " and ".join(f"`aibench partition fit --side {side}`" for side, p in zip(("device", "server"), paths,
                                                                                           strict=True) if p in missing)
            raise ResultIOError(f"--cut auto needs the platform profiles {paths[0]} and {paths[1]} "
                                f"({', '.join(missing)} missing): run {fits} first, or give --cut LAYER")
        decision = predicted(built, x, link, load, *paths)
        return decision["chosen"]["j"], {**decision, "chosen_by": "auto", "server_load": load}
    j = cut_index(built.names, params["cut"])
    if missing:
        return j, None
    try:
        return j, {**predicted(built, x, link, load, *paths), "chosen_by": "given", "server_load": load}
    except AibenchError as exc:  # the cut was given: a damaged profile costs only the prediction beside it
        return j, {"unavailable": exc.message, "chosen_by": "given"}


def profile_warnings(decision: dict[str, Any] | None, params: dict[str, Any], quota: float | None,
                     server_threads: int) -> list[str]:
    """Where the platform profiles priced were measured on another side or configuration than the run's."""
    from aibench.partition.models import side_mismatch

    sides = (decision or {}).get("sides") or {}
    return [*side_mismatch(f"--device-profile {params['device_profile']}", sides.get("device"), "device",
                           params["device_threads"], quota, params["dtype"]),
            *side_mismatch(f"--server-profile {params['server_profile']}", sides.get("server"), "server",
                           server_threads, None, params["dtype"])]


# -- the run ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def split_run(params: dict[str, Any], result: Any) -> Iterator[tuple[SplitSystem, int]]:
    """``aibench run scenario neurosurgeon``'s system: see the module's text. Yields (system, batch)."""
    import torch

    from aibench.partition.link import ShapedSender, TokenBucket, connect
    from aibench.partition.sides import cpu_priority, cpu_quota, quota_interface, usable_cpus
    from aibench.partition.trace import read_trace

    quota = params.get("device_cpu_quota") or None
    if quota is not None:  # refused before anything starts where no quota can be set
        if not 0.01 <= quota <= 1024:
            raise UsageError(f"--device-cpu-quota must be between 0.01 and 1024 cores, not {quota}")
        found = quota_interface()
        if isinstance(found, str):
            raise UnavailableError(f"--device-cpu-quota: {found}")
    if params.get("server_priority"):
        found = quota_interface()
        if isinstance(found, str):
            raise UnavailableError(f"--server-priority: {found}")

    link = link_of(params["network"], params["rtt_ms"])
    trace = read_trace(params["trace"]) if params["trace"] else None
    if trace is not None:  # the trace is the link: its rate at 0 s is what the first decision prices
        if params["network"] != DEFAULT_NETWORK:
            raise UsageError(f"give --network or --trace, not both: the trace sets the link's rate (--network "
                             f"{params['network']} would be ignored)")
        first = trace.rate_at(0.0) / 1e6
        link = Link(f"trace {trace.name}", first, first, link.rtt_ms, f"the trace's rate, both ways ({first:g} "
                    "Mbit/s at 0 s)" + (f"; round trip {link.rtt_ms:g} ms given" if link.rtt_ms else ""))
    steps = parse_load_steps(params.get("server_load_steps") or "")
    if steps and params["server_load"]:
        raise UsageError("give --server-load K (a constant load) or --server-load-steps K1,K2,... (stepped), not both")
    if not steps and params["load_step_s"] != DEFAULT_LOAD_STEP_S:
        raise UsageError("--load-step-s is the length of each --server-load-steps step: give the steps too")
    given = {"batch": params["batch"], "num_samples": params["num_samples"], "data": params["data"]}
    before = torch.get_num_threads()
    torch.set_num_threads(params["device_threads"])
    server: ServerProcess | None = None
    priority = contextlib.ExitStack()
    prio_info: dict[str, Any] = {}

    def prioritise(pid: int) -> None:
        prio_info.update(priority.enter_context(cpu_priority(pid)))

    try:
        built = wire.build(params["net"], given, params["dtype"])
        t = built.task
        x = t.to_device(t.collate([t.load_sample(i % t.num_samples) for i in range(params["batch"])]), t.device)
        j, decision = _decide(built, x, link, params)
        server_threads = params["server_threads"] or usable_cpus()
        warnings = profile_warnings(decision, params, quota, server_threads)
        for line in warnings:
            print(f"aibench: warning: {line}", file=sys.stderr, flush=True)
        sizes = [x.numel() * x.element_size()]
        with torch.inference_mode():
            a = x
            for _, layer in built.layers:  # one untimed pass: the largest frame either way bounds the readers
                a = layer(a)
                sizes.append(a.numel() * a.element_size())
        rate_bit_s = trace.rate_at(0.0) if trace is not None else link.up_mbit * 1e6
        top = max(trace.rates_bit_s) if trace is not None else rate_bit_s
        # a probe measured at up to 1.5x the fastest rate (a rate estimate may overshoot) still fits
        max_frame = max(2 * max(sizes), probe_bytes(1.5 * top, max(params["link_check_s"], ADAPT_PROBE_S))) + (1 << 20)
        spec = {"net": built.bench.id, "params": built.params, "dtype": params["dtype"], "threads": server_threads,
                "rate_bit_s": rate_bit_s, "rtt_ms": link.rtt_ms, "server_load": params["server_load"],
                "load_steps": steps, "max_frame": max_frame}
        server = ServerProcess(spec, on_start=prioritise if params.get("server_priority") else None)
        if not wire.same_fingerprint(server.ready.get("fingerprint", []), wire.fingerprint(built)):
            raise UnavailableError(f"the split's server built other weights for {built.bench.id} than this process "
                                   "(fingerprints differ): both sides must hold the same network")
        sock = connect("127.0.0.1", int(server.ready["port"]))
        sender = ShapedSender(sock, TokenBucket(rate_bit_s), link.rtt_ms / 1e3)
        adapt = None
        if trace is not None and params["cut"] == "auto":
            assert decision is not None
            adapt = {**decision["per_layer"], "rtt_ms": link.rtt_ms, "server_load": params["server_load"]}
        stepping = {"steps": steps, "step_s": params["load_step_s"], "decide": None} if steps else None
        system = SplitSystem(built, j, sock, sender, server, max_frame, params["device_threads"],
                             f"scenario/neurosurgeon:{params['net']}@{j}", trace=trace, adapt=adapt,
                             load_steps=stepping)
        try:
            checks = [system.probe(params["link_check_s"])]
            if not checks[0]["within_5pct"]:  # a loaded machine can stall one transfer: once more
                checks.append(system.probe(params["link_check_s"]))
            load = system.ping_load()  # the server's load, learned: what the decision prices
            system.load = load
            if decision is not None and "cuts" in decision:
                j, decision = _decide(built, x, link, params, load["k"])
                system.j = j
                system.name = f"scenario/neurosurgeon:{params['net']}@{j}"
                if adapt is not None:
                    adapt = {**decision["per_layer"], "rtt_ms": link.rtt_ms}
                    system.adapt = adapt
                if stepping is not None and params["cut"] == "auto":
                    stepping["decide"] = {**decision["per_layer"], "rtt_ms": link.rtt_ms}
            info = {
                "cut": {"j": j, "layer": "input" if j == 0 else built.names[j - 1], "layers": len(built.layers),
                        "names": built.names, "chosen_by": "auto" if params["cut"] == "auto" else "given"},
                "link": {**link.as_dict(), "rate_bit_s": rate_bit_s, "shaping": "token bucket in each sender "
                         "(device: upload, server: download) plus half the round trip slept before each transfer"},
                "link_check": {**checks[-1], "attempts": checks, "seconds": params["link_check_s"]},
                "decision": decision,
                "profile_warnings": warnings,
                "device": {"threads": params["device_threads"],
                           "dtype": params["dtype"], "pid": os.getpid(), "cpu_quota": quota},
                "server": {"pid": server.pid, "threads": server.ready.get("threads"), "port": server.ready["port"],
                           "priority": prio_info or None,
                           "load": {"jobs": steps[0] if steps else params["server_load"],
                                    "what": "threads in the server process, each running the whole network on one "
                                    "input in a loop (K jobs as heavy as a query sharing the server)"
                                    + ("; stepped during the run (load_steps)" if steps else "")
                                    if params["server_load"] or steps else "none (idle)",
                                    "measured": load, "measured_how": LOAD_HOW}},
                "trace": ({**trace.describe(), "adapting": adapt is not None, "note": "the link's rate (both "
                           "ways) follows the trace from the measured run's first query, looping; "
                           + ("the cut is re-chosen after each query from the measured upload rate (a query's own "
                              "upload when its paced time is 5 ms or more, else a 20 ms probe at most once a "
                              "second, timed as parts.stage.link_probe)" if adapt is not None else
                              "the cut stays fixed (--cut auto re-chooses it)")}
                          if trace is not None else None),
                "load_steps": ({"steps": steps, "step_s": params["load_step_s"], "adapting": params["cut"] == "auto",
                                "note": "the server's background jobs step through these from the measured run's "
                                        "first query, on the server's clock (the last step stays); the device "
                                        "pings the server at most every 2 s (parts.stage.load_ping)"
                                        + (" and chooses the cut again for the load it learned" if params["cut"] ==
                                           "auto" else "; the cut stays fixed (--cut auto re-chooses it)")}
                               if steps else None),
                "max_frame_bytes": max_frame,
                "clock": "CLOCK_MONOTONIC, one clock for both processes",
            }
            result.method["neurosurgeon"] = info
            result.context["network"] = {"benchmark": built.bench.id, "params": built.params}
            if not checks[-1]["within_5pct"]:
                print(f"aibench: warning: the shaped link measured {checks[-1]['up_bit_s'] / 1e6:.3f} Mbit/s up and "
                      f"{checks[-1]['down_bit_s'] / 1e6:.3f} down for {rate_bit_s / 1e6:.3f} configured (more than "
                      "5% off; recorded in method.neurosurgeon.link_check)", file=sys.stderr, flush=True)
            try:
                # the device side capped (this process only: the server was started before, outside the group)
                with cpu_quota(quota) as applied_quota:
                    info["device"]["quota"] = applied_quota
                    yield system, params["batch"]
            finally:
                record(system, result, info)
        finally:
            system.close()
    finally:
        if server is not None:
            code = server.stop()
            if isinstance(result.method.get("neurosurgeon"), dict):
                result.method["neurosurgeon"]["server_exit"] = {"code": code, "alive_after_stop": server.alive()}
        priority.close()  # the group goes once the server has ended
        torch.set_num_threads(before)


def _pricer(names: Sequence[str], info: dict[str, Any]) -> Callable[[int, float], float] | None:
    """The decision's predicted latency of a cut at a load factor on the run's configured link (None without
    the platform profiles)."""
    from aibench.partition import decide

    per = (info.get("decision") or {}).get("per_layer")
    if not per:
        return None
    link = Link(info["link"]["name"], info["link"]["up_mbit"], info["link"]["down_mbit"], info["link"]["rtt_ms"])
    return lambda j, factor: decide.price_cuts(names, per["device_s"], per["server_s"], per["bytes"], link,
                                               max(0.0, factor - 1.0))[j].total_s


def run_summary(system: SplitSystem, info: dict[str, Any]) -> str:
    """One line for the run's output: the cut that ran (every cut, with its queries, when it moved) and the
    link."""
    names = system.built.names
    cut = info["cut"]
    moved = (info.get("adaptation") or {}).get("queries_by_cut")
    steps = (info.get("load_steps") or {}).get("per_step")
    if steps:
        where = "by server load step: " + ", ".join(f"K={st['jobs']} mostly {st['cut']} ({st['queries']} queries)"
                                                    for st in steps)
    elif moved and len(moved) > 1:
        where = "queries by cut: " + ", ".join(f"{name} {n}" for name, n in moved.items())
    else:
        j = system.j
        where = f"cut after {'input' if j == 0 else names[j - 1]} (j={j} of {len(names)}, {cut['chosen_by']})"
    link = info["link"]
    return f"split: {where}; link {link['name']} at {link['rate_bit_s'] / 1e6:.3g} Mbit/s up"


def record(system: SplitSystem, result: Any, info: dict[str, Any]) -> None:
    """The split's own figures into ``result`` (after the run, however it ended)."""
    from aibench.results.parts import part_entry
    from aibench.results.schema import metric

    rep = system.report()
    parts = {name: p for name, values in rep.stages.items()
             if (p := part_entry(values, "s", "query", PART_NOTES.get(name))) is not None}
    if parts:
        result.parts.setdefault("stage", {}).update(parts)
    queries = rep.batches
    if queries:
        result.metrics["bytes_up_per_query"] = metric((rep.bytes_in or 0) / queries, "B", "lower")
        result.metrics["bytes_down_per_query"] = metric((rep.bytes_out or 0) / queries, "B", "lower")
        ups, downs = rep.stages.get("upload", []), rep.stages.get("download", [])
        transfer = [u + d for u, d in zip(ups, downs, strict=True)]
        result.metrics["transfer_median_s"] = metric(statistics.median(transfer), "s", "lower")
    else:
        for name, unit in (("bytes_up_per_query", "B"), ("bytes_down_per_query", "B"), ("transfer_median_s", "s")):
            result.metrics[name] = metric(None, unit, "lower", unavailable="no query was answered")
    check = info["link_check"]
    result.metrics["link_rate_measured_bit_s"] = metric(check["up_bit_s"], "bit/s", "higher",
                                                        configured_bit_s=check["configured_bit_s"])
    result.metrics["link_rate_error"] = metric(check["up_error"], "fraction", "lower",
                                               within_5pct=check["within_5pct"])
    in_run = system.in_run_rates()
    info["link_in_run"] = in_run
    up = in_run["up"]
    if up.get("bit_s") is not None:
        result.metrics["link_rate_in_run_bit_s"] = metric(up["bit_s"], "bit/s", "higher", error=up["error"])
    else:
        result.metrics["link_rate_in_run_bit_s"] = metric(None, "bit/s", "higher", unavailable=up["unavailable"])
    measured_load = ((info.get("server") or {}).get("load") or {}).get("measured") or {}
    result.metrics["server_load_factor"] = metric(measured_load.get("factor"), "x", "lower",
                                                  None if measured_load.get("factor") is not None else
                                                  "the server's load was not measured",
                                                  jobs=(info["server"].get("load") or {}).get("jobs"))
    decision = info.get("decision") or {}
    if decision.get("cuts"):
        result.metrics["predicted_latency_s"] = metric(decision["cuts"][system.j]["total_s"], "s", "lower")
    else:
        result.metrics["predicted_latency_s"] = metric(
            None, "s", "lower", unavailable=decision.get("unavailable") or "no platform profiles (aibench partition "
            "fit --side device / --side server)")
    if system.timeline:
        cuts: dict[str, int] = {}
        for _t, _r, _e, j in system.timeline:
            name = "input" if j == 0 else system.built.names[int(j) - 1]
            cuts[name] = cuts.get(name, 0) + 1
        info["adaptation"] = {"queries_by_cut": cuts, "columns": ["t_s", "trace_bit_s", "measured_bit_s", "j"],
                              "queries": system.timeline,
                              "note": "per query (at most 10000): its time since the measured run's start, the "
                                      "trace's rate then, the measured rate the cut was chosen from (0: none yet) "
                                      "and the cut it ran at"}
    if system.load_timeline and info.get("load_steps"):
        info["load_steps"].update(load_step_summary(system.load_timeline, info["load_steps"]["steps"],
                                                    info["load_steps"]["step_s"], system.built.names,
                                                    system.ping_log, _pricer(system.built.names, info)))
    result.method["summary"] = run_summary(system, info)
    stats = system.server_stats()
    if stats is not None:
        info["server"]["counters"] = stats
    else:
        info["server"]["counters"] = {"unavailable": "the server is gone, or the last exchange was cut short "
                                                     "(the stream is out of step), or it did not answer in "
                                                     f"{STATS_TIMEOUT_S:g} s"}
