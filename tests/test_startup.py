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


def test_listing_benchmarks_imports_contracts_not_runners() -> None:
    """`aibench list` discovers every benchmark through light contract modules (measure/op.py,
    measure/train_task.py, loadgen/metrics.py): 43 aibench modules before they existed, 31 after, no torch,
    and no runner implementation. The workload modules themselves (the declarations) are not counted: each
    new workload adds one."""
    probe = ("import sys\nfrom aibench import registry\nregistry.all_benchmarks()\n"
             "print(','.join(sorted(k for k in sys.modules if k.startswith('aibench'))))\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    names, torch_line = proc.stdout.strip().splitlines()
    modules = names.split(",")
    assert torch_line == "NO-TORCH"
    assert len([m for m in modules if not m.startswith("aibench.workloads")]) <= 20, modules
    heavy = {"aibench.harness", "aibench.measure.kernel", "aibench.measure.training", "aibench.loadgen.run",
             "aibench.loadgen.drive", "aibench.sut.inprocess", "aibench.sut.pool", "aibench.machine",
             "aibench.lifetime"}
    assert not heavy & set(modules)
    # ... and every runner a benchmark names is registered by then, without importing it.
    from aibench import registry

    assert {b.runner for b in registry.all_benchmarks()} <= {r.name for r in registry.all_runners()}
