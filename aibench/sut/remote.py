"""An inference endpoint as the system under test: the component's client side runs here, its network there.

``aibench run component imc --remote http://127.0.0.1:8000`` (the Open Inference Protocol, KServe v2) or
``--remote djinn://127.0.0.1:9000`` (DjiNN's binary protocol): samples, collation, the application's pre-
and post-processing run in this process, exactly as in-process; where the in-process system would call the
network, :class:`RemoteSystem` sends the network's input tensor to the endpoint and waits for its output
(DjiNN's Tonic clients, §3 of the paper). Many requests are in flight at once: an asyncio event loop in one
thread, with an aiohttp client session (a connection pool) or a pool of DjiNN connections.

What a request carries is one query (or, Offline, a slice of at most ``max_batch`` samples of it): the
server batches requests itself (``capabilities.batches_itself``), by its own rule (``aibench serve
--max-batch --max-queue-delay-us``). The client never merges queries into one request.

Open Inference Protocol: tensors travel in Triton's binary tensor extension when the server lists
``binary_tensor_data`` in ``GET /v2``'s extensions, as JSON otherwise (MLServer has no binary support).
The server's statistics extension (``GET /v2/models/{m}/stats``) is read before and after each test when
the server has it (the batch sizes it executed); otherwise the report says it is unavailable and why.
Where the server answers each request with its own timing (``aibench serve``: ``queue_ns``,
``compute_*_ns`` in the response's parameters), each request's round trip splits into server compute and
network + queue. DjiNN's protocol carries nothing but tensors: there the round trip stays whole.

Stages timed per request (``report().stages``, one value per request): ``client_pre`` (collate and the
application's pre-processing), ``network_queue`` (round trip minus the server's compute; with no server
timing, ``round_trip``: the whole request), ``server_compute`` (the server's own figure, when it gives
one), ``client_post`` (post-processing). ``bytes_in``/``bytes_out``: request and response bodies (DjiNN:
everything on the wire; HTTP: bodies, not the HTTP header lines).

An endpoint that cannot be used (unreachable, refused, not serving the network, answering nonsense) is
refused before anything runs with one line (:class:`EndpointError`, exit 3); one that fails during a run
fails the run (its result records the error, exit 1).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibench.errors import UnavailableError, UsageError
from aibench.service.models import RESIDENT_PARAM
from aibench.sut import Capabilities, Completion, SutReport, SystemUnderTest, Token
from aibench.sut.batcher import Answers
from aibench.sut.task import TaskSamples

PROTOCOLS = ("http", "djinn")
DEFAULT_PORTS = {"http": 8000, "djinn": 9000}
DEFAULT_IN_FLIGHT = 16
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 300.0
STATS_TIMEOUT_S = 10.0
DJINN_NAME_BYTES = 5
OIP_DTYPES = {"FP32": "<f4", "INT64": "<i8", "FP64": "<f8", "INT32": "<i4", "FP16": "<f2"}


RESIDENT_NOTE = ("resident: each request names rows of the inputs the server keeps on its devices (aibench serve "
                 "--resident-inputs) instead of carrying the tensor the client side made, which is not sent; the "
                 "answers are those rows' outputs, not the samples' (no accuracy)")


class EndpointError(UnavailableError):
    """The endpoint cannot be used: unreachable, refused, or it does not serve the network (exit 3)."""


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "http" or "djinn"
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self._host()}:{self.port}"

    @property
    def http_base(self) -> str:
        return f"http://{self._host()}:{self.port}"

    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_endpoint(url: str) -> Endpoint:
    """``http://HOST[:PORT]`` or ``djinn://HOST[:PORT]`` (default ports 8000 and 9000); anything else is a
    usage error."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in PROTOCOLS:
        raise UsageError(f"--remote must be http://HOST:PORT (Open Inference Protocol) or djinn://HOST:PORT "
                         f"(DjiNN's binary protocol); got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise UsageError(f"--remote {url!r}: give only the scheme, host and port (no path, query or user)")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--remote {url!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise UsageError(f"--remote {url!r} names no host")
    return Endpoint(scheme, parts.hostname, port or DEFAULT_PORTS[scheme])


# -- what is sent: the served networks of a task ------------------------------------------------------------

Call = Callable[[str, Any], Any]  # (network, input tensor) -> awaitable output tensor


def remote_forward(task: Any, network: str) -> tuple[Callable[[Any, Call], Any], tuple[str, ...]]:
    """How the task's model becomes requests: an async ``forward(x, call)`` doing what ``task.model(x)``
    does, with each served network replaced by ``await call(name, tensor)``, and the networks it calls. The
    task declares it (``InferenceTask.served_forward``: an application whose model carries more than one
    network's input, e.g. row counts, or calls two networks); otherwise its model is the ``network``."""
    if task.served_forward is not None:
        return task.served_forward, tuple(task.served_networks)

    async def plain_forward(x: Any, call: Call) -> Any:
        return await call(network, x)

    return plain_forward, (network,)


# -- clients (run on the system's event loop) --------------------------------------------------------------

@dataclass
class Reply:
    """One request's answer: the output as a numpy array, its sizes, and the server's own timing (ns)."""

    output: Any
    bytes_up: int
    bytes_down: int
    server_ns: int | None = None
    queue_ns: int | None = None


@dataclass
class ModelInfo:
    name: str
    input_name: str = "INPUT0"
    output_name: str | None = "OUTPUT0"
    row_shape: tuple[int, ...] | None = None  # one input row (None: the client's tensor decides)
    out_row_shape: tuple[int, ...] | None = None
    out_dtype: str = "<f4"  # numpy dtype of the output as it arrives


class HttpClient:
    """Open Inference Protocol over one aiohttp session (``limit`` connections)."""

    def __init__(self, endpoint: Endpoint, models: dict[str, ModelInfo], binary: bool, limit: int) -> None:
        import aiohttp

        self.endpoint = endpoint
        self.models = models
        self.binary = binary
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, force_close=False),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self._urls = {m: f"{endpoint.http_base}/v2/models/{m}/infer" for m in models}

    async def infer(self, model: str, x: Any) -> Reply:
        import numpy as np

        info = self.models[model]
        arr = np.ascontiguousarray(x, dtype="<f4")
        inp: dict[str, Any] = {"name": info.input_name, "shape": list(arr.shape), "datatype": "FP32"}
        if self.binary:
            inp["parameters"] = {"binary_data_size": arr.nbytes}
            doc: dict[str, Any] = {"inputs": [inp], "parameters": {"binary_data_output": True}}
            if info.output_name:
                doc["outputs"] = [{"name": info.output_name, "parameters": {"binary_data": True}}]
            head = json.dumps(doc, separators=(",", ":")).encode()
            body: bytes | bytearray = bytearray(len(head) + arr.nbytes)  # one copy of the tensor
            body[:len(head)] = head
            body[len(head):] = memoryview(arr).cast("B")
            headers = {"Inference-Header-Content-Length": str(len(head)),
                       "Content-Type": "application/octet-stream"}
        else:
            inp["data"] = arr.ravel().tolist()
            doc = {"inputs": [inp]}
            if info.output_name:
                doc["outputs"] = [{"name": info.output_name}]
            body = json.dumps(doc, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}
        return await self._post(model, body, headers, arr.shape[0] if arr.ndim else 1)

    async def infer_resident(self, model: str, start: int, rows: int) -> Reply:
        """``rows`` rows of the model's resident inputs from row ``start`` (``aibench serve
        --resident-inputs``): the request carries the rows' numbers, not a tensor."""
        info = self.models[model]
        inp = {"name": info.input_name, "shape": [rows, *(info.row_shape or ())], "datatype": "FP32",
               "parameters": {RESIDENT_PARAM: int(start)}}
        doc: dict[str, Any] = {"inputs": [inp]}
        if self.binary:
            doc["parameters"] = {"binary_data_output": True}
        if info.output_name:
            doc["outputs"] = [{"name": info.output_name, **({"parameters": {"binary_data": True}} if self.binary
                                                            else {})}]
        body = json.dumps(doc, separators=(",", ":")).encode()
        return await self._post(model, body, {"Content-Type": "application/json"}, rows)

    async def _post(self, model: str, body: bytes | bytearray, headers: dict[str, str], rows: int) -> Reply:
        info = self.models[model]
        async with self.session.post(self._urls[model], data=body, headers=headers) as resp:
            raw = await _read_bounded(resp, _response_limit(info, rows), f"{self.endpoint.url} ({model})")
            if resp.status != 200:
                raise RemoteError(f"{self.endpoint.url} answered {model} with HTTP {resp.status}: "
                                  f"{_error_text(raw)}")
            hlen = resp.headers.get("Inference-Header-Content-Length")
        out, params = decode_oip_response(raw, hlen, info)
        if out.ndim == 0 or out.shape[0] != rows:
            raise RemoteError(f"{self.endpoint.url} answered {rows} row(s) of {model} with an output of shape "
                              f"{list(out.shape)}")
        reply = Reply(out, len(body), len(raw))
        if isinstance(params, dict) and isinstance(params.get("compute_infer_ns"), int):
            reply.server_ns = sum(int(params.get(k) or 0) for k in
                                  ("compute_input_ns", "compute_infer_ns", "compute_output_ns"))
            reply.queue_ns = int(params.get("queue_ns") or 0)
        return reply

    async def stats(self, model: str) -> dict[str, Any] | None:
        async with self.session.get(f"{self.endpoint.http_base}/v2/models/{model}/stats") as resp:
            if resp.status != 200:
                return None
            doc = json.loads(await _read_bounded(resp, METADATA_LIMIT_BYTES, f"{self.endpoint.url} statistics"))
        return doc["model_stats"][0]

    async def close(self) -> None:
        await self.session.close()


