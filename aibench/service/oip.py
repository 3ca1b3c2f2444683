"""The Open Inference Protocol (KServe v2) over HTTP/REST, with aiohttp: the protocol Triton, TorchServe,
MLServer and KServe speak, so their clients (``tritonclient.http``, perf_analyzer, curl) drive ours.

Endpoints (every ``/v2/models/{m}/…`` also answers as ``/v2/models/{m}/versions/1/…``; the only version is
``1``):

- ``GET /v2``: server metadata (``extensions``: ``binary_tensor_data``, ``statistics``,
  ``model_configuration``); ``GET /v2/health/live``, ``GET /v2/health/ready`` (200, empty body; 503 with an
  error while starting, draining or with no instance left).
- ``GET /v2/models/{m}``: model metadata; ``…/ready``; ``…/config`` (Triton's model configuration:
  ``max_batch_size``, ``dynamic_batching``, ``instance_group``).
- ``POST /v2/models/{m}/infer``: JSON tensors, or Triton's binary tensor extension
  (``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data_output``/``binary_data``).
- ``GET /v2/models/stats``, ``GET /v2/models/{m}/stats``: Triton's statistics extension
  (:mod:`aibench.service.stats`).
- ``GET /v2/aibench``: aibench's own view (not part of the protocol): settings, instances with their pids,
  CPU time and memory of every process of the server, refused requests by reason.

Every error is JSON ``{"error": "…"}`` (tritonclient reads nothing else): 400 malformed, 404 unknown model
or version, 405 wrong method, 408 body not received in time, 411 no Content-Length, 413 too large, 500 the
instance failed, 503 not ready / draining / busy. A request is bounded before anything is allocated for it:
Content-Length first, then the JSON header's size, then each tensor's ``prod(shape) × 4`` against its
``binary_data_size`` and the body's length (Python integers: no overflow).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from aibench import __version__
from aibench.service.models import RESIDENT_EXTENSION, RESIDENT_PARAM, ModelSpec, resident_row_numbers
from aibench.service.scheduler import ServiceError

if TYPE_CHECKING:
    from aibench.service.server import Service

log = logging.getLogger(__name__)

DATATYPES = {"float32": "FP32", "int64": "INT64"}
INPUT_NAME = "INPUT0"
OUTPUT_NAME = "OUTPUT0"
JSON_BYTES_PER_VALUE = 24  # what a value costs as JSON text, generously (for bounding a JSON response)
SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")


def _names_resident(doc: dict[str, Any]) -> bool:
    """Whether a parsed request (already validated) names resident rows."""
    params = doc["inputs"][0].get("parameters") or {}
    return RESIDENT_PARAM in params


class RequestError(Exception):
    """A request refused: ``status`` and one line; ``reason`` is the short name counted in the stats."""

    def __init__(self, status: int, message: str, reason: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.close = status, reason, close


def error_response(status: int, message: str, close: bool = False) -> web.Response:
    resp = web.json_response({"error": message}, status=status)
    if close:
        resp.force_close()
    return resp


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as ``{"error": …}``: ours, aiohttp's (404 no route, 405, 413 from ``client_max_size``),
    and a bug's (500, logged)."""
    service: Service = request.app[SERVICE_KEY]
    try:
        return await handler(request)
    except RequestError as exc:
        service.count_rejected("http", exc.reason)
        return error_response(exc.status, str(exc), exc.close)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        service.count_rejected("http", f"http_{exc.status}")
        return error_response(exc.status, exc.reason or "error", exc.status == 413)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # a bug: answer it, log it, keep serving
        log.exception("internal error in %s %s", request.method, request.path)
        service.count_rejected("http", "internal")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    return {"name": spec.name, "versions": ["1"], "platform": "pytorch",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *spec.input_shape]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPES[spec.output_dtype],
                         "shape": [-1, *spec.output_shape]}]}


def _dims(shape: Any, what: str) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(400, f"{what}: 'shape' must be a list of integers", "bad_shape")
    if any(d < 0 for d in shape):
        raise RequestError(400, f"{what}: negative dimension in shape {shape}", "bad_shape")
    return shape


