"""Streaming-like model updates during a run (AIBench's offline analyzer, §4.1.2: "streaming-like every few
seconds"), swapped into the serving path atomically.

Every ``every_s`` seconds, :class:`StreamingUpdater` takes the next ``sessions`` sessions of the store's
session log (in id order, wrapping around: the stream of what users did), computes their ranker features
with the models now serving, fine-tunes a *copy* of the ranker on them (the same listwise loss as offline
training) and swaps the new set into the path with :meth:`ShopPath.swap_models`: queries in flight finish
with the set they started with, later ones get the new ranker. The update runs on its own thread, so its
CPU time competes with serving, as the paper's updates did. Each update is recorded (when, how long, how
many sessions, the loss before and after).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from aibench.ecommerce.models import Models, age_band, pad, ranker_features, tokenize
from aibench.ecommerce.path import ShopPath
from aibench.ecommerce.store import MAX_QUERY, connect
from aibench.ecommerce.train import page_matrices


@dataclass(frozen=True)
class Update:
    at_s: float  # since start() (or since the updater was made)
    seconds: float
    sessions: int
    loss_before: float
    loss_after: float


class StreamingUpdater:
    def __init__(self, path: ShopPath, *, every_s: float = 5.0, sessions: int = 2000, steps: int = 20,
                 lr: float = 1e-3) -> None:
        if every_s <= 0 or sessions < 1 or steps < 1:
            raise ValueError("every_s must be positive, sessions and steps at least 1")
        self.path, self.every_s, self.sessions, self.steps, self.lr = path, every_s, sessions, steps, lr
        self.updates: list[Update] = []
        self.error: BaseException | None = None
        self._next = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # torch's first optimizer imports torch._dynamo (seconds): pay it here, not in the first update
        # of a measured run.
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        self._t0 = time.perf_counter()

    def _slice(self) -> tuple[np.ndarray, ...]:
        con = connect(self.path.info.path)
        try:
            total = self.path.info.sessions
            lo = self._next % total
            hi = min(total, lo + self.sessions)
            self._next = hi % total
            sess = con.execute("SELECT s.id, s.user, q.text, u.sex, u.age, u.power FROM sessions s "
                               "JOIN queries q ON q.id = s.query JOIN users u ON u.id = s.user "
                               "WHERE s.id >= ? AND s.id < ? ORDER BY s.id", (lo, hi)).fetchall()
            imp = np.array(con.execute("SELECT session, position, product, label FROM impressions "
                                       "WHERE session >= ? AND session < ?", (lo, hi)).fetchall(),
                           dtype=np.int64).reshape(-1, 4)
        finally:
            con.close()
        shown, labels, present = page_matrices(imp, len(sess), lo)
        rows = [tokenize(r[2], self.path.vocabulary) for r in sess]
        q_pad = pad(rows, MAX_QUERY)
        q_len = np.array([len(r) for r in rows])
        users = np.array([r[3:] for r in sess], dtype=np.int64).reshape(-1, 3)
        keep = present.all(axis=1) & (labels.sum(axis=1) > 0)
        return q_pad[keep], q_len[keep], users[keep], shown[keep], labels[keep]

    def update_once(self) -> Update:
        """One update: the next slice of the stream, a fine-tuned copy of the ranker, the swap."""
        t0 = time.perf_counter()
        serving: Models = self.path.models
        q_pad, q_len, users, shown, labels = self._slice()
        if len(labels) == 0:
            upd = Update(t0 - self._t0, time.perf_counter() - t0, 0, float("nan"), float("nan"))
            self.updates.append(upd)
            return upd
        with torch.no_grad():
            q = torch.from_numpy(q_pad)
            p_class = torch.softmax(serving.classifier(q), dim=1).numpy()
            lc, la = serving.preference(torch.from_numpy(users[:, 0]), torch.from_numpy(age_band(users[:, 1])),
                                        torch.from_numpy(users[:, 2]), q)
            ranker = serving.ranker
            feats = torch.from_numpy(ranker_features(
                q_pad, q_len, shown, self.path.catalog, users[:, 2], p_class, torch.softmax(lc, 1).numpy(),
                torch.softmax(la, 2).numpy(), ranker.cat_logprice.numpy(), ranker.idf.numpy()))
        gains = 2.0 ** torch.from_numpy(labels).float() - 1
        target = gains / gains.sum(dim=1, keepdim=True)
        new = copy.deepcopy(ranker)
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
        self.path.swap_models(Models(classifier=serving.classifier, preference=serving.preference, ranker=new,
                                     config=serving.config))
        upd = Update(t0 - self._t0, time.perf_counter() - t0, len(labels), before, after)
        self.updates.append(upd)
        return upd

    def _run(self) -> None:
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
