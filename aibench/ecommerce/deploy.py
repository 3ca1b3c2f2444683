"""The services deployment of the path under load (``aibench run scenario ecommerce --deploy services``).

:func:`start_deployment` starts what ``--addresses`` does not name, each on a free loopback port, in two
stages whose processes start together: the model server (``aibench serve --model-dir ecommerce=DIR``, the
three models, on a port chosen beforehand), the searcher, the fetch, the recommender and the ranker (told
the model server's address); then the planner (told the four modules' addresses). A process that cannot
start stops everything started so far and the run fails in one line (its own error and exit code). Every
process dies with this one, even on SIGKILL (``AIBENCH_PARENT_PID``, :mod:`aibench.lifetime`), and
:meth:`Deployment.stop` (SIGTERM, in-flight requests finish) runs on the way out of a run, on failure and on
Ctrl-C too.

``--addresses planner=URL`` uses a planner started elsewhere (``aibench scenario ecommerce serve-module
planner --peers ...``) and starts nothing; ``--addresses searcher=URL`` (or recommender, ranker, fetch,
models) starts the rest here and points them at it. Every given address is checked before anything is started
(and every started module before the load): a module must answer ``GET /health`` for the same store (exit 4
otherwise), the model server must serve the three models; one that cannot be reached is one line, exit 3.

:class:`RemotePath` is the load driver's side: it has the in-process path's interface (``handle``,
``sample``, ``info``, ``close``), so :class:`~aibench.ecommerce.system.ShopSystem` serves either, with the
same workers, queue and records. ``handle`` sends one query to the planner and returns its page and the
parts, with ``communication/client-planner`` added; a failed hop is a
:class:`~aibench.ecommerce.path.ModuleFailure` naming the module (the planner when the planner itself is
down or slow).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench.ecommerce.services import (
    MODEL_SERVER,
    MODULE_NAMES,
    PEERS,
    ROUTES,
    HopFailure,
    ModuleError,
    ModuleTimeout,
    check_url,
)
from aibench.errors import ListenError, ResultIOError, UnavailableError, UsageError

ADDRESS_KEYS = (*MODULE_NAMES, MODEL_SERVER)
START_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_S = 10.0
HEALTH_LIMIT_BYTES = 1 << 20
RESPONSE_LIMIT_BYTES = 64 << 20


def parse_addresses(text: str) -> dict[str, str]:
    """``NAME=http://HOST:PORT,...`` (NAME: a module or ``models``, the model server); ``planner`` alone or
    any of the others. Bad forms are usage errors (exit 2)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, eq, url = item.partition("=")
        name = name.strip()
        if not eq or name not in ADDRESS_KEYS:
            raise UsageError(f"--addresses must be NAME=http://HOST:PORT[,...] with NAME one of "
                             f"{', '.join(ADDRESS_KEYS)}; got {item.strip()!r}")
        if name in out:
            raise UsageError(f"--addresses names {name} twice")
        out[name] = check_url(url, f"--addresses {name}")
    if "planner" in out and len(out) > 1:
        raise UsageError("--addresses: with planner=URL the planner's own peers are used (set with its --peers "
                         "where it was started); name the planner alone")
    return out


def timeouts(hop_timeout_s: float) -> dict[str, float]:
    """Each caller's timeout, nested so that the innermost slow peer is the one named: the recommender's and
    the ranker's calls to the model server a third of a hop (the recommender makes two), the planner's calls
    a hop, the load driver's call to the planner four hops and a second."""
    return {"models": hop_timeout_s / 3, "planner_peers": hop_timeout_s, "client": 4 * hop_timeout_s + 1.0}


def module_command(module: str, store: Path, peers: dict[str, str], *, workers: int, timeout_s: float,
                   window: int) -> list[str]:
    cmd = [sys.executable, "-m", "aibench", "scenario", "ecommerce", "serve-module", module, "--store", str(store),
           "--port", "0", "--json", "--workers", str(workers), "--timeout-s", f"{timeout_s:g}"]
    if peers:
        cmd += ["--peers", ",".join(f"{k}={v}" for k, v in peers.items())]
    if module == "planner":
        cmd += ["--window", str(window)]
    return cmd


