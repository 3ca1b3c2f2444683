"""aibench serve, against one server for the module (null, pos, dig; small limits, 1 s timeouts): both
protocols give the in-process network's outputs, NVIDIA's own client works, every bad request is answered
(and the server goes on), slow clients do not block others, statistics use Triton's names, and the fuzz at a
small size."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aibench import registry
from aibench.service.launch import start_server
from aibench.service.models import SPECS

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("null", "pos", "dig")
RESIDENT = {"pos": 40, "dig": 5}  # resident input rows per instance (null has none)
ARGS = ["--max-request-mb", "2", "--max-json-mb", "1", "--idle-timeout", "1", "--body-timeout", "1",
        "--max-batch", "null=8", "--instances", "1",
        "--resident-inputs", ",".join(f"{m}={n}" for m, n in RESIDENT.items())]
LIMIT = 2 << 20


@pytest.fixture(scope="module")
def server():
    srv = start_server(MODELS, args=ARGS)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def tasks():
    """The component benchmarks' own tasks (network stage, tiny sizes): their samples are the inputs and
    their ``model`` the reference."""
    out = {}
    for name in ("pos", "dig"):
        b = registry.get(f"component/{name}")
        params = b.resolve({**b.tiny, "num_samples": 3})
        out[name] = b.factory(params, torch.device("cpu"), torch.float32)
    return out


def reference(task: Any, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return task.model(x).numpy()


# -- plain clients ----------------------------------------------------------------------------------------

def post(srv, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.http_address
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request("POST", path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def get(srv, path: str) -> tuple[int, bytes]:
    host, port = srv.http_address
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def infer_json(srv, model: str, x: np.ndarray, binary_out: bool = False) -> np.ndarray:
    doc: dict[str, Any] = {"id": "a1", "inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32",
                                                   "data": x.ravel().tolist()}]}
    if binary_out:
        doc["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    status, headers, body = post(srv, f"/v2/models/{model}/infer", json.dumps(doc).encode())
    assert status == 200, body
    return decode(headers, body, expect_id="a1")


def infer_binary(srv, model: str, x: np.ndarray, binary_out: bool = True) -> np.ndarray:
    doc = {"inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": x.nbytes}}],
           "parameters": {"binary_data_output": binary_out}}
    head = json.dumps(doc).encode()
    status, headers, body = post(srv, f"/v2/models/{model}/infer", head + x.astype(np.float32).tobytes(),
                                 {"Inference-Header-Content-Length": str(len(head)),
                                  "Content-Type": "application/octet-stream"})
    assert status == 200, body
    return decode(headers, body)


def decode(headers: dict[str, str], body: bytes, expect_id: str | None = None) -> np.ndarray:
    hlen = headers.get("inference-header-content-length")
    doc = json.loads(body[:int(hlen)] if hlen else body)
    if expect_id is not None:
        assert doc["id"] == expect_id
    assert doc["model_version"] == "1" and set(doc["parameters"]) >= {"queue_ns", "compute_infer_ns", "batch_size"}
    out = doc["outputs"][0]
    dt = np.float32 if out["datatype"] == "FP32" else np.int64
    if hlen:
        assert out["parameters"]["binary_data_size"] == len(body) - int(hlen)
        return np.frombuffer(body[int(hlen):], dtype=dt).reshape(out["shape"])
    return np.asarray(out["data"], dtype=dt).reshape(out["shape"])


def djinn_connect(srv, name: bytes, count: int) -> socket.socket:
    s = socket.create_connection(srv.djinn_address, timeout=30)
    s.sendall(name + struct.pack("<i", count))
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def closed_by_server(s: socket.socket, within_s: float = 10.0) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1 << 16) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# -- outputs: both protocols = the in-process network ----------------------------------------------------------

@pytest.mark.parametrize("name", ["pos", "dig"])
def test_open_inference_protocol_gives_the_in_process_outputs(server, tasks, name):
    task = tasks[name]
    for i in range(task.num_samples):
        x = task.load_sample(i)  # the pre-processed request: [words, 300] or [digits, 1, 28, 28]
        want = reference(task, x)
        xn = x.numpy()
        for got in (infer_json(server, name, xn), infer_json(server, name, xn, binary_out=True),
                    infer_binary(server, name, xn), infer_binary(server, name, xn, binary_out=False)):
            assert got.shape == want.shape
            assert torch.allclose(torch.from_numpy(np.array(got)), torch.from_numpy(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["pos", "dig"])
def test_djinn_protocol_gives_the_in_process_outputs_as_float32(server, tasks, name):
    task = tasks[name]
    x = task.collate([task.load_sample(0), task.load_sample(0)])  # one request; same size each time
    want = reference(task, x).astype(np.float32).ravel()  # DIG's class ids come back as floats, as Caffe's
    raw_name = name.encode() + b"\0" + b"\xaa" * (4 - len(name))  # bytes after the NUL are not compared
    s = djinn_connect(server, raw_name, x.numel())
    try:
        for _ in range(3):  # many requests on one connection, until the client closes
            s.sendall(x.numpy().tobytes())
            got = np.frombuffer(recv_exactly(s, 4 * want.size), np.float32)
            assert torch.allclose(torch.from_numpy(got.copy()), torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    finally:
        s.close()


def test_a_request_larger_than_max_batch_is_split_and_put_back_in_order(server):
    before = server.stats("null")
    x = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)  # max batch 8: batches of 8, 8, 4
    got = infer_binary(server, "null", x)
    np.testing.assert_array_equal(got, x.sum(axis=1, keepdims=True))
    after = server.stats("null")
    assert after["execution_count"] - before["execution_count"] == 3
    assert after["inference_count"] - before["inference_count"] == 20
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sizes.get(8, 0) >= 2 and sizes.get(4, 0) >= 1


def test_concurrent_clients_of_both_protocols_each_get_their_own_answer(server):
    rng = np.random.default_rng(1)
    errors: list[str] = []

    def http_client(k: int) -> None:
        for _ in range(5):
            x = rng.standard_normal((k + 1, 4)).astype(np.float32)
            got = infer_binary(server, "null", x) if k % 2 else infer_json(server, "null", x)
            if not np.allclose(got, x.sum(1, keepdims=True), rtol=1e-5, atol=1e-5):
                errors.append(f"http {k}")

    def djinn_client(k: int) -> None:
        x = rng.standard_normal((k + 2, 4)).astype(np.float32)
        s = djinn_connect(server, b"null\0", x.size)
        try:
            for _ in range(5):
                s.sendall(x.tobytes())
                got = np.frombuffer(recv_exactly(s, 4 * (k + 2)), np.float32)
                if not np.allclose(got, x.sum(1), rtol=1e-5, atol=1e-5):
                    errors.append(f"djinn {k}")
        finally:
            s.close()

    threads = [threading.Thread(target=f, args=(k,)) for k in range(4) for f in (http_client, djinn_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors


# -- NVIDIA's client ---------------------------------------------------------------------------------------

def test_tritonclient_drives_the_server(server, tasks):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    host, port = server.http_address
    c = httpclient.InferenceServerClient(url=f"{host}:{port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("pos")
    assert c.is_model_ready("pos", model_version="1")
    meta = c.get_server_metadata()
    assert {"binary_tensor_data", "statistics"} <= set(meta["extensions"])
    mm = c.get_model_metadata("pos")
    assert mm["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 300]}
    assert mm["outputs"][0]["shape"] == [-1, 45]
    cfg = c.get_model_config("pos")
    assert cfg["max_batch_size"] == SPECS["pos"].default_max_batch and "dynamic_batching" in cfg
    task = tasks["pos"]
    x = task.load_sample(1)
    want = reference(task, x)
    before = c.get_inference_statistics("pos")["model_stats"][0]
    for binary in (True, False):
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.numpy(), binary_data=binary)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
        r = c.infer("pos", [inp], outputs=[out], request_id=f"r{binary}", model_version="1")
        assert r.get_response()["id"] == f"r{binary}"
        got = torch.from_numpy(np.array(r.as_numpy("OUTPUT0")))
        assert torch.allclose(got, torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    r = c.infer("pos", [inp])  # outputs=None: tritonclient asks for binary outputs
    assert np.allclose(r.as_numpy("OUTPUT0"), want, rtol=1e-5, atol=1e-6)
    st = c.get_inference_statistics("pos")["model_stats"][0]
    inf = st["inference_stats"]
    assert inf["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert st["inference_count"] - before["inference_count"] == 3 * x.shape[0]
    for key in ("queue", "compute_input", "compute_infer", "compute_output", "fail"):
        assert set(inf[key]) == {"count", "ns"}
    assert inf["compute_infer"]["ns"] > 0 and st["last_inference"] > 1.7e12
    assert all(set(b) == {"batch_size", "compute_input", "compute_infer", "compute_output"} for b in st["batch_stats"])
    with pytest.raises(InferenceServerException) as err:
        c.infer("nosuch", [inp])
    assert err.value.status() == "404" and "nosuch" in err.value.message()
    bad = httpclient.InferInput("INPUT0", [2, 7], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 7), np.float32))
    with pytest.raises(InferenceServerException) as err:
        c.infer("pos", [bad])
    assert err.value.status() == "400"
    c.close()


# -- errors: each answered, the server goes on --------------------------------------------------------------

def _doc(**inp: Any) -> dict[str, Any]:
    base = {"name": "INPUT0", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}
    base.update(inp)
    return {"inputs": [base]}


ERRORS = [
    ("unknown model", "/v2/models/nosuch/infer", json.dumps(_doc()).encode(), {}, 404, "unknown model"),
    ("unknown version", "/v2/models/null/versions/3/infer", json.dumps(_doc()).encode(), {}, 404, "version 3"),
    ("wrong dtype", "/v2/models/null/infer", json.dumps(_doc(datatype="INT32")).encode(), {}, 400, "expects 'FP32'"),
    ("wrong input name", "/v2/models/null/infer", json.dumps(_doc(name="X")).encode(), {}, 400, "unexpected"),
    ("wrong element count", "/v2/models/null/infer", json.dumps(_doc(data=list(range(7)))).encode(), {}, 400,
     "holds 7 values"),
    ("wrong row shape", "/v2/models/null/infer", json.dumps(_doc(shape=[2, 5], data=list(range(10)))).encode(), {},
     400, "expects [-1, 4]"),
    ("overflowing shape", "/v2/models/null/infer", json.dumps(_doc(shape=[1 << 62, 4])).encode(), {}, 413,
     "over the limit"),
    ("strings as data", "/v2/models/null/infer", json.dumps(_doc(data=["a"] * 8)).encode(), {}, 400, "numbers"),
    ("malformed JSON", "/v2/models/null/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("deep JSON", "/v2/models/null/infer", b"[" * 100_000 + b"]" * 100_000, {}, 400, "malformed JSON"),
    ("bad binary size", "/v2/models/null/infer",
     json.dumps(_doc(data=None, parameters={"binary_data_size": 31})).encode() + b"\0" * 32,
     {"Inference-Header-Content-Length": "PLACEHOLDER"}, 400, "binary_data_size 31"),
    ("bad binary header", "/v2/models/null/infer", b"{}", {"Inference-Header-Content-Length": "99"}, 400,
     "does not fit"),
    ("oversized body", "/v2/models/null/infer", b"x" * (LIMIT + 1), {}, 413, "over the limit"),
]


@pytest.mark.parametrize("case, path, body, headers, status, text", ERRORS, ids=[e[0] for e in ERRORS])
def test_every_bad_request_is_answered_with_a_json_error_and_the_server_goes_on(server, case, path, body, headers,
                                                                               status, text):
    if headers.get("Inference-Header-Content-Length") == "PLACEHOLDER":
        headers = {"Inference-Header-Content-Length": str(len(body) - 32)}
    try:
        got, _h, reply = post(server, path, body, headers)
    except (BrokenPipeError, ConnectionResetError):
        # an oversized body is answered (413) before it is read and the connection closed: a client still
        # sending may see its socket reset before it reads the answer
        assert status == 413
    else:
        assert got == status, reply
        assert text in json.loads(reply)["error"]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(infer_binary(server, "null", x), [[4.0], [4.0]])


def test_other_endpoints_and_methods_answer_json_errors(server):
    assert get(server, "/v2/models/nosuch")[0] == 404
    assert json.loads(get(server, "/v2/models/nosuch/ready")[1])["error"]
    status, body = get(server, "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(body)
    status, body = get(server, "/v2/models/null/infer")
    assert status == 405 and "error" in json.loads(body)
    host, port = server.http_address
    s = socket.create_connection((host, port))
    s.sendall(b"POST /v2/models/null/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\n\r\n")
    reply = s.recv(1 << 16)
    s.close()
    assert reply.startswith(b"HTTP/1.1 411") and b'"error"' in reply


@pytest.mark.parametrize("name, count", [
    (b"nosuc", 8),            # unknown network
    (b"imc\0\0", 8),          # a Tonic network this server does not serve
    (b"null\0", 0),           # count <= 0
    (b"null\0", -4),
    (b"null\0", 7),           # not a multiple of the row size (4)
    (b"null\0", LIMIT // 4 + 4),  # over the request limit
])
def test_a_bad_djinn_header_closes_the_connection_and_the_server_goes_on(server, name, count):
    s = djinn_connect(server, name, count)
    assert closed_by_server(s)
    s.close()
    s = djinn_connect(server, b"null\0", 4)
    s.sendall(np.ones(4, np.float32).tobytes())
    assert np.frombuffer(recv_exactly(s, 4), np.float32)[0] == 4.0
    s.close()


# -- slow and silent clients ----------------------------------------------------------------------------------

def test_slow_and_silent_clients_are_cut_off_and_block_no_one(server):
    host, port = server.http_address
    silent_http = socket.create_connection((host, port))
    stalled_body = socket.create_connection((host, port))
    stalled_body.sendall(b"POST /v2/models/null/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    silent_djinn = socket.create_connection(server.djinn_address)
    stalled_djinn = djinn_connect(server, b"null\0", 8)
    stalled_djinn.sendall(b"\0" * 12)  # 12 of 32 bytes, then nothing
    trickle = socket.create_connection((host, port))
    stop = threading.Event()

    def trickler() -> None:
        for ch in b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n":
            if stop.is_set():
                return
            try:
                trickle.sendall(bytes([ch]))
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=trickler)
    t.start()
    try:
        # meanwhile others are served, over both protocols
        for _ in range(3):
            np.testing.assert_array_equal(infer_json(server, "null", np.ones((1, 4), np.float32)), [[4.0]])
            s = djinn_connect(server, b"null\0", 4)
            s.sendall(np.ones(4, np.float32).tobytes())
            assert np.frombuffer(recv_exactly(s, 4), np.float32)[0] == 4.0
            s.close()
        # and the server cuts each slow one off by itself (1 s timeouts here)
        assert closed_by_server(silent_http)
        stalled_body.settimeout(10)
        assert stalled_body.recv(1 << 16).startswith(b"HTTP/1.1 408")
        assert closed_by_server(silent_djinn)
        assert closed_by_server(stalled_djinn)
        assert closed_by_server(trickle)
    finally:
        stop.set()
        t.join()
        for s in (silent_http, stalled_body, silent_djinn, stalled_djinn, trickle):
            s.close()


# -- health, metadata, statistics, the server's own view -------------------------------------------------------

def test_health_metadata_and_the_servers_own_view(server):
    assert get(server, "/v2/health/live")[0] == 200 and get(server, "/v2/health/ready")[0] == 200
    assert get(server, "/v2/models/dig/versions/1/ready")[0] == 200
    meta = json.loads(get(server, "/v2/models/dig")[1])
    assert meta["outputs"][0] == {"name": "OUTPUT0", "datatype": "INT64", "shape": [-1]}
    assert {m["name"] for m in json.loads(get(server, "/v2/models/stats")[1])["model_stats"]} == set(MODELS)
    view = server.describe()
    assert view["ready"] and view["threads_per_instance"] >= 1 and len(view["instances"]) == 1
    roles = [p["role"] for p in view["processes"]]
    assert roles == ["server", "instance"] and all(p["rss_bytes"] > 0 for p in view["processes"])
    assert view["budget"]["used_bytes"] >= 0 and view["max_batch"]["null"] == 8


def test_instances_let_idle_openmp_threads_sleep_unless_the_user_chose(server):
    """The instance shares its cores with the server's loop (and the client): its idle OpenMP threads must
    not spin on them. A wait policy the user set is kept."""
    from aibench.service.instances import worker_environment

    chosen = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME") if os.environ.get(k)}
    environ = Path(f"/proc/{server.worker_pids[0]}/environ").read_bytes().split(b"\0")
    want = [f"{k}={v}".encode() for k, v in (chosen or {"OMP_WAIT_POLICY": "PASSIVE"}).items()]
    assert all(w in environ for w in want)
    assert server.describe()["instances"][0]["omp_wait"] == (chosen or {"OMP_WAIT_POLICY": "PASSIVE"})
    assert worker_environment({"PATH": "/bin"}) == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "0")):
        assert worker_environment({name: value}) == {name: value}


def test_the_event_loop_process_never_loads_torch(server):
    """Only the instances compute: the server's own process parses, batches and copies bytes."""
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "libtorch" not in maps
    assert "libtorch" in Path(f"/proc/{server.worker_pids[0]}/maps").read_text()


