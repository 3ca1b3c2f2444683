"""The e-commerce store: one SQLite file (stdlib ``sqlite3``, FTS5) in a folder, and how it is opened.

A store folder holds ``store.sqlite`` and, once trained, ``models/``. The file is built under a temporary
name in the same folder and renamed when complete (:mod:`aibench.ecommerce.generate`), and its ``meta``
table carries a completion marker written in the last transaction, so a store that is missing, cut short,
another program's file or of another layout version is refused by :func:`open_store` with one line.

Tables (see docs/ecommerce.md):

- ``products``: AIBench's 32 product fields (``id``, ``title`` as space-separated integer tokens,
  ``price``, ``rating_sum``, ``category``, ``related`` as space-separated product ids, attributes ``a``..
  ``z``) plus ``cluster`` (0 high, 1 medium, 2 low popularity). It is both forward indexes of the original:
  the ranker's (loaded into memory by the online path) and the summaries' (read by the product fetch).
- ``search_high``, ``search_medium``, ``search_low``: contentless FTS5 indexes over the titles of each
  popularity cluster (rowid = product id).
- ``users`` (``id``, ``sex``, ``age``, ``power``), ``queries`` (``id``, ``text``).
- ``sessions`` (``id``, ``user``, ``query``) and ``impressions`` (``session``, ``position``, ``product``,
  ``label``: 0 shown, 1 clicked, 2 purchased); the view ``interactions`` is the clicks and purchases.
- ``truth_queries`` (``query``, ``intent``): the hidden intent of each query, read only to evaluate.
- ``meta`` (``key``, ``value``): format, layout version, generator version, seed, sizes, ``complete``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aibench.errors import ResultIOError, UsageError

FORMAT = "aibench-ecommerce-store"
LAYOUT_VERSION = 1
STORE_FILE = "store.sqlite"
PARTIAL_PREFIX = ".store.sqlite.partial-"
CLUSTERS = ("high", "medium", "low")
CLUSTER_SHARES = (0.15, 0.35, 0.50)
ATTRIBUTES = tuple("abcdefghijklmnopqrstuvwxyz")
ATTRIBUTE_VALUES = 8  # each attribute field holds 0..7
MAX_TITLE = 34  # tokens in a title, at most (AIBench's data: about 14.6 on average, at most 34)
MAX_QUERY = 8  # tokens in a query, at most (AIBench's data: about 3.45 on average)
PAGE = 10  # impressions per session, and the page the online path returns


class StoreError(ResultIOError):
    """A store that cannot be used: missing, unreadable, half-written, foreign or of another layout
    (exit 4, like an unreadable result file)."""


SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, price REAL NOT NULL, rating_sum INTEGER NOT NULL,
    category INTEGER NOT NULL, related TEXT NOT NULL,
    {", ".join(f"{a} INTEGER NOT NULL" for a in ATTRIBUTES)},
    cluster INTEGER NOT NULL
);
CREATE TABLE users (id INTEGER PRIMARY KEY, sex INTEGER NOT NULL, age INTEGER NOT NULL,
                    power INTEGER NOT NULL);
CREATE TABLE queries (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE truth_queries (query INTEGER PRIMARY KEY, intent INTEGER NOT NULL);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user INTEGER NOT NULL, query INTEGER NOT NULL);
CREATE TABLE impressions (session INTEGER NOT NULL, position INTEGER NOT NULL, product INTEGER NOT NULL,
                          label INTEGER NOT NULL, PRIMARY KEY (session, position)) WITHOUT ROWID;
CREATE VIEW interactions AS SELECT s.user, s.query, i.product, i.label FROM impressions i
    JOIN sessions s ON s.id = i.session WHERE i.label > 0;
""" + "".join(
    f"CREATE VIRTUAL TABLE search_{c} USING fts5(title, content='', tokenize='unicode61');\n" for c in CLUSTERS
)


@dataclass(frozen=True)
class StoreInfo:
    """What a store's ``meta`` table says about it."""

    path: Path
    seed: int
    products: int
    users: int
    queries: int
    sessions: int
    categories: int
    vocabulary: int
    generator: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "seed": self.seed, "products": self.products, "users": self.users,
                "queries": self.queries, "sessions": self.sessions, "categories": self.categories,
                "vocabulary": self.vocabulary, "generator": self.generator, "seconds": self.seconds}