@dataclass
class Deployment:
    """What a run uses: every address (``urls``), the processes it started (role, :class:`ServerProcess`),
    and the roles given by ``--addresses``."""

    urls: dict[str, str]
    started: list[tuple[str, Any]] = field(default_factory=list)
    given: tuple[str, ...] = ()

    def pids(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for role, proc in self.started:
            out.append((role, proc.pid))
            if role == MODEL_SERVER:
                out += [(f"models-instance-{i}", pid) for i, pid in enumerate(proc.worker_pids)]
        return out

    def stop(self, timeout_s: float = 60.0) -> dict[str, int]:
        """SIGTERM to every started process at once (the planner first), then wait for each; their exit
        codes (0: stopped after its requests in flight finished)."""
        import signal
        import subprocess
        import time

        for _role, proc in reversed(self.started):
            if proc.alive():
                with contextlib.suppress(OSError):
                    proc.process.send_signal(signal.SIGTERM)  # once: a second SIGTERM means "stop at once"
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int] = {}
        for role, proc in reversed(self.started):
            try:
                proc.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
            codes[role] = int(proc.process.returncode)
        self.started = []
        return codes


def start_deployment(store: Path, addresses: dict[str, str], *, window: int, workers: int, hop_timeout_s: float,
                     model_threads: int) -> Deployment:
    """Start what ``addresses`` does not name (see the module docstring) and return once all are ready."""
    from aibench.ecommerce.served import FAMILY, NAMES
    from aibench.service.launch import serve_command, spawn

    urls = dict(addresses)
    dep = Deployment(urls, given=tuple(addresses))
    if "planner" in urls:
        return dep
    t = timeouts(hop_timeout_s)
    spawned: list[tuple[str, Any]] = []

    def stage(commands: dict[str, list[str]]) -> None:
        for role, cmd in commands.items():
            spawned.append((role, spawn(cmd)))
        for role, starting in [(r, s) for r, s in spawned if r in commands]:
            proc = starting.ready(START_TIMEOUT_S)
            dep.started.append((role, proc))
            urls[role] = check_url(proc.http_url or "", role)

    def module(name: str, peers: dict[str, str], timeout_s: float) -> list[str]:
        return module_command(name, store, peers, workers=workers, timeout_s=timeout_s, window=window)

    def abandon() -> None:
        ready = {id(p.process) for _r, p in dep.started}
        for _role, starting in spawned:
            if id(starting.process) not in ready:
                starting.kill()
        spawned.clear()
        dep.stop()

    for attempt in range(2):
        try:
            first: dict[str, list[str]] = {}
            if MODEL_SERVER not in addresses and not {"recommender", "ranker"} <= set(addresses):
                # its port is chosen here so that the recommender and the ranker start beside it, not after it
                # (each imports torch: seconds); another program taking the port meanwhile is retried once
                port = free_port()
                urls[MODEL_SERVER] = f"http://127.0.0.1:{port}"
                first[MODEL_SERVER] = serve_command(NAMES, port=port, djinn_port="off", args=[
                    "--model-dir", f"{FAMILY}={store}", "--threads", str(model_threads), "--instances", "1"])
            first.update({m: module(m, {}, t["planner_peers"]) for m in ("searcher", "fetch") if m not in urls})
            first.update({m: module(m, {MODEL_SERVER: urls[MODEL_SERVER]}, t["models"])
                          for m in ("recommender", "ranker") if m not in urls})
            stage(first)
            stage({"planner": module("planner", {p: urls[p] for p in PEERS["planner"]}, t["planner_peers"])})
            return dep
        except ListenError:
            abandon()
            if attempt or MODEL_SERVER not in first:
                raise
            urls.clear()
            urls.update(addresses)
        except BaseException:
            abandon()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def free_port() -> int:
    """A loopback port free now (for a server told its port before its clients start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as resp:
            doc = json.loads(resp.read(HEALTH_LIMIT_BYTES + 1)[:HEALTH_LIMIT_BYTES])
    except urllib.error.HTTPError as exc:
        raise UnavailableError(f"{what} answered {url} with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"cannot reach {what} at {url}: {getattr(reason, 'strerror', None) or reason}") \
            from None
    except ValueError:
        raise UnavailableError(f"{what} at {url} answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise UnavailableError(f"{what} at {url} answered something that is not a JSON object")
    return doc


def check_addresses(urls: dict[str, str], names: tuple[str, ...], store_id: str) -> None:
    """Each of ``names`` in ``urls`` answers as that module of the same store (the model server: serving the
    three models); before any load."""
    from aibench.ecommerce.served import NAMES

    for name in names:
        url = urls[name]
        if name == MODEL_SERVER:
            for model in NAMES:
                _get_json(f"{url}/v2/models/{model}", f"the model server ({model})")
            continue
        doc = _get_json(f"{url}/health", f"the {name}")
        if doc.get("module") != name:
            raise UnavailableError(f"{url} is not an e-commerce {name} (its /health says {str(doc)[:200]})")
        if doc.get("store_id") != store_id:
            raise ResultIOError(f"the {name} at {url} serves another store (store_id {doc.get('store_id')!r}, "
                                f"this store's is {store_id!r})")


class RemotePath:
    """The path as the load driver sees it when the modules are services: one request to the planner per
    query, on an asyncio loop in a thread of its own (an aiohttp session: a pool of kept-alive connections)."""

    def __init__(self, planner_url: str, info: Any, *, window: int, page: int, timeout_s: float,
                 in_flight: int) -> None:
        from aibench.ecommerce.store import connect

        self.info, self.url, self.window, self.page, self.timeout_s = info, planner_url, window, page, timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aibench-shop-client", daemon=True)
        self._thread.start()
        self._peer = asyncio.run_coroutine_threadsafe(self._open(max(1, in_flight)), self._loop).result()
        self._con = connect(info.path)

    async def _open(self, in_flight: int) -> Any:
        import aiohttp

        from aibench.ecommerce.services import Peer

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * in_flight),
                                        timeout=aiohttp.ClientTimeout(total=None))
        return Peer("planner", self.url, ROUTES["planner"], session, self.timeout_s, RESPONSE_LIMIT_BYTES)

    def handle(self, query: Any) -> tuple[Any, dict[str, float]]:
        """One query through the planner: ``(Page, seconds)`` as the in-process path answers, plus the
        communication parts; a failure is a :class:`ModuleFailure` naming the module."""
        from aibench.ecommerce.path import ModuleFailure, Page

        doc = {"user": int(query.user), "text": str(query.text), "window": self.window, "page": self.page}
        fut = asyncio.run_coroutine_threadsafe(self._peer.call(doc), self._loop)
        try:
            reply, rtt = fut.result(self.timeout_s + 5.0)  # the call times out itself; this is a backstop
        except HopFailure as exc:
            raise ModuleFailure(exc.module, exc.cause) from None
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise ModuleFailure("planner", ModuleTimeout(f"no answer from {self.url} within "
                                                         f"{self.timeout_s + 5.0:g} s")) from None
        try:
            p = reply["page"]
            page = Page(status=str(p["status"]), products=list(p["products"]), hits=int(p["hits"]),
                        clusters_searched=int(p["clusters_searched"]), category=int(p["category"]),
                        anonymous=bool(p["anonymous"]))
            if page.status not in ("ok", "no_hits"):
                raise ValueError(f"status {page.status!r}")
            seconds = {str(k): float(v) for k, v in dict(reply["seconds"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModuleFailure("planner", ModuleError(f"{self.url} answered a page that cannot be read: "
                                                       f"{type(exc).__name__}: {exc}")) from None
        seconds["communication/client-planner"] = max(0.0, rtt - float(reply["work_s"]))
        return page, seconds

    def sample(self, n: int, seed: int = 0) -> list[Any]:
        """The same workload as the in-process path's (:func:`aibench.ecommerce.modules.sample_sessions`)."""
        from aibench.ecommerce.modules import sample_sessions
        from aibench.ecommerce.path import Query

        return [Query(user, text) for user, text in sample_sessions(self._con, n, seed)]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._peer.session.close(), self._loop).result(10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()
        self._con.close()


def _usage(pids: list[tuple[str, int]]) -> dict[int, dict[str, Any]]:
    from aibench.workloads.scenario._served import _proc

    return {pid: p for _role, pid in pids if (p := _proc(pid)) is not None}


@contextlib.contextmanager
def services_system(params: dict[str, Any], result: Any) -> Iterator[tuple[Any, int]]:
    """scenario/ecommerce with ``--deploy services``: yield ``(ShopSystem over a RemotePath, 1)``; the
    processes it started are stopped on the way out, whatever happened."""
    import torch

    from aibench.ecommerce.load import record
    from aibench.ecommerce.store import PAGE, models_config, read_info, store_id
    from aibench.ecommerce.system import ShopSystem

    info = read_info(Path(params["store"]))  # missing, half-written, untrained: one line, exit 4, nothing started
    sid = store_id(info)
    config = models_config(info, sid)
    addresses = parse_addresses(str(params.get("addresses") or ""))
    hop = float(params["hop_timeout_s"])
    workers = int(params["workers"])
    check_addresses(addresses, tuple(addresses), sid)  # what is given, before anything is started
    dep = start_deployment(info.path.parent, addresses, window=int(params["window"]), workers=workers,
                           hop_timeout_s=hop, model_threads=torch.get_num_threads())
    path: RemotePath | None = None
    try:
        check_addresses(dep.urls, tuple(r for r, _p in dep.started if r != MODEL_SERVER), sid)
        path = RemotePath(dep.urls["planner"], info, window=int(params["window"]), page=PAGE,
                          timeout_s=timeouts(hop)["client"], in_flight=workers)
        queries = path.sample(int(params["samples"]), seed=0)  # the in-process run's workload
        system = ShopSystem(path, queries, workers=workers, threads=torch.get_num_threads())
        quality = config.get("quality")
        result.context["store"] = {**info.to_json(), "models": {
            k: config.get(k) for k in ("pref_hidden", "dim", "ranker_hidden", "seed", "epochs") if k in config}}
        before = _usage(dep.pids())

        def recorder(res: Any, partial: str | None) -> None:
            record(system, res, quality, services=True, partial=partial)
            after = _usage(dep.pids())
            procs = [{"role": role, "pid": pid, **after[pid],
                      "cpu_s_run": after[pid]["cpu_s"] - before[pid]["cpu_s"] if pid in before else None}
                     for role, pid in dep.pids() if pid in after]
            res.method["ecommerce"]["deployment"] = {
                "kind": "services", "urls": dict(dep.urls), "started": [r for r, _p in dep.started],
                "given": list(dep.given), "hop_timeout_s": hop, "timeouts_s": timeouts(hop),
                "processes": procs,
                "processes_note": "read from /proc: cpu_s since each process started, cpu_s_run over the run "
                                  "(warm-up included; the models and the store were loaded before it)"}

        system.recorder = recorder  # the driver calls it once, also before an interrupted record is written
        try:
            yield system, 1
        finally:
            system.record(result)  # when no driver did (a no-op once it has)
    finally:
        if path is not None:
            path.close()
        codes = dep.stop()
        if codes:
            info_doc = result.method.setdefault("ecommerce", {})
            info_doc.setdefault("deployment", {"kind": "services"})["exit_codes"] = codes