# -- the fuzz, small ----------------------------------------------------------------------------------------

def test_fuzz_at_a_small_size(server):
    spec = importlib.util.spec_from_file_location("fuzz_service", ROOT / "scripts" / "fuzz_service.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_service"] = fuzz  # its dataclasses look their module up
    spec.loader.exec_module(fuzz)
    pids = [server.pid, *server.worker_pids]
    report = fuzz.run(server.http_address, server.djinn_address, pids, cases=400, seed=3, concurrency=8,
                      slow_share=0.02, deadline_s=300)
    assert report["failed"] == 0, report["failures"]
    assert report["valid"] > 50 and report["ready_after"] == 200
    assert report["memory"]["samples"] > 10


# -- resident inputs (--resident-inputs): requests name rows kept on the instance's device -------------------

def resident_reference(task: Any, name: str, start: int, rows: int) -> np.ndarray:
    """What the network gives for ``rows`` resident rows from ``start`` (modulo the rows kept)."""
    from aibench.service.models import resident_inputs

    kept = resident_inputs(name, RESIDENT[name])
    idx = torch.arange(start, start + rows) % RESIDENT[name]
    return reference(task, kept[idx])


def infer_resident(srv, model: str, start: Any, rows: int, binary_out: bool = False,
                   **extra: Any) -> tuple[int, dict[str, str], bytes]:
    inp = {"name": "INPUT0", "shape": [rows, *SPECS[model].input_shape], "datatype": "FP32",
           "parameters": {"resident_input": start}, **extra}
    doc = {"inputs": [inp], "parameters": {"binary_data_output": binary_out}}
    return post(srv, f"/v2/models/{model}/infer", json.dumps(doc).encode())


