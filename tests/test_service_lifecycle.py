"""aibench serve's life: bad usage and a port in use are refused before anything starts; SIGTERM lets
in-flight requests finish and exits 0; requests queued behind a busy instance run as one batch; a dying
instance fails only its own requests and is restarted; the instances die with the server, even on SIGKILL.
The null model sleeps per batch here, so a request stays in flight long enough to act on."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from aibench.cli import main
from aibench.errors import EXIT_LISTEN, ListenError, UnavailableError
from aibench.service.launch import start_server


def infer(addr: tuple[str, int], x: np.ndarray, timeout: float = 60) -> tuple[int, Any]:
    doc = {"inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    c = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        c.request("POST", "/v2/models/null/infer", body=json.dumps(doc))
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def wait_for(cond: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("args, text", [
    (["--models", "nosuch"], "unknown model 'nosuch'"),
    (["--models", "null", "--port", "off", "--djinn-port", "off"], "both ports are off"),
    (["--models", "null", "--devices", "gpu"], "--devices must be"),
    (["--models", "null", "--max-batch", "pos=4"], "not a served model"),
    (["--models", "null", "--port", "http"], "--port must be a port number"),
    (["--models", "null", "--max-queue-delay-us", "abc"], "must be N or MODEL=N"),
])
def test_bad_usage_is_one_line_and_exit_2(args, text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and text in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["--port", "--djinn-port"])
def test_a_port_in_use_is_one_line_and_exit_6_before_any_model_is_built(which):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        other = "--djinn-port" if which == "--port" else "--port"
        p = subprocess.run([sys.executable, "-m", "aibench", "serve", "--models", "null", which, str(port), other, "0"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert p.returncode == EXIT_LISTEN
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and f"port {port} on 127.0.0.1 is already in use" in lines[0]
        assert "Traceback" not in p.stderr and p.stdout == ""
        with pytest.raises(ListenError, match="already in use"):
            start_server(["null"], **{which.lstrip("-").replace("-", "_"): port})
    finally:
        taken.close()


def test_an_instance_that_cannot_run_there_is_refused_with_exit_3():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UnavailableError, match="no CUDA GPU"):
        start_server(["null"], args=["--devices", "cuda"])


def test_a_second_signal_stops_at_once_with_exit_130():
    srv = start_server(["null"], args=["--null-delay-us", "20000000", "--djinn-port", "off"])
    try:
        got: dict[str, Any] = {}

        def client() -> None:
            try:
                got["r"] = infer(srv.http_address, np.ones((1, 4), np.float32))
            except (OSError, http.client.HTTPException) as exc:
                got["r"] = exc

        t = threading.Thread(target=client)
        t.start()
        wait_for(lambda: srv.describe()["in_flight"] == 1, what="a request in flight")
        srv.process.send_signal(signal.SIGTERM)
        wait_for(lambda: any(e.get("event") == "stopping" for e in srv.events), what="stopping")
        srv.process.send_signal(signal.SIGINT)
        assert srv.process.wait(60) == 130  # not the 20 s the request would have taken
        t.join(30)
        r = got["r"]
        assert isinstance(r, Exception) or r[0] == 500
        assert any("second signal" in ln for ln in srv.stderr_lines)
    finally:
        srv.stop()


def test_sigterm_lets_in_flight_requests_finish_then_exits_0():
    srv = start_server(["null"], args=["--null-delay-us", "1500000"])
    try:
        results: dict[str, Any] = {}
        x = np.arange(8, dtype=np.float32).reshape(2, 4)

        def http_client() -> None:
            results["http"] = infer(srv.http_address, x)

        def djinn_client() -> None:
            s = socket.create_connection(srv.djinn_address, timeout=60)
            s.sendall(b"null\0" + struct.pack("<i", 8) + x.tobytes())
            buf = b""
            while len(buf) < 8:
                chunk = s.recv(8 - len(buf))
                if not chunk:
                    break
                buf += chunk
            results["djinn"] = np.frombuffer(buf, np.float32) if len(buf) == 8 else None
            results["djinn_closed_after"] = s.recv(1) == b""  # the server closes after the reply
            s.close()

        keep = http.client.HTTPConnection(*srv.http_address, timeout=30)
        keep.request("GET", "/v2/health/ready")
        assert keep.getresponse().read() == b""
        threads = [threading.Thread(target=f) for f in (http_client, djinn_client)]
        for t in threads:
            t.start()
        wait_for(lambda: srv.describe()["in_flight"] == 2, what="two requests in flight")
        srv.process.send_signal(signal.SIGTERM)
        wait_for(lambda: any(e.get("event") == "stopping" for e in srv.events), what="stopping")
        keep.request("GET", "/v2/health/ready")  # a kept-alive connection: refused while draining
        r = keep.getresponse()
        assert r.status == 503 and "shutting down" in json.loads(r.read())["error"]
        with pytest.raises(ConnectionRefusedError):  # no longer listening
            socket.create_connection(srv.djinn_address, timeout=5)
        for t in threads:
            t.join(60)
        status, doc = results["http"]
        assert status == 200 and doc["outputs"][0]["data"] == [6.0, 22.0]
        assert results["djinn"] is not None and list(results["djinn"]) == [6.0, 22.0]
        assert results["djinn_closed_after"]
        assert srv.process.wait(60) == 0
        assert srv.events[-1]["event"] == "stopped"
        assert not any(alive(p) for p in srv.worker_pids)
    finally:
        srv.stop()


def test_batching_a_dying_instance_and_death_with_the_server():
    srv = start_server(["null"], args=["--null-delay-us", "1500000", "--djinn-port", "off"])
    addr = srv.http_address
    try:
        # 1. requests queued behind a busy instance run as one batch (delay 0: what is queued when it frees)
        first: dict[str, Any] = {}
        t = threading.Thread(target=lambda: first.update(r=infer(addr, np.ones((1, 4), np.float32))))
        t.start()
        wait_for(lambda: srv.describe()["in_flight"] == 1, what="the first request")
        out: list[Any] = [None] * 5
        queued = [threading.Thread(target=lambda k=k: out.__setitem__(k, infer(addr, np.full((1, 4), k, np.float32))))
                  for k in range(5)]
        for q in queued:
            q.start()
        for q in [t, *queued]:
            q.join(60)
        assert first["r"][0] == 200
        assert [(s, d["outputs"][0]["data"]) for s, d in out] == [(200, [4.0 * k]) for k in range(5)]
        sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in srv.stats("null")["batch_stats"]}
        assert sizes.get(5) == 1, sizes
        assert [d["parameters"]["batch_size"] for _s, d in out] == [5] * 5

        # 2. an instance that dies fails its own request (500) and is restarted; the server goes on
        old = srv.describe()["instances"][0]["pid"]
        got: dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.update(r=infer(addr, np.ones((1, 4), np.float32))))
        t.start()
        wait_for(lambda: srv.describe()["in_flight"] == 1, what="a request in flight")
        time.sleep(0.2)  # in the instance's forward pass
        os.kill(old, signal.SIGKILL)
        t.join(60)
        status, doc = got["r"]
        assert status == 500 and "exited with code -9" in doc["error"]
        assert srv.stats("null")["inference_stats"]["fail"]["count"] == 1
        wait_for(lambda: any("restarting" in ln for ln in srv.stderr_lines), what="the restart notice")
        wait_for(lambda: srv.describe()["instances"][0]["alive"] and srv.describe()["instances"][0]["pid"] != old,
                 timeout=300, what="the restarted instance")
        assert infer(addr, np.ones((1, 4), np.float32))[0] == 200
        new = srv.describe()["instances"][0]["pid"]

        # 3. SIGKILL of the server: its instances die with it
        os.kill(srv.pid, signal.SIGKILL)
        srv.process.wait(30)
        wait_for(lambda: not alive(new), timeout=30, what="the instance to die with its server")
    finally:
        srv.stop()
