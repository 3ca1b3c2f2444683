"""The install itself: the torch trio is the exact one pyproject.toml pins, and each package's compiled
operators load against the installed torch.

A wildcard pin once let torchaudio 2.11.1 (built against a later torch) resolve beside torch 2.11.0; its
library then failed to load (``undefined symbol``) and five tests failed as model errors. These tests fail
by name instead. Each probe runs in a fresh interpreter, so a library that cannot load is reported with its
own message rather than poisoning this process.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TRIO = ("torch", "torchvision", "torchaudio")

# One call into each package's compiled library (not just an import, which may load lazily).
PROBES = {
    "torch": "import torch; assert float(torch.ones(3).add(1).sum()) == 6.0",
    "torchvision": ("import torch, torchvision.ops as ops; "
                    "keep = ops.nms(torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1]]), torch.tensor([1., .5]), .5); "
                    "assert keep.tolist() == [0]"),
    "torchaudio": ("import torch, torchaudio._extension as ext, torchaudio.compliance.kaldi as k; "
                   "assert ext._IS_TORCHAUDIO_EXT_AVAILABLE, 'torchaudio extension not loaded'; "
                   "assert k.fbank(torch.randn(1, 16000)).shape[1] == 23"),
}


def _pins() -> dict[str, str]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", dep)
        if m and m.group(1) in TRIO:
            pins[m.group(1)] = m.group(2)
    return pins


@pytest.mark.parametrize("package", TRIO)
def test_trio_pinned_exactly_and_installed_as_pinned(package):
    spec = _pins().get(package)
    assert spec is not None, f"pyproject.toml does not list {package}"
    m = re.fullmatch(r"==(\d+\.\d+\.\d+)", spec)
    assert m, f"{package} is pinned as {spec!r}: its compiled parts must match torch, pin it exactly (==X.Y.Z)"
    installed = importlib.metadata.version(package).split("+")[0]  # drop the local tag (+cu130, +cpu)
    assert installed == m.group(1), f"{package} {installed} is installed, pyproject.toml pins {m.group(1)}"


@pytest.mark.parametrize("package", TRIO)
def test_compiled_operators_load(package):
    proc = subprocess.run([sys.executable, "-c", PROBES[package]], capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
    assert proc.returncode == 0, f"{package}'s compiled operators do not load against this torch: {last[0]}"
