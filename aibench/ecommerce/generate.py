"""The seeded generator of the e-commerce store, and the hidden ground truth behind its interactions.

What is observable is what AIBench's data holds: users (sex, age, purchasing power), products with 32
fields, text queries. Behind it sits a ground truth the models never see (docs/ecommerce.md):

- every product has a category, a latent quality (its popularity: the clusters and the rating sum follow
  it) and a price around its category's typical price; its title mixes tokens of its category's own
  vocabulary (Zipf-distributed) with general tokens;
- every query has an intent (a category) and draws its tokens mostly from that category's vocabulary;
- users fall into 50 groups (sex x age band x purchasing power); each group has a category affinity and
  preferred values of six attributes (``a``..``f``), and purchasing power sets the preferred price level;
- a session is a user issuing a query (its intent drawn from the group's affinity) and being shown ten
  products that OR-match the query's terms (padded with products of the intent's category and random ones);
  the user clicks each with a probability that grows with the text match, the intent's category, the
  group's affinity, quality, the price fit and the preferred attribute values; some clicks become purchases.

The intents are stored (``truth_queries``) only to evaluate the classifier; the rest of the truth lives in
the generator and is derived again from the seed.

Everything is drawn from one ``numpy`` generator in a fixed order, so a seed and the sizes give the same
store, byte for byte in its data tables. The file is built under a temporary name in the target folder and
renamed when complete; an interruption removes it, and one left by a killed generator is removed by the
next generation in that folder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aibench.ecommerce.store import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    CLUSTER_SHARES,
    CLUSTERS,
    FORMAT,
    LAYOUT_VERSION,
    MAX_QUERY,
    MAX_TITLE,
    PAGE,
    PARTIAL_PREFIX,
    SCHEMA,
    STORE_FILE,
    StoreError,
    StoreInfo,
    check_sizes,
    read_info,
)
from aibench.errors import UsageError

GENERATOR_VERSION = "1"
CATEGORY_TOKENS = 200  # each category's own vocabulary
GENERAL_TOKENS = 7200  # tokens shared by every category
KEY_ATTRIBUTES = 6  # the attributes users have preferences over (a..f)
GROUPS = 50  # sex (2) x age band (5) x purchasing power (5)
CHUNK = 10_000

Progress = Callable[[str, float], None]  # (what is being done, fraction of the whole generation done)


@dataclass(frozen=True)
class Sizes:
    products: int
    users: int
    queries: int
    sessions: int

    def check(self) -> None:
        check_sizes(products=self.products, users=self.users, queries=self.queries, sessions=self.sessions)


def default_sessions(queries: int) -> int:
    """Five sessions per query: at the default size, 100,000 sessions and a million impressions."""
    return 5 * queries


def n_categories(products: int) -> int:
    """64 categories at AIBench's size, fewer (at least 8) for small stores so each has products."""
    return int(min(64, max(8, products // 400)))


def vocabulary(categories: int) -> int:
    """Token ids run 1..vocabulary-1 (0 pads); each category owns a block, the general tokens follow."""
    return categories * CATEGORY_TOKENS + GENERAL_TOKENS + 1


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def user_group(sex: np.ndarray, age: np.ndarray, power: np.ndarray) -> np.ndarray:
    """The hidden group of each user: sex x age band (<25, 25-34, 35-44, 45-59, 60+) x power (1..5)."""
    band = np.digitize(age, [25, 35, 45, 60])
    return sex * 25 + band * 5 + (power - 1)


def _texts(tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    words = tokens.astype(str).tolist()
    out: list[str] = []
    i = 0
    for n in lengths.tolist():
        out.append(" ".join(words[i:i + n]))
        i += n
    return out


def _padded(tokens: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(tokens)) - np.repeat(starts, lengths)
    out = np.zeros((len(lengths), width), dtype=np.int32)
    out[rows, cols] = tokens
    return out


def _build(path: Path, sizes: Sizes, seed: int, progress: Progress) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    P, U, Q, S = sizes.products, sizes.users, sizes.queries, sizes.sessions
    C = n_categories(P)
    V = vocabulary(C)
    general0 = C * CATEGORY_TOKENS + 1

    progress("products", 0.0)
    cat_pop = _zipf(C, 0.8)
    cat = rng.choice(C, P, p=cat_pop)
    quality = rng.normal(0.0, 1.0, P)
    lengths = np.clip(rng.poisson(13.6, P) + 1, 1, MAX_TITLE)
    tok_cat = np.repeat(cat, lengths)
    own = rng.random(len(tok_cat)) < 0.7
    tokens = np.where(own, 1 + tok_cat * CATEGORY_TOKENS + rng.choice(CATEGORY_TOKENS, len(tok_cat),
                                                                       p=_zipf(CATEGORY_TOKENS, 1.0)),
                      general0 + rng.choice(GENERAL_TOKENS, len(tok_cat), p=_zipf(GENERAL_TOKENS, 1.0)))
    titles = _padded(tokens, lengths, MAX_TITLE)
    cat_logprice = rng.uniform(2.0, 6.0, C)
    rel_price = rng.normal(0.0, 1.0, P)  # price relative to its category, in units of 0.5 in log price
    price = np.round(np.exp(cat_logprice[cat] + 0.5 * rel_price), 2)
    rating_sum = rng.poisson(30.0 * np.exp(0.8 * quality))
    popularity = quality + rng.normal(0.0, 0.3, P)
    order = np.argsort(-popularity, kind="stable")
    bounds = np.round(np.cumsum(CLUSTER_SHARES) * P).astype(int)
    cluster = np.empty(P, dtype=np.int64)
    cluster[order] = np.searchsorted(bounds, np.arange(P), side="right")
    attrs = rng.integers(0, ATTRIBUTE_VALUES, (P, len(ATTRIBUTES)))
    by_cat = np.argsort(cat, kind="stable")
    counts = np.bincount(cat, minlength=C)
    starts = np.cumsum(counts) - counts
    related = by_cat[starts[cat][:, None] + (rng.random((P, 4)) * counts[cat][:, None]).astype(np.int64)]

    progress("users and queries", 0.1)
    sex = rng.integers(0, 2, U)
    age = rng.integers(16, 76, U)
    power = rng.integers(1, 6, U)
    group = user_group(sex, age, power)
    affinity = rng.normal(0.0, 1.0, (GROUPS, C))
    preferred = rng.integers(0, ATTRIBUTE_VALUES, (GROUPS, KEY_ATTRIBUTES))

    intent = rng.choice(C, Q, p=cat_pop)
    q_len = np.clip(1 + rng.poisson(2.45, Q), 1, MAX_QUERY)
    q_cat = np.repeat(intent, q_len)
    q_own = rng.random(len(q_cat)) < 0.85
    q_tok = np.where(q_own, 1 + q_cat * CATEGORY_TOKENS + rng.choice(CATEGORY_TOKENS, len(q_cat),
                                                                     p=_zipf(CATEGORY_TOKENS, 1.2)),
                     general0 + rng.choice(GENERAL_TOKENS, len(q_cat), p=_zipf(GENERAL_TOKENS, 1.0)))
    # A query names each term once.
    q_rows: list[list[int]] = []
    i = 0
    for n in q_len.tolist():
        q_rows.append(list(dict.fromkeys(q_tok[i:i + n].tolist())))
        i += n
    q_len = np.array([len(r) for r in q_rows])
    q_pad = _padded(np.array([t for r in q_rows for t in r], dtype=np.int64), q_len, MAX_QUERY)
    q_text = [" ".join(map(str, r)) for r in q_rows]

    progress("sessions", 0.2)
    s_user = rng.integers(0, U, S)
    s_group = group[s_user]
    q_by_intent = np.argsort(intent, kind="stable")
    q_counts = np.bincount(intent, minlength=C)
    q_starts = np.cumsum(q_counts) - q_counts
    weight = cat_pop[None, :] * np.exp(affinity) * (q_counts > 0)[None, :]
    cdf = np.cumsum(weight / weight.sum(axis=1, keepdims=True), axis=1)
    s_intent = np.minimum((rng.random(S)[:, None] > cdf[s_group]).sum(axis=1), C - 1)
    s_intent = np.where(q_counts[s_intent] > 0, s_intent, intent[0])
    s_query = q_by_intent[q_starts[s_intent] + (rng.random(S) * q_counts[s_intent]).astype(np.int64)]

    # What the shop shows: products OR-matching the query's terms, padded with the intent's category and
    # random products; ten distinct ones in random positions.
    flat_prod = np.repeat(np.arange(P), lengths)
    post_order = np.argsort(tokens, kind="stable")
    post = flat_prod[post_order]
    t_counts = np.bincount(tokens, minlength=V)
    t_starts = np.cumsum(t_counts) - t_counts
    shown = np.empty((S, PAGE), dtype=np.int64)
    shown_ok = np.empty((S, PAGE), dtype=bool)
    for lo in range(0, S, CHUNK):
        hi = min(S, lo + CHUNK)
        n = hi - lo
        qt = q_pad[s_query[lo:hi]]  # (n, MAX_QUERY)
        per_term = 4
        tc = t_counts[qt]
        pick = t_starts[qt][:, :, None] + (rng.random((n, MAX_QUERY, per_term)) * tc[:, :, None]).astype(np.int64)
        text_ok = ((qt > 0) & (tc > 0))[:, :, None].repeat(per_term, axis=2)
        text = np.where(text_ok, post[np.minimum(pick, len(post) - 1)], -1).reshape(n, -1)
        ic = s_intent[lo:hi]
        fill_cat = by_cat[np.minimum(starts[ic][:, None] + (rng.random((n, PAGE)) * counts[ic][:, None])
                                     .astype(np.int64), P - 1)]
        fill_cat = np.where(counts[ic][:, None] > 0, fill_cat, -1)
        fill_any = rng.integers(0, P, (n, 16))
        # Encode the source in the low bit (0: matched a term) so duplicates keep their text-match copy.
        cand = np.concatenate([np.where(text >= 0, text * 2, -1), np.where(fill_cat >= 0, fill_cat * 2 + 1, -1),
                               fill_any * 2 + 1], axis=1)
        cand.sort(axis=1)
        dup = np.zeros_like(cand, dtype=bool)
        dup[:, 1:] = (cand[:, 1:] // 2) == (cand[:, :-1] // 2)
        valid = (cand >= 0) & ~dup
        key = rng.random(cand.shape) + (cand % 2 == 0) * 1.0
        key = np.where(valid, key, -np.inf)
        top = np.argsort(-key, axis=1, kind="stable")[:, :PAGE]
        chosen = np.take_along_axis(cand, top, axis=1)
        ok = np.take_along_axis(valid, top, axis=1)
        perm = np.argsort(rng.random((n, PAGE)), axis=1)
        shown[lo:hi] = np.take_along_axis(chosen // 2, perm, axis=1)
        shown_ok[lo:hi] = np.take_along_axis(ok, perm, axis=1)
        progress("sessions", 0.2 + 0.3 * hi / S)

    # The hidden utility of each shown product to its user, and the clicks and purchases it draws.
    labels = np.zeros((S, PAGE), dtype=np.int64)
    zstar = (power[s_user] - 3) * 0.5
    for lo in range(0, S, CHUNK):
        hi = min(S, lo + CHUNK)
        prod = np.where(shown_ok[lo:hi], shown[lo:hi], 0)
        qt = q_pad[s_query[lo:hi]]
        hit = (titles[prod][:, :, :, None] == qt[:, None, None, :]).any(axis=2) & (qt > 0)[:, None, :]
        match = hit.sum(axis=2) / q_len[s_query[lo:hi]][:, None]
        g = s_group[lo:hi][:, None]
        pc = cat[prod]
        attr_fit = (attrs[prod][:, :, :KEY_ATTRIBUTES] == preferred[g[:, 0]][:, None, :]).sum(axis=2)
        u = (2.0 * match + 1.0 * (pc == s_intent[lo:hi][:, None]) + 0.7 * affinity[g, pc]
             + 0.6 * quality[prod] - 0.6 * (rel_price[prod] - zstar[lo:hi][:, None]) ** 2 + 1.0 * attr_fit)
        click = rng.random(u.shape) < _sigmoid(u - 3.5)
        buy = click & (rng.random(u.shape) < _sigmoid(u - 4.5 + 0.3 * (power[s_user[lo:hi]] - 3)[:, None]))
        labels[lo:hi] = click.astype(np.int64) + buy
    progress("writing products", 0.55)

    con = sqlite3.connect(path)
    try:
        con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        con.execute("INSERT INTO meta VALUES ('format', ?), ('layout', ?), ('complete', '0')",
                    (FORMAT, str(LAYOUT_VERSION)))
        title_text = _texts(tokens, lengths)
        rel_text = [" ".join(r) for r in related.astype(str).tolist()]
        cols = ["id", "title", "price", "rating_sum", "category", "related", *ATTRIBUTES, "cluster"]
        con.executemany(
            f"INSERT INTO products ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            zip(range(P), title_text, price.tolist(), rating_sum.tolist(), cat.tolist(), rel_text,
                *attrs.T.tolist(), cluster.tolist(), strict=True))
        for k, name in enumerate(CLUSTERS):
            progress(f"indexing cluster {name}", 0.6 + 0.1 * k)
            members = np.flatnonzero(cluster == k).tolist()
            con.executemany(f"INSERT INTO search_{name}(rowid, title) VALUES (?, ?)",
                            ((m, title_text[m]) for m in members))
            con.execute(f"INSERT INTO search_{name}(search_{name}) VALUES ('optimize')")
        progress("writing users, queries, sessions", 0.9)
        con.executemany("INSERT INTO users VALUES (?, ?, ?, ?)",
                        zip(range(U), sex.tolist(), age.tolist(), power.tolist(), strict=True))
        con.executemany("INSERT INTO queries VALUES (?, ?)", enumerate(q_text))
        con.executemany("INSERT INTO truth_queries VALUES (?, ?)", enumerate(intent.tolist()))
        con.executemany("INSERT INTO sessions VALUES (?, ?, ?)",
                        zip(range(S), s_user.tolist(), s_query.tolist(), strict=True))
        sess, pos = np.nonzero(shown_ok)
        con.executemany("INSERT INTO impressions VALUES (?, ?, ?, ?)",
                        zip(sess.tolist(), pos.tolist(), shown[sess, pos].tolist(), labels[sess, pos].tolist(),
                            strict=True))
        con.commit()
        return {"categories": C, "vocabulary": V, "impressions": len(sess),
                "clicks": int((labels[shown_ok] >= 1).sum()), "purchases": int((labels[shown_ok] == 2).sum())}
    finally:
        con.close()


def _remove_stale_partials(folder: Path) -> None:
    """Remove temporary stores left by a generator that was killed (its pid is gone)."""
    for p in folder.glob(f"{PARTIAL_PREFIX}*"):
        pid = p.name[len(PARTIAL_PREFIX):].split("-")[0]
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                continue  # still running: another generation in progress
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        p.unlink(missing_ok=True)


def generate(out: Path, sizes: Sizes, seed: int = 0, *, force: bool = False,
             progress: Progress | None = None) -> StoreInfo:
    """Generate a store in folder ``out`` (created if need be) and return its metadata.

    An existing store there is refused (exit 2) unless ``force``; then it is replaced only once the new
    one is complete. The store is built as ``.store.sqlite.partial-<pid>-<random>`` and renamed to
    ``store.sqlite`` after its completion marker is committed and the file synced.
    """
    sizes.check()
    progress = progress or (lambda _what, _done: None)
    final = out / STORE_FILE
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a folder")
    if final.exists() or final.is_symlink():
        if not final.is_file():
            raise UsageError(f"{final} exists and is not a regular file; refusing to replace it")
        if not force:
            raise UsageError(f"{final} already exists; --force replaces it (the old store stays until the new "
                             "one is complete)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise StoreError(f"--out {out} is not writable")
    _remove_stale_partials(out)
    tmp = out / f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        stats = _build(tmp, sizes, seed, progress)
        seconds = time.perf_counter() - t0
        con = sqlite3.connect(tmp)
        try:
            meta = {
                "seed": str(seed), "generator": GENERATOR_VERSION, "store_id": uuid.uuid4().hex,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": f"{seconds:.3f}",
                "sizes": json.dumps({"products": sizes.products, "users": sizes.users, "queries": sizes.queries,
                                     "sessions": sizes.sessions, **stats}),
            }
            con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            con.execute("UPDATE meta SET value = '1' WHERE key = 'complete'")
            con.commit()
        finally:
            con.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        progress("done", 1.0)
        os.replace(tmp, final)
    except OSError as exc:
        raise StoreError(f"cannot write the store in {out}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write the store in {out}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return read_info(out)
