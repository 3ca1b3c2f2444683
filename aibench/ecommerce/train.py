"""Offline training of the scenario's three models on a store's interactions, and their held-out quality.

The split is by query: every tenth query (``id % 10 == 0``) and all its sessions are held out, so each
model is judged on queries it never saw. The models learn only from what a shop observes (query texts,
users, what was shown, clicked and bought); the hidden intents are read only to score the classifier.

- Classifier: trained on (query, category of a clicked product) pairs, purchases counted twice; scored by
  accuracy against the held-out queries' true intents, beside the majority-category baseline.
- Preference network: trained on the clicked products' category and attribute values given the user and
  the query; scored by log-likelihood and accuracy on held-out clicks, beside the categories' and
  attribute values' click frequencies (a popularity prior that ignores the user and the query).
- Ranker: trained listwise (softmax cross-entropy against gains 2^label - 1) on the shown lists that drew a
  click; scored by NDCG@10 of the held-out lists, beside ordering by popularity (rating sum), by text
  match, and at random.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aibench.ecommerce.generate import KEY_ATTRIBUTES
from aibench.ecommerce.models import (
    MODELS_DIR,
    Catalog,
    Models,
    age_band,
    build,
    model_sizes,
    pad,
    ranker_features,
    save,
    store_id,
    tokenize,
)
from aibench.ecommerce.store import ATTRIBUTE_VALUES, ATTRIBUTES, MAX_QUERY, PAGE, StoreInfo, connect
from aibench.errors import UsageError

Progress = Callable[[str, float], None]
HOLDOUT_EVERY = 10


@dataclass
class Data:
    catalog: Catalog
    sex: np.ndarray
    age: np.ndarray
    power: np.ndarray
    q_pad: np.ndarray  # (Q, MAX_QUERY)
    q_len: np.ndarray
    intent: np.ndarray
    s_user: np.ndarray
    s_query: np.ndarray
    shown: np.ndarray  # (S, PAGE) product ids
    labels: np.ndarray  # (S, PAGE) 0 shown, 1 click, 2 purchase
    complete: np.ndarray  # (S,) all PAGE positions present


def load_data(info: StoreInfo) -> Data:
    con = connect(info.path)
    try:
        catalog = Catalog.load(con)
        users = np.array(con.execute("SELECT sex, age, power FROM users ORDER BY id").fetchall(),
                         dtype=np.int64).reshape(-1, 3)
        texts = [r[0] for r in con.execute("SELECT text FROM queries ORDER BY id")]
        q_rows = [tokenize(t, info.vocabulary) for t in texts]
        intent = np.array([r[0] for r in con.execute("SELECT intent FROM truth_queries ORDER BY query")],
                          dtype=np.int64)
        sess = np.array(con.execute("SELECT user, query FROM sessions ORDER BY id").fetchall(),
                        dtype=np.int64).reshape(-1, 2)
        imp = np.array(con.execute("SELECT session, position, product, label FROM impressions").fetchall(),
                       dtype=np.int64).reshape(-1, 4)
    finally:
        con.close()
    shown, labels, present = page_matrices(imp, len(sess))
    return Data(catalog=catalog, sex=users[:, 0], age=users[:, 1], power=users[:, 2],
                q_pad=pad(q_rows, MAX_QUERY), q_len=np.array([len(r) for r in q_rows]), intent=intent,
                s_user=sess[:, 0], s_query=sess[:, 1], shown=shown, labels=labels, complete=present.all(axis=1))


def page_matrices(imp: np.ndarray, sessions: int, first: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impression rows ``(session, position, product, label)`` of sessions ``first .. first + sessions - 1``
    as per-session pages: the products shown, their labels, and which positions were present."""
    shown = np.zeros((sessions, PAGE), dtype=np.int64)
    labels = np.zeros((sessions, PAGE), dtype=np.int64)
    present = np.zeros((sessions, PAGE), dtype=bool)
    row = imp[:, 0] - first
    shown[row, imp[:, 1]] = imp[:, 2]
    labels[row, imp[:, 1]] = imp[:, 3]
    present[row, imp[:, 1]] = True
    return shown, labels, present


