"""The path's non-AI module work, shared by both deployments (light: numpy and sqlite3, no torch).

The in-process path (:mod:`aibench.ecommerce.path`) and the module services
(:mod:`aibench.ecommerce.services`) call these same functions, so the two deployments search, select and
fetch identically and answer the same queries with the same pages:

- :func:`read_user`: the recommender's user-database read; :func:`tokenize` and :func:`pad`: the query's
  model tokens;
- :func:`search`: the searcher (the popularity clusters' FTS5 indexes in order, terms OR-ed, until
  ``window`` candidates);
- :func:`select_top`: the ranker's top-``page`` selection over the scores;
- :func:`fetch`: the product summaries of a page;
- :func:`sample_sessions`: the workload a load driver replays, whichever deployment serves it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from aibench.ecommerce.store import CLUSTERS, MAX_QUERY

MAX_TERMS = 32
NEUTRAL_USER = (0, 35, 3)  # sex, age, purchasing power of a user the store does not know
_TERM = re.compile(r"\w+")
_TOKEN = re.compile(r"\d+")


def tokenize(text: str, vocabulary: int) -> list[int]:
    """The model tokens of a query: its integer terms below ``vocabulary``, each once, in order, at most
    MAX_QUERY (unknown terms cannot help a model; the searcher still ORs every term)."""
    out: list[int] = []
    for m in _TOKEN.findall(text):
        t = int(m) if len(m) < 10 else 0
        if 0 < t < vocabulary and t not in out:
            out.append(t)
        if len(out) == MAX_QUERY:
            break
    return out


def pad(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out


def fts_query(text: str) -> str | None:
    """The query's terms OR-ed for FTS5 (each quoted, so no term is read as an operator), or None when it
    has none."""
    terms = list(dict.fromkeys(_TERM.findall(text.lower())))[:MAX_TERMS]
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def read_user(con: sqlite3.Connection, user: int) -> tuple[tuple[int, int, int], bool]:
    """``((sex, age, power), anonymous)``: the user's row, or a neutral profile for a user the store does not
    know (SQLite integers are 64-bit: a larger id cannot be a user)."""
    row = None
    if -(2 ** 63) <= user < 2 ** 63:
        row = con.execute("SELECT sex, age, power FROM users WHERE id = ?", (user,)).fetchone()
    if row is None:
        return NEUTRAL_USER, True
    return (int(row[0]), int(row[1]), int(row[2])), False


def search(con: sqlite3.Connection, text: str, window: int) -> tuple[list[int], int]:
    """``(hits, clusters searched)``: up to ``window`` product ids, BM25-ordered within each cluster, from the
    high-popularity cluster on until enough were found."""
    hits: list[int] = []
    searched = 0
    match = fts_query(text)
    if match is not None:
        for name in CLUSTERS:
            searched += 1
            hits += [r[0] for r in con.execute(
                f"SELECT rowid FROM search_{name} WHERE search_{name} MATCH ? ORDER BY rank LIMIT ?",
                (match, window - len(hits)))]
            if len(hits) >= window:
                break
    return hits, searched


def select_top(scores: np.ndarray, page: int) -> np.ndarray:
    """Indices of the ``page`` best scores, best first (ties keep the candidates' order)."""
    n = len(scores)
    k = min(page, n)
    top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    return top[np.argsort(-scores[top], kind="stable")]


def fetch(con: sqlite3.Connection, ids: Sequence[int], scores: Sequence[float]) -> list[dict[str, Any]]:
    """The summaries of products ``ids`` (in that order), each with its ranker score."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    rows = con.execute(
        "SELECT id, title, price, rating_sum, category, related FROM products WHERE id IN "
        f"({', '.join('?' * len(ids))})", ids).fetchall()
    by_id = {r[0]: r for r in rows}
    return [{"id": i, "title": by_id[i][1], "price": by_id[i][2], "rating_sum": by_id[i][3],
             "category": by_id[i][4], "related": [int(x) for x in by_id[i][5].split()], "score": float(s)}
            for i, s in zip(ids, scores, strict=True)]


def sample_sessions(con: sqlite3.Connection, n: int, seed: int = 0) -> list[tuple[int, str]]:
    """``n`` (user, query text) pairs as the store's sessions pair them, drawn with replacement (seeded)."""
    texts = [r[0] for r in con.execute("SELECT text FROM queries ORDER BY id")]
    sessions = con.execute("SELECT user, query FROM sessions ORDER BY id").fetchall()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sessions), n)
    return [(int(sessions[i][0]), str(texts[sessions[i][1]])) for i in picks.tolist()]
