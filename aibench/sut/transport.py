"""One framed transport between aibench's processes: tensors as raw bytes, never pickled.

A *frame* is a fixed 28-byte header, then ``ndim`` int64 dimensions, then the payload::

    magic   2s  b"AB"           a desynchronised or foreign stream is refused at once
    tag     1s                  what the frame is (the protocol above this one decides)
    dtype   B                   element type code (DTYPES); 0 = raw bytes (JSON, text, nothing)
    ndim    B                   dimensions that follow the header (at most MAX_NDIM)
    _       3x
    key     I                   a small number the protocol uses (e.g. which model)
    id      Q                   a request/batch id the reply repeats
    nbytes  Q                   payload length
    dims    ndim × q            the tensor's shape (row-major, little-endian payload)

Everything is little-endian. A reader checks the frame *before* it allocates anything: the magic, a known
tag (when it is given the protocol's tags), a known dtype, ``ndim`` at most MAX_NDIM, every dimension >= 0,
``nbytes`` equal to prod(dims) × itemsize for a tensor (computed without overflow: Python integers) and at
most the reader's ``max_bytes``. A frame that breaks any of these raises :class:`FrameError`; the stream is
then unusable (the caller closes it).

The module is self-contained (standard library only; numpy and torch are optional for the caller): a
blocking side for a worker process (:func:`send_frames`: several frames in one ``sendmsg``, nothing
concatenated; :func:`recv_frame` from a socket or, with fewer system calls, ``sock.makefile("rb")``) and an
asyncio side for an event loop (:func:`write_frames`; :class:`FrameProtocol`, a ``BufferedProtocol`` that
parses frames as bytes arrive, with no task or future per read). A payload is received straight into the
frame's own buffer. On a loaded 2-core VM, system calls and event-loop wake-ups dominate the cost of a small
frame, which is why both sides batch them.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAGIC = b"AB"
HEADER = struct.Struct("<2s1sBB3xIQQ")
HEADER_SIZE = HEADER.size  # 28
MAX_NDIM = 8

# code -> (name, itemsize). Names are numpy's (and torch's, minus the "torch." prefix); bfloat16 travels
# as its 2-byte pattern.
DTYPES: dict[int, tuple[str, int]] = {
    0: ("bytes", 1),
    1: ("float32", 4),
    2: ("float16", 2),
    3: ("bfloat16", 2),
    4: ("float64", 8),
    5: ("int64", 8),
    6: ("int32", 4),
    7: ("int16", 2),
    8: ("int8", 1),
    9: ("uint8", 1),
    10: ("bool", 1),
}
DTYPE_CODES: dict[str, int] = {name: code for code, (name, _size) in DTYPES.items()}


class FrameError(ValueError):
    """A frame that breaks the format or the reader's bounds, or a stream that ended inside a frame."""


@dataclass
class Frame:
    """One frame. ``payload`` is bytes-like (a ``bytearray`` when received: writable, so
    ``torch.frombuffer``/``numpy.frombuffer`` wrap it without a copy)."""

    tag: bytes
    payload: Any = b""
    dtype: str = "bytes"
    shape: tuple[int, ...] = ()
    key: int = 0
    id: int = 0

    @property
    def nbytes(self) -> int:
        return memoryview(self.payload).nbytes


def tensor_nbytes(dtype: str, shape: Sequence[int]) -> int:
    """prod(shape) × itemsize, exactly (Python integers never overflow)."""
    if dtype not in DTYPE_CODES:
        raise FrameError(f"unknown dtype {dtype!r}")
    return math.prod(int(d) for d in shape) * DTYPES[DTYPE_CODES[dtype]][1]


def encode_header(frame: Frame) -> bytes:
    """The header and dimensions of ``frame`` (the payload follows them on the wire)."""
    if len(frame.tag) != 1:
        raise FrameError("a tag is one byte")
    code = DTYPE_CODES.get(frame.dtype)
    if code is None:
        raise FrameError(f"unknown dtype {frame.dtype!r}")
    shape = tuple(int(d) for d in frame.shape)
    if len(shape) > MAX_NDIM or any(d < 0 for d in shape):
        raise FrameError(f"bad shape {shape}")
    nbytes = frame.nbytes
    if code and nbytes != tensor_nbytes(frame.dtype, shape):
        raise FrameError(f"payload of {nbytes} bytes for {frame.dtype}{list(shape)}")
    return HEADER.pack(MAGIC, frame.tag, code, len(shape), frame.key, frame.id, nbytes) + struct.pack(
        f"<{len(shape)}q", *shape)


