"""DjiNN's binary protocol, byte for byte as the original service (claritylab/djinn ``service/src/thread.cpp``),
so the paper's Tonic clients work unchanged.

Per connection, the client sends the network's name in a 5-byte field (NUL-padded; compared up to its first
NUL, as the original's ``std::map<std::string, …>::find(char*)`` does: the original clients leave whatever
was in memory after the NUL) and a native (little-endian) int32: the number of float32 values in each
request. Then, until it closes the connection, it sends requests of exactly that many float32 values and
reads, for each, the network's output as float32 values, with no length: the client knows the size from the
network (one class id per image for IMC, DIG and FACE, 1706 scores per frame for ASR, one score per tag and
word for POS, CHK and NER).

Where the original misbehaves, aibench does what the paper says instead, and closes the connection (the
only signal the protocol has): an unknown name (the original leaves the socket open and the client waits
forever), a count <= 0, over the request size limit, or not a multiple of the network's row size (the
original truncates the batch and loses track of where the next request starts). A request is one query of
``count / row size`` rows, batched dynamically with everyone else's.

**Resident inputs** (aibench's extension, only with ``aibench serve --resident-inputs``): a *negative* count
``-R`` (which the original service refuses: it closes the connection) makes each request of the connection
one int32 ``S`` instead of ``4 R`` bytes of floats: it names rows ``S``, ``S+1``, … ``S+R-1`` (modulo the rows
kept) of the network's resident inputs, already on the instances' devices; the answer is the same R rows of
output. Without resident inputs for the network, a negative count closes the connection as before.

Each connection receives straight into its own request buffer (``asyncio.BufferedProtocol``), reserved
from the server's byte budget for the connection's life. While its request is being computed the connection
stops reading (the client's next request waits in the socket), so a connection holds at most one request.
A silent connection is closed after the idle timeout, one whose header or request trickles in after the
body timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from aibench.service.models import resident_row_numbers
from aibench.service.scheduler import Request, ServiceError

if TYPE_CHECKING:
    from aibench.service.server import Service

log = logging.getLogger(__name__)

NAME_BYTES = 5
HEADER_BYTES = NAME_BYTES + 4

# states
HEADER, DATA, BUSY, CLOSED = "header", "data", "busy", "closed"


def parse_name(raw: bytes) -> str | None:
    """The network name in the 5-byte field: up to the first NUL (None if it is not ASCII)."""
    name = bytes(raw[:NAME_BYTES]).split(b"\0", 1)[0]
    try:
        return name.decode("ascii")
    except UnicodeDecodeError:
        return None


class DjinnProtocol(asyncio.BufferedProtocol):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.state = HEADER
        self.header = bytearray(HEADER_BYTES)
        self.view = memoryview(self.header)
        self.got = 0
        self.model = ""
        self.rows = 0
        self.buffer: bytearray | None = None
        self.reserved = 0
        self.timer: asyncio.TimerHandle | None = None
        self.request: Request | None = None
        self.requests = 0
        self.resident = False  # each request is an int32 first row of the network's resident inputs

    # -- connection -----------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.service.djinn_connections.add(self)
        self._arm(self.service.config.idle_timeout_s, "idle")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.state = CLOSED
        self._disarm()
        self.service.djinn_connections.discard(self)
        if self.reserved:
            self.service.budget.release(self.reserved)
            self.reserved = 0
        self.buffer = None

    def eof_received(self) -> bool:
        return False  # the client closed: close our side too (a reply in progress is dropped)

    def close(self, reason: str | None = None) -> None:
        if reason is not None:
            self.service.count_rejected("djinn", reason)
        if self.transport is not None and self.state != CLOSED:
            self.state = CLOSED
            self.transport.close()

    # -- timeouts -------------------------------------------------------------------------------------------
    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        if seconds > 0:
            self.timer = asyncio.get_running_loop().call_later(seconds, self._expired, why)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, why: str) -> None:
        self.timer = None
        if self.state in (HEADER, DATA):
            self.close(f"{why}_timeout")

    # -- receiving ------------------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.got:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == CLOSED:
            return
        first = self.got == 0
        self.got += nbytes
        if first and nbytes:
            self._arm(self.service.config.body_timeout_s, "body")
        if self.got < len(self.view):
            return
        if self.state == HEADER:
            self._on_header()
        elif self.state == DATA:
            self._on_request()

    def _on_header(self) -> None:
        s = self.service
        name = parse_name(self.header[:NAME_BYTES])
        spec = s.specs.get(name) if name is not None else None
        if spec is None:
            log.info("djinn: unknown network %r: closing the connection", bytes(self.header[:NAME_BYTES]))
            self.close("unknown_model")
            return
        (count,) = struct.unpack("<i", self.header[NAME_BYTES:])
        if count < 0 and s.resident_rows.get(spec.name):
            self._on_resident_header(name, -count)
            return
        if count <= 0 or 4 * count > s.config.max_request_bytes or count % spec.row_elements:
            log.info("djinn: %s: bad count %d (row size %d, limit %d bytes): closing the connection", name, count,
                     spec.row_elements, s.config.max_request_bytes)
            self.close("bad_count")
            return
        if s.not_ready_reason() is not None:
            self.close("not_ready")
            return
        rows = count // spec.row_elements
        need = 4 * count + rows * spec.out_row_bytes
        if not s.budget.try_reserve(need):
            log.info("djinn: server busy (byte budget): closing the connection")
            self.close("busy")
            return
        self.reserved = need
        self.model, self.rows = name, rows
        self.buffer = bytearray(4 * count)
        self._expect(DATA, memoryview(self.buffer))

    def _on_resident_header(self, name: str, rows: int) -> None:
        """A connection whose requests name ``rows`` resident rows each (see the module docstring)."""
        s = self.service
        spec = s.specs[name]
        if 4 * rows > s.config.max_request_bytes:
            self.close("bad_count")
            return
        if s.not_ready_reason() is not None:
            self.close("not_ready")
            return
        need = 4 * rows + rows * spec.out_row_bytes
        if not s.budget.try_reserve(need):
            self.close("busy")
            return
        self.reserved = need
        self.model, self.rows, self.resident = name, rows, True
        self.buffer = bytearray(4)
        self._expect(DATA, memoryview(self.buffer))

    def _expect(self, state: str, view: memoryview) -> None:
        self.state, self.view, self.got = state, view, 0
        self._arm(self.service.config.idle_timeout_s, "idle")

    def _on_request(self) -> None:
        s = self.service
        self._disarm()
        assert self.transport is not None
        self.transport.pause_reading()
        self.state = BUSY
        t_received = time.monotonic_ns()
        if self.resident:
            (start,) = struct.unpack("<i", self.buffer)  # type: ignore[arg-type]
            if start < 0:
                self.close("bad_resident")
                return
            rows = resident_row_numbers(start, self.rows, s.resident_rows[self.model])
            req = s.scheduler.submit(self.model, self.rows, rows, t_received, resident=True)
        else:
            req = s.scheduler.submit(self.model, self.rows, self.buffer, t_received)
        self.request = req
        req.future.add_done_callback(self._answered)

    def _answered(self, fut: asyncio.Future[Any]) -> None:
        self.request = None
        if self.state == CLOSED or self.transport is None:
            return
        exc = fut.exception()
        if exc is not None:
            why = exc.status if isinstance(exc, ServiceError) else type(exc).__name__
            log.warning("djinn: request failed (%s): %s; closing the connection", why, exc)
            self.close("failed")
            return
        out = fut.result()
        spec = self.service.specs[self.model]
        if spec.output_dtype != "float32":  # the original's outputs are float32 (Caffe's argmax is a float)
            import numpy as np

            out = np.frombuffer(out, dtype="<i8").astype("<f4").tobytes()
        self.transport.write(out)
        self.requests += 1
        if self.service.draining:
            self.state = CLOSED
            self.transport.close()  # after the reply is flushed
            return
        self._expect(DATA, memoryview(self.buffer))  # type: ignore[arg-type]
        self.transport.resume_reading()

    def drain(self) -> None:
        """The server is stopping: a connection between requests closes now; one whose request is being
        computed closes after its reply (see :meth:`_answered`)."""
        if self.state in (HEADER, DATA):
            self.close()
