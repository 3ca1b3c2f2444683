"""A shaped link between two local processes: a token bucket in the sender plus a round-trip delay, over
TCP on loopback, carrying bounded binary frames (:mod:`aibench.sut.transport`: tensors as raw bytes,
never pickled; a reader refuses a truncated, foreign or oversized frame before allocating it).

Why in the application: ``tc netem`` is absent from these kernels and shaping the host's own loopback is
not ours to do; ``SO_MAX_PACING_RATE`` is loose (9.8 Mbit/s for 8 asked). A token bucket in the sender is
exact when a transfer is timed until the receiver acknowledges it (socket buffers hide when sending really
finished). The delay is added in the application too: half the round trip before each frame leaves.

**Token bucket.** Tokens (bytes) accrue at the rate up to ``burst_bytes``; a chunk leaves when the bucket
holds its size, else the sender sleeps until it will. Refilling from the clock, not from the sleeps, credits
a late wake-up to the next chunk, so sleep overshoot does not add up over a transfer. A chunk is about 2 ms
of the rate (1 KiB to 1 MiB): at 1 Gbit/s 16 KiB chunks would need 7,600 sleeps a second, more than a
Python thread wakes on a loaded VM. Each frame starts with an empty bucket: it is paced from its first byte
(a full bucket would send its first ``burst_bytes`` at once, which on a short transfer is a large error).
Header bytes count: the rate is of bytes on the wire.

:func:`measure_rate` checks a configured rate against a transfer timed to the receiver's acknowledgement;
:func:`raw_rate` measures what loopback carries unshaped (the ceiling a shaped rate can reach).
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aibench.errors import UnavailableError, UsageError
from aibench.sut.transport import Frame, encode_header, recv_frame

TAG_DATA, TAG_ACK = b"D", b"K"
MIN_CHUNK, MAX_CHUNK = 1024, 1 << 20
CREDIT_SECONDS = 0.05
CHUNK_SECONDS = 0.002  # a chunk is ~2 ms of the rate: fine-grained pacing, but few enough sleeps per second
DEFAULT_MAX_FRAME = 256 * 1024 * 1024


class TokenBucket:
    """Bytes at ``rate_bit_s``, bursts of at most ``burst_bytes``. ``clock`` and ``sleep`` are swappable."""

    def __init__(self, rate_bit_s: float, burst_bytes: int | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (math.isfinite(rate_bit_s) and rate_bit_s > 0):
            raise UsageError(f"a link's rate must be above 0, not {rate_bit_s}")
        self.rate = rate_bit_s / 8  # bytes per second
        self.chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, self.rate * CHUNK_SECONDS)))
        # 50 ms of credit: a wake-up late by that much (a loaded VM) is made up by the next chunks, not lost
        self.burst = burst_bytes or max(2 * self.chunk, int(self.rate * CREDIT_SECONDS))
        self.clock, self.sleep = clock, sleep
        self.tokens = 0.0
        self.last = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def drain(self) -> None:
        """Empty the bucket: what follows is paced from its first byte, as on a link that was busy."""
        self.tokens = 0.0
        self.last = self.clock()

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes (at most the burst) may leave, and take them."""
        if n > self.burst:
            raise ValueError(f"a chunk of {n} bytes is over the burst of {self.burst}")
        self._refill()
        while self.tokens < n:
            self.sleep((n - self.tokens) / self.rate)
            self._refill()
        self.tokens -= n


@dataclass
class ShapedSender:
    """Sends frames on a connected socket through a token bucket, each after half the round-trip time.
    Each frame starts with an empty bucket (no credit saved while the link was idle), so a frame of ``b``
    bytes on the wire takes ``8·b / rate`` after its delay: the link model the decision prices."""

    sock: socket.socket
    bucket: TokenBucket | None
    rtt_s: float = 0.0
    paced_at: float = 0.0  # CLOCK_MONOTONIC when the last send's first byte was paced (after its delay)

    def send(self, frame: Frame) -> int:
        """Send one frame; the bytes put on the wire (header included)."""
        return self.send_all([frame])

    def send_all(self, frames: list[Frame]) -> int:
        """Send frames back to back as one transfer: one delay, then paced from an empty bucket. The bytes put
        on the wire (headers included)."""
        if self.rtt_s > 0:
            time.sleep(self.rtt_s / 2)
        if self.bucket is not None:
            self.bucket.drain()
        self.paced_at = time.clock_gettime(time.CLOCK_MONOTONIC)
        wire = 0
        for frame in frames:
            for buf in (encode_header(frame), memoryview(frame.payload).cast("B") if frame.nbytes else b""):
                view = memoryview(buf).cast("B")
                step = self.bucket.chunk if self.bucket is not None else len(view) or 1
                for i in range(0, len(view), step):
                    part = view[i:i + step]
                    if self.bucket is not None:
                        self.bucket.take(len(part))
                    self.sock.sendall(part)
                    wire += len(part)
        return wire


