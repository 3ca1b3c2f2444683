"""Streaming-like model updates during a run (AIBench's offline analyzer, §4.1.2: "streaming-like every few
seconds"), swapped into the serving path atomically.

Every ``every_s`` seconds, :class:`StreamingUpdater` takes the next ``sessions`` sessions of the store's
session log (in id order, wrapping around: the stream of what users did), keeps those of training queries
(the held-out tenth stays held out, as in offline training), computes their ranker features with the models
now serving, fine-tunes a *copy* of the ranker on them (the same listwise loss as offline training) and swaps
the new set into the path with :meth:`ShopPath.swap_models`: one reference assignment, so a query in flight
finishes with the set it started with and later ones get the new ranker; the set that serves is never
changed in place, so no query sees a half-updated model. The update runs on its own thread, so its CPU time
competes with serving, as the paper's updates did. Each update is recorded (when, how long, its CPU time,
how many lists, the loss before and after on them, and the new ranker's NDCG@10 on a fixed held-out set, the
quality after the update).

The classifier and the preference network stay as trained offline: the held-out set's features are computed
once, when the updater is made.
"""

from __future__ import annotations

import copy
import math
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from aibench.ecommerce.models import Models, age_band, pad, ranker_features, tokenize
from aibench.ecommerce.path import ShopPath
from aibench.ecommerce.store import MAX_QUERY, PAGE, connect
from aibench.ecommerce.train import HOLDOUT_EVERY, ndcg_at, page_matrices

EVAL_LISTS = 500  # held-out lists (with a click) the quality after each update is measured on


