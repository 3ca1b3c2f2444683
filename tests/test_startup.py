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


def test_results_do_not_depend_on_click() -> None:
    """Errors are plain exceptions (aibench.errors): reading, converting and writing results needs no CLI."""
    probe = ("import sys\nimport aibench.results.store, aibench.results.convert, aibench.results.parts\n"
             "from aibench.errors import UsageError\n"
             "assert not isinstance(UsageError('x'), type(None))\n"
             "print('CLICK-IMPORTED' if 'click' in sys.modules else 'CLICK-ABSENT')")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "CLICK-ABSENT" in proc.stdout, proc.stdout + proc.stderr
