"""``aibench serve``: one asyncio process that speaks both protocols and batches requests for worker
processes (the instances) that compute.

Start-up: bind both listening sockets first (a port in use is refused at once, before any model is built:
:class:`ListenError`, exit 6), then listen (live, not ready: 503), start the instances (every served model
built in each), announce each model and "ready". Shutdown (SIGTERM or Ctrl-C): stop listening on both
ports, refuse new requests (503; DjiNN connections between requests are closed), let every request in
flight finish (queued rows go at once, without waiting for a fuller batch) within ``shutdown_timeout_s``,
stop the instances, exit 0. A second signal stops at once (exit 130: in-flight requests are dropped).

The event-loop process never imports torch: it parses, validates, batches and copies bytes; the instances
compute. Announcements go to stdout, one line each, flushed (``--json``: one JSON object per line, for
programs: see :mod:`aibench.service.launch`); warnings (an instance died) go to stderr.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aibench.errors import EXIT_INTERRUPTED, AibenchError, ListenError, UsageError
from aibench.service.instances import InstanceConfig, InstancePool
from aibench.service.models import RESIDENT_MAX_BYTES, SPECS, ModelSpec
from aibench.service.scheduler import ByteBudget, Scheduler
from aibench.service.stats import ModelStats

MiB = 1 << 20


@dataclass
class ServeConfig:
    """Everything ``aibench serve`` is told. ``port``/``djinn_port``: None = off, 0 = any free port."""

    models: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int | None = 8000
    djinn_port: int | None = 9000
    devices: tuple[str, ...] = ("cpu",)
    instances: int = 1
    threads: int | None = None  # per instance; None = the CPU's cores split between CPU instances
    dtype: str = "float32"
    max_batch: dict[str, int] = field(default_factory=dict)  # rows; missing = the model's default
    max_queue_delay_us: dict[str, float] = field(default_factory=dict)  # missing = 0
    max_request_bytes: int = 64 * MiB
    max_json_bytes: int = 16 * MiB
    max_pending_bytes: int = 1024 * MiB
    idle_timeout_s: float = 15.0
    body_timeout_s: float = 30.0
    shutdown_timeout_s: float = 30.0
    null_delay_us: float = 0.0
    json_lines: bool = False
    model_dirs: dict[str, str] = field(default_factory=dict)  # --model-dir FAMILY=DIR (registered in SPECS)
    resident_rows: dict[str, int] = field(default_factory=dict)  # model -> resident input rows per instance


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_config(cfg: ServeConfig) -> None:
    """Refuse a bad configuration in one line (exit 2) before anything starts."""
    if not cfg.models:
        raise UsageError("--models: name at least one model")
    for m in cfg.models:
        if m not in SPECS:
            raise UsageError(f"--models: unknown model {m!r}; known: {', '.join(SPECS)}")
    if len(set(cfg.models)) != len(cfg.models):
        raise UsageError("--models: a model is named twice")
    if cfg.port is None and cfg.djinn_port is None:
        raise UsageError("both ports are off (--port off --djinn-port off): nothing could reach the server")
    if cfg.port is not None and cfg.djinn_port is not None and cfg.port == cfg.djinn_port and cfg.port != 0:
        raise UsageError(f"--port and --djinn-port are both {cfg.port}")
    if cfg.instances < 1:
        raise UsageError("--instances must be at least 1")
    for name, rows in cfg.max_batch.items():
        if name not in cfg.models:
            raise UsageError(f"--max-batch names {name!r}, which is not served")
        if rows < 1:
            raise UsageError(f"--max-batch {name}={rows}: at least 1 row")
        if rows * max(SPECS[name].row_bytes, SPECS[name].out_row_bytes) > 2048 * MiB:
            raise UsageError(f"--max-batch {name}={rows}: a batch would exceed 2 GiB")
    for name, us in cfg.max_queue_delay_us.items():
        if name not in cfg.models:
            raise UsageError(f"--max-queue-delay-us names {name!r}, which is not served")
        if not 0 <= us <= 60e6:
            raise UsageError(f"--max-queue-delay-us {name}={us:g}: between 0 and 60,000,000")
    for name, rows in cfg.resident_rows.items():
        if name not in cfg.models:
            raise UsageError(f"--resident-inputs names {name!r}, which is not served")
        if not 0 <= rows < 1 << 31:
            raise UsageError(f"--resident-inputs {name}={rows}: between 0 and 2,147,483,647 rows")
        if rows * SPECS[name].row_bytes > RESIDENT_MAX_BYTES:
            raise UsageError(f"--resident-inputs {name}={rows}: {rows} rows of {SPECS[name].row_bytes} bytes exceed "
                             f"{RESIDENT_MAX_BYTES >> 20} MiB per instance")
    if cfg.max_pending_bytes < cfg.max_request_bytes:
        raise UsageError("--max-pending-mb must be at least --max-request-mb")


def bind(host: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket, or :class:`ListenError` (port in use, address not available)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"{what}: cannot resolve host {host!r}: {exc.strerror}") from None
    family, _type, proto, _canon, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{what}: port {port} on {host} is already in use") from None
        raise ListenError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class Service:
    """The state both protocols share: models, batcher, instances, budget, statistics, readiness."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.config = cfg
        self.specs: dict[str, ModelSpec] = {m: SPECS[m] for m in cfg.models}
        self.max_batch = {m: cfg.max_batch.get(m, SPECS[m].default_max_batch) for m in cfg.models}
        self.delay_s = {m: cfg.max_queue_delay_us.get(m, 0.0) / 1e6 for m in cfg.models}
        # rows of resident inputs each instance keeps per model on its device (0: none; requests carry tensors)
        self.resident_rows = {m: int(cfg.resident_rows.get(m, 0)) for m in cfg.models}
        self.stats = {m: ModelStats(m) for m in cfg.models}
        self.budget = ByteBudget(cfg.max_pending_bytes)
        self.started = False
        self.draining = False
        self.rejected: Counter[str] = Counter()
        self.djinn_connections: set[Any] = set()
        self.t_start = time.time()
        cpu_instances = cfg.instances * sum(1 for d in cfg.devices if d == "cpu")
        self.cores = usable_cores()
        if cfg.threads is not None:
            self.threads = cfg.threads
        else:
            self.threads = max(1, self.cores // cpu_instances) if cpu_instances else 1
        largest = max(self.max_batch[m] * max(SPECS[m].row_bytes, SPECS[m].out_row_bytes) for m in cfg.models)
        configs = [InstanceConfig(index=i * cfg.instances + k, device=dev, threads=self.threads,
                                  models=tuple(cfg.models), dtype=cfg.dtype, max_bytes=largest + MiB,
                                  null_delay_us=cfg.null_delay_us, model_dirs=tuple(cfg.model_dirs.items()),
                                  resident_rows=tuple((m, n) for m, n in self.resident_rows.items() if n))
                   for i, dev in enumerate(cfg.devices) for k in range(cfg.instances)]
        self.pool = InstancePool(configs, on_free=self._on_free, announce=self.warn)
        self.scheduler = Scheduler(self.specs, self.max_batch, self.delay_s, self.pool, self.stats,
                                   frozenset(m for m, n in self.resident_rows.items() if n))
        self.listening: dict[str, tuple[str, int]] = {}

    # -- state ----------------------------------------------------------------------------------------------
    def _on_free(self) -> None:
        self.scheduler.kick()
        if self.started and self.pool.live == 0:
            for conn in list(self.djinn_connections):
                conn.drain()

    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "the server is shutting down"
        if not self.started:
            return "the server is starting: models are not ready yet"
        if self.pool.live == 0:
            return "no instance is running: the server cannot compute"
        return None

    def count_rejected(self, protocol: str, reason: str) -> None:
        self.rejected[f"{protocol}:{reason}"] += 1

    # -- output ---------------------------------------------------------------------------------------------
    def announce(self, text: str, **event: Any) -> None:
        line = json.dumps({"event": event.pop("event", "info"), "message": text, **event}) \
            if self.config.json_lines else f"aibench serve: {text}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def warn(self, text: str) -> None:
        sys.stderr.write(f"aibench serve: {text}\n")
        sys.stderr.flush()
        if self.config.json_lines:
            self.announce(text, event="warning")

    def describe(self) -> dict[str, Any]:
        """Settings, instances and the CPU time and memory of every process of the server (from /proc)."""
        procs = [{"role": "server", **proc_usage(os.getpid())}]
        instances = []
        for inst in self.pool.instances:
            entry = {"index": inst.config.index, "device": inst.config.device, "threads": inst.config.threads,
                     "omp_wait": inst.info.get("omp_wait"), "pid": inst.pid, "alive": inst.alive,
                     **({"down": self.pool.down[inst.config.index]} if inst.config.index in self.pool.down else {})}
            instances.append(entry)
            if inst.alive and inst.pid is not None:
                procs.append({"role": "instance", "index": inst.config.index, **proc_usage(inst.pid)})
        cfg = asdict(self.config)
        cfg["devices"] = list(cfg["devices"])
        cfg["models"] = list(cfg["models"])
        return {"name": "aibench", "pid": os.getpid(), "uptime_s": round(time.time() - self.t_start, 3),
                "ready": self.not_ready_reason() is None, "not_ready": self.not_ready_reason(),
                "config": cfg, "max_batch": self.max_batch,
                "max_queue_delay_us": {m: s * 1e6 for m, s in self.delay_s.items()},
                "resident_rows": self.resident_rows,
                "threads_per_instance": self.threads, "cores": self.cores, "instances": instances,
                "processes": procs,
                "budget": {"limit_bytes": self.budget.limit, "used_bytes": self.budget.used,
                           "peak_bytes": self.budget.peak},
                "in_flight": self.scheduler.in_flight, "djinn_connections": len(self.djinn_connections),
                "rejected": dict(self.rejected), "listening": {k: list(v) for k, v in self.listening.items()}}


def proc_usage(pid: int) -> dict[str, Any]:
    """CPU seconds (user + system) and resident memory of one process, from /proc (Linux)."""
    out: dict[str, Any] = {"pid": pid}
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tick
        page = os.sysconf("SC_PAGE_SIZE")
        out["rss_bytes"] = int(fields[21]) * page
    except (OSError, IndexError, ValueError):
        out["cpu_s"] = out["rss_bytes"] = None
    return out


async def _serve(cfg: ServeConfig, socks: dict[str, socket.socket]) -> int:
    from aiohttp import web

    from aibench.service.djinn import DjinnProtocol
    from aibench.service.oip import make_app

    loop = asyncio.get_running_loop()
    service = Service(cfg)
    stop = asyncio.Event()
    signals: list[int] = []
    hard = asyncio.Event()

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            stop.set()
        else:
            hard.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    runner: web.AppRunner | None = None
    site: web.SockSite | None = None
    djinn_server: asyncio.AbstractServer | None = None
    if "http" in socks:
        runner = web.AppRunner(make_app(service), handle_signals=False, access_log=None,
                               keepalive_timeout=cfg.idle_timeout_s, max_line_size=8190, max_field_size=8190,
                               max_headers=64, shutdown_timeout=cfg.shutdown_timeout_s)
        await runner.setup()
        site = web.SockSite(runner, socks["http"])
        await site.start()
        host, port = socks["http"].getsockname()[:2]
        service.listening["http"] = (host, port)
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        service.announce(f"Open Inference Protocol (HTTP) on {url}", event="listening", protocol="http",
                         host=host, port=port, url=url)
    if "djinn" in socks:
        djinn_server = await loop.create_server(lambda: DjinnProtocol(service), sock=socks["djinn"])
        host, port = socks["djinn"].getsockname()[:2]
        service.listening["djinn"] = (host, port)
        service.announce(f"DjiNN protocol on {host}:{port}", event="listening", protocol="djinn", host=host,
                         port=port, url=f"djinn://{host}:{port}")

    devices = ", ".join(cfg.devices)
    cpu = [d for d in cfg.devices if d == "cpu"]
    how = []
    if cpu:
        how.append(f"{service.threads} thread{'s' if service.threads != 1 else ''} per instance"
                   + ("" if cfg.threads is not None else f" (the {service.cores} usable cores split between "
                      f"{cfg.instances * len(cpu)} CPU instance{'s' if cfg.instances * len(cpu) != 1 else ''})"))
    if any(d.startswith("cuda") for d in cfg.devices) and cfg.instances > 1:
        how.append("instances on one GPU share it as plain processes (no MPS)")
    resident = {m: n for m, n in service.resident_rows.items() if n}
    if resident:
        how.append("each instance keeps resident inputs on its device ("
                   + ", ".join(f"{m} {n} rows" for m, n in resident.items()) + ")")
    service.announce(f"starting {cfg.instances} instance{'s' if cfg.instances != 1 else ''} per device on "
                     f"{devices}" + (f": {'; '.join(how)}" if how else ""), event="starting",
                     instances=cfg.instances, devices=list(cfg.devices), threads_per_instance=service.threads)
    start = loop.create_task(service.pool.start())
    waiter = loop.create_task(stop.wait())
    await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if start.done() and start.exception() is None and not stop.is_set():
        waiter.cancel()
        service.started = True
        for name, spec in service.specs.items():
            service.announce(
                f"model {name} ready: FP32{[-1, *spec.input_shape]} -> "
                f"{'INT64' if spec.output_dtype == 'int64' else 'FP32'}{[-1, *spec.output_shape]}, max batch "
                f"{service.max_batch[name]} rows, max queue delay {service.delay_s[name] * 1e6:g} us"
                + (f", {service.resident_rows[name]} resident input rows" if service.resident_rows[name] else ""),
                event="model_ready", model=name, max_batch=service.max_batch[name],
                resident_rows=service.resident_rows[name],
                max_queue_delay_us=service.delay_s[name] * 1e6, input_shape=[-1, *spec.input_shape],
                output_shape=[-1, *spec.output_shape])
        inst = [{"index": i.config.index, "pid": i.pid, "device": i.config.device, "threads": i.info.get("threads")}
                for i in service.pool.instances]
        service.announce(f"ready (pid {os.getpid()}; instances: "
                         + ", ".join(f"{d['device']} pid {d['pid']}" for d in inst) + ")",
                         event="ready", pid=os.getpid(), instances=inst,
                         listening={k: list(v) for k, v in service.listening.items()})
        await stop.wait()
    elif start.done() and start.exception() is not None:
        exc = start.exception()
        if runner is not None:
            await runner.cleanup()
        if djinn_server is not None:
            djinn_server.close()
        assert exc is not None
        raise exc
    else:
        start.cancel()

    # -- graceful shutdown ---------------------------------------------------------------------------------
    why = "SIGTERM" if signals and signals[0] == signal.SIGTERM else "Ctrl-C"
    service.announce(f"{why}: stopping (no new requests; {service.scheduler.in_flight} in flight finish first)",
                     event="stopping", signal=why, in_flight=service.scheduler.in_flight)
    service.draining = True
    if site is not None:
        await site.stop()  # stop listening; connections with a request in progress go on
    if djinn_server is not None:
        djinn_server.close()
    for conn in list(service.djinn_connections):
        conn.drain()
    service.scheduler.flush()
    idle = loop.create_task(service.scheduler.wait_idle())
    hard_wait = loop.create_task(hard.wait())
    done, _ = await asyncio.wait({idle, hard_wait}, timeout=cfg.shutdown_timeout_s,
                                 return_when=asyncio.FIRST_COMPLETED)
    if hard_wait in done:
        code = EXIT_INTERRUPTED
        service.warn("second signal: stopping at once; requests in flight are dropped")
    elif idle not in done:
        service.warn(f"{service.scheduler.in_flight} request(s) still in flight after {cfg.shutdown_timeout_s:g} s; "
                     "stopping anyway")
    idle.cancel()
    hard_wait.cancel()
    if code:
        await service.pool.stop(at_once=True)  # in-flight requests fail now (500): their handlers end at once
    if runner is not None:
        await runner.cleanup()  # waits for handlers still running (a body still arriving), then closes
    for conn in list(service.djinn_connections):
        conn.close()
    service.scheduler.stop()
    await service.pool.stop()
    service.announce("stopped", event="stopped", exit_code=code)
    return code


def serve(cfg: ServeConfig) -> int:
    """Run the server until SIGTERM or Ctrl-C; the exit code (0 after a graceful stop)."""
    check_config(cfg)
    socks: dict[str, socket.socket] = {}
    try:
        if cfg.port is not None:
            socks["http"] = bind(cfg.host, cfg.port, "--port")
        if cfg.djinn_port is not None:
            socks["djinn"] = bind(cfg.host, cfg.djinn_port, "--djinn-port")
    except AibenchError:
        for s in socks.values():
            s.close()
        raise
    try:
        return asyncio.run(_serve(cfg, socks))
    finally:
        for s in socks.values():
            s.close()