@dataclass
class _Head:
    tag: bytes
    dtype: str
    ndim: int
    key: int
    id: int
    nbytes: int


def _parse_header(raw: bytes | bytearray | memoryview, tags: Iterable[bytes] | None, max_bytes: int) -> _Head:
    magic, tag, code, ndim, key, ident, nbytes = HEADER.unpack(raw)
    if magic != MAGIC:
        raise FrameError("not an aibench frame (bad magic)")
    if tags is not None and tag not in tags:
        raise FrameError(f"unexpected frame tag {tag!r}")
    if code not in DTYPES:
        raise FrameError(f"unknown dtype code {code}")
    if ndim > MAX_NDIM:
        raise FrameError(f"{ndim} dimensions (at most {MAX_NDIM})")
    if nbytes > max_bytes:
        raise FrameError(f"a frame of {nbytes} bytes is over the limit of {max_bytes}")
    return _Head(tag, DTYPES[code][0], ndim, key, ident, nbytes)


def _check_dims(head: _Head, raw: bytes | bytearray | memoryview) -> tuple[int, ...]:
    shape = struct.unpack(f"<{head.ndim}q", raw) if head.ndim else ()
    if any(d < 0 for d in shape):
        raise FrameError(f"negative dimension in {list(shape)}")
    if head.dtype != "bytes" and tensor_nbytes(head.dtype, shape) != head.nbytes:
        raise FrameError(f"payload of {head.nbytes} bytes for {head.dtype}{list(shape)}")
    return tuple(shape)


# -- blocking side (a worker process) ---------------------------------------------------------------------

def _fill(src: Any, view: memoryview, what: str) -> None:
    """Fill ``view`` from a socket (``recv_into``) or a buffered binary stream (``readinto``)."""
    read = src.readinto if hasattr(src, "readinto") else src.recv_into
    got, n = 0, len(view)
    while got < n:
        k = read(view[got:])
        if not k:
            if got == 0 and what == "header":
                raise EOFError("the other end closed the stream")
            raise FrameError(f"the stream ended inside a frame's {what}")
        got += k


def frame_buffers(frames: Sequence[Frame]) -> list[Any]:
    """The buffers that carry ``frames`` on the wire, in order (headers and payloads, nothing copied)."""
    out: list[Any] = []
    for f in frames:
        out.append(encode_header(f))
        if f.nbytes:
            out.append(memoryview(f.payload).cast("B"))
    return out


def send_frames(sock: socket.socket, frames: Sequence[Frame]) -> None:
    """Send frames on a blocking socket with one ``sendmsg`` where they fit (no concatenation copy)."""
    bufs = [memoryview(b).cast("B") for b in frame_buffers(frames)]
    while bufs:
        sent = sock.sendmsg(bufs)
        while bufs and sent >= len(bufs[0]):
            sent -= len(bufs[0])
            bufs.pop(0)
        if bufs and sent:
            bufs[0] = bufs[0][sent:]


def send_frame(sock: socket.socket, frame: Frame) -> None:
    send_frames(sock, [frame])


def recv_frame(src: Any, max_bytes: int, tags: Iterable[bytes] | None = None,
               alloc: Callable[[int], Any] | None = None) -> Frame:
    """Receive one frame from a blocking socket, or (fewer system calls) from ``sock.makefile("rb")``.
    EOFError when the stream ends cleanly before a frame. ``alloc(nbytes)`` gives the payload's buffer (a
    writable bytes-like object of exactly ``nbytes``), e.g. from a pool of reused buffers: a fresh large
    allocation per frame costs page faults, here and in whatever allocates after it is freed."""
    raw = bytearray(HEADER_SIZE)
    _fill(src, memoryview(raw), "header")
    head = _parse_header(raw, tags, max_bytes)
    dims = bytearray(8 * head.ndim)
    if head.ndim:
        _fill(src, memoryview(dims), "dimensions")
    shape = _check_dims(head, dims)
    payload = alloc(head.nbytes) if alloc is not None and head.nbytes else bytearray(head.nbytes)
    if head.nbytes:
        _fill(src, memoryview(payload).cast("B"), "payload")
    return Frame(head.tag, payload, head.dtype, shape, head.key, head.id)


