"""--remote: a component's client side here, its network at an endpoint (aibench.sut.remote), against a real
``aibench serve`` on loopback over both protocols: outputs equal in-process, every LoadGen scenario and
closed-loop users, bad endpoints refused with one line and exit 3."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aibench.errors import EXIT_UNAVAILABLE, EXIT_USAGE
from aibench.service.launch import ServerProcess, start_server
from aibench.sut.remote import EndpointError, RemoteSystem, parse_endpoint

POS = ["--batch", "3", "--num-samples", "3", "--words", "7", "--data", "synthetic", "--stage", "app"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = start_server(["pos", "imc", "chk"], args=["--resident-inputs", "pos=64,chk=64"])
    yield srv
    assert srv.stop() == 0


def url(srv: ServerProcess, protocol: str) -> str:
    if protocol == "http":
        assert srv.http_url is not None
        return srv.http_url
    assert srv.djinn_address is not None
    return "djinn://{}:{}".format(*srv.djinn_address)


def task(app: str, **params: Any) -> Any:
    import torch

    from aibench.registry import get

    bench = get(f"component/{app}")
    return bench.factory(bench.resolve({**bench.tiny, **params}), device=torch.device("cpu"), dtype=torch.float32)


def run_once(rs: RemoteSystem, indices: list[int], max_batch: int) -> dict[Any, Any]:
    """Submit ``indices`` as one query; the responses by token."""
    got: dict[Any, Any] = {}
    done = threading.Event()

    def on_complete(tokens: Any, responses: Any, issued: Any) -> None:
        assert issued is not None and responses is not None
        got.update(zip(tokens, responses, strict=True))
        if len(got) == len(indices):
            done.set()

    rs.stage(indices)
    rs.start(on_complete, max_batch=max_batch)
    rs.submit(list(range(len(indices))), indices)
    assert done.wait(60)
    assert rs.stop(30)
    return got


@pytest.mark.parametrize("protocol", ["http", "djinn"])
def test_outputs_equal_in_process(server: ServerProcess, protocol: str) -> None:
    import torch

    pos = task("pos", stage="app")
    ref = pos.run_batch([0, 1, 2])  # tags per sentence, in process
    rs = RemoteSystem(pos, url(server, protocol), "pos")
    assert run_once(rs, [0, 1, 2], max_batch=2) == dict(enumerate(ref))  # two requests: 2 + 1 sentences
    x = pos.preprocess(pos.collate([pos.load_sample(i) for i in (0, 1, 2)]))
    with torch.inference_mode():
        want = pos.model(x)["y"]
    assert torch.allclose(rs.infer([0, 1, 2])["y"], want, atol=1e-5)
    rep = rs.report()
    assert rep.samples == 3 and rep.batches == 2 and rep.bytes_in and rep.bytes_out
    assert rs.capabilities.batches_itself and rs.capabilities.remote and rs.capabilities.reports_bytes
    if protocol == "http":  # aibench serve gives its timing per request, and statistics
        assert rs.capabilities.stages == ("client_pre", "network_queue", "server_compute", "client_post")
        assert rep.extra["server_stats"]["pos"]["requests"] == 2
        assert rs.binary
    else:
        assert rs.capabilities.stages == ("client_pre", "round_trip", "client_post")
        assert "unavailable" in rep.extra["server_stats"]
    assert all(len(v) == 2 for v in rep.stages.values())
    imc = task("imc", num_samples=2)
    assert RemoteSystem(imc, url(server, protocol), "imc").infer([0, 1]).tolist() == imc.run_batch([0, 1]).tolist()
    chk = task("chk", stage="app")  # the application the task declares: a POS request, then a CHK request
    rs = RemoteSystem(chk, url(server, protocol), "chk")
    assert run_once(rs, [0, 1, 2], max_batch=3) == dict(enumerate(chk.run_batch([0, 1, 2])))
    assert set(rs.networks) == {"pos", "chk"}


@pytest.mark.parametrize("protocol", ["http", "djinn"])
def test_resident_inputs_send_row_numbers_not_tensors(server: ServerProcess, protocol: str) -> None:
    """With resident=True the client side runs as usual, but each request names as many of the server's
    resident rows as its tensor has (from a counter per network) instead of carrying the tensor."""
    pos = task("pos", stage="app")
    rs = RemoteSystem(pos, url(server, protocol), "pos", resident=True)
    assert len(run_once(rs, [0, 1, 2], max_batch=3)) == 3  # tags for the resident rows' outputs
    assert rs._next_row["pos"] == 21  # 3 sentences x 7 words, named in turn
    rep = rs.report()
    assert rep.batches == 1 and 0 < rep.bytes_in < 400  # a JSON naming the rows (HTTP) or one int32 (DjiNN)
    assert rs.remote_info()["inputs"].startswith("resident")
    chk = task("chk", stage="app")  # two networks: the POS answer feeds the CHK request, both resident
    rs = RemoteSystem(chk, url(server, protocol), "chk", resident=True)
    assert len(run_once(rs, [0, 1, 2], max_batch=3)) == 3
    assert rs._next_row == {"pos": 21, "chk": 21} and rs.report().bytes_in < 800
    with pytest.raises(EndpointError, match="no resident inputs for 'imc'"):
        RemoteSystem(task("imc", num_samples=2), url(server, protocol), "imc", resident=True)


def test_json_when_the_server_has_no_binary_extension(server: ServerProcess, monkeypatch: Any) -> None:
    pos = task("pos", stage="app")
    rs = RemoteSystem(pos, url(server, "http"), "pos")
    rs.binary = False  # as against MLServer, whose /v2 lists no binary_tensor_data
    assert run_once(rs, [0, 1, 2], max_batch=3) == dict(enumerate(pos.run_batch([0, 1, 2])))
    assert rs.remote_info()["encoding"] == "JSON"


@pytest.mark.parametrize("protocol,flags", [
    ("http", ["--scenario", "single-stream", "--min-queries", "8"]),
    ("djinn", ["--scenario", "single-stream", "--min-queries", "8"]),
    ("http", ["--scenario", "server", "--target-qps", "20", "--latency-bound-ms", "5000", "--min-queries", "8"]),
    ("djinn", ["--scenario", "server", "--target-qps", "20", "--latency-bound-ms", "5000", "--min-queries", "8"]),
    ("http", ["--scenario", "offline"]),
    ("djinn", ["--scenario", "offline"]),
    ("http", ["--users", "3"]),
    ("djinn", ["--users", "3"]),
])
def test_run_remote_under_loadgen(cli: Any, server: ServerProcess, tmp_path: Path, protocol: str,
                                  flags: list[str]) -> None:
    code, out, err = cli("-q", "run", "component", "pos", *POS, "--remote", url(server, protocol), "--duration-s",
                         "0.2", *flags, "--out", str(tmp_path), "--json")
    assert code in (0, 5), err  # 5: INVALID by LoadGen's rules on a loaded machine (still written)
    doc = json.loads(out)
    assert doc["status"] == "ok"
    remote = doc["method"]["remote"]
    assert remote["protocol"] == protocol and remote["endpoint"] == url(server, protocol)
    assert doc["config"]["remote"] == url(server, protocol)
    assert remote["bytes"]["samples"] > 0 and remote["bytes"]["up_per_sample"] > 0
    assert doc["context"]["task"]["stage"] == "app"
    if protocol == "http":
        stats = remote["server_stats"]["pos"]
        assert stats["executed_batches"] >= 1 and sum(stats["batch_histogram"].values()) == stats["executed_batches"]
    assert doc["meters"]["memory"]["client_to_server"]["bytes_total"] > 0


def ctrl_c_while_measuring(args: list[str], out: Path) -> tuple[int, str, dict[str, Any]]:
    """Run ``aibench ARGS --out OUT`` in a session of its own and, once LoadGen's measured test has started
    (its log folder exists: the calibration is over) and has run a second, send SIGINT to the whole process
    group, as a terminal's Ctrl-C does. (exit code, stderr, the interrupted record)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "aibench", *args, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("*.loadgen")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(out.glob("*.loadgen")), proc.communicate(timeout=60)[1].decode()[-2000:]
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(records) == 1, err.decode()[-2000:]
    return proc.returncode, err.decode(), records[0]


