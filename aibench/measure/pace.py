"""Lockstep measurement: two ``aibench run`` processes (a gate's baseline and candidate) take turns.

Why: on the project's 2-core VMs the time of one and the same call drifts by 10-60% within a second (the
host's other tenants, the other vCPU's work), and two processes measured one after the other, seconds
apart, see different machines. ``aibench gate`` therefore runs the two sides of a round at the same time and
lets them measure in alternate short turns (~20 ms), both pinned to the same CPU: each side's figure then
averages over the same moments. docs/gate.md ("Where the spread comes from") has the measurements.

This module is the child's half of the protocol. ``aibench gate`` (the conductor) passes two pipe file
descriptors in ``AIBENCH_PACE`` ("READ_FD,WRITE_FD"); one line of text per message:

    child: hello 1                       after building the op; says "I can take turns" (protocol 1)
    gate:  solo                          measure on your own, as without a gate (the other side cannot pace)
    gate:  pace CPU TURN_S               pin to CPU ('-': do not pin), warm up, calibrate, then answer
    child: ready
    gate:  warm | turn                   time blocks for TURN_S (warm: and throw them away), then answer
    child: done 0|1                      1: the timer's own stopping rule is satisfied
    gate:  stop                          end the measurement (the gate stops when both sides said 1)

A child that never says hello (an older aibench, a runner that does not take turns) simply measures on its
own; the gate sees its pipe close when it exits and runs the other side after it. End of file from the
gate at any point ends the measurement with what was gathered.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

PACE_ENV = "AIBENCH_PACE"
PROTOCOL = 1


class PaceError(Exception):
    """The conductor sent something this protocol does not know."""


@dataclass(frozen=True)
class Order:
    """The gate's answer to hello: take turns (``cpu`` to pin to, or None) with turns of ``turn_s``."""

    cpu: int | None
    turn_s: float


class Pacer:
    """The child's end of the two pipes."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._rfd = read_fd
        self._wfd = write_fd
        self._buf = b""
        self.turn_s = 0.02
        self.closed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pacer | None:
        """The pacer named by ``AIBENCH_PACE``, or None (not under a gate, or unusable descriptors)."""
        text = (os.environ if env is None else env).get(PACE_ENV, "")
        parts = text.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            return None
        rfd, wfd = (int(p) for p in parts)
        try:
            for fd in (rfd, wfd):
                os.fstat(fd)
                os.set_inheritable(fd, False)  # this process's own children must not hold the gate's pipes
        except OSError:
            return None
        return cls(rfd, wfd)

    def _send(self, line: str) -> None:
        if self.closed:
            return
        try:
            os.write(self._wfd, (line + "\n").encode())
        except OSError:
            self.close()

    def _recv(self) -> str | None:
        """The next line from the gate; None at end of file (the gate is gone)."""
        while b"\n" not in self._buf:
            if self.closed:
                return None
            try:
                chunk = os.read(self._rfd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def hello(self) -> Order | None:
        """Offer to take turns; the gate's order, or None to measure solo."""
        self._send(f"hello {PROTOCOL}")
        line = self._recv()
        if line is None or line == "solo":
            return None
        words = line.split()
        if len(words) != 3 or words[0] != "pace":
            raise PaceError(f"unexpected message from aibench gate: {line!r}")
        try:
            cpu = None if words[1] == "-" else int(words[1])
            turn_s = float(words[2])
        except ValueError:
            raise PaceError(f"unexpected message from aibench gate: {line!r}") from None
        if not 0 < turn_s < 60:
            raise PaceError(f"turn of {turn_s} s from aibench gate")
        self.turn_s = turn_s
        return Order(cpu, turn_s)

    def ready(self) -> None:
        self._send("ready")

    def next(self) -> str:
        """``warm``, ``turn`` or ``stop`` (also at end of file)."""
        line = self._recv()
        if line is None or line == "stop":
            return "stop"
        if line not in ("warm", "turn"):
            raise PaceError(f"unexpected message from aibench gate: {line!r}")
        return line

    def done(self, want_stop: bool) -> None:
        self._send(f"done {int(want_stop)}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


_current: Pacer | None = None
_looked = False


def current() -> Pacer | None:
    """This process's pacer (one for the whole process: a run of several configurations takes turns for
    each), or None when not under a gate."""
    global _current, _looked
    if not _looked:
        _looked = True
        _current = Pacer.from_env()
    if _current is not None and _current.closed:
        return None
    return _current


@contextlib.contextmanager
def pinned_cpu(cpu: int | None) -> Iterator[int | None]:
    """Run this process on ``cpu`` only for the duration (None: leave it); yields the CPU actually pinned."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield None
        return
    try:
        yield cpu
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
