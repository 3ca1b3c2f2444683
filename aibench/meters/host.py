"""Memory and CPU utilisation of the measuring process, and CUDA memory of the device in scope.

* Peak resident memory over the window: Linux resets the process's high-water mark (``VmHWM``) when ``5``
  is written to ``/proc/self/clear_refs``; the meter does that at the window's start and reads ``VmHWM`` at
  its end. Where the reset is refused the lifetime peak is reported and its ``scope`` says so. Children:
  ``getrusage(RUSAGE_CHILDREN)`` gives the largest peak of the children that have ended and been waited
  for (the kernel keeps no per-window figure for them).
* CPU: process CPU time (``os.times``) over the window, busy share of all CPUs from ``/proc/stat``, and
  the load average at both ends.
* CUDA: ``torch.cuda`` peak allocated and reserved bytes, with the peaks reset at the window's start.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path
from typing import Any

from aibench.meters.core import MEASURED, Sampler, Stamp, unavailable, window_json


def _status_kb(text: str, key: str) -> int | None:
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


class ProcessMemoryMeter:
    name = "process_memory"

    def __init__(self, proc_self: str | Path = "/proc/self") -> None:
        self.proc = Path(proc_self)
        self._reset_error: str | None = None
        self._rss_start: int | None = None
        self._end_status: str | None = None
        self._children_peak: int | None = None

    def _status(self) -> str | None:
        try:
            return (self.proc / "status").read_text()
        except OSError:
            return None

    def start(self, sampler: Sampler) -> None:
        try:
            (self.proc / "clear_refs").write_text("5")
        except OSError as exc:
            self._reset_error = f"cannot reset the peak ({self.proc}/clear_refs: {exc.strerror or exc})"
        status = self._status()
        self._rss_start = _status_kb(status, "VmRSS") if status else None

    def stop(self) -> None:
        self._end_status = self._status()
        # ru_maxrss is in kilobytes on Linux.
        kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        self._children_peak = kb * 1024 if kb else None

    def readings(self) -> dict[str, Any]:
        status = self._end_status
        peak = _status_kb(status, "VmHWM") if status else None
        if peak is None:
            proc: dict[str, Any] = unavailable("read_error", f"no VmHWM in {self.proc}/status")
        else:
            proc = {"provenance": MEASURED, "peak_rss_bytes": peak,
                    "scope": "window" if self._reset_error is None else "process lifetime",
                    "rss_start_bytes": self._rss_start,
                    "rss_end_bytes": _status_kb(status, "VmRSS") if status else None,
                    "source": "VmHWM in /proc/self/status" + ("" if self._reset_error else
                                                               ", reset via clear_refs at window start")}
            if self._reset_error:
                proc["note"] = self._reset_error
        children = ({"provenance": MEASURED, "peak_rss_bytes": self._children_peak,
                     "scope": "largest ended child, process lifetime", "source": "getrusage(RUSAGE_CHILDREN)"}
                    if self._children_peak else None)
        out: dict[str, Any] = {"process": proc}
        if children is not None:
            out["children"] = children
        return {"memory": out}


def _proc_stat_cpu(path: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    try:
        first = path.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    vals = [int(x) for x in first[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user/nice
    return total - idle, total


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 3) for x in os.getloadavg()]
    except OSError:
        return None


class CpuUtilMeter:
    name = "cpu_util"

    def __init__(self, proc_stat: str | Path = "/proc/stat") -> None:
        self.proc_stat = Path(proc_stat)
        self._t0: os.times_result | None = None
        self._t1: os.times_result | None = None
        self._s0: tuple[int, int] | None = None
        self._s1: tuple[int, int] | None = None
        self._load0: list[float] | None = None
        self._load1: list[float] | None = None
        self._start: Stamp | None = None
        self._end: Stamp | None = None

    def start(self, sampler: Sampler) -> None:
        self._load0 = _loadavg()
        self._s0 = _proc_stat_cpu(self.proc_stat)
        self._start = Stamp.now()
        self._t0 = os.times()

    def stop(self) -> None:
        self._t1 = os.times()
        self._end = Stamp.now()
        self._s1 = _proc_stat_cpu(self.proc_stat)
        self._load1 = _loadavg()

    def readings(self) -> dict[str, Any]:
        assert self._t0 and self._t1 and self._start and self._end
        win = window_json(self._start, self._end)
        wall = win["duration_s"]
        cpu_s = (self._t1.user - self._t0.user) + (self._t1.system - self._t0.system)
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = os.cpu_count()
        out: dict[str, Any] = {
            "provenance": MEASURED,
            "window": win,
            "process_cpu_s": cpu_s,
            "process_cores_busy": cpu_s / wall if wall > 0 else None,
            "usable_cpus": usable,
            "clock_resolution_s": 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else None,
            "loadavg_start": self._load0,
            "loadavg_end": self._load1,
        }
        if self._s0 and self._s1 and self._s1[1] > self._s0[1]:
            out["system_busy_fraction"] = (self._s1[0] - self._s0[0]) / (self._s1[1] - self._s0[1])
        else:
            out["system_busy_fraction"] = None
            out["system_note"] = f"{self.proc_stat} unreadable or no tick elapsed in the window"
        return {"utilisation": {"cpu": out}}


class CudaMemoryMeter:
    """Peak CUDA memory over the window. ``cuda`` is ``torch.cuda`` (injectable for tests)."""

    name = "cuda_memory"

    def __init__(self, index: int, cuda: Any = None) -> None:
        self.index = index
        self._cuda = cuda
        self._alloc_start: int | None = None
        self._end: dict[str, int] = {}

    def start(self, sampler: Sampler) -> None:
        if self._cuda is None:
            import torch

            self._cuda = torch.cuda
        self._cuda.reset_peak_memory_stats(self.index)
        self._alloc_start = int(self._cuda.memory_allocated(self.index))

    def stop(self) -> None:
        c = self._cuda
        self._end = {"peak_allocated_bytes": int(c.max_memory_allocated(self.index)),
                     "peak_reserved_bytes": int(c.max_memory_reserved(self.index)),
                     "allocated_end_bytes": int(c.memory_allocated(self.index))}

    def readings(self) -> dict[str, Any]:
        return {"memory": {"cuda": {"provenance": MEASURED, "scope": f"cuda:{self.index}", "window_peak": True,
                                    "allocated_start_bytes": self._alloc_start, **self._end,
                                    "source": "torch.cuda.max_memory_allocated/max_memory_reserved, peaks reset "
                                              "at window start"}}}