def test_an_interrupted_remote_run_keeps_the_servers_statistics(server: ServerProcess, tmp_path: Path) -> None:
    """Ctrl-C during the measured test: the interrupted record still carries what the server had measured
    by then (its statistics delta), marked partial."""
    code, err, doc = ctrl_c_while_measuring(["run", "component", "pos", *POS, "--remote", url(server, "http"),
                                             "--duration-s", "60"], tmp_path)
    assert code == 130, err[-2000:]
    assert doc["status"] == "interrupted" and doc["validity"]["valid"] is False
    remote = doc["method"]["remote"]
    assert remote["partial"].startswith("interrupted (Ctrl-C)")
    assert remote["server_stats"]["pos"]["executed_batches"] >= 1 and remote["bytes"]["samples"] > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_endpoints_exit_3(cli: Any, server: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    for remote, text in ((f"http://127.0.0.1:{port}", "cannot reach"), (f"djinn://127.0.0.1:{port}", "cannot reach"),
                         (url(server, "http"), "does not serve model 'ner'"),
                         (url(server, "djinn"), "closed the connection")):
        code, _, err = cli("run", "component", "ner", "--batch", "2", "--num-samples", "2", "--words", "5",
                             "--data", "synthetic", "--remote", remote, "--out", str(tmp_path))
        assert code == EXIT_UNAVAILABLE, err
        lines = [ln for ln in err.splitlines() if ln.startswith("aibench: error:")]
        assert len(lines) == 1 and text in lines[0] and "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))  # refused before anything ran


@pytest.mark.parametrize("args,text", [
    (["component", "pos", "--remote", "ftp://127.0.0.1:1"], "--remote must be"),
    (["component", "pos", "--remote", "http://127.0.0.1:1/v2"], "no path"),
    (["component", "pos", "--remote", "http://127.0.0.1:99999"], "port"),
    (["micro", "gemm", "--remote", "http://127.0.0.1:1"], "load-generated"),
    (["component", "pos", "--dtype", "bfloat16", "--remote", "http://127.0.0.1:1"], "--dtype"),
])
def test_bad_remote_option_exit_2(cli: Any, tmp_path: Path, args: list[str], text: str) -> None:
    code, _, err = cli("run", *args, "--out", str(tmp_path))
    assert code == EXIT_USAGE and text in err, err


def test_parse_endpoint_defaults() -> None:
    assert parse_endpoint("djinn://localhost").port == 9000
    assert parse_endpoint("http://[::1]:8001").url == "http://[::1]:8001"
    with pytest.raises(EndpointError):
        RemoteSystem(task("pos"), f"http://127.0.0.1:{free_port()}", "pos")


def test_abort_and_stop_answer_everything_against_a_slow_server() -> None:
    """A server that takes 2 s per batch: abort answers what is queued at once, stop with a short timeout
    gives up on the requests in flight, answers them, and says it did not end cleanly."""
    import time

    import torch

    from aibench.sut.task import InferenceTask

    rows = [torch.ones(1, 4) for _ in range(8)]
    null = InferenceTask(model=lambda x: x.sum(1, keepdim=True), device=torch.device("cpu"), num_samples=8,
                         load_sample=rows.__getitem__, collate=lambda xs: torch.cat(list(xs)))
    with start_server(["null"], args=["--null-delay-us", "1000000"]) as srv:
        answered: list[tuple[Any, bool]] = []
        errors: list[BaseException] = []
        rs = RemoteSystem(null, url(srv, "djinn"), "null", in_flight=2)
        rs.stage(range(8))
        rs.start(lambda toks, resp, issued: answered.extend((t, issued is not None) for t in toks), max_batch=1,
                 on_error=errors.append)
        rs.submit(list(range(8)), list(range(8)))  # 8 requests: 2 in flight, 6 queued
        time.sleep(0.3)
        rs.abort()
        time.sleep(0.3)
        assert sorted(t for t, _ in answered) == list(range(2, 8))  # the queued ones, at once, not computed
        t0 = time.monotonic()
        assert rs.stop(timeout=0.3) is False  # two requests still at the server
        assert time.monotonic() - t0 < 5
        assert sorted(t for t, _ in answered) == list(range(8)) and not any(done for _, done in answered)
        assert not errors and rs.report().error is None


# -- a misbehaving endpoint: silent, or answering far more than the request's output ---------------------------

def test_a_silent_djinn_server_is_a_remote_error_after_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import socket

    import numpy as np

    from aibench.sut import remote

    monkeypatch.setattr(remote, "REQUEST_TIMEOUT_S", 0.3)
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog) and never answers
    port = listener.getsockname()[1]
    client = remote.DjinnClient(remote.parse_endpoint(f"djinn://127.0.0.1:{port}"),
                                {"imc": remote.ModelInfo("imc", out_row_shape=(4,))})

    async def go() -> None:
        try:
            await client.infer("imc", np.zeros((1, 8), dtype="<f4"))
        finally:
            await client.close()

    try:
        with pytest.raises(remote.RemoteError, match="did not answer"):
            asyncio.run(go())
    finally:
        listener.close()


def test_an_http_answer_larger_than_the_output_can_be_is_refused() -> None:
    import asyncio

    import numpy as np
    from aiohttp import web

    from aibench.sut import remote

    async def huge(_request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(_request)
        for _ in range(64):  # 4 MiB without a length: the client must stop reading, not buffer it all
            await resp.write(b"x" * (1 << 16))
        return resp

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/v2/models/imc/infer", huge)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = remote.HttpClient(remote.parse_endpoint(f"http://127.0.0.1:{port}"),
                                   {"imc": remote.ModelInfo("imc", out_row_shape=(4,))}, binary=True, limit=1)
        try:
            await client.infer("imc", np.zeros((1, 8), dtype="<f4"))
        finally:
            await client.close()
            await runner.cleanup()

    with pytest.raises(remote.RemoteError, match="bound"):
        asyncio.run(go())