def connect(host: str, port: int, timeout_s: float = 5.0) -> socket.socket:
    """A TCP connection to a peer; UnavailableError (exit 3) when it cannot be reached."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise UnavailableError(f"cannot reach the peer at {host}:{port} ({exc.strerror or exc})") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextlib.contextmanager
def ack_server(max_bytes: int = DEFAULT_MAX_FRAME, rtt_s: float = 0.0) -> Iterator[tuple[str, int, list[Any]]]:
    """A loopback peer (a thread) that receives data frames and acknowledges each (after half the round
    trip) with an empty frame carrying the same id. Yields (host, port, errors it met)."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(0.05)
    errors: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while True:  # a connection already made is accepted even when the caller is done
            try:
                conn, _ = lsock.accept()
                break
            except TimeoutError:
                if stop.is_set():
                    return
            except OSError:
                return
        conn.settimeout(None)
        with conn, conn.makefile("rb") as src:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    frame = recv_frame(src, max_bytes, tags=(TAG_DATA,))
                except EOFError:
                    return
                except Exception as exc:  # a bad frame ends the stream; the caller sees why
                    errors.append(exc)
                    return
                if rtt_s > 0:
                    time.sleep(rtt_s / 2)
                conn.sendall(encode_header(Frame(TAG_ACK, b"", id=frame.id)))

    thread = threading.Thread(target=serve, daemon=True, name="aibench-link-ack")
    thread.start()
    try:
        yield "127.0.0.1", lsock.getsockname()[1], errors
    finally:
        stop.set()
        thread.join(timeout=10)
        lsock.close()


@dataclass(frozen=True)
class RateCheck:
    """A configured rate against the measured one: bytes on the wire over the time to the acknowledgement
    (less the configured round trip)."""

    configured_bit_s: float
    measured_bit_s: float
    wire_bytes: int
    seconds: float

    @property
    def error(self) -> float:
        return self.measured_bit_s / self.configured_bit_s - 1


def _timed_transfer(rate_bit_s: float | None, nbytes: int, rtt_s: float = 0.0) -> tuple[int, float]:
    with ack_server(rtt_s=rtt_s) as (host, port, errors):
        sock = connect(host, port)
        with sock, sock.makefile("rb") as src:
            bucket = TokenBucket(rate_bit_s) if rate_bit_s is not None else None
            sender = ShapedSender(sock, bucket, rtt_s)
            payload = bytearray(nbytes)
            t0 = time.perf_counter()
            wire = sender.send(Frame(TAG_DATA, payload, id=1))
            ack = recv_frame(src, 1024, tags=(TAG_ACK,))
            dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        assert ack.id == 1
    return wire, dt


def measure_rate(rate_bit_s: float, seconds: float = 0.3, rtt_s: float = 0.0) -> RateCheck:
    """Send about ``seconds`` worth of data at ``rate_bit_s`` and measure the rate it got."""
    nbytes = max(4096, int(rate_bit_s / 8 * seconds))
    wire, dt = _timed_transfer(rate_bit_s, nbytes, rtt_s)
    shaped = max(dt - rtt_s, 1e-9)
    return RateCheck(rate_bit_s, 8 * wire / shaped, wire, shaped)


def raw_rate(nbytes: int = 64 * 1024 * 1024) -> float:
    """Bits per second loopback carries unshaped in this process (the ceiling of a shaped rate)."""
    wire, dt = _timed_transfer(None, nbytes)
    return 8 * wire / dt
