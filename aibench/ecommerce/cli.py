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
from aibench.spec import FiniteFloat, Seed

EPILOG = """\b
Exit codes: 0 ok · 2 bad usage (a size below its minimum, an existing store without --force,
a store too small to train on) ·
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
      aibench scenario ecommerce serve-module searcher --store shop      a module as a service
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


def _quality_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="held-out quality (trained vs baselines)")
    for col in ("model", "figure", "trained", "baseline", "baseline is"):
        table.add_column(col, justify="right" if col in ("trained", "baseline") else "left")
    c, p, r = report["classifier"], report["preference"], report["ranker"]
    rows = [
        ("classifier", "accuracy (true intents)", c["trained"], c["baseline_majority"], "majority category"),
        ("preference", "category log-likelihood", p["category_loglik"], p["category_loglik_baseline_popularity"],
         "click frequencies"),
        ("preference", "category accuracy", p["category_accuracy"], p["category_accuracy_baseline_popularity"],
         "most clicked category"),
        ("preference", "attribute log-likelihood", p["attribute_loglik"],
         p["attribute_loglik_baseline_popularity"], "value frequencies"),
        ("preference", "key attribute log-likelihood", p["key_attribute_loglik"],
         p["key_attribute_loglik_baseline_popularity"], "value frequencies"),
        ("ranker", "NDCG@10", r["trained"], r["baseline_popularity"], "popularity (rating sum)"),
        ("ranker", "NDCG@10", r["trained"], r["baseline_text_match"], "text match"),
        ("ranker", "NDCG@10", r["trained"], r["baseline_random"], "random order"),
    ]
    for model, figure, trained, base, what in rows:
        table.add_row(model, figure, f"{trained:.4f}", f"{base:.4f}", what)
    return table


@ecommerce.command("train", epilog=EPILOG)
@STORE_OPTION
@click.option("--epochs", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Passes over the training split (the ranker makes twice as many).")
@click.option("--pref-hidden", type=click.IntRange(1, 65536), default=64, show_default=True,
              help="Hidden width of the user-preference network (the model-size knob).")
@click.option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="torch intra-op threads while training.")
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Seed of the initial weights and batches.")
@click.option("--size-study", is_flag=True,
              help="Save this set as models-pref<H>/ beside the store's models/ (left as it is), for the "
                   "model-size study: 'aibench run scenario ecommerce --pref-hidden H' serves it.")
@click.option("--json", "as_json", is_flag=True, help="Print the quality report (and the models' sizes) as JSON.")
def train_cmd(store: Path, epochs: int, pref_hidden: int, threads: int, seed: int, size_study: bool,
              as_json: bool) -> None:
    """Fit the category classifier, the user-preference network and the learning-to-rank model on the
    store's interactions; report their quality on held-out queries beside baselines; save them (state_dicts,
    loaded with weights_only) in the store's models/ folder (models-pref<H>/ with --size-study)."""
    from aibench.ecommerce.models import MODELS_DIR, size_variant
    from aibench.ecommerce.store import read_info

    info = read_info(store)
    from aibench.ecommerce.train import train

    name = size_variant(pref_hidden) if size_study else MODELS_DIR
    with _Bar(show=not _quiet() and not as_json and sys.stderr.isatty()) as bar:
        models, report = train(info, seed=seed, epochs=epochs, pref_hidden=pref_hidden, threads=threads,
                               models_name=name, progress=bar)
    sizes = models.config["sizes"]
    if as_json:
        click.echo(json.dumps({**report, "sizes": sizes, "models": name}, indent=2))
        return
    if not _quiet():
        from aibench.cli import _stdout_console

        console = _stdout_console()
        console.print(_quality_table(report))
        pref = sizes["preference"]
        console.print(f"preference network: {pref['parameters']:,} parameters, {pref['bytes'] / 1e6:.2f} MB")
        console.print(f"trained in {report['seconds']:.1f} s; models in {info.path.parent / name}")


@ecommerce.command("search", epilog=EPILOG)
@STORE_OPTION
@click.option("--user", type=click.IntRange(-(2**63), 2**63 - 1), default=0, show_default=True,
              help="The user issuing the query (an id the store does not know gets a neutral profile).")
