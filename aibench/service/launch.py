"""Start ``aibench serve`` in a subprocess from Python and know where it listens: for tests, scripts and
aibench's own clients (``scenario/djinn`` starts its server this way).

>>> with start_server(["pos"]) as srv:            # any free loopback ports
...     srv.http_url, srv.djinn_address           # ('http://127.0.0.1:40123', ('127.0.0.1', 40124))
...     srv.stats("pos")                          # Triton's statistics, as a dict
... # leaving the block stops it: SIGTERM, in-flight requests finish, exit 0

The server is started with ``--json`` and its announcements (one JSON object per line on its stdout) are
read until ``ready``; a server that exits first raises with its own one-line error, as the exception its
exit code stands for (a port in use: :class:`~aibench.errors.ListenError`). The server dies with this
process, even on SIGKILL (``AIBENCH_PARENT_PID``: it asks the kernel for SIGKILL when its parent dies;
start it from the main thread, whose exit counts as the parent's). Standard library only: no torch, no
aiohttp here.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from aibench.errors import (
    EXIT_IO,
    EXIT_LISTEN,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ListenError,
    ResultIOError,
    UnavailableError,
    UsageError,
)
from aibench.lifetime import PARENT_ENV
from aibench.sut.batcher import get_within


class ServerExited(RuntimeError):
    """The server ended before it was ready (the message is its last error line and exit code)."""


class ServerProcess:
    """A running ``aibench serve``: where it listens, its pids, its statistics; :meth:`stop` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], ready: dict[str, Any], events: list[dict[str, Any]],
                 stderr_lines: collections.deque[str]) -> None:
        self.process = process
        self.events = events  # every announcement so far (the reader thread appends later ones)
        self.stderr_lines = stderr_lines
        self.ready_event = ready
        listening = {e["protocol"]: e for e in events if e.get("event") == "listening"}
        http = listening.get("http")
        djinn = listening.get("djinn")
        self.http_url: str | None = http["url"] if http else None
        self.http_address: tuple[str, int] | None = (http["host"], int(http["port"])) if http else None
        self.djinn_address: tuple[str, int] | None = (djinn["host"], int(djinn["port"])) if djinn else None
        self.instances: list[dict[str, Any]] = list(ready.get("instances") or [])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def worker_pids(self) -> list[int]:
        """The instances' pids as announced at start (a restarted instance has a new one: see
        :meth:`describe`)."""
        return [int(i["pid"]) for i in self.instances if i.get("pid")]

    def get_json(self, path: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """GET ``path`` on the HTTP port as JSON (an error status raises urllib's HTTPError)."""
        if self.http_url is None:
            raise RuntimeError("the server has no HTTP port")
        with urllib.request.urlopen(self.http_url + path, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Triton's statistics of one model (its ``model_stats`` entry) or of all (the whole document)."""
        if model is None:
            return self.get_json("/v2/models/stats")
        return self.get_json(f"/v2/models/{model}/stats")["model_stats"][0]

    def describe(self) -> dict[str, Any]:
        """The server's own view: settings, instances, CPU time and memory of each of its processes."""
        return self.get_json("/v2/aibench")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the graceful stop (SIGKILL after ``timeout_s``); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_command(models: Sequence[str], *, port: int | str = 0, djinn_port: int | str = 0,
                  args: Sequence[str] = ()) -> list[str]:
    """The command line of a server on the loopback address with ``--json`` announcements."""
    return [sys.executable, "-m", "aibench", "serve", "--json", "--models", ",".join(models), "--host", "127.0.0.1",
            "--port", str(port), "--djinn-port", str(djinn_port), *args]


def start_server(models: Sequence[str], *, port: int | str = 0, djinn_port: int | str = 0, args: Sequence[str] = (),
                 timeout_s: float = 600.0, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``aibench serve`` for ``models`` (any free loopback ports unless told; ``"off"`` turns a port
    off; ``args`` are more ``serve`` options) and return once every model is ready."""
    return spawn(serve_command(models, port=port, djinn_port=djinn_port, args=args), env=env).ready(timeout_s)


class Starting:
    """A process started by :func:`spawn` that announces itself in JSON lines (``listening``, then
    ``ready``), as ``aibench serve --json`` and ``aibench scenario ecommerce serve-module --json`` do; several
    can start at once, then :meth:`ready` waits for each."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.process = proc
        self.events: list[dict[str, Any]] = []
        self.inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=200)
        for target in (self._read_stdout, self._read_stderr):
            threading.Thread(target=target, name=f"aibench-serve-{target.__name__}", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "output", "message": raw.decode(errors="replace").rstrip()}
            self.events.append(event)
            self.inbox.put(event)
        self.inbox.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def ready(self, timeout_s: float = 600.0) -> ServerProcess:
        """Wait for ``ready``; a process that exits first raises with its own one-line error, as the exception
        its exit code stands for; one not ready in time (or Ctrl-C meanwhile) is killed."""
        proc = self.process
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                event = get_within(self.inbox, max(0.0, deadline - time.monotonic()))
            except BaseException as exc:  # not ready in time, or Ctrl-C/SIGTERM meanwhile: it must not outlive this
                self.kill()
                if isinstance(exc, queue.Empty):
                    raise ServerExited(f"{_name(proc)} was not ready within {timeout_s:g} s") from None
                raise
            if event is None:  # stdout closed: the process ended
                code = proc.wait()
                time.sleep(0.05)  # let the stderr reader take the last line
                last = next((ln for ln in reversed(self.stderr_lines) if ln.strip()), f"exit code {code}")
                text = last.removeprefix("aibench: error: ")
                if code == EXIT_LISTEN:
                    raise ListenError(text)
                if code == EXIT_UNAVAILABLE:
                    raise UnavailableError(text)
                if code == EXIT_USAGE:
                    raise UsageError(text)
                if code == EXIT_IO:
                    raise ResultIOError(text)
                raise ServerExited(f"{_name(proc)} exited with code {code} before it was ready: {last}")
            if event.get("event") == "ready":
                return ServerProcess(proc, event, self.events, self.stderr_lines)


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = [str(a) for a in proc.args] if isinstance(proc.args, list | tuple) else [str(proc.args)]
    if "serve-module" in args:
        i = args.index("serve-module")
        return f"the {args[i + 1]} module" if i + 1 < len(args) else "serve-module"
    return "aibench serve"


def spawn(cmd: Sequence[str], env: dict[str, str] | None = None) -> Starting:
    """Start ``cmd`` (an aibench command announcing itself in JSON lines) so that it dies with this process,
    even on SIGKILL (``AIBENCH_PARENT_PID``: start it from the main thread); :meth:`Starting.ready` waits."""
    environ = dict(os.environ if env is None else env)
    environ[PARENT_ENV] = str(os.getpid())
    environ.setdefault("PYTHONUNBUFFERED", "1")
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, environ.get("PYTHONPATH", "")) if p)
    # Its own session: a Ctrl-C in the terminal reaches aibench's process group, not the server, which keeps
    # answering (its statistics and /proc figures go into the interrupted run's record) until aibench stops
    # it. It still dies with aibench, even on SIGKILL (AIBENCH_PARENT_PID).
    proc = subprocess.Popen(list(cmd), env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    return Starting(proc)
