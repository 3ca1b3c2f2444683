"""``aibench scenario ecommerce ...``: generate the store, train the models, try the online path.

``scenario`` is a lazy group of its own (one line in aibench/cli.py's table); each end-to-end scenario adds
its subgroup to :data:`SCENARIOS`. Modules are imported inside the command bodies, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from aibench.cli import LazyGroup
from aibench.spec import Seed

EPILOG = """\b
Exit codes: 0 ok · 2 bad usage (a size below its minimum, an existing store without --force) ·
4 the store is missing, unreadable, half-written, foreign or of another layout, or cannot be
written; the models are missing or were trained on another store · 70 internal error ·
130 interrupted by Ctrl-C, 143 by SIGTERM (no store is left behind)."""

SCENARIOS = {"ecommerce": "aibench.ecommerce.cli:ecommerce"}

STORE_OPTION = click.option("--store", "store", type=click.Path(path_type=Path), required=True, metavar="DIR",
                            help="The store folder (from 'generate --out DIR'), or its store.sqlite.")


@click.group(cls=LazyGroup, lazy=SCENARIOS)
def scenario() -> None:
    """End-to-end scenarios: their data, models and paths (measured by 'aibench run scenario ...')."""


@click.group(epilog=EPILOG)
def ecommerce() -> None:
    """AIBench's e-commerce search: a generated shop, its trained models, the online search path.

    \b
    Example:
      aibench scenario ecommerce generate --out shop
      aibench scenario ecommerce train --store shop
      aibench scenario ecommerce search --store shop --user 7 "1613 505"
    """


def _quiet() -> bool:
    ctx = click.get_current_context()
    root = ctx.find_root()
    return bool((root.obj or {}).get("quiet"))


class _Bar:
    """A rich progress bar fed by (what, fraction) callbacks; no refresh thread (DESIGN.md)."""

    def __init__(self, show: bool) -> None:
        self.progress: Any = None
        if show:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            from aibench.cli import _stderr_console

            self.progress = Progress(TextColumn("{task.description:<36}"), BarColumn(),
                                     TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                     console=_stderr_console(), auto_refresh=False, transient=True)
            self.task = self.progress.add_task("", total=1.0)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, what: str, done: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=what, completed=done)
            self.progress.refresh()


@ecommerce.command("generate", epilog=EPILOG)
@click.option("--products", type=int, default=100_000, show_default=True, help="Products (at least 20).")
@click.option("--users", type=int, default=60_000, show_default=True, help="Users (at least 1).")
@click.option("--queries", type=int, default=20_000, show_default=True, help="Text queries (at least 10).")
@click.option("--sessions", type=int, default=None,
              help="Search sessions, ten impressions each [default: 5 x --queries].")
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Seed of the data and its ground truth.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("shop"), show_default=True,
              metavar="DIR", help="Folder of the store (created if need be).")
@click.option("--force", is_flag=True, help="Replace an existing store (once the new one is complete).")
@click.option("--json", "as_json", is_flag=True, help="Print the store's metadata as JSON.")
def generate_cmd(products: int, users: int, queries: int, sessions: int | None, seed: int, out: Path,
                 force: bool, as_json: bool) -> None:
    """Generate the shop: users, products (32 fields), queries, sessions with clicks and purchases drawn
    from a hidden ground truth, and FTS5 indexes per popularity cluster (high 15%, medium 35%, low 50%)."""
    from aibench.ecommerce.generate import Sizes, default_sessions, generate

    sizes = Sizes(products, users, queries, default_sessions(queries) if sessions is None else sessions)
    sizes.check()
    with _Bar(show=not _quiet() and not as_json and sys.stderr.isatty()) as bar:
        info = generate(out, sizes, seed, force=force, progress=bar)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
        return
    if not _quiet():
        size_mb = info.path.stat().st_size / 1e6
        click.echo(f"wrote {info.path}: {info.products} products, {info.users} users, {info.queries} queries, "
                   f"{info.sessions} sessions, {info.categories} categories ({size_mb:.1f} MB, "
                   f"{info.seconds:.1f} s)")