@pytest.mark.parametrize("name, start, rows", [("pos", 0, 7), ("pos", 37, 9), ("dig", 3, 12)])
def test_resident_rows_over_http_give_the_networks_outputs_for_those_rows(server, tasks, name, start, rows):
    """The request carries no tensor: rows start, start+1, ... (wrapping) of the resident inputs, seeded by
    the model's name, so the in-process network on the same rows gives the same outputs."""
    want = resident_reference(tasks[name], name, start, rows)
    for binary in (False, True):
        status, headers, body = infer_resident(server, name, start, rows, binary_out=binary)
        assert status == 200, body
        assert len(body) < 400 + (want.nbytes if binary else 40 * want.size)
        got = decode(headers, body)
        assert got.shape == want.shape
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert "aibench_resident_inputs" in json.loads(get(server, "/v2")[1])["extensions"]
    config = json.loads(get(server, f"/v2/models/{name}/config")[1])
    assert config["parameters"]["resident_rows"]["string_value"] == str(RESIDENT[name])


def test_resident_rows_over_djinn_a_negative_count_then_one_int32_per_request(server, tasks):
    rows = 9
    s = djinn_connect(server, b"pos\0\0", -rows)
    try:
        for start in (0, 35, 80):  # 35 and 80 wrap around the 40 rows kept
            s.sendall(struct.pack("<i", start))
            got = np.frombuffer(recv_exactly(s, 4 * rows * 45), np.float32).reshape(rows, 45)
            assert np.allclose(got, resident_reference(tasks["pos"], "pos", start, rows), rtol=1e-5, atol=1e-6)
        s.sendall(struct.pack("<i", -1))  # a negative first row: the connection is closed
        assert closed_by_server(s)
    finally:
        s.close()