def ndcg_at(scores: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over rows (gains 2^label - 1); rows without a positive label are left out."""
    gains = 2.0 ** labels - 1
    keep = gains.sum(axis=1) > 0
    scores, gains = scores[keep], gains[keep]
    if len(gains) == 0:
        return float("nan")
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(gains, order, axis=1) * disc[:order.shape[1]]).sum(axis=1)
    ideal = (-np.sort(-gains, axis=1)[:, :k] * disc[:min(k, gains.shape[1])]).sum(axis=1)
    return float((dcg / ideal).mean())


def _batches(n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(size))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def train(info: StoreInfo, *, seed: int = 0, epochs: int = 4, dim: int = 32, pref_hidden: int = 64,
          ranker_hidden: int = 32, threads: int = 1, models_name: str = MODELS_DIR,
          progress: Progress | None = None) -> tuple[Models, dict[str, Any]]:
    """Fit the three models on the store's training split and score them on its held-out split; save them
    into the store's ``models_name`` folder (``models/``; the model-size study's sets go beside it,
    :func:`~aibench.ecommerce.models.size_variant`). Returns the models and the quality report.

    ``pref_hidden``: the preference network's hidden width, the model-size study's knob (its body holds
    about ``pref_hidden**2`` weights); each model's parameter count and bytes are recorded in
    ``models.json`` (``sizes``).

    ``threads``: torch's intra-op threads while training (one by default: these models are small, and on a
    shared machine two spinning threads made a training step eight times slower than one).
    """
    progress = progress or (lambda _w, _d: None)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    progress("reading the store", 0.0)
    d = load_data(info)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    C, V = info.categories, info.vocabulary
    config = {"vocabulary": V, "categories": C, "dim": dim, "pref_hidden": pref_hidden,
              "ranker_hidden": ranker_hidden, "store_id": store_id(info), "seed": seed, "epochs": epochs,
              "threads": threads}
    models = build(config)
    cat = d.catalog.category

    held_q = np.arange(len(d.q_len)) % HOLDOUT_EVERY == 0
    held_s = held_q[d.s_query]
    s_idx, pos = np.nonzero(d.labels > 0)  # the clicks (and purchases)
    clicks_train = ~held_s[s_idx]
    lists = d.complete & (d.labels.sum(axis=1) > 0)
    if not (clicks_train.any() and (~clicks_train).any() and (lists & held_s).any() and (lists & ~held_s).any()):
        raise UsageError(f"{info.path} is too small to train and hold out (it needs clicks on held-out and on "
                         "training queries): generate it with more queries and sessions")
    c_sess, c_prod = s_idx, d.shown[s_idx, pos]
    c_weight = d.labels[s_idx, pos].astype(np.float32)
    report: dict[str, Any] = {"split": {"held_out_queries": int(held_q.sum()), "held_out_sessions":
                                        int(held_s.sum()), "train_clicks": int(clicks_train.sum()),
                                        "held_out_clicks": int((~clicks_train).sum())}}

    # --- the category classifier -------------------------------------------------------------------
    progress("category classifier", 0.1)
    tr = np.flatnonzero(clicks_train)
    # One soft target per training query (its clicks' categories, purchases counted twice): as much signal
    # as one sample per click, at a tenth of the steps.
    q_target = np.zeros((len(d.q_len), C), dtype=np.float32)
    np.add.at(q_target, (d.s_query[c_sess[tr]], cat[c_prod[tr]]), c_weight[tr])
    q_fit = np.flatnonzero(q_target.sum(axis=1) > 0)
    x = _t(d.q_pad[q_fit])
    y = _t(q_target[q_fit] / q_target[q_fit].sum(axis=1, keepdims=True))
    clf = models.classifier
    opt = torch.optim.Adam(clf.parameters(), lr=0.01)
    for _ in range(epochs * 2):
        for b in _batches(len(q_fit), 256, gen):
            loss = -(y[b] * torch.log_softmax(clf(x[b]), dim=1)).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        p_class_q = torch.softmax(clf(_t(d.q_pad)), dim=1).numpy()
    majority = int(np.bincount(cat[c_prod[tr]], minlength=C).argmax())
    report["classifier"] = {
        "metric": "accuracy on held-out queries' true intents",
        "trained": float((p_class_q[held_q].argmax(axis=1) == d.intent[held_q]).mean()),
        "baseline_majority": float((d.intent[held_q] == majority).mean()),
    }

    # --- the user-preference network ---------------------------------------------------------------
    progress("user-preference network", 0.35)
    pref = models.preference
    # One sample per training session with clicks: soft targets over the clicked products' categories and
    # each attribute's values (weighted by label).
    A, K = len(ATTRIBUTES), ATTRIBUTE_VALUES
    s_cat = np.zeros((len(d.s_user), C), dtype=np.float32)
    s_attr = np.zeros((len(d.s_user), A, K), dtype=np.float32)
    np.add.at(s_cat, (c_sess[tr], cat[c_prod[tr]]), c_weight[tr])
    np.add.at(s_attr, (c_sess[tr][:, None], np.arange(A)[None, :], d.catalog.attrs[c_prod[tr]]),
              c_weight[tr][:, None])
    s_fit = np.flatnonzero(s_cat.sum(axis=1) > 0)
    s_cat, s_attr = s_cat[s_fit], s_attr[s_fit]
    yc = _t(s_cat / s_cat.sum(axis=1, keepdims=True))
    ya = _t(s_attr / s_attr.sum(axis=2, keepdims=True))
    fu, fq = d.s_user[s_fit], d.s_query[s_fit]
    xs, xa, xp, xq = _t(d.sex[fu]), _t(age_band(d.age[fu])), _t(d.power[fu]), _t(d.q_pad[fq])
    opt = torch.optim.Adam(pref.parameters(), lr=0.005)
    for _ in range(epochs):
        for b in _batches(len(s_fit), 512, gen):
            lc, la = pref(xs[b], xa[b], xp[b], xq[b])
            loss_c = -(yc[b] * torch.log_softmax(lc, dim=1)).sum(dim=1)
            loss_a = -(ya[b] * torch.log_softmax(la, dim=2)).sum(dim=2).mean(dim=1)
            loss = (loss_c + loss_a).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    pref.eval()
    te = np.flatnonzero(~clicks_train)
    tu, tq = d.s_user[c_sess[te]], d.s_query[c_sess[te]]
    with torch.no_grad():
        lc, la = pref(_t(d.sex[tu]), _t(age_band(d.age[tu])), _t(d.power[tu]), _t(d.q_pad[tq]))
        lpc = torch.log_softmax(lc, dim=1).numpy()
        lpa = torch.log_softmax(la, dim=2).numpy()
    cat_freq = (np.bincount(cat[c_prod[tr]], minlength=C) + 1.0) / (len(tr) + C)
    attr_freq = np.stack([(np.bincount(d.catalog.attrs[c_prod[tr], j], minlength=la.shape[-1]) + 1.0)
                          / (len(tr) + la.shape[-1]) for j in range(len(ATTRIBUTES))])
    yte_c, yte_a = cat[c_prod[te]], d.catalog.attrs[c_prod[te]]
    jj = np.arange(len(ATTRIBUTES))[None, :]
    report["preference"] = {
        "metric": "held-out clicks: category log-likelihood and accuracy, attribute log-likelihood (per field)",
        "category_loglik": float(lpc[np.arange(len(te)), yte_c].mean()),
        "category_loglik_baseline_popularity": float(np.log(cat_freq[yte_c]).mean()),
        "category_accuracy": float((lpc.argmax(axis=1) == yte_c).mean()),
        "category_accuracy_baseline_popularity": float((yte_c == cat_freq.argmax()).mean()),
        "attribute_loglik": float(lpa[np.arange(len(te))[:, None], jj, yte_a].mean()),
        "attribute_loglik_baseline_popularity": float(np.log(attr_freq[jj, yte_a]).mean()),
        # The same over the attributes the hidden truth gives users preferences on (a..f): the other 20
        # carry no signal and dilute the mean.
        "key_attribute_loglik": float(lpa[np.arange(len(te))[:, None], jj, yte_a][:, :KEY_ATTRIBUTES].mean()),
        "key_attribute_loglik_baseline_popularity": float(np.log(attr_freq[jj, yte_a])[:, :KEY_ATTRIBUTES]
                                                          .mean()),
    }

    # --- the learning-to-rank model ----------------------------------------------------------------
    progress("ranker features", 0.6)
    ranker = models.ranker
    logp = np.log(np.maximum(d.catalog.price, 0.01))
    cat_logprice = np.array([logp[cat == c].mean() if (cat == c).any() else logp.mean() for c in range(C)])
    df = np.bincount(np.unique(d.catalog.titles + np.arange(len(cat))[:, None] * V) % V, minlength=V)
    idf = np.log((len(cat) + 1.0) / (df + 1.0)).astype(np.float64)
    S = len(d.s_user)
    feats = np.zeros((S, PAGE, len(ranker.feat_mean)), dtype=np.float32)
    with torch.no_grad():
        for lo in range(0, S, 5000):
            sl = slice(lo, min(S, lo + 5000))
            uu, qq = d.s_user[sl], d.s_query[sl]
            lc, la = pref(_t(d.sex[uu]), _t(age_band(d.age[uu])), _t(d.power[uu]), _t(d.q_pad[qq]))
            feats[sl] = ranker_features(d.q_pad[qq], d.q_len[qq], d.shown[sl], d.catalog, d.power[uu],
                                        p_class_q[qq], torch.softmax(lc, 1).numpy(),
                                        torch.softmax(la, 2).numpy(), cat_logprice, idf)
    fit = ~held_s & d.complete & (d.labels.sum(axis=1) > 0)
    ev = held_s & d.complete
    mean = feats[fit].reshape(-1, feats.shape[-1]).mean(axis=0)
    std = feats[fit].reshape(-1, feats.shape[-1]).std(axis=0) + 1e-6
    with torch.no_grad():
        ranker.feat_mean.copy_(_t(mean))
        ranker.feat_std.copy_(_t(std))
        ranker.cat_logprice.copy_(_t(cat_logprice.astype(np.float32)))
        ranker.idf.copy_(_t(idf.astype(np.float32)))
    progress("ranker", 0.7)
    fx = _t(feats[fit])
    gains = 2.0 ** _t(d.labels[fit]).float() - 1
    target = gains / gains.sum(dim=1, keepdim=True)
    opt = torch.optim.Adam(ranker.parameters(), lr=0.005)
    for _ in range(epochs * 2):
        for b in _batches(len(fx), 256, gen):
            loss = -(target[b] * torch.log_softmax(ranker(fx[b]), dim=1)).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    ranker.eval()
    with torch.no_grad():
        scores = ranker(_t(feats[ev])).numpy()
    lab = d.labels[ev]
    rng = np.random.default_rng(seed)
    report["ranker"] = {
        "metric": "NDCG@10 of the held-out shown lists that drew a click",
        "lists": int((lab.sum(axis=1) > 0).sum()),
        "trained": ndcg_at(scores, lab),
        "baseline_popularity": ndcg_at(d.catalog.rating_sum[d.shown[ev]], lab),
        "baseline_text_match": ndcg_at(feats[ev][:, :, 1], lab),
        "baseline_random": ndcg_at(rng.random(lab.shape), lab),
    }
    report["seconds"] = round(time.perf_counter() - t0, 3)
    models.config["quality"] = report
    models.config["sizes"] = model_sizes(models)
    progress("saving", 0.95)
    save(models, info, models_name)
    progress("done", 1.0)
    return models.eval(), report