class Handlers:
    def __init__(self, service: Service) -> None:
        self.service = service

    # -- lookups ----------------------------------------------------------------------------------------
    def _spec(self, request: web.Request) -> ModelSpec:
        name = request.match_info["model"]
        spec = self.service.specs.get(name)
        if spec is None:
            raise RequestError(404, f"Request for unknown model: '{name}' is not found", "unknown_model")
        version = request.match_info.get("version")
        if version is not None and version != "1":
            raise RequestError(404, f"Request for unknown model: '{name}' version {version} is not found",
                               "unknown_version")
        return spec

    def _check_ready(self) -> None:
        why = self.service.not_ready_reason()
        if why is not None:
            raise RequestError(503, why, "not_ready")

    # -- metadata, health, stats --------------------------------------------------------------------------
    async def server_metadata(self, request: web.Request) -> web.Response:
        extensions = ["binary_tensor_data", "statistics", "model_configuration"]
        if any(self.service.resident_rows.values()):
            extensions.append(RESIDENT_EXTENSION)
        return web.json_response({"name": "aibench", "version": __version__, "extensions": extensions})

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        self._check_ready()
        return web.Response(status=200)

    async def model_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(model_metadata(self._spec(request)))

    async def model_ready(self, request: web.Request) -> web.Response:
        self._spec(request)
        self._check_ready()
        return web.Response(status=200)

    async def model_config(self, request: web.Request) -> web.Response:
        spec = self._spec(request)
        s = self.service
        kind = "KIND_GPU" if any(d.startswith("cuda") for d in s.config.devices) else "KIND_CPU"
        gpus = sorted({int(d.partition(":")[2] or 0) for d in s.config.devices if d.startswith("cuda")})
        group: dict[str, Any] = {"name": spec.name, "count": s.config.instances * len(s.config.devices),
                                 "kind": kind}
        if gpus:
            group["gpus"] = gpus
        ttype = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
        return web.json_response({
            "name": spec.name, "platform": "pytorch", "backend": "aibench", "version_policy": {"latest": {}},
            "max_batch_size": s.max_batch[spec.name],
            "input": [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": list(spec.input_shape)}],
            "output": [{"name": OUTPUT_NAME, "data_type": ttype[spec.output_dtype],
                        "dims": list(spec.output_shape)}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(s.delay_s[spec.name] * 1e6)},
            "instance_group": [group],
            "parameters": {"description": {"string_value": spec.description},
                           "resident_rows": {"string_value": str(s.resident_rows.get(spec.name, 0))}},
        })

    async def stats_all(self, request: web.Request) -> web.Response:
        return web.json_response({"model_stats": [st.to_json() for st in self.service.stats.values()]})

    async def stats_one(self, request: web.Request) -> web.Response:
        spec = self._spec(request)
        return web.json_response({"model_stats": [self.service.stats[spec.name].to_json()]})

    async def aibench(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.describe())

    # -- inference ------------------------------------------------------------------------------------------
    async def infer(self, request: web.Request) -> web.StreamResponse:
        s = self.service
        spec = self._spec(request)
        self._check_ready()
        length = request.content_length
        if length is None:
            raise RequestError(411, "a Content-Length is required (chunked bodies are not accepted)", "no_length",
                               close=True)
        if length > s.config.max_request_bytes:
            raise RequestError(413, f"request body of {length} bytes is over the limit of "
                               f"{s.config.max_request_bytes}", "too_large", close=True)
        if not s.budget.try_reserve(length):
            raise RequestError(503, "server busy: too many bytes in requests in flight; retry later", "busy",
                               close=True)
        reserved = length
        try:
            try:
                body = await asyncio.wait_for(request.read(), s.config.body_timeout_s)
            except TimeoutError:
                raise RequestError(408, f"request body not received within {s.config.body_timeout_s:g} s",
                                   "body_timeout", close=True) from None
            t_received = time.monotonic_ns()
            doc, tensor, rows, binary_out = self._parse(spec, request, body)
            resident = _names_resident(doc)
            out_bytes = rows * (spec.out_row_bytes if binary_out else spec.out_row_elements * JSON_BYTES_PER_VALUE)
            if not s.budget.try_reserve(out_bytes):
                raise RequestError(503, "server busy: too many bytes in requests in flight; retry later", "busy")
            reserved += out_bytes
            req = s.scheduler.submit(spec.name, rows, tensor, t_received, resident=resident)
            try:
                out = await req.future
            except ServiceError as exc:
                raise RequestError(exc.status, str(exc), "failed") from None
            return self._respond(spec, doc, rows, out, binary_out, req.timing())
        finally:
            s.budget.release(reserved)

    def _parse(self, spec: ModelSpec, request: web.Request, body: bytes) -> tuple[dict[str, Any], Any, int, bool]:
        """The request's JSON, its input tensor (float32 bytes), rows, and whether the output goes binary."""
        s = self.service
        header = request.headers.get("Inference-Header-Content-Length")
        if header is not None:
            try:
                hlen = int(header)
            except ValueError:
                raise RequestError(400, f"Inference-Header-Content-Length is not an integer: {header[:40]!r}",
                                   "bad_header") from None
            if hlen <= 0 or hlen > len(body):
                raise RequestError(400, f"Inference-Header-Content-Length {hlen} does not fit a body of "
                                   f"{len(body)} bytes (raw binary requests are not supported)", "bad_header")
        else:
            hlen = len(body)
        if hlen > s.config.max_json_bytes:
            raise RequestError(413, f"JSON part of {hlen} bytes is over the limit of {s.config.max_json_bytes}",
                               "json_too_large")
        try:
            doc = json.loads(bytes(body[:hlen]) if header is not None else body)
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"malformed JSON: {str(exc)[:200]}", "bad_json") from None
        if not isinstance(doc, dict):
            raise RequestError(400, "the request must be a JSON object", "bad_json")
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise RequestError(400, f"model '{spec.name}' takes exactly one input, '{INPUT_NAME}'", "bad_inputs")
        inp = inputs[0]
        if inp.get("name") != INPUT_NAME:
            raise RequestError(400, f"unexpected inference input {str(inp.get('name'))[:80]!r} for model "
                               f"'{spec.name}' (its input is '{INPUT_NAME}')", "bad_input_name")
        if inp.get("datatype") != "FP32":
            raise RequestError(400, f"inference input '{INPUT_NAME}' data-type is "
                               f"{str(inp.get('datatype'))[:20]!r}, but model '{spec.name}' expects 'FP32'",
                               "bad_dtype")
        shape = _dims(inp.get("shape"), f"input '{INPUT_NAME}'")
        if len(shape) != 1 + len(spec.input_shape) or tuple(shape[1:]) != spec.input_shape:
            raise RequestError(400, f"input '{INPUT_NAME}' has shape {shape[:8]}; model '{spec.name}' expects "
                               f"{[-1, *spec.input_shape]}", "bad_shape")
        rows = shape[0]
        if rows < 1:
            raise RequestError(400, "a request needs at least one row", "bad_shape")
        params = inp.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, "'parameters' must be an object", "bad_parameters")
        if RESIDENT_PARAM in params:
            if (header is not None and len(body) != hlen) or "binary_data_size" in params or "data" in inp:
                raise RequestError(400, f"input '{INPUT_NAME}' names resident rows ({RESIDENT_PARAM}): it carries "
                                   "no data and no binary_data_size", "bad_resident")
            tensor: Any = self._resident_rows(spec, params[RESIDENT_PARAM], rows)
            return doc, tensor, rows, self._binary_output(doc)
        nbytes = math.prod(shape) * 4  # Python integers: no overflow
        if nbytes > s.config.max_request_bytes:
            raise RequestError(413, f"input of {nbytes} bytes is over the limit of {s.config.max_request_bytes}",
                               "too_large")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size != nbytes:
                raise RequestError(400, f"input '{INPUT_NAME}': binary_data_size {str(size)[:40]} is not "
                                   f"{nbytes} (shape {shape} of FP32)", "bad_binary_size")
            if header is None:
                raise RequestError(400, "binary input without an Inference-Header-Content-Length header",
                                   "bad_header")
            if len(body) - hlen != nbytes:
                raise RequestError(400, f"unexpected size for input '{INPUT_NAME}': the body holds "
                                   f"{len(body) - hlen} bytes after the JSON, expecting {nbytes}", "bad_binary_size")
            tensor = memoryview(body)[hlen:]
        else:
            if header is not None and len(body) != hlen:
                raise RequestError(400, "bytes after the JSON but no input has a binary_data_size",
                                   "bad_binary_size")
            tensor = self._json_tensor(inp.get("data"), shape)
        binary_out = self._binary_output(doc)
        return doc, tensor, rows, binary_out

    def _resident_rows(self, spec: ModelSpec, start: Any, rows: int) -> bytes:
        """The int32 row numbers a request naming resident rows stands for: ``start``, ``start + 1``, … (``rows``
        of them), each modulo the rows the instances keep (see :data:`RESIDENT_PARAM`)."""
        kept = self.service.resident_rows.get(spec.name, 0)
        if not kept:
            raise RequestError(400, f"model '{spec.name}' has no resident inputs (aibench serve --resident-inputs)",
                               "no_resident")
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < 1 << 31:
            raise RequestError(400, f"input '{INPUT_NAME}': {RESIDENT_PARAM} must be an integer from 0 to "
                               f"2147483647, not {str(start)[:40]}", "bad_resident")
        if rows * 4 > self.service.config.max_request_bytes:
            raise RequestError(413, f"{rows} resident rows are over the request limit", "too_large")
        return resident_row_numbers(start, rows, kept)

    @staticmethod
    def _json_tensor(data: Any, shape: list[int]) -> bytes:
        import numpy as np

        if not isinstance(data, list):
            raise RequestError(400, f"input '{INPUT_NAME}' has no 'data' list (and no binary_data_size)", "bad_data")
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise RequestError(400, f"input '{INPUT_NAME}': 'data' is not a regular array of numbers",
                               "bad_data") from None
        if arr.dtype.kind not in "biuf":
            raise RequestError(400, f"input '{INPUT_NAME}': 'data' must hold numbers", "bad_data")
        if arr.size != math.prod(shape):
            raise RequestError(400, f"input '{INPUT_NAME}': 'data' holds {arr.size} values; shape {shape} needs "
                               f"{math.prod(shape)}", "bad_data")
        return arr.astype("<f4", copy=False).tobytes()

    @staticmethod
    def _binary_output(doc: dict[str, Any]) -> bool:
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, "'parameters' must be an object", "bad_parameters")
        binary = params.get("binary_data_output") is True
        outputs = doc.get("outputs")
        if outputs is None:
            return binary
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise RequestError(400, "'outputs' must be a list of objects", "bad_outputs")
        for o in outputs:
            if o.get("name") != OUTPUT_NAME:
                raise RequestError(400, f"unexpected inference output {str(o.get('name'))[:80]!r} (the output is "
                                   f"'{OUTPUT_NAME}')", "bad_output_name")
            oparams = o.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise RequestError(400, "'parameters' must be an object", "bad_parameters")
            if "binary_data" in oparams:
                binary = oparams["binary_data"] is True
        return binary

    def _respond(self, spec: ModelSpec, doc: dict[str, Any], rows: int, out: Any, binary: bool,
                 timing: dict[str, Any]) -> web.Response:
        output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": DATATYPES[spec.output_dtype],
                                  "shape": [rows, *spec.output_shape]}
        resp: dict[str, Any] = {"model_name": spec.name, "model_version": "1"}
        if "id" in doc:
            resp["id"] = doc["id"]
        resp["parameters"] = timing
        if binary:
            output["parameters"] = {"binary_data_size": memoryview(out).nbytes}
            resp["outputs"] = [output]
            head = json.dumps(resp, separators=(",", ":")).encode()
            return web.Response(body=b"".join((head, out)), content_type="application/octet-stream",
                                headers={"Inference-Header-Content-Length": str(len(head))})
        import numpy as np

        output["data"] = np.frombuffer(out, dtype="<f4" if spec.output_dtype == "float32" else "<i8").tolist()
        resp["outputs"] = [output]
        return web.Response(body=json.dumps(resp, separators=(",", ":")).encode(), content_type="application/json")


def make_app(service: Service) -> web.Application:
    import numpy  # noqa: F401  (imported now, not inside the first JSON request's time)

    app = web.Application(client_max_size=service.config.max_request_bytes, middlewares=[json_errors])
    app[SERVICE_KEY] = service
    h = Handlers(service)
    r = app.router
    r.add_get("/v2", h.server_metadata)
    r.add_get("/v2/health/live", h.live)
    r.add_get("/v2/health/ready", h.ready)
    r.add_get("/v2/models/stats", h.stats_all)
    r.add_get("/v2/aibench", h.aibench)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_get(base, h.model_metadata)
        r.add_get(base + "/ready", h.model_ready)
        r.add_get(base + "/config", h.model_config)
        r.add_get(base + "/stats", h.stats_one)
        r.add_post(base + "/infer", h.infer)
    return app