def test_resident_and_transferred_requests_at_once_each_get_their_own_answer(server, tasks):
    """Resident requests are batched apart from tensors (a batch is all one or the other)."""
    task = tasks["pos"]
    x = task.load_sample(0).numpy()
    want_t, want_r = reference(task, torch.from_numpy(x)), resident_reference(task, "pos", 5, 6)
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            if i % 2:
                status, headers, body = infer_resident(server, "pos", 5, 6, binary_out=True)
                assert status == 200, body
                assert np.allclose(decode(headers, body), want_r, rtol=1e-5, atol=1e-6)
            else:
                assert np.allclose(infer_binary(server, "pos", x), want_t, rtol=1e-5, atol=1e-6)
        except AssertionError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:2]


@pytest.mark.parametrize("model, start, extra, fragment", [
    ("null", 0, {}, "no resident inputs"),
    ("pos", -1, {}, "resident_input must be an integer"),
    ("pos", "3", {}, "resident_input must be an integer"),
    ("pos", True, {}, "resident_input must be an integer"),
    ("pos", 1 << 31, {}, "resident_input must be an integer"),
    ("pos", 0, {"data": [0.0] * 300}, "carries no data"),
])
def test_a_bad_resident_request_is_a_400_and_the_server_goes_on(server, model, start, extra, fragment):
    status, _headers, body = infer_resident(server, model, start, 1, **extra)
    assert status == 400 and fragment in json.loads(body)["error"], body
    assert infer_resident(server, "pos", 0, 1)[0] == 200


def test_resident_inputs_refused_in_one_line():
    """--resident-inputs naming a model not served, a negative count or too many rows: exit 2 in one line
    before anything starts."""
    import subprocess

    from aibench.errors import UsageError
    from aibench.service.server import ServeConfig, check_config

    for rows, text in (({"imc": 4}, "not served"), ({"null": -1}, "between 0"), ({"pos": 999_999_999}, "MiB per")):
        with pytest.raises(UsageError, match=text):
            check_config(ServeConfig(models=("null", "pos"), resident_rows=rows))
    proc = subprocess.run([sys.executable, "-m", "aibench", "serve", "--models", "null,pos", "--port", "0",
                           "--djinn-port", "off", "--resident-inputs", "pos=999999999"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "MiB per instance" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr
