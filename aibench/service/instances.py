"""The server's side of its instances: worker processes started, fed one batch at a time, restarted when
they die.

Each :class:`Instance` is one process (:mod:`aibench.service.worker`) started with
``asyncio.create_subprocess_exec`` from the event loop's (main) thread, holding the other end of a socket
pair; its frames arrive through a :class:`~aibench.sut.transport.FrameProtocol` (callbacks, no task per
frame). An instance holds at most ``DEPTH`` batches: the one it computes and, only when it is a *full*
batch, one more waiting in its socket, so it never idles while the server hands it the next batch (a
partial batch is never queued behind a busy instance: it waits in the batcher and may still grow, Triton's
rule).

A worker that dies (its socket reaches EOF) fails its batch in flight with :class:`InstanceLost` and is
restarted, at most ``MAX_RESTARTS`` times in ``RESTART_WINDOW_S``; past that it stays down, and when no
instance is left the server is no longer ready (503; DjiNN connections are closed).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibench.errors import AibenchError, UnavailableError, UsageError
from aibench.service import worker as W
from aibench.sut.transport import Frame, FrameError, FrameProtocol, socket_pair, write_frames

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # torch import + building CaffeNet on a loaded 2-core machine takes many seconds
STOP_TIMEOUT_S = 10.0
MAX_RESTARTS = 3
DEPTH = 2  # batches an instance may hold: one computing, one full batch waiting in its socket
RESTART_WINDOW_S = 60.0


def worker_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an instance: the server's, with OpenMP's idle threads sleeping instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a wait policy.

    An instance never has its cores to itself: the server's event loop, and usually the client, run beside
    it, and they need a core between two parallel regions and between batches. libgomp's default lets each
    idle OpenMP thread spin for up to 300,000 iterations (milliseconds) after every region; on the shared
    2-core VM that spinning took the core the rest of the chain needed and multiplied the instance's forward
    pass: POS (1792 rows, 2 threads) 23 ms a batch spinning against 9 ms passive, served/in-process
    0.25 -> 0.70; IMC at batch 16 0.80 -> 0.90 (side by side in one run at load 2-4: docs/djinn.md).
    In-process runs keep the default: there nothing else in the chain waits for the core."""
    env = dict(os.environ if base is None else base)
    if not any(env.get(name) for name in W.WAIT_POLICY_VARS):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


class InstanceLost(RuntimeError):
    """The instance died (or broke its stream) while it held a batch."""


class BatchFailed(RuntimeError):
    """The instance's model raised on a batch (the instance goes on)."""


class StartError(AibenchError):
    """An instance could not start (the message says why; refusals keep their exit code)."""


@dataclass(frozen=True)
class InstanceConfig:
    index: int
    device: str
    threads: int
    models: tuple[str, ...]
    dtype: str
    max_bytes: int  # the largest frame either way
    null_delay_us: float = 0.0
    model_dirs: tuple[tuple[str, str], ...] = ()  # --model-dir FAMILY=DIR pairs
    resident_rows: tuple[tuple[str, int], ...] = ()  # (model, rows) of resident inputs made on the device

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "device": self.device, "threads": self.threads,
                           "models": list(self.models), "dtype": self.dtype, "max_bytes": self.max_bytes,
                           "null_delay_us": self.null_delay_us, "model_dirs": dict(self.model_dirs),
                           "resident_rows": dict(self.resident_rows),
                           "parent_pid": os.getpid()})


@dataclass
class _Batch:
    id: int
    future: asyncio.Future[Frame]
    times: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    prev_done: int = 0