# A response is read only up to what its output can take: the binary output plus this much JSON, or, in the
# JSON form, this many bytes per value (a float written out in full is under 32) plus the same slack.
RESPONSE_SLACK_BYTES = 1 << 20
JSON_BYTES_PER_VALUE = 32
METADATA_LIMIT_BYTES = 16 << 20  # server and model metadata, statistics


def _response_limit(info: ModelInfo, rows: int) -> int:
    per_row = math.prod(info.out_row_shape) if info.out_row_shape is not None else 1 << 16
    return RESPONSE_SLACK_BYTES + rows * per_row * JSON_BYTES_PER_VALUE


async def _read_bounded(resp: Any, limit: int, what: str) -> bytes:
    """The body of ``resp``, refused once it passes ``limit`` bytes (a broken or hostile endpoint must not
    exhaust this process's memory)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise RemoteError(f"{what}: a response of {resp.content_length} bytes is over the {limit}-byte bound "
                          "for this request's output")
    chunks, got = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        got += len(chunk)
        if got > limit:
            raise RemoteError(f"{what}: the response passed the {limit}-byte bound for this request's output")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_oip_response(raw: bytes, hlen_text: str | int | None, info: ModelInfo) -> tuple[Any, Any]:
    """The output tensor (numpy) and the response's parameters from an OIP response body (``hlen_text``: the
    Inference-Header-Content-Length header, if any)."""
    import numpy as np

    try:
        hlen = int(hlen_text) if hlen_text is not None else None
        if hlen is not None and not 0 <= hlen <= len(raw):
            raise ValueError(f"Inference-Header-Content-Length {hlen} outside the body of {len(raw)} bytes")
        doc = json.loads(raw[:hlen] if hlen is not None else raw)
        outputs = doc["outputs"]
        out = next((o for o in outputs if o.get("name") == info.output_name), outputs[0]) \
            if info.output_name else outputs[0]
        shape = [int(d) for d in out["shape"]]
        dtype = OIP_DTYPES[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if hlen is None:
                raise ValueError("binary output without Inference-Header-Content-Length")
            offset = hlen
            for o in outputs:  # binary outputs follow the JSON in the order listed
                if o is out:
                    break
                offset += int((o.get("parameters") or {}).get("binary_data_size") or 0)
            arr = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
        else:
            arr = np.asarray(out["data"], dtype=dtype).reshape(shape)
    except (ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
        raise RemoteError(f"the endpoint's response could not be read: {type(exc).__name__}: {exc}") from None
    return arr, doc.get("parameters")


def _error_text(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])[:300]
        return json.dumps(doc)[:300]
    except ValueError:
        return raw[:300].decode(errors="replace") or "(empty body)"


class DjinnConnection:
    """One DjiNN connection: a network and a request size fixed by its 9-byte header. Requests are sent
    from the tensor's own memory and replies received into a buffer of this connection (non-blocking socket
    on the loop: no copy of a multi-megabyte request into a transport's buffer)."""

    def __init__(self, sock: socket.socket, out_bytes: int) -> None:
        self.sock = sock
        self.out = bytearray(out_bytes)
        self.view = memoryview(self.out)

    async def request(self, loop: asyncio.AbstractEventLoop, payload: Any) -> bytearray:
        await loop.sock_sendall(self.sock, payload)
        got, need, view = 0, len(self.out), self.view
        while got < need:
            n = await loop.sock_recv_into(self.sock, view[got:])
            if n == 0:
                raise asyncio.IncompleteReadError(bytes(view[:got]), need)
            got += n
        return self.out

    def close(self) -> None:
        self.sock.close()


