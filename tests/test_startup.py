"""`aibench --help`, `list` and `info` must not import torch (they stay instant)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from aibench.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-ABSENT", file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["info", "micro/conv"], ["list", "--json"],
                                  ["serve", "--help"]])
def test_no_torch_import(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                          timeout=60)
    assert "TORCH-ABSENT" in proc.stderr, proc.stderr


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "aibench", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "aibench" in proc.stdout
