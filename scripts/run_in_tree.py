"""Run a script against another aibench source tree with this venv: the side-by-side "before" of a benchmark.

    .venv/bin/python scripts/run_in_tree.py /path/to/old/tree scripts/bench_loadgen_adapter.py --repeats 3

PYTHONPATH alone does not do it where the venv holds an editable install of aibench (its import hook comes
first): this drops that hook, puts TREE first on the path and checks that aibench is imported from it.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tree, script, *rest = sys.argv[1:]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, tree)
    sys.argv = [script, *rest]
    import aibench

    if not aibench.__file__ or not aibench.__file__.startswith(tree):
        sys.exit(f"aibench was imported from {aibench.__file__}, not from {tree}")
    print(f"[aibench from {aibench.__file__}]", flush=True)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