class BufferPool:
    """Reusable receive buffers for :func:`recv_frame`'s ``alloc`` (thread-safe): ``take(n)`` gives a
    memoryview of exactly ``n`` bytes over a free buffer at least that large (or a new one), ``give`` returns
    it. Keep at most ``keep`` free buffers."""

    def __init__(self, keep: int = 4) -> None:
        import threading

        self.keep = keep
        self.free: list[bytearray] = []
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> memoryview:
        with self.lock:
            fits = [b for b in self.free if len(b) >= nbytes]
            if fits:
                buf = min(fits, key=len)
                self.free.remove(buf)
            else:
                buf = bytearray(nbytes)
        return memoryview(buf)[:nbytes]

    def give(self, view: Any) -> None:
        buf = view.obj if isinstance(view, memoryview) else view
        if isinstance(buf, bytearray):
            with self.lock:
                if len(self.free) < self.keep:
                    self.free.append(buf)


# -- asyncio side (an event loop) ---------------------------------------------------------------------------

SMALL_WRITE = 1 << 16


def write_frames(transport: Any, frames: Sequence[Frame]) -> None:
    """Write frames on an asyncio transport: small ones joined into one write (one system call), a large
    payload written on its own (the transport sends what the socket takes and keeps only the rest)."""
    small: list[Any] = []
    for buf in frame_buffers(frames):
        if memoryview(buf).nbytes >= SMALL_WRITE:
            if small:
                transport.write(b"".join(small))
                small = []
            transport.write(buf)
        else:
            small.append(buf)
    if small:
        transport.write(b"".join(small) if len(small) > 1 else small[0])


class FrameProtocol(asyncio.BufferedProtocol):
    """Receives frames on an event loop without a task or a future per read: the socket stays registered,
    small frames arrive many per system call through a staging buffer, and a large payload is received
    straight into its own buffer. Every frame is checked as :func:`recv_frame` checks it; a bad one closes
    the stream. ``on_frame(frame)`` for each frame; ``on_lost(exc)`` once, when the stream ends (``exc``
    None for a clean close, the :class:`FrameError` for a bad frame)."""

    def __init__(self, on_frame: Any, on_lost: Any, max_bytes: int, tags: Iterable[bytes] | None = None,
                 staging_bytes: int = 1 << 16) -> None:
        self.on_frame, self.on_lost = on_frame, on_lost
        self.max_bytes = max_bytes
        self.tags = tuple(tags) if tags is not None else None
        self.buf = bytearray(max(staging_bytes, HEADER_SIZE + 8 * MAX_NDIM))
        self.start = self.end = 0
        self.payload: bytearray | None = None  # a large payload being received in place
        self.pgot = 0
        self.pending: tuple[_Head, tuple[int, ...]] | None = None
        self.transport: Any = None
        self.error: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.payload is not None:
            return memoryview(self.payload)[self.pgot:]
        if self.end == len(self.buf):  # compact: move the partial header to the front
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.payload is not None:
            self.pgot += nbytes
            if self.pgot == len(self.payload):
                assert self.pending is not None
                head, shape = self.pending
                payload, self.payload, self.pending = self.payload, None, None
                self.on_frame(Frame(head.tag, payload, head.dtype, shape, head.key, head.id))
            return
        self.end += nbytes
        try:
            self._parse()
        except FrameError as exc:
            self.error = exc
            self.transport.close()

    def _parse(self) -> None:
        buf = self.buf
        while self.payload is None:
            avail = self.end - self.start
            if avail < HEADER_SIZE:
                break
            head = _parse_header(memoryview(buf)[self.start:self.start + HEADER_SIZE], self.tags, self.max_bytes)
            body = self.start + HEADER_SIZE + 8 * head.ndim
            if self.end < body:
                break
            shape = _check_dims(head, memoryview(buf)[self.start + HEADER_SIZE:body])
            have = self.end - body
            if have >= head.nbytes:
                payload = bytearray(memoryview(buf)[body:body + head.nbytes])
                self.start = body + head.nbytes
                self.on_frame(Frame(head.tag, payload, head.dtype, shape, head.key, head.id))
            else:  # the rest of this payload goes straight into its own buffer
                payload = bytearray(head.nbytes)
                payload[:have] = memoryview(buf)[body:self.end]
                self.payload, self.pgot, self.pending = payload, have, (head, shape)
                self.start = self.end = 0
        if self.start == self.end:
            self.start = self.end = 0

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.error is None and (self.payload is not None or self.end > self.start):
            self.error = FrameError("the stream ended inside a frame")
        self.on_lost(self.error or exc)


def socket_pair(buffer_bytes: int = 4 << 20) -> tuple[socket.socket, socket.socket]:
    """A connected pair of stream sockets with large buffers (fewer system calls per megabyte)."""
    a, b = socket.socketpair()
    for s in (a, b):
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
            except OSError:
                pass
    return a, b