class Instance:
    def __init__(self, config: InstanceConfig) -> None:
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.transport: asyncio.Transport | None = None
        self.info: dict[str, Any] = {}
        self.alive = False
        self._ready: asyncio.Future[Frame] | None = None
        self._pending: collections.deque[_Batch] = collections.deque()  # sent, not yet answered, in order
        self._last_done = 0  # monotonic_ns when the instance finished its latest batch
        self._next_id = 0
        self.lost_reason: str | None = None
        self.on_lost: Callable[[Instance], None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def describe(self) -> str:
        return f"instance {self.config.index} (pid {self.pid}, {self.config.device})"

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the worker and wait until it has built every model (or raise :class:`StartError`)."""
        loop = asyncio.get_running_loop()
        mine, theirs = socket_pair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aibench.service.worker", str(theirs.fileno()), self.config.to_json(),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=worker_environment())
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._ready = loop.create_future()
        self.transport, _ = await loop.create_connection(
            lambda: FrameProtocol(self._on_frame, self._on_stream_lost, self.config.max_bytes, W.FROM_WORKER),
            sock=mine)
        try:
            frame = await asyncio.wait_for(self._ready, timeout_s)
        except InstanceLost:
            code = await self._exit_code()
            raise StartError(f"{self.describe()} exited with code {code} while starting") from None
        except TimeoutError:
            await self.kill()
            raise StartError(f"{self.describe()} did not start within {timeout_s:g} s") from None
        if frame.tag == W.T_ERROR:
            doc = json.loads(bytes(frame.payload))
            await self._exit_code()
            text = f"{self.describe()}: {doc.get('message')}"
            if doc.get("exit_code") == UnavailableError.exit_code:
                raise UnavailableError(text)
            if doc.get("exit_code") == UsageError.exit_code:
                raise UsageError(text)
            raise StartError(f"{self.describe()}: {doc.get('type')}: {doc.get('message')}")
        if frame.tag != W.T_READY:
            await self.kill()
            raise StartError(f"{self.describe()} said {frame.tag!r} instead of ready")
        self.info = json.loads(bytes(frame.payload))
        self.alive = True

    async def _exit_code(self, timeout_s: float = 5.0) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            return None

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def send(self, key: int, payload: Any, dtype: str, shape: tuple[int, ...]) -> _Batch:
        """Hand one batch to this instance now: ``float32`` rows of ``shape``, or ``int32`` ``(rows,)`` row
        numbers of the model's resident inputs. Its ``future`` gets the output frame, and ``times`` the
        worker's four ``monotonic_ns`` stamps (see :mod:`aibench.service.worker`), ``prev_done`` when the
        instance finished the batch before it (it could not begin this one earlier)."""
        if not self.alive or self.transport is None:
            raise InstanceLost(f"{self.describe()} is not running")
        self._next_id += 1
        entry = _Batch(self._next_id, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        write_frames(self.transport, [Frame(W.T_RUN, payload, dtype, shape, key, entry.id)])
        return entry

    # -- the stream's callbacks (on the event loop, no task per frame) --------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(frame)
            return
        if not self._pending or frame.id != self._pending[0].id:
            return  # a reply to nothing outstanding: ignore it
        entry = self._pending[0]
        if frame.tag == W.T_TIMES:
            entry.times = [int(v) for v in memoryview(frame.payload).cast("q")]
            entry.prev_done, self._last_done = self._last_done, entry.times[-1]
        elif frame.tag == W.T_OUTPUT:
            self._pending.popleft()
            if not entry.future.done():
                entry.future.set_result(frame)
        elif frame.tag == W.T_ERROR:
            self._pending.popleft()
            doc = json.loads(bytes(frame.payload))
            if not entry.future.done():
                entry.future.set_exception(BatchFailed(f"{self.describe()}: {doc.get('type')}: {doc.get('message')}"))

    def _on_stream_lost(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(InstanceLost("stream closed while starting"))
            return
        if not self.alive:
            return  # stopped on purpose
        self.alive = False  # nothing more is sent to it; its batches fail once we know how it ended
        asyncio.get_running_loop().create_task(self._report_loss(exc))

    async def _report_loss(self, exc: BaseException | None) -> None:
        code = await self._exit_code(2.0)
        if isinstance(exc, FrameError):
            self._lose(f"broke its stream ({exc})")
        else:
            self._lose(f"exited with code {code}" if code is not None else "closed its stream")

    def _lose(self, why: str) -> None:
        self.alive = False
        self.lost_reason = f"{self.describe()} {why}"
        pending, self._pending = self._pending, collections.deque()
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(InstanceLost(self.lost_reason))
        if self.on_lost is not None:
            self.on_lost(self)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the worker to stop; kill it if it has not within ``timeout_s``."""
        was_alive, self.alive = self.alive, False
        self.lost_reason = self.lost_reason or "stopped"
        if was_alive and self.transport is not None and not self.transport.is_closing():
            write_frames(self.transport, [Frame(W.T_STOP)])
        if self.process is not None and self.process.returncode is None:
            if not was_alive or await self._exit_code(timeout_s) is None:
                await self.kill()  # still starting (or deaf): nothing of its is worth waiting for
        if self.transport is not None:
            self.transport.close()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
            await self._exit_code(5.0)


class InstancePool:
    """Every instance of the server; calls ``on_change`` when one becomes free, dies or comes back."""

    def __init__(self, configs: list[InstanceConfig], on_free: Callable[[], None],
                 announce: Callable[[str], None]) -> None:
        self.configs = configs
        self.instances: list[Instance] = []
        self.on_free = on_free
        self.announce = announce
        self.stopping = False
        self.restarts: dict[int, collections.deque[float]] = {c.index: collections.deque() for c in configs}
        self.restart_tasks: set[asyncio.Task[None]] = set()
        self.down: dict[int, str] = {}  # index -> why it stays down

    async def start(self) -> None:
        """Start every instance at once; any failure stops the others and raises."""
        self.instances = [self._new(c) for c in self.configs]
        results = await asyncio.gather(*(i.start() for i in self.instances), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            refusals = [e for e in errors if isinstance(e, (UnavailableError, UsageError))]
            raise refusals[0] if refusals else errors[0]

    def _new(self, config: InstanceConfig) -> Instance:
        inst = Instance(config)
        inst.on_lost = self._lost
        return inst

    @property
    def live(self) -> int:
        return sum(1 for i in self.instances if i.alive) + len(self.restart_tasks)

    def take(self, full: bool) -> Instance | None:
        """An idle live instance; or, for a full batch when none is idle, one with room for a second."""
        best: Instance | None = None
        limit = DEPTH if full else 1
        for inst in self.instances:
            if inst.alive and inst.outstanding < limit and (best is None or inst.outstanding < best.outstanding):
                best = inst
        return best

    def _lost(self, inst: Instance) -> None:
        if self.stopping:
            return
        idx = inst.config.index
        now = time.monotonic()
        recent = self.restarts[idx]
        while recent and now - recent[0] > RESTART_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_RESTARTS:
            self.down[idx] = inst.lost_reason or "lost"
            self.announce(f"{inst.lost_reason}; not restarted ({MAX_RESTARTS} restarts within "
                          f"{RESTART_WINDOW_S:g} s)")
            self.on_free()  # the scheduler re-checks whether anything can still serve
            return
        recent.append(now)
        self.announce(f"{inst.lost_reason}; restarting it ({len(recent)} of {MAX_RESTARTS} restarts allowed "
                      f"within {RESTART_WINDOW_S:g} s)")
        task = asyncio.get_running_loop().create_task(self._restart(inst))
        self.restart_tasks.add(task)
        task.add_done_callback(self.restart_tasks.discard)
        self.on_free()

    async def _restart(self, old: Instance) -> None:
        await old.stop(1.0)
        inst = self._new(old.config)
        pos = self.instances.index(old)
        try:
            await inst.start()
        except Exception as exc:
            self.down[old.config.index] = str(exc)
            self.announce(f"instance {old.config.index} could not restart: {exc}")
            self.on_free()
            return
        if self.stopping:
            await inst.stop()
            return
        self.instances[pos] = inst
        self.announce(f"{inst.describe()} restarted")
        self.on_free()

    async def stop(self, at_once: bool = False) -> None:
        """Stop every instance: ask and wait (``at_once``: kill, for a second Ctrl-C)."""
        self.stopping = True
        for task in list(self.restart_tasks):
            task.cancel()
        if at_once:
            for inst in self.instances:
                inst._lose("was killed: the server stopped at once")  # its batches fail now
            await asyncio.gather(*(i.kill() for i in self.instances), return_exceptions=True)
        await asyncio.gather(*(i.stop() for i in self.instances), return_exceptions=True)
