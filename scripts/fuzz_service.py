"""A bounded loopback fuzz of ``aibench serve`` over both protocols (issue 14, item 4).

Sends ``--cases`` requests (10,000 by default), valid ones interleaved with malformed, truncated, oversized
and slow ones, over the Open Inference Protocol (HTTP) and DjiNN's binary protocol, from many concurrent
clients. Checks that

- every valid request gets the right answer (outputs compared with the same networks run in this process,
  with the benchmark's seeded weights; the null model's row sums exactly);
- every malformed HTTP request is answered with a 4xx status and a JSON ``{"error": ...}`` body (or the
  connection is closed, for what is not HTTP at all), never a 5xx; every malformed DjiNN request gets its
  connection closed; every slow client is cut off by the server's timeouts;
- the server stays up and ready, and its memory (RSS of the server and its instances, from /proc) stays
  flat: sampled all along, reported as first / median / last / max;
- the fuzz ends by itself (every client operation has a deadline; the whole run too).

    PYTHONPATH=. python scripts/fuzz_service.py [--cases 10000] [--seed 0] [--concurrency 16] [--json]

It starts its own server (``null,pos,dig``, 1 instance, small limits and 1 s timeouts so slow clients end
quickly); ``--http HOST:PORT --djinn HOST:PORT --pids P,P`` fuzzes a running one instead. Exit status 0 when
every check holds, 1 otherwise. tests/test_service.py runs :func:`run` at a small size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODELS = ("null", "pos", "dig")
SERVER_ARGS = ["--max-request-mb", "2", "--max-json-mb", "1", "--idle-timeout", "1", "--body-timeout", "1",
               "--max-batch", "null=8", "--instances", "1"]
LIMIT = 2 << 20  # --max-request-mb 2
OP_TIMEOUT_S = 15.0  # no client operation waits longer than this: the fuzz always ends


# -- what the right answers are ----------------------------------------------------------------------------

class References:
    """Valid inputs and the outputs the in-process networks give for them (same seeded weights)."""

    def __init__(self, models: tuple[str, ...] = MODELS, seed: int = 0, per_model: int = 4) -> None:
        import torch

        from aibench.service.models import SPECS, build

        rng = np.random.default_rng(seed)
        self.specs = {m: SPECS[m] for m in models}
        self.cases: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        torch.manual_seed(seed)
        for m in models:
            spec = self.specs[m]
            net = build(m, torch.device("cpu"), torch.float32)
            cases = []
            for k in range(per_model):
                rows = [1, 3, 11, 20][k % 4]
                x = rng.standard_normal((rows, *spec.input_shape), dtype=np.float32)
                with torch.inference_mode():
                    y = net(torch.from_numpy(x)).numpy()
                cases.append((x, y.astype(np.float32 if spec.output_dtype == "float32" else np.int64)))
            self.cases[m] = cases

    def pick(self, rnd: random.Random) -> tuple[str, np.ndarray, np.ndarray]:
        m = rnd.choice(list(self.cases))
        x, y = rnd.choice(self.cases[m])
        return m, x, y


def same(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape:
        return False
    if want.dtype.kind == "f":
        return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
    return bool(np.array_equal(got, want))


# -- raw HTTP over asyncio streams (the fuzz needs bytes no client library would send) -------------------

@dataclass
class HttpReply:
    status: int | None  # None: the connection closed without a reply
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def read_reply(reader: asyncio.StreamReader) -> HttpReply:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return HttpReply(None)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    try:
        body = await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return HttpReply(None)
    return HttpReply(status, headers, body)


async def http_exchange(addr: tuple[str, int], raw: bytes, *, close_after_send: bool = False) -> HttpReply:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(raw)
        await writer.drain()
        if close_after_send:
            return HttpReply(None)
        return await read_reply(reader)
    except ConnectionError:
        return HttpReply(None)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def http_request(path: str, body: bytes, headers: dict[str, str] | None = None, method: str = "POST",
                 content_length: int | None = None) -> bytes:
    hdrs = {"Host": "fuzz", "Connection": "close"}
    hdrs["Content-Length"] = str(len(body) if content_length is None else content_length)
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + body


def infer_body(model: str, x: np.ndarray, binary: bool, binary_out: bool, **over: Any) -> tuple[bytes, dict[str, str]]:
    inp: dict[str, Any] = {"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32"}
    inp.update(over.pop("input", {}))
    doc: dict[str, Any] = {"id": "f", "inputs": [inp]}
    if binary_out:
        doc["parameters"] = {"binary_data_output": True}
    doc.update(over)
    if binary:
        inp.setdefault("parameters", {"binary_data_size": x.nbytes})
        head = json.dumps(doc).encode()
        return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
    inp.setdefault("data", x.ravel().tolist())
    return json.dumps(doc).encode(), {}


def parse_infer(reply: HttpReply, want: np.ndarray) -> np.ndarray | None:
    if reply.status != 200:
        return None
    hlen = reply.headers.get("inference-header-content-length")
    if hlen is not None:
        doc = json.loads(reply.body[:int(hlen)])
        out = doc["outputs"][0]
        dt = np.float32 if out["datatype"] == "FP32" else np.int64
        return np.frombuffer(reply.body[int(hlen):], dtype=dt).reshape(out["shape"])
    doc = json.loads(reply.body)
    out = doc["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32 if out["datatype"] == "FP32" else np.int64).reshape(out["shape"])


# -- the cases -----------------------------------------------------------------------------------------------

@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def ok(self, kind: str) -> None:
        self.counts[kind] += 1

    def fail(self, kind: str, why: str) -> None:
        self.counts[kind] += 1
        self.counts["FAILED"] += 1
        if len(self.failures) < 50:
            self.failures.append(f"{kind}: {why}")


class Fuzzer:
    def __init__(self, http: tuple[str, int] | None, djinn: tuple[str, int] | None, refs: References,
                 seed: int) -> None:
        self.http, self.djinn, self.refs = http, djinn, refs
        self.rnd = random.Random(seed)
        self.tally = Tally()

    # HTTP ------------------------------------------------------------------------------------------------
    async def http_valid(self, rnd: random.Random) -> None:
        assert self.http
        m, x, y = self.refs.pick(rnd)
        binary, bout = rnd.random() < 0.6, rnd.random() < 0.5
        body, hdrs = infer_body(m, x, binary, bout)
        reply = await http_exchange(self.http, http_request(f"/v2/models/{m}/infer", body, hdrs))
        got = parse_infer(reply, y)
        kind = f"http_valid_{'binary' if binary else 'json'}"
        if got is None:
            self.tally.fail(kind, f"{m}: status {reply.status} {reply.body[:200]!r}")
        elif not same(got, y):
            self.tally.fail(kind, f"{m}: wrong answer")
        else:
            self.tally.ok(kind)

    def _bad_http(self, rnd: random.Random) -> tuple[str, bytes, bool]:
        """(case name, raw bytes, whether a closed connection is an acceptable answer)."""
        m, x, _y = self.refs.pick(rnd)
        path = f"/v2/models/{m}/infer"
        spec = self.refs.specs[m]
        choice = rnd.randrange(22)
        if choice == 0:
            return "bad_json", http_request(path, rnd.randbytes(rnd.randrange(1, 300))), False
        if choice == 1:
            body, h = infer_body(m, x, False, False)
            return "truncated_json", http_request(path, body[:rnd.randrange(1, len(body))]), False
        if choice == 2:
            dtype = rnd.choice(["INT32", "FP16", "BYTES", 7])
            body, h = infer_body(m, x, rnd.random() < 0.5, False, input={"datatype": dtype})
            return "wrong_dtype", http_request(path, body, h), False
        if choice == 3:
            body, h = infer_body(m, x, True, False, input={"name": "nope"})
            return "wrong_input_name", http_request(path, body, h), False
        if choice == 4:
            shape = rnd.choice([[x.shape[0]], [x.shape[0], 7], [-1, *spec.input_shape], [0, *spec.input_shape],
                                [1 << 62, 1 << 62], ["a"], None, [1.5, *spec.input_shape], [True, *spec.input_shape]])
            body, h = infer_body(m, x, rnd.random() < 0.5, False, input={"shape": shape})
            return "bad_shape", http_request(path, body, h), False
        if choice == 5:
            body, h = infer_body(m, x, False, False, input={"data": x.ravel().tolist()[:-1]})
            return "wrong_element_count", http_request(path, body, h), False
        if choice == 6:
            data = rnd.choice([["a"] * x.size, None, {"x": 1}, [[1, 2], [3]], [None] * x.size, "1,2,3"])
            body, h = infer_body(m, x, False, False, input={"data": data})
            return "bad_data", http_request(path, body, h), False
        if choice == 7:
            size = rnd.choice([x.nbytes - 4, x.nbytes + 4, -1, 0, "12", 1 << 62])
            body, h = infer_body(m, x, True, False, input={"parameters": {"binary_data_size": size}})
            return "bad_binary_size", http_request(path, body, h), False
        if choice == 8:
            body, h = infer_body(m, x, True, False)
            h = {"Inference-Header-Content-Length": rnd.choice(["0", "-5", "abc", str(len(body) + 10), "1" * 30])}
            return "bad_binary_header", http_request(path, body, h), False
        if choice == 9:
            body, h = infer_body(m, x, True, False)
            cut = len(body) - rnd.randrange(1, x.nbytes)
            return "short_binary_body", http_request(path, body[:cut], h), False
        if choice == 10:
            body, h = infer_body(m, x, True, False)
            return "unknown_model", http_request(f"/v2/models/{rnd.choice(['nosuch', 'imc', 'x' * 300])}/infer",
                                                 body, h), False
        if choice == 11:
            body, h = infer_body(m, x, True, False)
            return "unknown_version", http_request(f"/v2/models/{m}/versions/2/infer", body, h), False
        if choice == 12:
            n = rnd.choice([LIMIT + 1, 10 * LIMIT, 1 << 40])
            return "oversized_length", http_request(path, b"", content_length=n), False
        if choice == 13:
            rows = LIMIT // spec.row_bytes + 1
            body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [rows, *spec.input_shape], "datatype": "FP32",
                                           "parameters": {"binary_data_size": rows * spec.row_bytes}}]}).encode()
            return "oversized_tensor", http_request(path, body, {"Inference-Header-Content-Length": str(len(body))}), \
                False
        if choice == 14:
            return "garbage", rnd.randbytes(rnd.randrange(1, 2000)) + b"\r\n\r\n", True
        if choice == 15:
            return "huge_header", (f"POST {path} HTTP/1.1\r\nHost: f\r\nX-Big: {'a' * 20000}\r\n"
                                   "Content-Length: 0\r\n\r\n").encode(), True
        if choice == 16:
            return "chunked", (f"POST {path} HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n"
                               "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").encode(), False
        if choice == 17:
            return "wrong_method", http_request(path, b"", method=rnd.choice(["GET", "PUT", "DELETE"])), False
        if choice == 18:
            depth = rnd.choice([1000, 100_000])
            body = json.dumps({"inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32"}]})
            body = body[:-3] + ', "data": ' + "[" * depth + "]" * depth + "}]}"
            return "deep_json", http_request(path, body.encode()), False
        if choice == 19:
            return "not_an_object", http_request(path, rnd.choice([b"[]", b"1", b'"x"', b"null"])), False
        if choice == 20:
            body, h = infer_body(m, x, True, False, outputs=rnd.choice([[{"name": "nope"}], "x", [1]]))
            return "bad_outputs", http_request(path, body, h), False
        body = json.dumps({"inputs": rnd.choice([[], None, [1], "x", [{"name": "INPUT0"}] * 2])}).encode()
        return "bad_inputs", http_request(path, body), False

    async def http_bad(self, rnd: random.Random) -> None:
        assert self.http
        case, raw, close_ok = self._bad_http(rnd)
        reply = await http_exchange(self.http, raw)
        kind = f"http_{case}"
        if reply.status is None:
            if close_ok or case in ("oversized_length",):
                self.tally.ok(kind)
            else:
                self.tally.fail(kind, "connection closed without a reply")
            return
        try:
            doc = json.loads(reply.body) if reply.body else None
        except ValueError:
            doc = None
        if not 400 <= reply.status < 500:
            self.tally.fail(kind, f"status {reply.status} {reply.body[:200]!r}")
        elif close_ok and reply.status == 400:
            self.tally.ok(kind)  # aiohttp's own answer to a malformed request line or header (not JSON)
        elif not (isinstance(doc, dict) and isinstance(doc.get("error"), str)):
            self.tally.fail(kind, f"status {reply.status} without a JSON error: {reply.body[:200]!r}")
        else:
            self.tally.ok(kind)

    async def http_slow(self, rnd: random.Random) -> None:
        """A silent client, a header trickle or a stalled body: the server must cut it off by itself."""
        assert self.http
        case = rnd.choice(["silent", "trickle_headers", "stalled_body"])
        reader, writer = await asyncio.open_connection(*self.http)
        t0 = time.monotonic()
        try:
            if case == "trickle_headers":
                for ch in b"POST /v2/models/null/infer HTTP/1.1\r\nHost: x\r\n":
                    writer.write(bytes([ch]))
                    await writer.drain()
                    await asyncio.sleep(0.2)
            elif case == "stalled_body":
                writer.write(b"POST /v2/models/null/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"in")
                await writer.drain()
            data = await asyncio.wait_for(reader.read(), OP_TIMEOUT_S)
            if case == "stalled_body" and data and b" 408 " not in data.split(b"\r\n", 1)[0]:
                self.tally.fail(f"http_slow_{case}", f"answered {data[:80]!r}")
            else:
                self.tally.ok(f"http_slow_{case}")
        except TimeoutError:
            self.tally.fail(f"http_slow_{case}", f"still open after {time.monotonic() - t0:.1f} s")
        except ConnectionError:
            self.tally.ok(f"http_slow_{case}")
        finally:
            writer.close()

    # DjiNN -----------------------------------------------------------------------------------------------
    async def djinn_valid(self, rnd: random.Random) -> None:
        assert self.djinn
        m, x, y = self.refs.pick(rnd)
        name = m.encode() + b"\0"
        name += (rnd.randbytes(5 - len(name)) if rnd.random() < 0.5 else b"\0" * (5 - len(name)))  # as the originals
        reader, writer = await asyncio.open_connection(*self.djinn)
        try:
            writer.write(name + struct.pack("<i", x.size))
            want = y.astype(np.float32).ravel()
            for _ in range(rnd.randrange(1, 4)):
                writer.write(x.tobytes())
                await writer.drain()
                raw = await asyncio.wait_for(reader.readexactly(4 * want.size), OP_TIMEOUT_S)
                got = np.frombuffer(raw, np.float32)
                if not same(got, want):
                    self.tally.fail("djinn_valid", f"{m}: wrong answer")
                    return
            self.tally.ok("djinn_valid")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            self.tally.fail("djinn_valid", f"{m}: {type(exc).__name__}")
        finally:
            writer.close()

    async def djinn_bad(self, rnd: random.Random) -> None:
        assert self.djinn
        m, x, _y = self.refs.pick(rnd)
        spec = self.refs.specs[m]
        choice = rnd.randrange(7)
        name = m.encode().ljust(5, b"\0")
        if choice == 0:
            case, raw = "unknown_name", rnd.choice([b"nosuc", b"imc\0\0", b"\xff\xfe\0\0\0", b"\0\0\0\0\0"]) + \
                struct.pack("<i", x.size)
        elif choice == 1:
            case, raw = "bad_count", name + struct.pack("<i", rnd.choice([0, -1, -(1 << 31)]))
        elif choice == 2:
            case, raw = "oversized_count", name + struct.pack("<i", rnd.choice([LIMIT // 4 + spec.row_elements,
                                                                                (1 << 31) - 1]))
        elif choice == 3:
            case = "not_a_multiple"
            raw = name + struct.pack("<i", spec.row_elements * 2 + rnd.randrange(1, spec.row_elements)) \
                if spec.row_elements > 1 else name + struct.pack("<i", 0)
        elif choice == 4:
            case, raw = "truncated_request", name + struct.pack("<i", x.size) + x.tobytes()[:rnd.randrange(1, x.nbytes)]
        elif choice == 5:
            case, raw = "truncated_header", name[:rnd.randrange(1, 5)]
        else:
            case, raw = "garbage", rnd.randbytes(rnd.randrange(9, 600))
        kind = f"djinn_{case}"
        reader, writer = await asyncio.open_connection(*self.djinn)
        try:
            writer.write(raw)
            await writer.drain()
            if case in ("truncated_request", "truncated_header"):
                writer.write_eof()  # the client gives up half way
            data = await asyncio.wait_for(reader.read(), OP_TIMEOUT_S)
            # garbage may happen to spell a valid header with a count that waits for more data: the body
            # timeout closes it; nothing may come back for a request that never completed
            if data:
                self.tally.fail(kind, f"got {len(data)} bytes back")
            else:
                self.tally.ok(kind)
        except TimeoutError:
            self.tally.fail(kind, "the server never closed the connection")
        except ConnectionError:
            self.tally.ok(kind)
        finally:
            writer.close()

    async def djinn_slow(self, rnd: random.Random) -> None:
        assert self.djinn
        case = rnd.choice(["silent", "trickle_header", "stalled_request"])
        reader, writer = await asyncio.open_connection(*self.djinn)
        try:
            if case == "trickle_header":
                for b in b"pos\0\0":
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.4)
            elif case == "stalled_request":
                writer.write(b"pos\0\0" + struct.pack("<i", 300) + b"\0" * 100)
                await writer.drain()
            data = await asyncio.wait_for(reader.read(), OP_TIMEOUT_S)
            if data:
                self.tally.fail(f"djinn_slow_{case}", f"got {len(data)} bytes")
            else:
                self.tally.ok(f"djinn_slow_{case}")
        except TimeoutError:
            self.tally.fail(f"djinn_slow_{case}", "the server never closed the connection")
        except ConnectionError:
            self.tally.ok(f"djinn_slow_{case}")
        finally:
            writer.close()


def rss_each(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                out.append(int(f.read().split()[1]) * 4096)
        except (OSError, ValueError, IndexError):
            out.append(0)
    return out


def rss_bytes(pids: list[int]) -> int:
    return sum(rss_each(pids))


async def _run(http: tuple[str, int] | None, djinn: tuple[str, int] | None, pids: list[int], cases: int, seed: int,
               concurrency: int, slow_share: float, refs: References) -> dict[str, Any]:
    fz = Fuzzer(http, djinn, refs, seed)
    rnd = random.Random(seed)
    plan: list[str] = []
    kinds = []
    if http:
        kinds += [("http_valid", 3), ("http_bad", 4)]
    if djinn:
        kinds += [("djinn_valid", 2), ("djinn_bad", 2)]
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    slow_kinds = (["http_slow"] if http else []) + (["djinn_slow"] if djinn else [])
    n_slow = int(cases * slow_share)
    for _ in range(cases - n_slow):
        plan.append(rnd.choices(names, weights)[0])
    for i in range(n_slow):  # spread the slow ones over the run
        plan.insert(rnd.randrange(len(plan) + 1), slow_kinds[i % len(slow_kinds)])
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, kind in enumerate(plan):
        queue.put_nowait((i, kind))
    samples: list[tuple[int, int]] = []
    per_process: list[list[int]] = []
    sample_every = max(1, cases // 50)
    slow_gate = asyncio.Semaphore(max(4, concurrency))

    async def one(i: int, kind: str) -> None:
        case_rnd = random.Random(seed * 1_000_003 + i)
        try:
            await asyncio.wait_for(getattr(fz, kind)(case_rnd), OP_TIMEOUT_S * 2)
        except TimeoutError:
            fz.tally.fail(kind, "the case did not end in time")
        except (ConnectionError, OSError) as exc:
            fz.tally.fail(kind, f"{type(exc).__name__}: {exc}")

    slow_tasks: set[asyncio.Task[None]] = set()

    async def client() -> None:
        while True:
            try:
                i, kind = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if i % sample_every == 0:
                each = rss_each(pids)
                per_process.append(each)
                samples.append((i, sum(each)))
            if kind.endswith("_slow"):  # slow cases run beside the others, a bounded number at once
                await slow_gate.acquire()
                t = asyncio.create_task(one(i, kind))
                t.add_done_callback(lambda _t: slow_gate.release())
                slow_tasks.add(t)
                t.add_done_callback(slow_tasks.discard)
            else:
                await one(i, kind)

    t0 = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    if slow_tasks:
        await asyncio.gather(*slow_tasks)
    elapsed = time.monotonic() - t0
    samples.append((cases, rss_bytes(pids)))
    ready = None
    if http:
        reply = await http_exchange(http, http_request("/v2/health/ready", b"", method="GET"))
        ready = reply.status
    rss = [r for _i, r in samples if r]
    counts = dict(sorted(fz.tally.counts.items()))
    valid = sum(v for k, v in counts.items() if "valid" in k)
    mem: dict[str, Any] = {}
    if rss:
        mem = {"first_mib": round(rss[0] / 2**20, 1), "median_mib": round(statistics.median(rss) / 2**20, 1),
               "last_mib": round(rss[-1] / 2**20, 1), "max_mib": round(max(rss) / 2**20, 1),
               "samples": len(rss)}
        # "flat": the second half's peak within 10% (and 32 MiB) of the first half's
        half = len(rss) // 2 or 1
        mem["growth_mib"] = round((max(rss[half:]) - max(rss[:half])) / 2**20, 1)
        mem["flat"] = max(rss[half:]) <= max(rss[:half]) * 1.10 + (32 << 20) if len(rss) > 1 else True
        quarters = [rss[min(len(rss) - 1, round(q * (len(rss) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1)]
        mem["at_0_25_50_75_100_pct_mib"] = [round(v / 2**20, 1) for v in quarters]
        if per_process:
            mem["per_process_first_last_mib"] = [[round(a / 2**20, 1), round(b / 2**20, 1)]
                                                 for a, b in zip(per_process[0], per_process[-1], strict=True)]
    return {"cases": len(plan), "valid": valid, "failed": counts.get("FAILED", 0), "counts": counts,
            "failures": fz.tally.failures, "elapsed_s": round(elapsed, 1), "ready_after": ready, "memory": mem,
            "ok": counts.get("FAILED", 0) == 0 and (ready in (None, 200)) and mem.get("flat", True)}


def run(http: tuple[str, int] | None, djinn: tuple[str, int] | None, pids: list[int], cases: int = 10_000,
        seed: int = 0, concurrency: int = 16, slow_share: float = 0.01, refs: References | None = None,
        deadline_s: float = 3600.0) -> dict[str, Any]:
    """Fuzz a running server (see the module's text); the report as a dict (``ok``: every check held)."""
    refs = refs or References(seed=seed)
    return asyncio.run(asyncio.wait_for(_run(http, djinn, pids, cases, seed, concurrency, slow_share, refs),
                                        deadline_s))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--slow-share", type=float, default=0.01, help="share of slow clients (each lasts ~1 s)")
    ap.add_argument("--http", help="HOST:PORT of a running server (else one is started)")
    ap.add_argument("--djinn", help="HOST:PORT of a running server's DjiNN port")
    ap.add_argument("--pids", help="pids whose RSS to follow (the server's and its instances')")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args()

    def addr(s: str | None) -> tuple[str, int] | None:
        if not s:
            return None
        h, _, p = s.rpartition(":")
        return h, int(p)

    refs = References(seed=a.seed)
    srv = None
    if a.http or a.djinn:
        http, djinn = addr(a.http), addr(a.djinn)
        pids = [int(p) for p in (a.pids or "").split(",") if p]
    else:
        from aibench.service.launch import start_server

        srv = start_server(MODELS, args=SERVER_ARGS)
        http, djinn = srv.http_address, srv.djinn_address
        pids = [srv.pid, *srv.worker_pids]
    try:
        report = run(http, djinn, pids, a.cases, a.seed, a.concurrency, a.slow_share, refs)
    finally:
        if srv is not None:
            code = srv.stop()
            print(f"server exit code after SIGTERM: {code}", file=sys.stderr)
    if srv is not None:
        report["server_exit_code"] = code
        report["ok"] = report["ok"] and code == 0
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['cases']} cases in {report['elapsed_s']} s: {report['valid']} valid, "
              f"{report['failed']} failed; ready after: {report['ready_after']}")
        for k, v in report["counts"].items():
            print(f"  {k:32s} {v}")
        m = report["memory"]
        if m:
            print(f"RSS of server + instances: first {m['first_mib']} MiB, median {m['median_mib']}, last "
                  f"{m['last_mib']}, max {m['max_mib']} ({m['samples']} samples; growth {m['growth_mib']} MiB; "
                  f"flat: {m['flat']}); at 0/25/50/75/100% of the run: {m['at_0_25_50_75_100_pct_mib']} MiB; "
                  f"per process (server, instances) first/last: {m.get('per_process_first_last_mib')}")
        for f in report["failures"]:
            print("  FAIL", f)
        print("OK" if report["ok"] else "NOT OK")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
