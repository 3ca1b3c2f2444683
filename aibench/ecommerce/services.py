"""The path as services: each module a process behind HTTP (``aibench scenario ecommerce serve-module``).

AIBench ran its modules as separate services (a Spring Boot planner, Flask and TF Serving model servers,
Elasticsearch clusters) and the paper measured the communication between them as a part of the path of its
own. Here each module is one process with an aiohttp server, speaking JSON over HTTP on loopback by default
(any address: modules can be placed on other machines), and the three models are served by ``aibench
serve`` (the Open Inference Protocol; :mod:`aibench.ecommerce.served`):

- planner, ``POST /query``: orchestrates one query over the four others, as the in-process ``handle``;
- recommender, ``POST /recommend``: the user's row, then the classifier and the preference network on the
  model server;
- searcher, ``POST /search``: the popularity clusters' FTS5 indexes;
- ranker, ``POST /rank``: the features, the learned score on the model server, the top page;
- fetch, ``POST /fetch``: the page's summaries.

Their work is the in-process path's own functions (:mod:`aibench.ecommerce.modules`, the ranker's features).

Every answer carries ``work_s``: the module's own time, from its request parsed to its answer ready. The
caller's round trip minus that is the **hop's communication time** (encoding, HTTP, the loopback or network,
decoding, and waiting in the callee's process for its event loop or a free thread); a module's work includes
the round trips it makes itself. So, per query: ``communication/client-planner``,
``communication/planner-{recommender,searcher,ranker,fetch}`` and, inside the recommender and ranker,
``communication/recommender-{classifier,preference}`` and ``communication/ranker-model`` (a model request's
round trip minus the model server's own queue and compute time, from its response). ``planner`` is the
planner's work minus its four round trips: the orchestration, as in process.

**Faults are answers, never hangs.** Every outgoing call has a timeout (``--timeout-s``); a peer that refuses
the connection, drops it, does not answer in time or answers nonsense fails the query with the module named:
the planner answers 502 (504 for a timeout) with ``{"error", "module", "kind"}``, and the load driver records
a failed query naming that module. Request bodies are bounded (``--max-request-mb``: 413) and must arrive
within ``--body-timeout`` (408); malformed requests get 400; every error body is JSON ``{"error": ...}``.
The blocking work (SQLite, numpy) runs on ``--workers`` threads, each with its own read-only connection; the
event loop only parses, awaits peers and answers. SIGTERM or Ctrl-C: stop listening, let requests in flight
finish, exit 0. The planner, searcher, fetch and recommender never import torch; the ranker loads its
feature buffers (the ranker's state_dict, ``weights_only=True``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench.errors import UsageError

MODULE_NAMES = ("planner", "recommender", "searcher", "ranker", "fetch")
MODEL_SERVER = "models"
# Where a module listens unless told, and where it looks for its peers unless told (the model server:
# aibench serve's default HTTP port), so that six commands with no options make a working deployment.
DEFAULT_PORTS = {"planner": 8100, "recommender": 8101, "searcher": 8102, "ranker": 8103, "fetch": 8104}
DEFAULT_MODELS_URL = "http://127.0.0.1:8000"
PEERS: dict[str, tuple[str, ...]] = {"planner": ("recommender", "searcher", "ranker", "fetch"),
                                     "recommender": (MODEL_SERVER,), "searcher": (), "ranker": (MODEL_SERVER,),
                                     "fetch": ()}
ROUTES = {"planner": "/query", "recommender": "/recommend", "searcher": "/search", "ranker": "/rank",
          "fetch": "/fetch"}
MiB = 1 << 20
MAX_TEXT = 4096  # characters of a query text
MAX_WINDOW = 1_000_000  # the scenario's --window bound
MAX_PAGE = 10_000
JSON_HEADERS = {"Content-Type": "application/json"}


# -- how a call to a peer fails ------------------------------------------------------------------------------

class ModuleDown(Exception):
    """The peer refused or dropped the connection (not running, crashed, unreachable)."""


class ModuleTimeout(Exception):
    """The peer did not answer within the timeout (stopped, overloaded, too slow)."""


class ModuleError(Exception):
    """The peer answered, but with an error or with something that is not a valid answer."""


FAILURES = {c.__name__: c for c in (ModuleDown, ModuleTimeout, ModuleError)}


class HopFailure(Exception):
    """A call to peer ``module`` failed (``cause`` is one of :data:`FAILURES`): the query fails, naming it."""

    def __init__(self, module: str, cause: Exception) -> None:
        self.module, self.cause = module, cause
        super().__init__(f"{module}: {type(cause).__name__}: {cause}")


class BadRequest(Exception):
    """The request is malformed (400)."""


# -- configuration -------------------------------------------------------------------------------------------

def check_url(url: str, what: str) -> str:
    """``http://HOST:PORT`` (no path), normalised; anything else is a usage error naming ``what``."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{what}: {url!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username:
        raise UsageError(f"{what} must be http://HOST:PORT; got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}"


def default_peers(module: str) -> dict[str, str]:
    return {p: DEFAULT_MODELS_URL if p == MODEL_SERVER else f"http://127.0.0.1:{DEFAULT_PORTS[p]}"
            for p in PEERS[module]}


def parse_peers(text: str | None, module: str) -> dict[str, str]:
    """``NAME=URL,...`` for ``module``'s peers (the rest keep their defaults); a peer it does not call is a
    usage error."""
    peers = default_peers(module)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, eq, url = item.partition("=")
        name = name.strip()
        if not eq:
            raise UsageError(f"--peers must be NAME=http://HOST:PORT[,...]; got {item!r}")
        if name not in PEERS[module]:
            known = ", ".join(PEERS[module]) or "none"
            raise UsageError(f"--peers: the {module} does not call {name!r} (its peers: {known})")
        peers[name] = check_url(url, f"--peers {name}")
    return peers


@dataclass
class ModuleConfig:
    module: str
    store: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (announced)
    peers: dict[str, str] = field(default_factory=dict)
    workers: int = 2  # threads for the blocking work
    timeout_s: float = 10.0  # every outgoing call
    max_request_bytes: int = 16 * MiB
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    shutdown_timeout_s: float = 30.0
    window: int = 2000  # the planner's default, when a query does not say
    json_lines: bool = False


# -- calling peers -------------------------------------------------------------------------------------------

class Peer:
    """One peer module over a shared aiohttp session: JSON in, JSON out, bounded, timed out."""

    def __init__(self, name: str, url: str, route: str, session: Any, timeout_s: float, limit: int) -> None:
        self.name, self.url, self.timeout_s, self.limit = name, url, timeout_s, limit
        self.endpoint = url + route
        self.session = session

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        from aibench.sut.remote import _read_bounded

        async with self.session.post(self.endpoint, data=body, headers=JSON_HEADERS) as resp:
            return resp.status, await _read_bounded(resp, self.limit, f"{self.name} at {self.url}")

    async def call(self, doc: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """``(answer, round trip s)``; raises :class:`HopFailure` naming this peer. The round trip includes
        encoding the request and decoding the answer."""
        import aiohttp

        from aibench.sut.remote import RemoteError

        t0 = time.perf_counter()
        try:
            body = json.dumps(doc, separators=(",", ":")).encode()
            status, raw = await asyncio.wait_for(self._post(body), self.timeout_s)
        except TimeoutError:
            raise HopFailure(self.name, ModuleTimeout(f"no answer from {self.url} within {self.timeout_s:g} s")) \
                from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:  # refused, reset, dropped
            why = getattr(getattr(exc, "os_error", None), "strerror", None) or str(exc) or type(exc).__name__
            raise HopFailure(self.name, ModuleDown(f"cannot reach {self.url}: {why}")) from None
        except (aiohttp.ClientError, RemoteError, OSError) as exc:
            raise HopFailure(self.name, ModuleError(f"{self.url}: {type(exc).__name__}: {exc}")) from None
        try:
            reply = json.loads(raw)
        except (ValueError, RecursionError):
            reply = None
        if status != 200 or not isinstance(reply, dict):
            what = reply.get("error") if isinstance(reply, dict) else raw[:200].decode(errors="replace")
            if status == 200:
                raise HopFailure(self.name, ModuleError(f"{self.url} answered something that is not a JSON object"))
            if isinstance(reply, dict) and reply.get("module") in MODULE_NAMES and reply.get("kind") in FAILURES:
                # the planner passing on a failure further down: keep the module it names
                raise HopFailure(str(reply["module"]), FAILURES[str(reply["kind"])](str(what)))
            raise HopFailure(self.name, ModuleError(f"{self.url} answered HTTP {status}: {what}"))
        work = reply.get("work_s")
        if not isinstance(work, int | float) or isinstance(work, bool) or not math.isfinite(work) or work < 0:
            raise HopFailure(self.name, ModuleError(f"{self.url} answered without its work time (work_s)"))
        return reply, time.perf_counter() - t0


class ModelServer:
    """The model server (``aibench serve``), through aibench's Open Inference Protocol client (binary
    tensors, bounded answers); every call is timed out and fails as a :class:`HopFailure` of ``owner``."""

    def __init__(self, url: str, owner: str, shapes: dict[str, tuple[int, int]], timeout_s: float,
                 limit: int) -> None:
        from aibench.sut.remote import HttpClient, ModelInfo, parse_endpoint

        self.url, self.owner, self.timeout_s = url, owner, timeout_s
        models = {name: ModelInfo(name, row_shape=(i,), out_row_shape=(o,)) for name, (i, o) in shapes.items()}
        self.client = HttpClient(parse_endpoint(url), models, binary=True, limit=limit)

    async def infer(self, model: str, x: Any) -> tuple[Any, float, float | None]:
        """``(output rows, round trip s, the server's own queue + compute s or None)``."""
        import aiohttp

        from aibench.sut.remote import RemoteError

        t0 = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self.client.infer(model, x), self.timeout_s)
        except TimeoutError:
            raise HopFailure(self.owner, ModuleTimeout(f"the model server {self.url} did not answer {model} within "
                                                       f"{self.timeout_s:g} s")) from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:  # refused, reset, dropped
            why = getattr(getattr(exc, "os_error", None), "strerror", None) or str(exc) or type(exc).__name__
            raise HopFailure(self.owner, ModuleDown(f"cannot reach the model server {self.url}: {why}")) from None
        except (aiohttp.ClientError, RemoteError, OSError) as exc:
            raise HopFailure(self.owner, ModuleError(f"the model server {self.url} ({model}): {exc}")) from None
        rtt = time.perf_counter() - t0
        server = None
        if reply.server_ns is not None:
            server = min(rtt, (reply.server_ns + (reply.queue_ns or 0)) / 1e9)
        return reply.output, rtt, server

    async def close(self) -> None:
        await self.client.close()


def _timed_model(seconds: dict[str, float], part: str, hop: str, rtt: float, server: float | None) -> None:
    """A model call's parts: the model server's own time as the module's AI part, the rest as the hop."""
    if server is None:  # a server that does not say its own time: the whole round trip is the part
        seconds[part] = rtt
    else:
        seconds[part] = server
        seconds[hop] = max(0.0, rtt - server)


# -- reading requests ------------------------------------------------------------------------------------------

def _int(doc: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = doc.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadRequest(f"{key!r} must be an integer from {lo} to {hi}")
    return v


def _str(doc: dict[str, Any], key: str, most: int) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or len(v) > most:
        raise BadRequest(f"{key!r} must be a string of at most {most} characters")
    return v


def _ints(doc: dict[str, Any], key: str, lo: int, hi: int, most: int) -> list[int]:
    v = doc.get(key)
    if not isinstance(v, list) or len(v) > most or \
            not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v):
        raise BadRequest(f"{key!r} must be a list of at most {most} integers from {lo} to {hi}")
    return v


def _floats(doc: dict[str, Any], key: str, n: int) -> Any:
    import numpy as np

    v = doc.get(key)
    if not isinstance(v, list) or len(v) != n or \
            not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        raise BadRequest(f"{key!r} must be a list of {n} numbers")
    return np.asarray(v, dtype=np.float32)


# -- the modules -----------------------------------------------------------------------------------------------

class Module:
    """One module's state and its work on a parsed request (``await work(doc)`` -> the answer)."""

    name = ""

    def __init__(self, cfg: ModuleConfig) -> None:
        self.cfg = cfg
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix=f"aibench-{cfg.module}")
        self._connections: Any = None
        self.store_id = ""
        self.info: Any = None

    def open_store(self) -> None:
        from aibench.ecommerce.store import ThreadConnections, read_info, store_id

        self.info = read_info(self.cfg.store)
        self.store_id = store_id(self.info)
        self._connections = ThreadConnections(self.info.path)

    def _con(self) -> Any:
        return self._connections.get()

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` on one of the module's threads (its own SQLite connection)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(self._con(), *args))

    async def start(self, session: Any) -> None:
        return None

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self._connections is not None:
            self._connections.close()


class Searcher(Module):
    name = "searcher"

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        from aibench.ecommerce.modules import search

        text = _str(doc, "text", MAX_TEXT)
        window = _int(doc, "window", 1, MAX_WINDOW)
        hits, searched = await self.blocking(search, text, window)
        return {"hits": hits, "clusters_searched": searched}


class Fetch(Module):
    name = "fetch"

    def open_store(self) -> None:
        super().open_store()
        self.products = int(self.info.products)

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        from aibench.ecommerce.modules import fetch

        ids = _ints(doc, "ids", 0, 2 ** 63 - 1, MAX_PAGE)
        scores = _floats(doc, "scores", len(ids)).tolist()
        try:
            products = await self.blocking(fetch, ids, scores)
        except KeyError as exc:
            raise BadRequest(f"no product {exc.args[0]} in the store") from None
        return {"products": products}


class Recommender(Module):
    name = "recommender"

    def open_store(self) -> None:
        from aibench.ecommerce.store import models_config

        super().open_store()
        self.categories = int(models_config(self.info, self.store_id)["categories"])
        self.vocabulary = int(self.info.vocabulary)

    async def start(self, session: Any) -> None:
        from aibench.ecommerce.served import CLASSIFIER, PREFERENCE, USER_FIELDS
        from aibench.ecommerce.store import ATTRIBUTE_VALUES, ATTRIBUTES, MAX_QUERY

        c, a = self.categories, len(ATTRIBUTES) * ATTRIBUTE_VALUES
        self.models = ModelServer(self.cfg.peers[MODEL_SERVER], self.name,
                                  {CLASSIFIER: (MAX_QUERY, c), PREFERENCE: (USER_FIELDS + MAX_QUERY, c + a)},
                                  self.cfg.timeout_s, limit=4 * self.cfg.workers)

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from aibench.ecommerce.modules import pad, read_user, tokenize
        from aibench.ecommerce.served import CLASSIFIER, PREFERENCE
        from aibench.ecommerce.store import MAX_QUERY

        user = _int(doc, "user", -(2 ** 63), 2 ** 63 - 1)
        text = _str(doc, "text", MAX_TEXT)
        clock = time.perf_counter

        def user_row(con: Any) -> tuple[tuple[int, int, int], bool, float]:
            t0 = clock()
            row, anonymous = read_user(con, user)
            return row, anonymous, clock() - t0

        (sex, age, power), anonymous, t_db = await self.blocking(user_row)
        tokens = tokenize(text, self.vocabulary)
        q = pad([tokens], MAX_QUERY).astype(np.float32)
        seconds = {"recommender/user_db": t_db}
        p_class, rtt, server = await self.models.infer(CLASSIFIER, q)
        _timed_model(seconds, "recommender/classifier", "communication/recommender-classifier", rtt, server)
        row = np.concatenate([np.array([[sex, age, power]], dtype=np.float32), q], axis=1)
        pref, rtt, server = await self.models.infer(PREFERENCE, row)
        _timed_model(seconds, "recommender/preference", "communication/recommender-preference", rtt, server)
        c = self.categories
        return {"user": [sex, age, power], "anonymous": anonymous, "tokens": tokens,
                "category": int(p_class[0].argmax()), "p_class": p_class[0].tolist(),
                "p_cat": pref[0, :c].tolist(), "p_attr": pref[0, c:].tolist(), "seconds": seconds}

    async def close(self) -> None:
        if hasattr(self, "models"):
            await self.models.close()
        await super().close()


class Ranker(Module):
    name = "ranker"

    def open_store(self) -> None:
        from aibench.ecommerce.models import Catalog, load

        super().open_store()
        models = load(self.info, self.store_id)  # the feature buffers (state_dict, weights_only=True)
        self.cat_logprice = models.ranker.cat_logprice.numpy()
        self.idf = models.ranker.idf.numpy()
        self.categories = int(models.config["categories"])
        self.vocabulary = int(self.info.vocabulary)
        con = self._con()
        self.catalog = Catalog.load(con)

    async def start(self, session: Any) -> None:
        from aibench.ecommerce.served import RANKER, RANKER_FEATURES

        self.models = ModelServer(self.cfg.peers[MODEL_SERVER], self.name, {RANKER: (RANKER_FEATURES, 1)},
                                  self.cfg.timeout_s, limit=4 * self.cfg.workers)

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from aibench.ecommerce.models import ranker_features
        from aibench.ecommerce.modules import pad, select_top
        from aibench.ecommerce.served import RANKER, RANKER_FEATURES
        from aibench.ecommerce.store import ATTRIBUTE_VALUES, ATTRIBUTES, MAX_QUERY

        tokens = _ints(doc, "tokens", 0, self.vocabulary - 1, MAX_QUERY)
        power = _int(doc, "power", 0, 5)
        c = self.categories
        p_class = _floats(doc, "p_class", c)[None, :]
        p_cat = _floats(doc, "p_cat", c)[None, :]
        p_attr = _floats(doc, "p_attr", len(ATTRIBUTES) * ATTRIBUTE_VALUES).reshape(1, len(ATTRIBUTES),
                                                                                   ATTRIBUTE_VALUES)
        hits = _ints(doc, "hits", 0, len(self.catalog.price) - 1, MAX_WINDOW)
        page = _int(doc, "page", 1, MAX_PAGE)
        if not hits:
            raise BadRequest("'hits' is empty: nothing to rank")
        clock = time.perf_counter
        q = pad([tokens], MAX_QUERY)
        cand = np.array(hits, dtype=np.int64)[None, :]

        def features(_con: Any) -> tuple[Any, float]:
            t0 = clock()
            feats = ranker_features(q, np.array([len(tokens)]), cand, self.catalog, np.array([power]), p_class,
                                    p_cat, p_attr, self.cat_logprice, self.idf)
            return feats, clock() - t0

        feats, t_feat = await self.blocking(features)
        seconds = {"ranker/features": t_feat}
        out, rtt, server = await self.models.infer(RANKER, feats.reshape(-1, RANKER_FEATURES))
        _timed_model(seconds, "ranker/model", "communication/ranker-model", rtt, server)
        t0 = clock()
        scores = out[:, 0]
        top = select_top(scores, page)
        best = cand[0, top].tolist()
        seconds["ranker/select"] = clock() - t0
        return {"best": best, "scores": scores[top].tolist(), "seconds": seconds}

    async def close(self) -> None:
        if hasattr(self, "models"):
            await self.models.close()
        await super().close()


class Planner(Module):
    """Orchestrates one query over the four other modules, as the in-process ``ShopPath.handle`` does."""

    name = "planner"

    def open_store(self) -> None:
        super().open_store()  # only to say which store it serves (GET /health): it reads no table

    async def start(self, session: Any) -> None:
        limit = self.cfg.max_request_bytes
        self.peers = {p: Peer(p, self.cfg.peers[p], ROUTES[p], session, self.cfg.timeout_s, limit)
                      for p in PEERS["planner"]}

    async def work(self, doc: dict[str, Any]) -> dict[str, Any]:
        from aibench.ecommerce.store import PAGE

        user = _int(doc, "user", -(2 ** 63), 2 ** 63 - 1)
        text = _str(doc, "text", MAX_TEXT)
        window = _int(doc, "window", 1, MAX_WINDOW, self.cfg.window)
        page = _int(doc, "page", 1, MAX_PAGE, PAGE)
        clock = time.perf_counter
        t_start = clock()
        seconds: dict[str, float] = {}
        trips = 0.0

        async def hop(module: str, request: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
            nonlocal trips
            reply, rtt = await self.peers[module].call(request)
            missing = [k for k in keys if k not in reply]
            if missing:
                raise HopFailure(module, ModuleError(f"{self.peers[module].url} answered without {missing}"))
            trips += rtt
            seconds[module] = float(reply["work_s"])
            seconds[f"communication/planner-{module}"] = max(0.0, rtt - float(reply["work_s"]))
            sub = reply.get("seconds")
            if isinstance(sub, dict):
                seconds.update({str(k): float(v) for k, v in sub.items() if isinstance(v, int | float)})
            return reply

        rec = await hop("recommender", {"user": user, "text": text},
                        ("user", "anonymous", "tokens", "category", "p_class", "p_cat", "p_attr"))
        found = await hop("searcher", {"text": text, "window": window}, ("hits", "clusters_searched"))
        hits = found["hits"]
        if not isinstance(hits, list):
            raise HopFailure("searcher", ModuleError(f"{self.peers['searcher'].url} answered hits that are not a list"))
        page_doc: dict[str, Any] = {"hits": 0, "clusters_searched": found["clusters_searched"],
                                    "category": rec["category"], "anonymous": rec["anonymous"]}
        if not hits:
            seconds.update(dict.fromkeys(("ranker", "ranker/features", "ranker/model", "ranker/select", "fetch"), 0.0))
            seconds["planner"] = max(0.0, clock() - t_start - trips)
            return {"page": {"status": "no_hits", "products": [], **page_doc}, "seconds": seconds}
        power = rec["user"][2] if isinstance(rec["user"], list) and len(rec["user"]) == 3 else None
        ranked = await hop("ranker", {"tokens": rec["tokens"], "power": power, "p_class": rec["p_class"],
                                      "p_cat": rec["p_cat"], "p_attr": rec["p_attr"], "hits": hits, "page": page},
                           ("best", "scores"))
        fetched = await hop("fetch", {"ids": ranked["best"], "scores": ranked["scores"]}, ("products",))
        seconds["planner"] = max(0.0, clock() - t_start - trips)
        page_doc["hits"] = len(hits) if isinstance(hits, list) else 0
        return {"page": {"status": "ok", "products": fetched["products"], **page_doc}, "seconds": seconds}


MODULES: dict[str, type[Module]] = {"planner": Planner, "recommender": Recommender, "searcher": Searcher,
                                    "ranker": Ranker, "fetch": Fetch}


# -- the server ------------------------------------------------------------------------------------------------

def _error(status: int, text: str, **extra: Any) -> Any:
    from aiohttp import web

    return web.Response(status=status, body=json.dumps({"error": text, **extra}).encode(),
                        content_type="application/json")


def make_app(module: Module, cfg: ModuleConfig, state: dict[str, Any]) -> Any:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        if state.get("draining"):
            return _error(503, f"the {module.name} is shutting down")
        try:
            body = await asyncio.wait_for(request.read(), cfg.body_timeout_s)
        except TimeoutError:
            return _error(408, f"the request body did not arrive within {cfg.body_timeout_s:g} s")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the request is over the {cfg.max_request_bytes}-byte limit (--max-request-mb)")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "the request is not JSON")
        if not isinstance(doc, dict):
            return _error(400, "the request must be a JSON object")
        t0 = time.perf_counter()
        try:
            out = await module.work(doc)
        except BadRequest as exc:
            return _error(400, str(exc))
        except HopFailure as exc:
            return _error(504 if isinstance(exc.cause, ModuleTimeout) else 502, str(exc.cause), module=exc.module,
                          kind=type(exc.cause).__name__)
        except Exception as exc:  # the module's own fault: this request fails, the module goes on
            first = (str(exc).splitlines() or [""])[0][:300]
            return _error(500, f"{module.name}: {type(exc).__name__}{': ' + first if first else ''}")
        out["work_s"] = time.perf_counter() - t0
        return web.Response(body=json.dumps(out, separators=(",", ":")).encode(), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"module": module.name, "store_id": module.store_id, "pid": os.getpid(),
                                  "peers": cfg.peers, "workers": cfg.workers, "timeout_s": cfg.timeout_s})

    app = web.Application(client_max_size=cfg.max_request_bytes)
    app.router.add_post(ROUTES[module.name], handle)
    app.router.add_get("/health", health)
    return app


def announce(cfg: ModuleConfig, text: str, **event: Any) -> None:
    line = json.dumps({"event": event.pop("event", "info"), "message": text, "module": cfg.module, **event}) \
        if cfg.json_lines else f"aibench ecommerce {cfg.module}: {text}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _serve(cfg: ModuleConfig, sock: socket.socket) -> int:
    import aiohttp
    from aiohttp import web

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) > 1:  # a second signal: at once
            os._exit(130)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    module = MODULES[cfg.module](cfg)
    await loop.run_in_executor(None, module.open_store)  # a bad store: one line, exit 4
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8 * cfg.workers),
                                    timeout=aiohttp.ClientTimeout(total=None))
    state: dict[str, Any] = {}
    runner = web.AppRunner(make_app(module, cfg, state), handle_signals=False, access_log=None,
                           keepalive_timeout=cfg.idle_timeout_s, max_line_size=8190, max_field_size=8190,
                           max_headers=64, shutdown_timeout=cfg.shutdown_timeout_s)
    set_up = False
    try:
        await module.start(session)
        await runner.setup()
        set_up = True
        site = web.SockSite(runner, sock)
        await site.start()
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        announce(cfg, f"listening on {url}", event="listening", protocol="http", host=host, port=port, url=url)
        announce(cfg, f"ready (pid {os.getpid()}; store {module.info.path}; peers "
                 + (", ".join(f"{k} {v}" for k, v in cfg.peers.items()) or "none") + ")",
                 event="ready", pid=os.getpid(), peers=cfg.peers)
        await stop.wait()
        why = "SIGTERM" if signals and signals[0] == signal.SIGTERM else "Ctrl-C"
        announce(cfg, f"{why}: stopping (requests in flight finish first)", event="stopping", signal=why)
        state["draining"] = True
    finally:
        if set_up:
            await runner.cleanup()  # stops listening, waits for handlers in flight (up to shutdown_timeout_s)
        await session.close()
        await module.close()
    announce(cfg, "stopped", event="stopped", exit_code=0)
    return 0


def serve_module(cfg: ModuleConfig) -> int:
    """Run one module until SIGTERM or Ctrl-C; the exit code. The port is taken first (in use: one line,
    exit 6, before the store is read), then the store is opened (unusable: exit 4)."""
    from aibench.service.server import bind

    if cfg.module not in MODULES:
        raise UsageError(f"unknown module {cfg.module!r}; known: {', '.join(MODULE_NAMES)}")
    sock = bind(cfg.host, cfg.port, f"the {cfg.module}'s --port")
    try:
        return asyncio.run(_serve(cfg, sock))
    finally:
        sock.close()
