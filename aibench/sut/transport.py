"""One framed transport between aibench's processes: tensors as raw bytes, never pickled.

A *frame* is a fixed 32-byte header, then ``ndim`` int64 dimensions, then the payload::

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
blocking side for a worker process on a socket (:func:`send_frame`, :func:`recv_frame`) and an asyncio side
for an event loop (:func:`async_send_frame`, :func:`async_recv_frame`, with ``loop.sock_*``, which send a
large payload straight from its buffer without copying it into the transport's). Sending writes the header
and the payload with one ``sendmsg`` (no concatenation copy); receiving reads straight into the frame's own
buffer.

It also holds :func:`die_with_parent`, which a child process calls first so that it dies with its parent,
even when the parent is killed with SIGKILL.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAGIC = b"AB"
HEADER = struct.Struct("<2s1sBB3xIQQ")
HEADER_SIZE = HEADER.size  # 32
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

def _recv_exactly(sock: socket.socket, buf: bytearray | memoryview, what: str) -> None:
    view = memoryview(buf).cast("B")
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            if got == 0 and what == "header":
                raise EOFError("the other end closed the stream")
            raise FrameError(f"the stream ended inside a frame's {what}")
        got += k


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Send one frame on a blocking socket: header and payload in one ``sendmsg`` where they fit."""
    head = encode_header(frame)
    payload = memoryview(frame.payload).cast("B")
    sent = sock.sendmsg([head, payload]) if payload.nbytes else sock.send(head)
    total = len(head) + payload.nbytes
    while sent < total:  # the rest, without copying it
        if sent < len(head):
            sent += sock.send(head[sent:])
        else:
            sent += sock.send(payload[sent - len(head):])


def recv_frame(sock: socket.socket, max_bytes: int, tags: Iterable[bytes] | None = None) -> Frame:
    """Receive one frame from a blocking socket. EOFError when the stream ends cleanly before a frame."""
    raw = bytearray(HEADER_SIZE)
    _recv_exactly(sock, raw, "header")
    head = _parse_header(raw, tags, max_bytes)
    dims = bytearray(8 * head.ndim)
    if head.ndim:
        _recv_exactly(sock, dims, "dimensions")
    shape = _check_dims(head, dims)
    payload = bytearray(head.nbytes)
    if head.nbytes:
        _recv_exactly(sock, payload, "payload")
    return Frame(head.tag, payload, head.dtype, shape, head.key, head.id)


# -- asyncio side (an event loop) ---------------------------------------------------------------------------

async def _async_recv_exactly(loop: Any, sock: socket.socket, buf: bytearray, what: str) -> None:
    view = memoryview(buf)
    got, n = 0, len(view)
    while got < n:
        k = await loop.sock_recv_into(sock, view[got:])
        if k == 0:
            if got == 0 and what == "header":
                raise EOFError("the other end closed the stream")
            raise FrameError(f"the stream ended inside a frame's {what}")
        got += k


async def async_send_frame(loop: Any, sock: socket.socket, frame: Frame) -> None:
    """Send one frame on a non-blocking socket from an event loop (the payload is not copied)."""
    head = encode_header(frame)
    await loop.sock_sendall(sock, head)
    if frame.nbytes:
        await loop.sock_sendall(sock, memoryview(frame.payload).cast("B"))


async def async_recv_frame(loop: Any, sock: socket.socket, max_bytes: int,
                           tags: Iterable[bytes] | None = None) -> Frame:
    """Receive one frame on a non-blocking socket from an event loop."""
    raw = bytearray(HEADER_SIZE)
    await _async_recv_exactly(loop, sock, raw, "header")
    head = _parse_header(raw, tags, max_bytes)
    dims = bytearray(8 * head.ndim)
    if head.ndim:
        await _async_recv_exactly(loop, sock, dims, "dimensions")
    shape = _check_dims(head, dims)
    payload = bytearray(head.nbytes)
    if head.nbytes:
        await _async_recv_exactly(loop, sock, payload, "payload")
    return Frame(head.tag, payload, head.dtype, shape, head.key, head.id)


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


# -- children die with their parent ------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> bool:
    """In a child process, first thing: ask the kernel for SIGKILL when the parent dies, however it dies
    (SIGKILL included, when no cleanup of the parent's can run). ``parent_pid`` is the parent the child
    must have: if it is already gone (the child was orphaned before it got here), the child exits at once.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing and returns False, and a child must
    rely on its pipe closing (every aibench child also exits when its pipe to the parent reaches EOF). The
    kernel sends the signal when the *thread* that started the child exits, so start children from a
    thread that lives as long as the parent (the main thread)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return False
    if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:  # pragma: no cover
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(128 + signal.SIGKILL)
    return True
