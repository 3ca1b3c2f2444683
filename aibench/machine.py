"""Machine, software and code fingerprints recorded in every result.

``fingerprint()`` reads torch's details only if torch is already imported, so reporting tools never pay
for importing it. Each lookup that fails records ``None`` rather than guessing.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aibench

# Environment variables that change how kernels run; recorded so results can be explained.
RELEVANT_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "GOMP_CPU_AFFINITY",
    "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF",
    "TORCH_CUDNN_V8_API_ENABLED", "NVIDIA_TF32_OVERRIDE",
)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpu_model() -> str | None:
    info = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    return m.group(1).strip() if m else (platform.processor() or None)


def _virtualised() -> bool | None:
    info = _read("/proc/cpuinfo")
    if info is None:
        return None
    return bool(re.search(r"^flags\s*:.*\bhypervisor\b", info, re.M))


def _mem_total_bytes() -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo") or "", re.M)
    return int(m.group(1)) * 1024 if m else None


@functools.cache
def machine() -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "memory_bytes": _mem_total_bytes(),
        "virtualised": _virtualised(),
    }


def _torch_software() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas": None,
        "gpus": [],
    }
    try:  # which vector ISA ATen's CPU kernels dispatched to (e.g. AVX512): explains big CPU differences
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        out["cpu_capability"] = None
    try:
        config = torch.__config__.show()
        m = re.search(r"BLAS_INFO=(\w+)", config)
        out["blas"] = m.group(1) if m else ("mkl" if "MKL" in config else None)
    except Exception:
        pass
    for name in ("torchvision", "torchaudio"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", None)
    if torch.cuda.is_available():
        try:
            out["cudnn"] = torch.backends.cudnn.version()
        except Exception:
            pass
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out["gpus"].append({
                "index": i,
                "name": props.name,
                "memory_bytes": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
            })
        out["gpu_driver"] = _nvidia_driver()
    return out


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def software() -> dict[str, Any]:
    sw: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "aibench": aibench.__version__,
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }
    sw.update(_torch_software())
    return sw


def fingerprint() -> dict[str, Any]:
    return {"machine": machine(), "software": software()}


@functools.cache
def code_version() -> dict[str, Any]:
    """aibench's own version and, when it runs from a git checkout, the commit and dirty flag."""
    root = Path(aibench.__file__).resolve().parent.parent
    out: dict[str, Any] = {"package_version": aibench.__version__, "git_commit": None, "git_dirty": None}
    if not (root / ".git").exists():
        out["git_note"] = "not running from a git checkout"
        return out
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5)
            out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
        else:
            lines = commit.stderr.strip().splitlines()
            out["git_note"] = lines[0] if lines else "git rev-parse failed"
    except (OSError, subprocess.SubprocessError) as exc:
        out["git_note"] = f"git unavailable: {exc}"
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 3) for x in os.getloadavg()]
    except OSError:
        return None