def store_file(location: Path) -> Path:
    """The store file named by ``--store``: the folder's ``store.sqlite``, or a file given directly."""
    return location if location.is_file() else location / STORE_FILE


def connect(path: Path, *, readonly: bool = True) -> sqlite3.Connection:
    """A connection to a store file (read-only by default; usable from other threads for the path)."""
    mode = "ro" if readonly else "rw"
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False)
    return con


class ThreadConnections:
    """One read-only connection to a store per thread that asks (SQLite connections are cheapest unshared),
    all closed together once no thread is serving: the in-process path's workers and a module service's
    threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cons: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = connect(self.path)
            with self._lock:
                self._cons.append(con)
        return con

    def close(self) -> None:
        with self._lock:
            cons, self._cons = self._cons, []
        for con in cons:
            con.close()
        self._local = threading.local()


def read_info(location: Path) -> StoreInfo:
    """Check that ``location`` holds a complete store of this layout and return its metadata.

    Every way it can be unusable is one :class:`StoreError` line: no such folder or file, not an SQLite
    file (a foreign file), an SQLite file without our ``meta`` (another program's), a generation that never
    finished (no completion marker), another layout version.
    """
    path = store_file(location)
    where = f"{location}"
    if not path.exists():
        hint = f" (create one with 'aibench scenario ecommerce generate --out {location}')"
        raise StoreError(f"no e-commerce store at {where}{hint}")
    if not path.is_file():
        raise StoreError(f"{path} is not a regular file")
    try:
        with path.open("rb") as fh:
            header = fh.read(16)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not an e-commerce store (not an SQLite file)")
    try:
        con = connect(path)
        try:
            rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not an e-commerce store ({exc})") from None
    if rows.get("format") != FORMAT:
        raise StoreError(f"{path} is not an e-commerce store (foreign SQLite file)")
    if rows.get("complete") != "1":
        raise StoreError(f"{path} is a half-written store (its generation did not finish): generate it again")
    if rows.get("layout") != str(LAYOUT_VERSION):
        raise StoreError(f"{path} has store layout {rows.get('layout')!r}; this aibench reads {LAYOUT_VERSION}")
    try:
        sizes = json.loads(rows["sizes"])
        return StoreInfo(path=path, seed=int(rows["seed"]), products=int(sizes["products"]),
                         users=int(sizes["users"]), queries=int(sizes["queries"]),
                         sessions=int(sizes["sessions"]), categories=int(sizes["categories"]),
                         vocabulary=int(sizes["vocabulary"]), generator=rows["generator"],
                         seconds=float(rows.get("seconds", "nan")))
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{path} has damaged metadata ({exc})") from None


MODELS_DIR = "models"
MODELS_FORMAT = "aibench-ecommerce-models"


def store_id(info: StoreInfo) -> str:
    con = connect(info.path)
    try:
        return str(con.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
    finally:
        con.close()


def models_config(info: StoreInfo, store_id: str, name: str = MODELS_DIR) -> dict[str, Any]:
    """The store's ``models/models.json`` (or another models folder ``name``: a size study's set), sizes,
    seed, quality, checked without torch: refused (exit 4) when missing, damaged or written for another
    store. :func:`aibench.ecommerce.models.load` and the model service's light side
    (:mod:`aibench.ecommerce.served`) both read it here."""
    folder = info.path.parent / name
    desc = folder / "models.json"
    if not desc.is_file():
        raise StoreError(f"no trained models in {folder.parent} (run 'aibench scenario ecommerce train "
                         f"--store {folder.parent}')")
    try:
        config = json.loads(desc.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {desc}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != MODELS_FORMAT:
        raise StoreError(f"{desc} is not an aibench e-commerce model description")
    if config.get("store_id") != store_id:
        raise StoreError(f"the models in {folder} were trained on another store; train them again")
    return config


MIN_SIZES = {"products": 20, "users": 1, "queries": 10, "sessions": 10}


def check_sizes(**sizes: int) -> None:
    """Sizes below their minimum (0, negatives; a store too small to have every popularity cluster and a
    held-out split) are a usage error (exit 2), before anything is written."""
    for name, value in sizes.items():
        if value < MIN_SIZES[name]:
            raise UsageError(f"--{name} must be at least {MIN_SIZES[name]}; got {value}")