@dataclass(frozen=True)
class Update:
    """One update. ``at_s``: its start, seconds since :meth:`StreamingUpdater.start` (or since the updater was
    made); ``started``/``ended``: its perf_counter bounds (to place it against a run's window and queries);
    ``cpu_s``: the updater thread's CPU seconds; ``sessions``: the lists with a click it trained on;
    ``ndcg10``: the swapped-in ranker's NDCG@10 on the held-out set (None when nothing was swapped);
    ``version``: how many sets the updater has swapped in, this one included."""

    at_s: float
    seconds: float
    sessions: int
    loss_before: float
    loss_after: float
    started: float = 0.0
    ended: float = 0.0
    cpu_s: float = 0.0
    ndcg10: float | None = None
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        """Finite numbers only (a result file holds no NaN): a loss of an empty slice is None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class _Lists:
    q_pad: np.ndarray
    q_len: np.ndarray
    users: np.ndarray  # (N, 3) sex, age, power
    shown: np.ndarray
    labels: np.ndarray


class StreamingUpdater:
    def __init__(self, path: ShopPath, *, every_s: float = 5.0, sessions: int = 2000, steps: int = 20,
                 lr: float = 1e-3, eval_lists: int = EVAL_LISTS) -> None:
        if every_s <= 0 or sessions < 1 or steps < 1 or eval_lists < 1:
            raise ValueError("every_s must be positive, sessions, steps and eval_lists at least 1")
        self.path, self.every_s, self.sessions, self.steps, self.lr = path, every_s, sessions, steps, lr
        self.updates: list[Update] = []
        self.error: BaseException | None = None
        self._next = 0
        self._version = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads = torch.get_num_threads()  # the run's count, for the updater's thread (OpenMP's is per thread)
        # torch's first optimizer imports torch._dynamo (seconds): pay it here, not in the first update
        # of a measured run.
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        # The quality figure: a fixed set of held-out lists, featurised once with the classifier and the
        # preference network (which the updates leave as they are).
        con = connect(path.info.path)
        try:
            held = self._lists(con, f"s.query % {HOLDOUT_EVERY} = 0", (), limit=eval_lists * 4)
        finally:
            con.close()
        n = min(eval_lists, len(held.labels))
        self.eval_size = n
        self._eval = _Lists(*(a[:n] for a in (held.q_pad, held.q_len, held.users, held.shown, held.labels)))
        self._eval_x = self._features(path.models, self._eval) if n else None
        self.ndcg10_start = self._ndcg(path.models.ranker)
        self._t0 = time.perf_counter()

    # -- the stream -------------------------------------------------------------------------------------
    def _lists(self, con: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int | None = None) -> _Lists:
        """The complete shown lists that drew a click among the sessions matching ``where``, in id order."""
        sql = ("SELECT s.id, q.text, u.sex, u.age, u.power FROM sessions s JOIN queries q ON q.id = s.query "
               f"JOIN users u ON u.id = s.user WHERE {where} ORDER BY s.id")
        sess = con.execute(sql + (f" LIMIT {int(limit)}" if limit else ""), args).fetchall()
        if not sess:
            empty = np.zeros((0, PAGE), dtype=np.int64)
            return _Lists(np.zeros((0, MAX_QUERY), dtype=np.int64), np.zeros(0, dtype=np.int64),
                          np.zeros((0, 3), dtype=np.int64), empty, empty)
        ids = np.array([r[0] for r in sess], dtype=np.int64)
        lo, hi = int(ids[0]), int(ids[-1])
        imp = np.array(con.execute("SELECT session, position, product, label FROM impressions "
                                   "WHERE session >= ? AND session <= ?", (lo, hi)).fetchall(),
                       dtype=np.int64).reshape(-1, 4)
        shown, labels, present = page_matrices(imp, hi - lo + 1, lo)
        rows = ids - lo
        shown, labels, present = shown[rows], labels[rows], present[rows]
        tokens = [tokenize(r[1], self.path.vocabulary) for r in sess]
        q_pad = pad(tokens, MAX_QUERY)
        q_len = np.array([len(t) for t in tokens], dtype=np.int64)
        users = np.array([r[2:] for r in sess], dtype=np.int64).reshape(-1, 3)
        keep = present.all(axis=1) & (labels.sum(axis=1) > 0)
        return _Lists(q_pad[keep], q_len[keep], users[keep], shown[keep], labels[keep])

    def _slice(self) -> _Lists:
        """The next ``sessions`` sessions of the log (wrapping around), training queries' lists only."""
        con = connect(self.path.info.path)
        try:
            total = self.path.info.sessions
            lo = self._next % total
            hi = min(total, lo + self.sessions)
            self._next = hi % total
            return self._lists(con, f"s.id >= ? AND s.id < ? AND s.query % {HOLDOUT_EVERY} != 0", (lo, hi))
        finally:
            con.close()

    def _features(self, serving: Models, lists: _Lists) -> torch.Tensor:
        with torch.no_grad():
            q = torch.from_numpy(lists.q_pad)
            p_class = torch.softmax(serving.classifier(q), dim=1).numpy()
            u = lists.users
            lc, la = serving.preference(torch.from_numpy(u[:, 0]), torch.from_numpy(age_band(u[:, 1])),
                                        torch.from_numpy(u[:, 2]), q)
            ranker = serving.ranker
            return torch.from_numpy(ranker_features(
                lists.q_pad, lists.q_len, lists.shown, self.path.catalog, u[:, 2], p_class,
                torch.softmax(lc, 1).numpy(), torch.softmax(la, 2).numpy(), ranker.cat_logprice.numpy(),
                ranker.idf.numpy()))

    def _ndcg(self, ranker: torch.nn.Module) -> float | None:
        if self._eval_x is None:
            return None
        with torch.no_grad():
            return ndcg_at(ranker(self._eval_x).numpy(), self._eval.labels)

    # -- one update -------------------------------------------------------------------------------------
    def update_once(self) -> Update:
        """One update: the next slice of the stream, a fine-tuned copy of the ranker, the swap."""
        t0, c0 = time.perf_counter(), time.thread_time()
        serving: Models = self.path.models
        lists = self._slice()
        if len(lists.labels) == 0:
            end = time.perf_counter()
            upd = Update(t0 - self._t0, end - t0, 0, float("nan"), float("nan"), t0, end,
                         time.thread_time() - c0, None, self._version)
            self.updates.append(upd)
            return upd
        feats = self._features(serving, lists)
        gains = 2.0 ** torch.from_numpy(lists.labels).float() - 1
        target = gains / gains.sum(dim=1, keepdim=True)
        new = copy.deepcopy(serving.ranker)  # the serving ranker is only read: queries keep using it meanwhile
        new.train()
        opt = torch.optim.Adam(new.mlp.parameters(), lr=self.lr)

        def loss_of() -> torch.Tensor:
            return -(target * torch.log_softmax(new(feats), dim=1)).sum(dim=1).mean()

        with torch.no_grad():
            before = float(loss_of())
        for _ in range(self.steps):
            loss = loss_of()
            opt.zero_grad()
            loss.backward()
            opt.step()
        new.eval()
        with torch.no_grad():
            after = float(loss_of())
        ndcg = self._ndcg(new)
        self.path.swap_models(Models(classifier=serving.classifier, preference=serving.preference, ranker=new,
                                     config=serving.config))
        self._version += 1
        end = time.perf_counter()
        upd = Update(t0 - self._t0, end - t0, len(lists.labels), before, after, t0, end, time.thread_time() - c0,
                     ndcg, self._version)
        self.updates.append(upd)
        return upd

    # -- on its own thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        try:
            while not self._stop.wait(self.every_s):
                self.update_once()
        except BaseException as exc:  # recorded for the run; serving goes on with the last good set
            self.error = exc

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="ecommerce-updater", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the update in progress (if any); True when the thread ended."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
