"""The two sides of a split: real, measured configurations of this machine.

A side is a device (``cpu`` or ``cuda[:N]``), a thread count, a dtype and, where the machine allows it, a
CPU quota through cgroups (so that the "device" can be many times slower than the "server", as the paper's
Jetson was against its K40). Defaults: ``device`` is one CPU thread in float32; ``server`` is CUDA when
present, else every core this process may run on.

**CPU quota.** cgroup v2's ``cpu.max`` is used when the ``cpu`` controller is enabled in the unified
hierarchy; otherwise cgroup v1's ``cpu.cfs_quota_us`` (what these machines expose, to root). The process
moves into a child group ``aibench-partition-<pid>`` for the measurement and back afterwards; the group is
removed. Where neither is writable the side is refused (exit 3) with the reason, never silently unquoted.
The period is the shortest that allows the quota (1 ms of quota; 4 ms for a quarter core), so that the cap
holds within a layer and not only over 100 ms windows. The group also gets the largest CPU weight
(``cpu.shares``/``cpu.weight``): a device's cores are its own, so a busy machine (a split run's server
under background load, other work) must not take the quota'd side below its quota; the quota still caps it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aibench.errors import UnavailableError, UsageError

SIDES = ("device", "server")
DTYPES = ("float32", "bfloat16", "float16")
CGROUP_ROOT = Path("/sys/fs/cgroup")
MIN_QUOTA_US = 1000  # the kernel's smallest CFS quota (and period)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Side:
    """One side's configuration (what is asked; :func:`applied` records what was in effect)."""

    name: str
    device: str = "cpu"
    threads: int = 1
    dtype: str = "float32"
    cpu_quota: float | None = None  # cores' worth of CPU time per period (0.25: a quarter of one core)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def side_for(name: str, device: str | None = None, threads: int | None = None, dtype: str | None = None,
             cpu_quota: float | None = None) -> Side:
    """The named side with its defaults, constrained by what is given. Refuses (exit 2/3) what cannot be."""
    if name not in SIDES:
        raise UsageError(f"side must be one of {', '.join(SIDES)}, not {name!r}")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    if cpu_quota is not None and not 0.01 <= cpu_quota <= 1024:
        raise UsageError(f"--cpu-quota must be between 0.01 and 1024 cores, not {cpu_quota}")
    if device is None:
        device = "cpu"
        if name == "server" and cpu_quota is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UsageError(f"device must be cpu, cuda or cuda:N, not {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UnavailableError(f"device {device}: CUDA is not available on this machine")
    if threads is None:
        threads = 1 if name == "device" else usable_cpus()
    return Side(name=name, device=device, threads=threads, dtype=dtype or "float32", cpu_quota=cpu_quota)


# ------------------------------------------------------------------------------------------ cgroup quota

def _own_group(controller: str | None) -> str:
    """This process's cgroup path for ``controller`` (v1), or in the unified hierarchy (None)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller is None and ctrls == "") or (controller and controller in ctrls.split(",")):
            return path.lstrip("/")
    raise OSError(f"no {controller or 'unified'} cgroup in /proc/self/cgroup")


def quota_interface() -> tuple[str, Path] | str:
    """``("v2"|"v1", the folder to create the child group in)``, or why no CPU quota can be set here."""
    try:
        unified = CGROUP_ROOT / "cgroup.controllers"
        if unified.exists() and "cpu" in unified.read_text().split():
            parent = CGROUP_ROOT / _own_group(None)
            if os.access(parent, os.W_OK):
                return "v2", parent
            return f"cgroup v2 has the cpu controller but {parent} is not writable"
        v1 = CGROUP_ROOT / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            parent = v1 / _own_group("cpu")
            if os.access(parent, os.W_OK):
                return "v1", parent
            return f"cgroup v1 cpu controller present but {parent} is not writable (needs root)"
        return "no cgroup cpu controller (neither v2 cpu.max nor v1 cpu.cfs_quota_us)"
    except OSError as exc:
        return f"cannot read this process's cgroups ({exc})"


MAX_SHARES_V1 = 262144  # cpu.shares' largest value
MAX_WEIGHT_V2 = 10000  # cpu.weight's largest value


def _try_write(path: Path, value: int) -> int | None:
    try:
        path.write_text(f"{value}\n")
        return value
    except OSError:
        return None


@contextlib.contextmanager
def cpu_quota(cores: float | None) -> Iterator[dict[str, Any] | None]:
    """Run the body capped at ``cores`` of CPU time per period (None: no cap). Yields what was set."""
    if cores is None:
        yield None
        return
    found = quota_interface()
    if isinstance(found, str):
        raise UnavailableError(f"--cpu-quota: {found}")
    version, parent = found
    group = parent / f"aibench-partition-{os.getpid()}"
    # The shortest period that allows the quota: the cap is enforced per period, so with the default 100 ms
    # period a layer shorter than the quota runs at full speed and the throttling lands in bursts (measured:
    # at 0.25 cores IMC's whole network took 4x one thread, the sum of its layers' medians under 2x).
    period_us = max(MIN_QUOTA_US, math.ceil(MIN_QUOTA_US / cores))
    quota_us = max(MIN_QUOTA_US, round(cores * period_us))
    try:
        group.mkdir(exist_ok=True)
        if version == "v2":
            (group / "cpu.max").write_text(f"{quota_us} {period_us}\n")
            weight = _try_write(group / "cpu.weight", MAX_WEIGHT_V2)
        else:
            (group / "cpu.cfs_period_us").write_text(f"{period_us}\n")
            (group / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
            weight = _try_write(group / "cpu.shares", MAX_SHARES_V1)
        (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise UnavailableError(f"--cpu-quota: cannot set a cgroup {version} quota in {group} "
                               f"({exc.strerror or exc})") from None
    try:
        yield {"cgroup": version, "group": str(group), "quota_us": quota_us, "period_us": period_us,
               "cores": quota_us / period_us,
               "weight": weight if weight is not None else "default (the largest weight could not be set)",
               "note": "the group has the largest CPU weight, so that it gets its whole quota when the machine "
                       "is busy (a device's cores are its own); the quota caps it"}
    finally:
        with contextlib.suppress(OSError):
            (parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        with contextlib.suppress(OSError):
            group.rmdir()


@contextlib.contextmanager
def cpu_priority(pid: int | None = None) -> Iterator[dict[str, Any]]:
    """Run process ``pid`` (default: this one) with the largest CPU weight and no cap, in a child group
    ``aibench-partition-prio-<pid>``: a dedicated server emulated on a shared machine (others' work does not
    take its cores while it computes; when it is idle they run). The group is removed afterwards (this process
    moves back; another ``pid`` must have ended or moved). Yields what was set; UnavailableError (exit 3)
    where no cgroup CPU controller is writable."""
    found = quota_interface()
    if isinstance(found, str):
        raise UnavailableError(f"server CPU priority: {found}")
    version, parent = found
    target = os.getpid() if pid is None else pid
    group = parent / f"aibench-partition-prio-{target}"
    try:
        group.mkdir(exist_ok=True)
        weight = _try_write(group / ("cpu.weight" if version == "v2" else "cpu.shares"),
                            MAX_WEIGHT_V2 if version == "v2" else MAX_SHARES_V1)
        (group / "cgroup.procs").write_text(f"{target}\n")
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise UnavailableError(f"server CPU priority: cannot set a cgroup {version} weight in {group} "
                               f"({exc.strerror or exc})") from None
    try:
        yield {"cgroup": version, "group": str(group), "weight": weight, "pid": target,
               "note": "the largest CPU weight and no quota: the process gets the machine's cores when it wants "
                       "them, whatever else runs"}
    finally:
        if pid is None:
            with contextlib.suppress(OSError):
                (parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        with contextlib.suppress(OSError):
            group.rmdir()


@contextlib.contextmanager
def applied(side: Side) -> Iterator[dict[str, Any]]:
    """Run the body on ``side``: torch's thread count set, the CPU quota in force. Yields the effective
    configuration (recorded in results and platform profiles)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(side.threads)
    try:
        with cpu_quota(side.cpu_quota) as quota:
            info: dict[str, Any] = {**side.as_dict(), "threads_effective": torch.get_num_threads(),
                                    "usable_cpus": usable_cpus(), "quota": quota}
            if side.device.startswith("cuda"):
                info["device_name"] = torch.cuda.get_device_name(torch.device(side.device))
            yield info
    finally:
        torch.set_num_threads(before)


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
