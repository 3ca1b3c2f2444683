"""scenario/ecommerce as services on a tiny store: the modules behind HTTP answer as the in-process path does,
a slow or dead module (or model server) is a failed query naming it, never a hang; a run started with
``--deploy services`` reports each hop's communication time and leaves no process behind; bad addresses and
a port in use are one line each."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench.ecommerce.generate import Sizes, generate
from aibench.errors import EXIT_LISTEN, EXIT_UNAVAILABLE, EXIT_USAGE
from aibench.results.schema import json_schema
from tests.processes import gone

TINY = Sizes(products=300, users=100, queries=100, sessions=600)
FAST = ("--threads", "1", "--workers", "1", "--samples", "30", "--window", "100")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny store, generated and trained once for the module."""
    from aibench.ecommerce.train import train

    out = tmp_path_factory.mktemp("shop")
    info = generate(out, TINY, seed=7)
    train(info, seed=0, epochs=1)
    return out


def _wait_gone(pids: list[int], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(gone(p) for p in pids)


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_services_answer_as_in_process_and_a_slow_or_dead_module_is_a_named_failure(store: Path) -> None:
    """One deployment, started from Python: the same pages as in process; bad requests get JSON 4xx; a
    stopped searcher (SIGSTOP: it accepts connections but never answers) and then a dead one, and a dead model
    server, each fail the query with the module named within the timeouts; stopping leaves nothing."""
    import numpy as np

    from aibench.ecommerce.deploy import RemotePath, check_addresses, start_deployment, timeouts
    from aibench.ecommerce.path import ModuleFailure, ShopPath
    from aibench.ecommerce.store import PAGE, store_id
    from aibench.errors import ResultIOError

    hop = 2.0
    dep = start_deployment(store, {}, window=100, workers=1, hop_timeout_s=hop, model_threads=1)
    pids = [pid for _role, pid in dep.pids()]
    roles = dict(dep.started)
    local = ShopPath(store, window=100)
    local_id = store_id(local.info)
    remote = RemotePath(dep.urls["planner"], local.info, window=100, page=PAGE, timeout_s=timeouts(hop)["client"],
                        in_flight=1)
    try:
        assert {r for r, _ in dep.started} == {"models", "searcher", "fetch", "recommender", "ranker", "planner"}
        assert len(pids) == 7  # six processes and the model server's instance
        # the same queries give the same pages
        queries = local.sample(12, seed=1)
        assert remote.sample(12, seed=1) == queries
        statuses = set()
        for q in queries:
            page_l, _ = local.handle(q)
            page_r, sec = remote.handle(q)
            statuses.add(page_r.status)
            assert (page_r.status, page_r.hits, page_r.clusters_searched, page_r.category, page_r.anonymous) == \
                (page_l.status, page_l.hits, page_l.clusters_searched, page_l.category, page_l.anonymous)
            assert [p["id"] for p in page_r.products] == [p["id"] for p in page_l.products]
            assert [p["title"] for p in page_r.products] == [p["title"] for p in page_l.products]
            np.testing.assert_allclose([p["score"] for p in page_r.products],
                                       [p["score"] for p in page_l.products], rtol=1e-5, atol=1e-6)
            hops = {k for k in sec if k.startswith("communication/")}
            assert {"communication/client-planner", "communication/planner-recommender",
                    "communication/planner-searcher", "communication/recommender-classifier",
                    "communication/recommender-preference"} <= hops
            assert all(v >= 0 for v in sec.values())
        assert "ok" in statuses
        # an unknown user and a query with no terms: as in process
        for q in (type(queries[0])(10 ** 9, queries[0].text), type(queries[0])(1, "!!")):
            assert remote.handle(q)[0].status == local.handle(q)[0].status
            assert remote.handle(q)[0].anonymous == local.handle(q)[0].anonymous

        # modules placed elsewhere (here: this deployment's): only the planner is started, pointed at them
        given = {k: dep.urls[k] for k in ("recommender", "searcher", "ranker", "fetch", "models")}
        check_addresses(given, tuple(given), local_id)
        check_addresses({"planner": dep.urls["planner"]}, ("planner",), local_id)  # a planner given: nothing started
        assert start_deployment(store, {"planner": dep.urls["planner"]}, window=100, workers=1, hop_timeout_s=hop,
                                model_threads=1).started == []
        with pytest.raises(ResultIOError, match="serves another store"):
            check_addresses(given, ("searcher",), "another-store")
        dep2 = start_deployment(store, given, window=100, workers=1, hop_timeout_s=hop, model_threads=1)
        remote2 = RemotePath(dep2.urls["planner"], local.info, window=100, page=PAGE, timeout_s=10.0, in_flight=1)
        try:
            assert [r for r, _ in dep2.started] == ["planner"]
            assert [p["id"] for p in remote2.handle(queries[0])[0].products] == \
                [p["id"] for p in local.handle(queries[0])[0].products]
        finally:
            remote2.close()
            assert dep2.stop() == {"planner": 0}

        planner = dep.urls["planner"] + "/query"
        assert _post(planner, b"{not json")[0] == 400
        code, doc = _post(planner, json.dumps({"user": "x", "text": "1"}).encode())
        assert code == 400 and "user" in doc["error"]
        code, doc = _post(dep.urls["fetch"] + "/fetch", json.dumps({"ids": [10 ** 6], "scores": [0.0]}).encode())
        assert code == 400 and "no product" in doc["error"]

        searcher = roles["searcher"].pid
        os.kill(searcher, signal.SIGSTOP)  # slow: connections are accepted, nothing is answered
        try:
            t0 = time.monotonic()
            with pytest.raises(ModuleFailure) as exc:
                remote.handle(queries[0])
            assert exc.value.module == "searcher" and "ModuleTimeout" in str(exc.value)
            assert time.monotonic() - t0 < hop + 5
        finally:
            os.kill(searcher, signal.SIGCONT)
        os.kill(searcher, signal.SIGKILL)  # down
        with pytest.raises(ModuleFailure) as exc:
            remote.handle(queries[0])
        assert exc.value.module == "searcher" and "ModuleDown" in str(exc.value)
        os.kill(roles["models"].pid, signal.SIGKILL)  # the model server down: the recommender fails, saying why
        with pytest.raises(ModuleFailure) as exc:
            remote.handle(queries[0])
        assert exc.value.module == "recommender" and "model server" in str(exc.value)
    finally:
        remote.close()
        local.close()
        codes = dep.stop()
    assert codes["planner"] == 0 and codes["fetch"] == 0 and codes["searcher"] == -signal.SIGKILL
    assert _wait_gone(pids)


def test_a_run_as_services_reports_each_hop_and_leaves_no_process(store: Path, cli: Any, tmp_path: Path) -> None:
    from aibench.ecommerce.figures import HOP_PARTS, MODULES, PARTS

    code, out, err = cli("-q", "run", "scenario", "ecommerce", "--store", str(store), *FAST, "--deploy", "services",
                         "--users", "2", "--think-time-ms", "2", "--warmup-s", "0.2", "--queries", "30",
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, json_schema())
    assert doc["params"]["deploy"] == "services"
    m, info = doc["metrics"], doc["method"]["ecommerce"]
    assert m["queries_failed"]["value"] == 0 and m["queries_ok"]["value"] + m["queries_no_hits"]["value"] == 30
    for cpu in ("path_cpu_ms", "harness_cpu_share"):  # the path's CPU is in the module processes, not here
        assert m[cpu]["value"] is None and "module processes" in m[cpu]["unavailable"]
    modules = doc["parts"]["module"]
    assert set(modules) <= set(PARTS) and {*MODULES, "queue", "whole_path", "communication"} <= set(modules)
    assert {"communication/client-planner", "communication/planner-recommender", "communication/planner-searcher",
            "communication/recommender-classifier", "communication/recommender-preference"} <= set(modules)
    assert set(h for h in modules if h.startswith("communication/")) <= set(HOP_PARTS)
    for name in ("communication", "communication/planner-searcher", "recommender/classifier"):
        s = modules[name]["summary"]
        assert {"mean", "p50", "p90", "p99", "p99_9"} <= set(s) and 0 <= s["p50"] <= s["max"]
    stage = doc["parts"]["stage"]
    assert stage["communication"]["seen"] == modules["planner"]["seen"] == 30
    # per query: the modules, the planner's and the driver's hops add up to what the planner's caller saw
    assert stage["ai"]["total"] + stage["non_ai"]["total"] + stage["communication"]["total"] == pytest.approx(
        sum(modules[n]["total"] for n in MODULES) + sum(modules[h]["total"] for h in (
            "communication/client-planner", "communication/planner-recommender", "communication/planner-searcher",
            "communication/planner-ranker", "communication/planner-fetch") if h in modules), rel=1e-6)
    dep = info["deployment"]
    assert dep["kind"] == "services" and set(dep["started"]) == {"models", "searcher", "fetch", "recommender",
                                                                 "ranker", "planner"}
    assert dep["exit_codes"] == dict.fromkeys(dep["exit_codes"], 0) and len(dep["exit_codes"]) == 6
    assert all(u.startswith("http://127.0.0.1:") for u in dep["urls"].values())
    pids = [p["pid"] for p in dep["processes"]]
    assert len(pids) == 7 and _wait_gone(pids)
    # the HTML report's per-module section shows the hops
    code, _out, err = cli("report", str(next(tmp_path.glob("scenario-ecommerce-*.json"))), "--html",
                          str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "deploy=services" in page and "communication (services)" in page and "· planner-searcher" in page


def test_bad_addresses_and_an_unreachable_planner_are_one_line(store: Path, cli: Any, tmp_path: Path) -> None:
    base = ("run", "scenario", "ecommerce", "--store", str(store), *FAST, "--queries", "5", "--warmup-s", "0",
            "--users", "1", "--out", str(tmp_path))
    for addresses, why in (("planner=ftp://x:1", "http://HOST:PORT"), ("cache=http://127.0.0.1:9", "NAME"),
                           ("planner=http://127.0.0.1:9,searcher=http://127.0.0.1:8", "planner alone")):
        code, _, err = cli(*base, "--deploy", "services", "--addresses", addresses)
        assert code == EXIT_USAGE and why in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(*base, "--addresses", "planner=http://127.0.0.1:9")
    assert code == EXIT_USAGE and "--deploy services" in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code, _, err = cli(*base, "--deploy", "services", "--addresses", f"planner=http://127.0.0.1:{port}")
    assert code == EXIT_UNAVAILABLE and "cannot reach the planner" in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 20


def test_serve_module_port_in_use_and_bad_peers(store: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "aibench", "scenario", "ecommerce", "serve-module", "searcher",
                               "--store", str(store), "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_LISTEN and "already in use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "aibench", "scenario", "ecommerce", "serve-module", "searcher",
                           "--store", str(store), "--peers", "models=http://127.0.0.1:1"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == EXIT_USAGE and "does not call 'models'" in proc.stderr


def test_a_module_bounds_requests_and_stops_on_sigterm(store: Path) -> None:
    from aibench.ecommerce.deploy import module_command
    from aibench.service.launch import spawn

    cmd = [*module_command("fetch", store, {}, workers=1, timeout_s=1.0, window=100), "--max-request-mb", "0.01"]
    srv = spawn(cmd).ready(120)
    try:
        url = f"{srv.http_url}/fetch"
        code, doc = _post(url, json.dumps({"ids": [0] * 3000, "scores": [0.0] * 3000}).encode())  # ~27 KB
        assert code == 413 and "--max-request-mb" in doc["error"]
        code, doc = _post(url, json.dumps({"ids": [0, 1], "scores": [0.5]}).encode())
        assert code == 400 and "scores" in doc["error"]
        code, doc = _post(url, json.dumps({"ids": [1, 0], "scores": [0.5, 0.25]}).encode())
        assert code == 200 and [p["id"] for p in doc["products"]] == [1, 0] and doc["work_s"] >= 0
        with urllib.request.urlopen(f"{srv.http_url}/health", timeout=10) as resp:
            assert json.loads(resp.read())["module"] == "fetch"
    finally:
        assert srv.stop() == 0
    deadline = time.monotonic() + 10  # the reader thread takes the last lines after the exit
    while not any(e.get("event") == "stopped" for e in srv.events) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e.get("event") == "stopped" for e in srv.events)


def test_ctrl_c_during_a_services_run_stops_every_module(store: Path, tmp_path: Path) -> None:
    """SIGINT while the users run: exit 130, the run recorded as interrupted, no module or model server left."""
    from tests.processes import wait_for_children

    proc = subprocess.Popen([sys.executable, "-m", "aibench", "run", "scenario", "ecommerce", "--store", str(store),
                             *FAST, "--deploy", "services", "--users", "1", "--think-time-ms", "5", "--warmup-s", "0",
                             "--duration-s", "120", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        planner = wait_for_children(proc, b"planner")  # the last one started: the others are up
        assert planner, proc.communicate()[1].decode()[-2000:]
        kids = [int(k) for k in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        time.sleep(2)  # the users are running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    doc = json.loads(next(tmp_path.glob("scenario-ecommerce-*.json")).read_text())
    assert doc["status"] == "interrupted"
    # what was measured up to then is kept, marked partial: the modules' parts, the hops, each process's CPU
    info = doc["method"]["ecommerce"]
    assert "interrupted" in info["partial"] and {"searcher", "communication"} <= set(doc["parts"]["module"])
    assert {p["role"] for p in info["deployment"]["processes"]} >= {"planner", "searcher", "models"}
    assert len(kids) == 6 and _wait_gone(kids)


def test_serve_with_a_model_dir_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    for arg, code, why in ((f"ecommerce={tmp_path}", 4, "no e-commerce store"), ("other=x", EXIT_USAGE, "family")):
        proc = subprocess.run([sys.executable, "-m", "aibench", "serve", "--model-dir", arg, "--port", "0",
                               "--djinn-port", "off"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == code and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr


def test_the_updater_and_the_size_study_are_refused_as_services() -> None:
    """Swaps and size-study sets reach only the in-process path: a services run refuses them, one line."""
    from aibench.errors import UsageError
    from aibench.workloads.scenario.ecommerce import ecommerce

    for extra in ({"update_every_s": 5.0}, {"pref_hidden": 1024}):
        with pytest.raises(UsageError, match="in-process only"):
            ecommerce({"deploy": "services", **extra}, None)