class DjinnClient:
    """DjiNN's binary protocol over a pool of connections, one per (network, request size) in use (the
    protocol fixes both per connection). Outputs arrive as float32 (class ids included, as the original's
    Caffe argmax)."""

    def __init__(self, endpoint: Endpoint, models: dict[str, ModelInfo]) -> None:
        self.endpoint = endpoint
        self.models = models
        self.idle: dict[tuple[str, int], list[DjinnConnection]] = collections.defaultdict(list)
        self.opened = 0

    async def connect(self, model: str, count: int, out_bytes: int) -> DjinnConnection:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.endpoint.host, self.endpoint.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(sock, addr), CONNECT_TIMEOUT_S)
            await loop.sock_sendall(sock, model.encode().ljust(DJINN_NAME_BYTES, b"\0") + struct.pack("<i", count))
        except BaseException:
            sock.close()
            raise
        self.opened += 1
        return DjinnConnection(sock, out_bytes)

    async def infer(self, model: str, x: Any) -> Reply:
        import numpy as np

        arr = np.ascontiguousarray(x, dtype="<f4")
        return await self._exchange(model, arr.size, memoryview(arr).cast("B"), arr.shape[0])

    async def infer_resident(self, model: str, start: int, rows: int) -> Reply:
        """``rows`` rows of the model's resident inputs from row ``start``: a connection whose header count is
        ``-rows`` sends one int32 per request (aibench's extension: :mod:`aibench.service.djinn`)."""
        return await self._exchange(model, -rows, struct.pack("<i", int(start)), rows)

    async def _exchange(self, model: str, count: int, payload: Any, rows: int) -> Reply:
        """One request on a pooled connection of (``model``, header ``count``)."""
        import numpy as np

        info = self.models[model]
        out_shape = (rows, *(info.out_row_shape or ()))
        out_bytes = 4 * math.prod(out_shape)
        key = (model, count)
        pool = self.idle[key]
        conn = pool.pop() if pool else await self.connect(model, count, out_bytes)
        try:
            raw = await asyncio.wait_for(conn.request(asyncio.get_running_loop(), payload), REQUEST_TIMEOUT_S)
        except TimeoutError:
            conn.close()
            raise RemoteError(f"{self.endpoint.url} did not answer a {model} request of {rows} row(s) within "
                              f"{REQUEST_TIMEOUT_S:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            got = len(exc.partial) if isinstance(exc, asyncio.IncompleteReadError) else 0
            raise RemoteError(f"{self.endpoint.url} closed the connection during a {model} request of {rows} "
                              f"row(s) ({got} of {out_bytes} reply bytes received): it does not serve "
                              f"{model!r} with this input size, or it failed") from None
        except BaseException:
            conn.close()
            raise
        out = np.frombuffer(raw, dtype="<f4").reshape(out_shape)
        out = out.astype(info.out_dtype) if info.out_dtype != "<f4" else out.copy()  # the buffer is reused
        pool.append(conn)
        return Reply(out, memoryview(payload).nbytes, len(raw))

    async def close(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()


class RemoteError(RuntimeError):
    """A request failed at the endpoint (during a run: the run fails)."""


# -- the system --------------------------------------------------------------------------------------------

@dataclass
class _Pending:
    tokens: Sequence[Token]
    indices: Sequence[int]
    t_issue: float


@dataclass
class _Test:
    """One start()..stop(): the answers, the work not yet sent and the requests in flight."""

    ans: Answers
    max_batch: int
    pending: collections.deque[_Pending] = field(default_factory=collections.deque)
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    idle: asyncio.Event | None = None
    stats_before: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class RemoteSystem(TaskSamples, SystemUnderTest):
    """``task``'s client side in this process, its network(s) at ``endpoint`` (see the module docstring).

    ``network``: the served network the task's model stands for (the component's name). ``in_flight``:
    requests outstanding at most (HTTP connections, DjiNN connections per request size). The endpoint is
    checked here (reachable, serves the networks, answers a one-row request): :class:`EndpointError`
    otherwise."""

    def __init__(self, task: Any, endpoint: str | Endpoint, network: str, name: str = "remote",
                 in_flight: int = DEFAULT_IN_FLIGHT, stats_url: str | None = None, resident: bool = False) -> None:
        self.task = task
        # Resident inputs (``aibench serve --resident-inputs``): each request names rows the server keeps on its
        # devices instead of carrying the tensor the client side made (which is then not sent); the answers are
        # those rows' outputs, not the samples'. Rows are named in turn from a counter per network.
        self.resident = resident
        self._next_row: dict[str, int] = collections.defaultdict(int)
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)
        self.name = name
        self.num_samples = task.num_samples
        self.network = network
        # where the server's statistics are read: the endpoint itself over HTTP; for DjiNN's protocol, the
        # same server's HTTP port when given (scenario/djinn knows it)
        self.stats_endpoint = self.endpoint if self.endpoint.protocol == "http" else \
            (parse_endpoint(stats_url) if stats_url else None)
        self._stats_client: Any = None
        self.in_flight = max(1, int(in_flight))
        self.forward, self.networks = remote_forward(task, network)
        self.models: dict[str, ModelInfo] = {}
        self.binary = False
        self.server_timing = False
        self.stats_reason: str | None = "not read yet"
        self.server: dict[str, Any] = {}
        self._staged: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._test: _Test | None = None
        self._executor: Any = None
        self._offload = task.preprocess is not None or task.postprocess is not None
        self.reset_report()
        self._probe()
        stages = ("client_pre", "network_queue", "server_compute", "client_post") if self.server_timing \
            else ("client_pre", "round_trip", "client_post")
        self.capabilities = Capabilities(stages=stages, batches_itself=True, reports_bytes=True, remote=True)
        self.stage_times: dict[str, list[float]] = {s: [] for s in stages}

    # -- the endpoint ---------------------------------------------------------------------------------------
    def _probe(self) -> None:
        """Check the endpoint with a fresh loop: what it serves, its extensions, one one-row request each."""
        from aibench.service.models import SPECS

        for net in self.networks:
            spec = SPECS.get(net)
            if spec is None:
                raise UsageError(f"{net!r} is not a network aibench knows how to send (known: "
                                 f"{', '.join(s for s in SPECS if s != 'null')})")
            self.models[net] = ModelInfo(net, row_shape=spec.input_shape, out_row_shape=spec.output_shape,
                                         out_dtype="<i8" if spec.output_dtype == "int64" else "<f4")

        async def probe() -> None:
            if self.endpoint.protocol == "http":
                await self._probe_http()
            else:
                client = DjinnClient(self.endpoint, self.models)
                try:
                    for net, info in self.models.items():
                        await asyncio.wait_for(client.infer(net, _zeros(info)), CONNECT_TIMEOUT_S)
                    await self._probe_resident(client)
                finally:
                    await client.close()
                if self.stats_endpoint is None:
                    self.stats_reason = ("DjiNN's binary protocol carries no statistics (give the same server's "
                                         "HTTP port to read /v2/models/{m}/stats)")
                else:
                    await self._probe_stats(HttpClient(self.stats_endpoint, self.models, False, 1))

        try:
            asyncio.run(probe())
        except EndpointError:
            raise
        except RemoteError as exc:
            raise EndpointError(str(exc)) from None
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (type(exc).__name__ if not str(exc)
                                                                                   else str(exc))
            raise EndpointError(f"cannot reach {self.endpoint.url}: {why}") from None
        except Exception as exc:  # aiohttp's client errors, a malformed answer
            raise EndpointError(f"{self.endpoint.url} is not a usable {self.endpoint.protocol} endpoint: "
                                f"{type(exc).__name__}: {exc}") from None

    async def _probe_http(self) -> None:
        import aiohttp

        base = self.endpoint.http_base
        timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{base}/v2") as resp:
                if resp.status != 200:
                    raise EndpointError(f"{self.endpoint.url} is not an Open Inference Protocol server: GET /v2 "
                                        f"answered HTTP {resp.status}")
                meta = json.loads(await _read_bounded(resp, METADATA_LIMIT_BYTES, f"{base}/v2"))
            extensions = meta.get("extensions") or [] if isinstance(meta, dict) else []
            self.server = {"name": meta.get("name"), "version": meta.get("version"), "extensions": extensions}
            self.binary = "binary_tensor_data" in extensions
            for net, info in self.models.items():
                async with session.get(f"{base}/v2/models/{net}") as resp:
                    if resp.status != 200:
                        raise EndpointError(f"{self.endpoint.url} does not serve model {net!r}: HTTP "
                                            f"{resp.status} {_error_text(await resp.content.read(300))}")
                    mm = json.loads(await _read_bounded(resp, METADATA_LIMIT_BYTES, f"{base}/v2/models/{net}"))
                _apply_metadata(info, mm, self.endpoint.url)
        client = HttpClient(self.endpoint, self.models, self.binary, 1)
        try:
            timed = []
            for net, info in self.models.items():
                reply = await client.infer(net, _zeros(info))
                timed.append(reply.server_ns is not None)
            self.server_timing = all(timed)  # every network's answers carry it (CHK asks two)
            await self._probe_resident(client)
        finally:
            await client.close()
        await self._probe_stats(HttpClient(self.endpoint, self.models, False, 1))

    async def _probe_resident(self, client: Any) -> None:
        """With resident inputs: one one-row request naming a resident row per network, or EndpointError."""
        if not self.resident:
            return
        for net in self.models:
            try:
                await asyncio.wait_for(client.infer_resident(net, 0, 1), CONNECT_TIMEOUT_S)
            except (RemoteError, OSError, TimeoutError) as exc:
                raise EndpointError(f"{self.endpoint.url} has no resident inputs for {net!r} (start it with aibench "
                                    f"serve --resident-inputs N): {exc}") from None

    async def _probe_stats(self, client: HttpClient) -> None:
        """Statistics are optional: note why they are unavailable."""
        first = next(iter(self.models))
        url = client.endpoint.http_base
        try:
            stats = await client.stats(first)
            self.stats_reason = None if stats is not None else \
                f"{url} has no statistics extension (GET /v2/models/{first}/stats failed)"
        except Exception as exc:
            self.stats_reason = f"reading {url}'s statistics failed: {type(exc).__name__}: {exc}"
        finally:
            await client.close()

    # -- staging ----------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {**self.task_description(), "device": f"remote:{self.endpoint.url}", "remote": self.remote_info()}

    def remote_info(self) -> dict[str, Any]:
        """What the result records about the endpoint and how it was spoken to."""
        return {"endpoint": self.endpoint.url, "protocol": self.endpoint.protocol, "networks": list(self.networks),
                "encoding": ("binary tensor extension" if self.binary else "JSON") if self.endpoint.protocol ==
                "http" else "DjiNN binary", "server": self.server, "server_timing": self.server_timing,
                "statistics": "available" if self.stats_reason is None else f"unavailable: {self.stats_reason}",
                "in_flight": self.in_flight,
                "inputs": RESIDENT_NOTE if self.resident else "transferred: every request carries its input tensor"}

    # -- a test -----------------------------------------------------------------------------------------------
    def start(self, on_complete: Completion, *, max_batch: int, max_queue_delay_us: float = 0.0,
              spin_us: float = 0.0, hold_on_abort: bool = False, inline: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("RemoteSystem.start: already started")
        if self.error is not None:
            raise self.error
        test = _Test(Answers(on_complete, hold_on_abort, on_error), max(1, int(max_batch)))
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            _one_thread()

            async def setup() -> None:
                test.idle = asyncio.Event()
                test.idle.set()
                self._client = (HttpClient(self.endpoint, self.models, self.binary, self.in_flight)
                                if self.endpoint.protocol == "http" else DjinnClient(self.endpoint, self.models))
                if self.stats_reason is None and self.stats_endpoint is not None:
                    self._stats_client = self._client if isinstance(self._client, HttpClient) else \
                        HttpClient(self.stats_endpoint, self.models, False, 2)
                test.stats_before = await self._read_stats()

            async def close_clients() -> None:
                if self._client is not None:
                    await self._client.close()
                if self._stats_client is not None and self._stats_client is not self._client:
                    await self._stats_client.close()
                self._stats_client = None

            try:
                loop.run_until_complete(setup())
            except BaseException as exc:  # nothing of this start is left open: sessions, sockets, the loop
                failed.append(exc)
                loop.run_until_complete(close_clients())
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(close_clients())
            loop.close()

        if self._offload and self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(2, thread_name_prefix="aibench-remote-cpu", initializer=_one_thread)
        self._loop, self._test = loop, test
        self._thread = threading.Thread(target=run, name="aibench-remote", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join()
            self._thread = self._loop = self._test = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
            raise EndpointError(f"cannot reach {self.endpoint.url}: {failed[0]}")

    def submit(self, tokens: Sequence[Token], indices: Sequence[int]) -> None:
        t = time.perf_counter()
        loop, test = self._loop, self._test
        if loop is None or test is None:
            raise RuntimeError("RemoteSystem.submit before start")
        loop.call_soon_threadsafe(self._enqueue, test, _Pending(tokens, indices, t))

    def flush(self) -> None:
        test = self._test
        if test is not None:
            test.ans.flush()

    def abort(self, exc: BaseException | None = None) -> None:
        test = self._test
        if exc is not None and self.error is None:
            self.error = exc
        if test is None or not test.ans.abort():
            return
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._drop_pending, test)
            except RuntimeError:  # the loop is closed: nothing is pending
                pass

    def stop(self, timeout: float | None = None) -> bool:
        loop, thread, test = self._loop, self._thread, self._test
        if loop is None or thread is None or test is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout

        async def finish() -> bool:
            """True when every request ended by itself; False when some had to be cancelled."""
            assert test.idle is not None
            try:
                await asyncio.wait_for(test.idle.wait(), None if deadline is None
                                       else max(0.0, deadline - time.monotonic()))
            except TimeoutError:  # requests still out (a hung endpoint): cancel them, their answers go now
                self._drop_pending(test)
                for task in list(test.tasks):
                    task.cancel()
                await asyncio.gather(*test.tasks, return_exceptions=True)
                return False
            if self.error is None:
                self._add_server_delta(test.stats_before, await self._read_stats())
            return True

        try:
            ended = asyncio.run_coroutine_threadsafe(finish(), loop).result(
                None if deadline is None else max(0.1, deadline - time.monotonic() + 1))
        except Exception:
            ended = False
        if test.in_flight or test.pending:
            ended = False
        loop.call_soon_threadsafe(loop.stop)
        thread.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
        ended = ended and not thread.is_alive()
        test.ans.release([])
        self._loop = self._thread = self._test = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        return ended

    # -- on the loop ----------------------------------------------------------------------------------------
    def _enqueue(self, test: _Test, p: _Pending) -> None:
        if test.ans.aborted:
            test.ans.drop(p.tokens)
            return
        n, mb = len(p.indices), test.max_batch
        if n <= mb:
            test.pending.append(p)
        else:  # an Offline query: requests of at most max_batch samples
            for i in range(0, n, mb):
                test.pending.append(_Pending(p.tokens[i:i + mb], p.indices[i:i + mb], p.t_issue))
        self._pump(test)

    def _pump(self, test: _Test) -> None:
        loop = self._loop
        assert loop is not None and test.idle is not None
        while test.pending and test.in_flight < self.in_flight:
            p = test.pending.popleft()
            test.in_flight += 1
            test.idle.clear()
            task = loop.create_task(self._one(test, p))
            test.tasks.add(task)
            task.add_done_callback(test.tasks.discard)

    def _drop_pending(self, test: _Test) -> None:
        while test.pending:
            test.ans.drop(test.pending.popleft().tokens)

    async def _one(self, test: _Test, p: _Pending) -> None:
        try:
            if test.ans.aborted:
                test.ans.drop(p.tokens)
                return
            responses, times = await self._compute(p.indices)
            with self._lock:
                self.batches += 1
                self.samples += len(p.indices)
                for name, value in times.items():
                    self.stage_times[name].append(value)
            test.ans.complete(p.tokens, responses, ((p.t_issue, len(p.tokens)),))
        except asyncio.CancelledError:
            test.ans.release(p.tokens)
            raise
        except BaseException as exc:
            self._fail(test, exc)
            test.ans.drop(p.tokens)
        finally:
            test.in_flight -= 1
            self._pump(test)
            if not test.in_flight and not test.pending:
                assert test.idle is not None
                test.idle.set()

    def _fail(self, test: _Test, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            if test.ans.abort() and test.ans.on_error is not None:
                test.ans.on_error(exc)
        self._drop_pending(test)

    async def _compute(self, indices: Sequence[int]) -> tuple[Sequence[Any] | None, dict[str, float]]:
        """One request's timed path: the in-process path with the network(s) called remotely."""
        clock = time.perf_counter
        loop = self._loop
        assert loop is not None
        t0 = clock()
        x = await self._run(self._pre, indices) if self._offload else self._pre(indices)
        t1 = clock()
        server = [0, False]
        client = self._client

        async def call(net: str, tensor: Any) -> Any:
            if self.resident:  # the tensor stays here: the request names as many of the server's resident rows
                rows = int(tensor.shape[0])
                start = self._next_row[net]
                self._next_row[net] = (start + rows) % (1 << 31)
                reply = await client.infer_resident(net, start, rows)
            else:
                reply = await client.infer(net, tensor.detach().cpu().numpy() if hasattr(tensor, "numpy") else tensor)
            with self._lock:
                self.bytes_in += reply.bytes_up
                self.bytes_out += reply.bytes_down
            if reply.server_ns is not None:
                server[0] += reply.server_ns
                server[1] = True
            return _tensor(reply.output)

        y = await self.forward(x, call)
        t2 = clock()
        post = self.task.postprocess
        out = None if post is None else (await self._run(post, y) if self._offload else post(y))
        t3 = clock()
        times = {"client_pre": t1 - t0, "client_post": t3 - t2}
        if self.server_timing:
            if server[1]:  # an answer without the server's timing is not a measured 0: leave it out
                s = server[0] / 1e9
                times["server_compute"] = s
                times["network_queue"] = max(0.0, (t2 - t1) - s)
        else:
            times["round_trip"] = t2 - t1
        return out, times

    async def _run(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, arg)

    def _pre(self, indices: Sequence[int]) -> Any:
        t = self.task
        x = t.collate([self._staged[i] for i in indices])
        return t.preprocess(x) if t.preprocess is not None else x

    async def _read_stats(self) -> dict[str, dict[str, Any] | None]:
        if self.stats_reason is not None or self._stats_client is None:
            return {}
        out: dict[str, dict[str, Any] | None] = {}
        for net in self.networks:
            try:
                out[net] = await asyncio.wait_for(self._stats_client.stats(net), STATS_TIMEOUT_S)
            except Exception:
                out[net] = None
        return out

    def _add_server_delta(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        for net, b in before.items():
            a = after.get(net)
            if a is None or b is None:
                continue
            d = stats_delta(b, a)
            with self._lock:
                acc = self.server_stats.setdefault(net, empty_delta())
                merge_delta(acc, d)

    # -- what happened ----------------------------------------------------------------------------------------
    def report(self) -> SutReport:
        with self._lock:
            extra: dict[str, Any] = {"remote": self.remote_info()}
            if self.stats_reason is None:
                extra["server_stats"] = {net: summarize_delta(d) for net, d in self.server_stats.items()}
            else:
                extra["server_stats"] = {"unavailable": self.stats_reason}
            return SutReport(batches=self.batches, samples=self.samples, error=self.error,
                             stages={k: list(v) for k, v in getattr(self, "stage_times", {}).items()},
                             bytes_in=self.bytes_in, bytes_out=self.bytes_out, extra=extra)

    def reset_report(self) -> None:
        self.batches = 0
        self.samples = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: BaseException | None = getattr(self, "error", None)
        self.server_stats: dict[str, dict[str, Any]] = {}
        for v in getattr(self, "stage_times", {}).values():
            v.clear()

    def record(self, result: Any, partial: str | None = None) -> None:
        """Into a result: the endpoint and how it was spoken to, the server's statistics over the measured
        run, and the bytes per sample each way (``method.remote``; the meters' host-to-device entry, which
        does not apply, becomes ``client_to_server``). ``partial``: the run was interrupted; these cover it
        up to then (``method.remote.partial`` says so)."""
        rep = self.report()
        info = {**self.remote_info(), "server_stats": rep.extra.get("server_stats")}
        if partial:
            info["partial"] = partial
        if rep.samples:
            info["bytes"] = {"up_total": rep.bytes_in, "down_total": rep.bytes_out,
                             "up_per_sample": rep.bytes_in / rep.samples if rep.bytes_in is not None else None,
                             "down_per_sample": rep.bytes_out / rep.samples if rep.bytes_out is not None else None,
                             "requests": rep.batches, "samples": rep.samples,
                             "scope": "request and response bodies" + (" (HTTP header lines excluded)"
                                                                        if self.endpoint.protocol == "http" else
                                                                        " (everything after the 9-byte header)")}
        result.method["remote"] = info
        memory = result.meters.get("memory") or {}
        if "host_to_device" in memory:
            entry = memory.pop("host_to_device")
            memory["client_to_server"] = {**entry, "bytes_down_total": rep.bytes_out,
                                          "scope": "request bodies sent to the endpoint (bytes_down: responses)"}
            memory["client_to_server"].pop("note", None)

    # -- untimed, for tests and checks ---------------------------------------------------------------------
    def infer(self, indices: Sequence[int]) -> Any:
        """The network's output (before post-processing) for ``indices``, computed remotely: what
        ``task.model`` returns in process (the reference for equality checks). Untimed; not during a test."""
        self.stage(indices)
        x = self._pre(indices)

        async def go() -> Any:
            client = (HttpClient(self.endpoint, self.models, self.binary, 1) if self.endpoint.protocol == "http"
                      else DjinnClient(self.endpoint, self.models))
            try:
                async def call(net: str, tensor: Any) -> Any:
                    return _tensor((await client.infer(net, tensor.detach().cpu().numpy())).output)

                return await self.forward(x, call)
            finally:
                await client.close()

        return asyncio.run(go())


def _one_thread() -> None:
    """The client's threads run torch single-threaded (OpenMP's thread count is per thread): a client thread
    that started a team of OpenMP threads would take cores from the server it measures (on a 2-core machine,
    one busy thread stalls every parallel region of the server's forward pass)."""
    import torch

    torch.set_num_threads(1)


def _tensor(arr: Any) -> Any:
    """A torch tensor of a received array (copied when it lies in a read-only response buffer)."""
    import torch

    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _zeros(info: ModelInfo) -> Any:
    import numpy as np

    return np.zeros((1, *(info.row_shape or (1,))), dtype="<f4")


def _apply_metadata(info: ModelInfo, meta: Any, url: str) -> None:
    """Take the input and output names from the model's metadata; refuse an input shape that is not the
    network's (a server may leave the metadata empty: MLServer without declared tensors)."""
    if not isinstance(meta, dict):
        return
    inputs, outputs = meta.get("inputs") or [], meta.get("outputs") or []
    if inputs and isinstance(inputs[0], dict):
        inp = inputs[0]
        info.input_name = str(inp.get("name") or info.input_name)
        shape = inp.get("shape")
        if isinstance(shape, list) and info.row_shape is not None and len(shape) == 1 + len(info.row_shape):
            dims = tuple(int(d) for d in shape[1:])
            if all(d >= 0 for d in dims) and dims != info.row_shape:
                raise EndpointError(f"{url} serves {info.name!r} with input rows of shape {list(dims)}; aibench's "
                                    f"{info.name} sends {list(info.row_shape)}")
    if outputs and isinstance(outputs[0], dict) and outputs[0].get("name"):
        info.output_name = str(outputs[0]["name"])
    elif not outputs:
        info.output_name = None  # ask for every output, take the first


# -- server statistics: deltas over a test -----------------------------------------------------------------

DELTA_STATS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def empty_delta() -> dict[str, Any]:
    return {"execution_count": 0, "inference_count": 0, "inference_stats": {n: {"count": 0, "ns": 0}
                                                                          for n in DELTA_STATS},
            "batch_sizes": {}}


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server did between two readings of Triton's statistics of one model."""
    d = empty_delta()
    d["execution_count"] = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    d["inference_count"] = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    bi, ai = before.get("inference_stats") or {}, after.get("inference_stats") or {}
    for n in DELTA_STATS:
        for k in ("count", "ns"):
            d["inference_stats"][n][k] = int((ai.get(n) or {}).get(k, 0)) - int((bi.get(n) or {}).get(k, 0))

    def sizes(doc: dict[str, Any]) -> dict[int, tuple[int, int]]:
        return {int(b["batch_size"]): (int(b["compute_infer"]["count"]),
                                       sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer",
                                                                     "compute_output")))
                for b in doc.get("batch_stats") or []}

    sb, sa = sizes(before), sizes(after)
    for size, (count, ns) in sa.items():
        c0, n0 = sb.get(size, (0, 0))
        if count - c0:
            d["batch_sizes"][size] = (count - c0, ns - n0)
    return d


def merge_delta(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["execution_count"] += d["execution_count"]
    acc["inference_count"] += d["inference_count"]
    for n, v in d["inference_stats"].items():
        for k in ("count", "ns"):
            acc["inference_stats"][n][k] += v[k]
    for size, (count, ns) in d["batch_sizes"].items():
        c0, n0 = acc["batch_sizes"].get(size, (0, 0))
        acc["batch_sizes"][size] = (c0 + count, n0 + ns)


def summarize_delta(d: dict[str, Any]) -> dict[str, Any]:
    """The server's side of a run: executed batches (average and histogram of sizes, in rows), and the mean
    per request of its queue and compute times."""
    inf = d["inference_stats"]
    requests = inf["success"]["count"]

    def mean_s(name: str) -> float | None:
        c = inf[name]["count"]
        return inf[name]["ns"] / c / 1e9 if c else None

    execs = d["execution_count"]
    return {"executed_batches": execs, "rows": d["inference_count"], "requests": requests,
            "failed_requests": inf["fail"]["count"],
            "mean_batch_rows": d["inference_count"] / execs if execs else None,
            "batch_histogram": {str(k): v[0] for k, v in sorted(d["batch_sizes"].items())},
            "batch_mean_compute_s": {str(k): v[1] / v[0] / 1e9 for k, v in sorted(d["batch_sizes"].items())
                                     if v[0]},
            "mean_request_s": {n: mean_s(n) for n in ("success", "queue", "compute_input", "compute_infer",
                                                      "compute_output")},
            "source": "the server's statistics extension, read before and after each test (deltas)"}


# -- the run command's --remote ----------------------------------------------------------------------------

def served_network(bench: Any) -> str:
    """The network ``aibench serve`` hosts for a component benchmark (its name), or a usage error."""
    from aibench.service.models import SPECS

    if bench.kind != "component" or bench.name not in SPECS or bench.name == "null":
        nets = ", ".join(f"component/{s}" for s in SPECS if s != "null")
        raise UsageError(f"--remote applies to component benchmarks whose network is served ({nets}); "
                         f"{bench.id} has none")
    return str(bench.name)


def remote_system(bench: Any, params: dict[str, Any], url: str) -> RemoteSystem:
    """The component's client side (built on this machine's CPU, float32: what travels) against ``url``.
    ``--device``/``--dtype`` belong to the server (``aibench serve --devices --dtype``) and are refused."""
    import torch

    network = served_network(bench)
    endpoint = parse_endpoint(url)
    if str(params.get("device", "cpu")) != "cpu":
        raise UsageError(f"--remote runs {bench.id}'s network at {endpoint.url}: --device is the server's "
                         "(aibench serve --devices); drop it here")
    if str(params.get("dtype", "float32")) != "float32":
        raise UsageError(f"--remote sends float32 tensors; the network's dtype is the server's (aibench serve "
                         f"--dtype); drop --dtype {params['dtype']}")
    if params.get("compile") or params.get("channels_last"):
        raise UsageError("--compile and --channels-last change the network, which runs at the endpoint: drop them")
    task = bench.factory(params, device=torch.device("cpu"), dtype=torch.float32)
    return RemoteSystem(task, endpoint, network, name=bench.id)
