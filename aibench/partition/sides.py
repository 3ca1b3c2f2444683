"""The two sides of a split: real, measured configurations of this machine.

A side is a device (``cpu`` or ``cuda[:N]``), a thread count, a dtype and, where the machine allows it, a
CPU quota through cgroups (so that the "device" can be many times slower than the "server", as the paper's
Jetson was against its K40). Defaults: ``device`` is one CPU thread in float32; ``server`` is CUDA when
present, else every core this process may run on.

**CPU quota.** cgroup v2's ``cpu.max`` is used when the ``cpu`` controller is enabled in the unified
hierarchy; otherwise cgroup v1's ``cpu.cfs_quota_us`` (what these machines expose, to root). The process
moves into a child group for the measurement and back afterwards; the group is removed. Where neither is
writable the side is refused (exit 3) with the reason, never silently unquoted. The period is the shortest
that allows the quota (1 ms of quota; 4 ms for a quarter core), so that the cap holds within a layer and not
only over 100 ms windows. The group also gets the largest CPU weight (``cpu.shares``/``cpu.weight``): a
device's cores are its own, so a busy machine (a split run's server under background load, other work) must
not take the quota'd side below its quota; the quota still caps it.

**Groups left behind.** One function makes every group (:func:`cpu_group`: the quota's and the server
priority's) and removes it on leaving, which a normal exit, an exception, Ctrl-C and SIGTERM (an exception
under :mod:`aibench.lifetime`'s handlers) all do. SIGKILL cannot be caught, so each group is named after the
process that owns it (``aibench-partition-<owner pid>-quota``, ``aibench-partition-<owner pid>-prio[-<member
pid>]``) and every start of a group first removes the groups beside it whose owner is gone and that hold no
task (:func:`sweep_stale_groups`).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
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
GROUP_PREFIX = "aibench-partition-"
# The owner's pid: the first number in the name. ``aibench-partition-<owner>-quota`` and
# ``aibench-partition-<owner>-prio[-<member>]`` now; ``aibench-partition-<pid>`` and
# ``aibench-partition-prio-<member>`` were made before the owner was named (the member stands in for it then).
_OWNER = re.compile(rf"{re.escape(GROUP_PREFIX)}(?:prio-)?(\d+)(?:-|$)")

_made: dict[Path, tuple[Path, int]] = {}  # the groups this process made and has not removed: parent, member
_at_exit: Callable[[], None] | None = None  # release_groups, once registered to run at exit


def _try_write(path: Path, value: int) -> int | None:
    try:
        path.write_text(f"{value}\n")
        return value
    except OSError:
        return None


def group_name(kind: str, member: int) -> str:
    """``aibench-partition-<owner>-<kind>[-<member>]``: the process that makes the group (and removes it) is
    named first, so that a group left by an owner killed with SIGKILL can be told from its name
    (:func:`sweep_stale_groups`); ``member``, the process moved in, is named when it is another one."""
    owner = os.getpid()
    return f"{GROUP_PREFIX}{owner}-{kind}" + ("" if member == owner else f"-{member}")


def _tasks(group: Path) -> bool | None:
    """Whether ``group`` holds a process or thread (None: it cannot be read, so it must be left alone)."""
    try:
        return any((group / name).read_text().strip() for name in ("cgroup.procs", "tasks", "cgroup.threads")
                   if (group / name).exists())
    except OSError:
        return None


def sweep_stale_groups(parent: Path) -> list[Path]:
    """Remove the aibench-partition groups in ``parent`` (and those made inside them) that an owner killed with
    SIGKILL left behind: groups whose owner, the pid in the name, is gone and that hold no task. A group with
    a live owner or any task is never touched (the kernel would refuse to remove one with tasks anyway). A pid
    reused since by another process keeps its group until that process has ended too. The removed groups."""
    from aibench.lifetime import _alive

    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _OWNER.match(entry.name)
        if m is None or entry in _made or not entry.is_dir() or _alive(int(m.group(1))):
            continue
        removed += sweep_stale_groups(entry)  # groups made by a process that was inside this one go first
        if _tasks(entry) is not False:
            continue
        with contextlib.suppress(OSError):
            entry.rmdir()
            removed.append(entry)
    return removed


def _release(group: Path) -> None:
    """Move the group's member back to the parent group (this process; another one where it is still there)
    and remove the group. Errors are swallowed: what cannot be removed now, a later start sweeps."""
    made = _made.pop(group, None)
    if made is not None:
        parent, member = made
        with contextlib.suppress(OSError):
            # another process only while it is still in the group: once it has ended its pid may be another's
            if member == os.getpid() or str(member) in (group / "cgroup.procs").read_text().split():
                (parent / "cgroup.procs").write_text(f"{member}\n")
    with contextlib.suppress(OSError):
        group.rmdir()


def release_groups() -> None:
    """Remove every group this process made and still has (run at exit: a group made in a thread that did not
    finish its ``with``). The ``with`` blocks remove their own on a normal exit, an exception, Ctrl-C and
    SIGTERM (raised as an exception by :mod:`aibench.lifetime`'s handlers, which the CLI and
    scripts/partition_eval.py install); after SIGKILL, :func:`sweep_stale_groups` at the next start."""
    for group in list(_made):
        _release(group)


@contextlib.contextmanager
def cpu_group(what: str, kind: str, cap: tuple[int, int] | None = None, pid: int | None = None
              ) -> Iterator[dict[str, Any]]:
    """The one way aibench puts a process into a cgroup of its own: a child group of this process's group
    (after :func:`sweep_stale_groups` there), named by :func:`group_name`, with the largest CPU weight (best
    effort), capped at ``cap`` = (quota_us, period_us) where given, and process ``pid`` (default: this one)
    moved in. On leaving the process moves back and the group is removed (:func:`_release`). Yields what was
    set; UnavailableError (exit 3), prefixed with ``what``, where no cgroup CPU controller is writable or the
    group cannot be set up (nothing is left behind then)."""
    found = quota_interface()
    if isinstance(found, str):
        raise UnavailableError(f"{what}: {found}")
    version, parent = found
    sweep_stale_groups(parent)
    member = os.getpid() if pid is None else pid
    group = parent / group_name(kind, member)
    global _at_exit
    if not _at_exit:
        _at_exit = atexit.register(release_groups)
    try:
        group.mkdir(exist_ok=True)
        _made[group] = (parent, member)
        if cap is not None:
            quota_us, period_us = cap
            if version == "v2":
                (group / "cpu.max").write_text(f"{quota_us} {period_us}\n")
            else:
                (group / "cpu.cfs_period_us").write_text(f"{period_us}\n")
                (group / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
        weight = _try_write(group / ("cpu.weight" if version == "v2" else "cpu.shares"),
                            MAX_WEIGHT_V2 if version == "v2" else MAX_SHARES_V1)
        (group / "cgroup.procs").write_text(f"{member}\n")
    except OSError as exc:
        _release(group)
        raise UnavailableError(f"{what}: cannot set a cgroup {version} {'quota' if cap else 'weight'} in {group} "
                               f"({exc.strerror or exc})") from None
    try:
        yield {"cgroup": version, "group": str(group), "pid": member,
               "weight": weight if weight is not None else "default (the largest weight could not be set)"}
    finally:
        _release(group)


@contextlib.contextmanager
def cpu_quota(cores: float | None) -> Iterator[dict[str, Any] | None]:
    """Run the body capped at ``cores`` of CPU time per period (None: no cap), in a group that also has the
    largest CPU weight (:func:`cpu_group`). Yields what was set."""
    if cores is None:
        yield None
        return
    # The shortest period that allows the quota: the cap is enforced per period, so with the default 100 ms
    # period a layer shorter than the quota runs at full speed and the throttling lands in bursts (measured:
    # at 0.25 cores IMC's whole network took 4x one thread, the sum of its layers' medians under 2x).
    period_us = max(MIN_QUOTA_US, math.ceil(MIN_QUOTA_US / cores))
    quota_us = max(MIN_QUOTA_US, round(cores * period_us))
    with cpu_group("--cpu-quota", "quota", (quota_us, period_us)) as info:
        yield {**info, "quota_us": quota_us, "period_us": period_us, "cores": quota_us / period_us,
               "note": "the group has the largest CPU weight, so that it gets its whole quota when the machine "
                       "is busy (a device's cores are its own); the quota caps it"}


@contextlib.contextmanager
def cpu_priority(pid: int | None = None) -> Iterator[dict[str, Any]]:
    """Run process ``pid`` (default: this one) with the largest CPU weight and no cap (:func:`cpu_group`): a
    dedicated server emulated on a shared machine (others' work does not take its cores while it computes;
    when it is idle they run). Afterwards the process moves back (another ``pid`` too, if it is still there)
    and the group is removed. Yields what was set; UnavailableError (exit 3) where no cgroup CPU controller is
    writable."""
    with cpu_group("server CPU priority", "prio", None, pid) as info:
        yield {**info, "note": "the largest CPU weight and no quota: the process gets the machine's cores when it "
                               "wants them, whatever else runs"}


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
