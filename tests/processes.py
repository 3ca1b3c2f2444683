"""Helpers for tests that check which processes a command leaves behind (read from /proc)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_for_children(proc: subprocess.Popen[bytes], marker: bytes, timeout_s: float = 120.0) -> list[int]:
    """The pids of ``proc``'s children whose command line holds ``marker``, once there is one (empty when
    none came within ``timeout_s`` or ``proc`` ended first)."""
    found: list[int] = []
    deadline = time.monotonic() + timeout_s
    while not found and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            kids = []
        found = [int(k) for k in kids if marker in cmdline(int(k))]
    return found
