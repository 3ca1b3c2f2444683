"""The online search path, in process: planner -> recommender -> searcher -> ranker -> product fetch.

:meth:`ShopPath.handle` serves one query and returns the page with each module's own time, so a load
driver can wrap the object as a system under test and report per-module latency distributions:

- **recommender**: reads the user from the store (``recommender/user_db``), runs the category classifier
  over the query's terms (``recommender/classifier``) and the user-preference network
  (``recommender/preference``): category probabilities and per-attribute value weights;
- **searcher**: the popularity clusters' FTS5 indexes in order (high, medium, low), each queried with the
  query's terms OR-ed and ordered by BM25, until ``window`` candidates are found (AIBench: 2000);
- **ranker**: scores the candidates with the learned model over :func:`ranker_features` (text match, price
  fit, popularity, the classifier's and the preference network's probabilities of each candidate's
  category and its attribute values) and keeps the top ``page`` (``ranker/features``, ``ranker/model``,
  ``ranker/select``);
- **fetch**: reads the page's product summaries from the store;
- **planner**: the orchestration itself (the rest of the wall time of ``handle``).

The five top-level modules add up to the whole path; the ``recommender/...`` parts break the
recommender down (as the paper's Fig. 3c did), the ``ranker/...`` parts the ranker. :data:`AI_PARTS` are the
parts that run a learned model (the path's AI share). A query without hits is an outcome (``Page.status ==
"no_hits"``, an empty page), not an error; an unknown user is served with a neutral profile
(``Page.anonymous``). Each thread gets its own read-only SQLite connection; the models are only read.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aibench.ecommerce.figures import AI_PARTS as AI_PARTS  # the names live in the light module; re-exported
from aibench.ecommerce.figures import MODULES, RANKER_PARTS
from aibench.ecommerce.figures import RECOMMENDER_PARTS as RECOMMENDER_PARTS
from aibench.ecommerce.models import (
    MODELS_DIR,
    Catalog,
    Models,
    age_band,
    load,
    pad,
    ranker_features,
    store_id,
    tokenize,
)
from aibench.ecommerce.modules import NEUTRAL_USER as NEUTRAL_USER
from aibench.ecommerce.modules import fetch, read_user, sample_sessions, search, select_top
from aibench.ecommerce.modules import fts_query as fts_query  # re-exported: the searcher's query text
from aibench.ecommerce.store import MAX_QUERY, PAGE, ThreadConnections, connect, read_info

WINDOW = 2000


class ModuleFailure(Exception):
    """A module of the path raised while serving a query: ``module`` names it (one of :data:`MODULES`;
    ``planner`` for the orchestration), ``cause`` is its exception. A load driver records the query as failed
    with the module and goes on."""

    def __init__(self, module: str, cause: BaseException) -> None:
        self.module, self.cause = module, cause
        first = (str(cause).splitlines() or [""])[0]
        super().__init__(f"{module}: {type(cause).__name__}{': ' + first if first else ''}")


@dataclass(frozen=True)
class Query:
    user: int
    text: str


@dataclass
class Page:
    """What the path answers: ``products`` (summaries, best first), how many candidates the searcher found
    and in how many clusters it looked, the category the classifier read in the query."""

    status: str  # "ok" or "no_hits"
    products: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    clusters_searched: int = 0
    category: int = -1
    anonymous: bool = False


class ShopPath:
    """The in-process deployment of the path over a generated and trained store."""

    def __init__(self, store: Path, *, window: int = WINDOW, page: int = PAGE, models: str = MODELS_DIR) -> None:
        self.info = read_info(store)
        self.models_name = models  # the store's models folder this path serves (a size study's set, or models/)
        self.models = load(self.info, store_id(self.info), models)
        self.window, self.page = window, page
        con = connect(self.info.path)
        try:
            self.catalog = Catalog.load(con)
        finally:
            con.close()
        self.vocabulary = self.info.vocabulary
        self._connections = ThreadConnections(self.info.path)

    def _con(self) -> sqlite3.Connection:
        return self._connections.get()

    def handle(self, query: Query) -> tuple[Page, dict[str, float]]:
        """Serve one query: the page and each module's seconds (see the module's docstring). A module that
        raises is reported as :class:`ModuleFailure` naming it."""
        where = ["planner"]
        try:
            return self._handle(query, where)
        except Exception as exc:
            raise ModuleFailure(where[0], exc) from exc

    def _handle(self, query: Query, where: list[str]) -> tuple[Page, dict[str, float]]:
        clock = time.perf_counter
        t_start = clock()
        con = self._con()
        models = self.models  # one consistent set for the whole query, even if swap_models runs meanwhile
        times: dict[str, float] = {}

        # recommender
        where[0] = "recommender"
        t0 = clock()
        (sex, age, power), anonymous = read_user(con, query.user)
        t1 = clock()
        tokens = tokenize(query.text, self.vocabulary)
        q = torch.from_numpy(pad([tokens], MAX_QUERY))
        with torch.no_grad():
            p_class = torch.softmax(models.classifier(q), dim=1)
            t2 = clock()
            lc, la = models.preference(torch.tensor([sex]), torch.from_numpy(age_band(np.array([age]))),
                                            torch.tensor([power]), q)
            p_cat, p_attr = torch.softmax(lc, dim=1), torch.softmax(la, dim=2)
        t3 = clock()
        times["recommender/user_db"] = t1 - t0
        times["recommender/classifier"] = t2 - t1
        times["recommender/preference"] = t3 - t2
        times["recommender"] = t3 - t0
        category = int(p_class.argmax())

        # searcher
        where[0] = "searcher"
        t0 = clock()
        hits, searched = search(con, query.text, self.window)
        times["searcher"] = clock() - t0
        where[0] = "planner"
        if not hits:
            times.update(dict.fromkeys(("ranker", *RANKER_PARTS, "fetch"), 0.0))
            times["planner"] = max(0.0, clock() - t_start - sum(times[m] for m in MODULES[1:]))
            return Page(status="no_hits", clusters_searched=searched, category=category,
                        anonymous=anonymous), times

        # ranker
        where[0] = "ranker"
        t0 = clock()
        cand = np.array(hits, dtype=np.int64)[None, :]
        ranker = models.ranker
        feats = ranker_features(q.numpy(), np.array([len(tokens)]), cand, self.catalog, np.array([power]),
                                p_class.numpy(), p_cat.numpy(), p_attr.numpy(), ranker.cat_logprice.numpy(),
                                ranker.idf.numpy())
        t1 = clock()
        with torch.no_grad():
            scores = ranker(torch.from_numpy(feats))[0].numpy()
        t2 = clock()
        top = select_top(scores, self.page)
        best = cand[0, top].tolist()
        t3 = clock()
        times["ranker/features"] = t1 - t0
        times["ranker/model"] = t2 - t1
        times["ranker/select"] = t3 - t2
        times["ranker"] = t3 - t0

        # product fetch
        where[0] = "fetch"
        t0 = clock()
        products = fetch(con, best, scores[top].tolist())
        times["fetch"] = clock() - t0
        where[0] = "planner"
        times["planner"] = max(0.0, clock() - t_start - sum(times[m] for m in MODULES[1:]))
        return Page(status="ok", products=products, hits=len(hits), clusters_searched=searched,
                    category=category, anonymous=anonymous), times

    def swap_models(self, models: Models | None = None) -> None:
        """Serve later queries with ``models`` (by default, the store's models as now saved, e.g. after a
        new training). The swap is one reference assignment: a query in flight finishes with the set it
        started with, and no query sees a mix."""
        self.models = models.eval() if models is not None else load(self.info, store_id(self.info),
                                                                     self.models_name)

    def sample(self, n: int, seed: int = 0) -> list[Query]:
        """``n`` queries as the store's sessions pair them (a user and a query text), drawn with replacement
        (seeded): the workload a load driver replays."""
        return [Query(user, text) for user, text in sample_sessions(self._con(), n, seed)]

    def close(self) -> None:
        """Close every thread's connection (call once no thread is serving)."""
        self._connections.close()