@click.option("--window", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="Candidates the searcher collects for the ranker.")
@click.option("--json", "as_json", is_flag=True, help="Print the page and module times as JSON.")
@click.argument("text")
def search_cmd(store: Path, user: int, window: int, as_json: bool, text: str) -> None:
    """Serve one query through the in-process path and show the page and each module's time."""
    import dataclasses

    import torch

    from aibench.ecommerce.path import Query, ShopPath

    torch.set_num_threads(1)
    path = ShopPath(store, window=window)
    try:
        page, seconds = path.handle(Query(user, text))
    finally:
        path.close()
    if as_json:
        click.echo(json.dumps({"page": dataclasses.asdict(page), "seconds": seconds}, indent=2))
        return
    from rich.table import Table

    from aibench.cli import _stdout_console

    console = _stdout_console()
    if page.status == "no_hits":
        console.print(f"no hits for {text!r} (searched {page.clusters_searched} cluster(s))")
    else:
        table = Table(title=f"{page.hits} hit(s) in {page.clusters_searched} cluster(s); query category "
                            f"{page.category}")
        for col in ("id", "title", "price", "rating sum", "category", "score"):
            table.add_column(col)
        for p in page.products:
            table.add_row(str(p["id"]), p["title"], f"{p['price']:.2f}", str(p["rating_sum"]), str(p["category"]),
                          f"{p['score']:.3f}")
        console.print(table)
    console.print("  ".join(f"{k} {v * 1e3:.3f} ms" for k, v in seconds.items()))


SERVE_EPILOG = """\b
Exit codes: 0 stopped by SIGTERM or Ctrl-C after requests in flight finished · 2 bad usage (a peer
address that is not http://HOST:PORT, a peer the module does not call) · 4 the store is missing,
half-written or untrained · 6 the port is in use (or the address cannot be listened on) ·
70 internal error."""


@ecommerce.command("serve-module", epilog=SERVE_EPILOG)
@click.argument("module", type=click.Choice(["planner", "recommender", "searcher", "ranker", "fetch"]))
@STORE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, reachable by anyone who can reach the machine).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Port (0: any free port, announced) [default: planner 8100, recommender 8101, searcher 8102, "
                   "ranker 8103, fetch 8104].")
@click.option("--peers", default=None, metavar="NAME=URL,...",
              help="Where the modules it calls listen: the planner's recommender, searcher, ranker and fetch; "
                   "the recommender's and ranker's models (the model server, 'aibench serve --model-dir "
                   "ecommerce=DIR') [default: their default ports on 127.0.0.1; models :8000].")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Threads for the module's blocking work (SQLite, numpy), each with its own connection.")
@click.option("--timeout-s", type=FiniteFloat(0.01, 3600), default=10.0, show_default=True, metavar="S",
              help="Timeout of every call to a peer: a peer that does not answer in time fails the query, named.")
@click.option("--window", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="The planner's candidate window when a query does not give one.")
@click.option("--max-request-mb", type=FiniteFloat(0.001, 4096), default=16.0, show_default=True, metavar="MB",
              help="Largest request body it accepts (413 past it), and largest answer it reads from a peer.")
@click.option("--body-timeout", type=FiniteFloat(0.1, 86400), default=30.0, show_default=True, metavar="S",
              help="A request body must arrive within S seconds (408).")
@click.option("--json", "json_lines", is_flag=True,
              help="Announce as JSON lines on stdout (listening, ready, stopping, stopped).")
def serve_module_cmd(module: str, store: Path, host: str, port: int | None, peers: str | None, workers: int,
                     timeout_s: float, window: int, max_request_mb: float, body_timeout: float,
                     json_lines: bool) -> None:
    """Serve one module of the path behind HTTP: planner, recommender, searcher, ranker or fetch (the
    services deployment; 'aibench run scenario ecommerce --deploy services' starts all of them itself).

    \b
    All on one machine, default ports:
      aibench serve --model-dir ecommerce=shop --djinn-port off      the models, :8000
      aibench scenario ecommerce serve-module searcher --store shop  (and fetch, recommender, ranker)
      aibench scenario ecommerce serve-module planner --store shop
      aibench run scenario ecommerce --store shop --deploy services --addresses planner=http://127.0.0.1:8100
    """
    import os

    from aibench.ecommerce.services import DEFAULT_PORTS, MiB, ModuleConfig, parse_peers, serve_module
    from aibench.lifetime import PARENT_ENV, die_with_parent

    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():  # started by an aibench run (aibench.ecommerce.deploy): die with it
        die_with_parent(int(parent))
    cfg = ModuleConfig(module=module, store=store, host=host, port=DEFAULT_PORTS[module] if port is None else port,
                       peers=parse_peers(peers, module), workers=workers, timeout_s=timeout_s,
                       max_request_bytes=int(max_request_mb * MiB), body_timeout_s=body_timeout, window=window,
                       json_lines=json_lines)
    raise click.exceptions.Exit(serve_module(cfg))
