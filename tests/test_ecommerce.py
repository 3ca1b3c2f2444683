"""The e-commerce scenario on a tiny store: generation (atomic, deterministic), training (the ranker beats
its popularity baseline), the in-process path, and every bad store or size refused in one line."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from aibench.ecommerce.generate import Sizes, generate
from aibench.ecommerce.store import ATTRIBUTES, CLUSTERS, PARTIAL_PREFIX, STORE_FILE, StoreError, read_info
from aibench.errors import EXIT_IO, EXIT_USAGE

TINY = Sizes(products=400, users=200, queries=200, sessions=1000)
TINY_FLAGS = ["--products", "400", "--users", "200", "--queries", "200", "--sessions", "1000"]
DATA_TABLES = ("products", "users", "queries", "truth_queries", "sessions", "impressions")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny store, generated and trained once for the module."""
    from aibench.ecommerce.train import train

    out = tmp_path_factory.mktemp("shop")
    info = generate(out, TINY, seed=3)
    _models, report = train(info, seed=0)
    return out, report


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in DATA_TABLES}
    finally:
        con.close()


def test_generation_holds_the_papers_fields_clusters_and_indexes(trained: tuple[Path, Any]) -> None:
    out, _ = trained
    info = read_info(out)
    assert (info.products, info.users, info.queries, info.sessions) == (400, 200, 200, 1000)
    con = sqlite3.connect(out / STORE_FILE)
    cols = [r[1] for r in con.execute("PRAGMA table_info(products)")]
    assert len([c for c in cols if c != "cluster"]) == 32  # AIBench's 32 product fields
    assert set(ATTRIBUTES) <= set(cols)
    shares = dict(con.execute("SELECT cluster, count(*) FROM products GROUP BY cluster").fetchall())
    assert [shares[k] for k in range(3)] == [60, 140, 200]  # 15% / 35% / 50%
    for k, name in enumerate(CLUSTERS):  # each FTS index holds exactly its cluster's titles
        n = con.execute(f"SELECT count(*) FROM search_{name}").fetchone()[0]
        assert n == shares[k]
    title = con.execute("SELECT title FROM products WHERE cluster = 0 LIMIT 1").fetchone()[0]
    term = title.split()[0]
    assert con.execute("SELECT count(*) FROM search_high WHERE search_high MATCH ?", (f'"{term}"',)).fetchone()[0]
    assert con.execute("SELECT count(*) FROM users").fetchone()[0] == 200
    labels = dict(con.execute("SELECT label, count(*) FROM impressions GROUP BY label").fetchall())
    assert labels[0] > labels[1] > 0 and labels[2] > 0  # views, clicks, purchases
    assert con.execute("SELECT count(*) FROM interactions").fetchone()[0] == labels[1] + labels[2]
    con.close()
    assert not list(out.glob(f"{PARTIAL_PREFIX}*"))


def test_a_seed_gives_the_same_store(tmp_path: Path) -> None:
    small = Sizes(products=100, users=50, queries=40, sessions=100)
    a = generate(tmp_path / "a", small, seed=11)
    b = generate(tmp_path / "b", small, seed=11)
    c = generate(tmp_path / "c", small, seed=12)
    assert _dump(a.path) == _dump(b.path)
    assert _dump(a.path)["products"] != _dump(c.path)["products"]


@pytest.mark.parametrize("stage", ["sessions", "indexing cluster medium", "done"])
def test_an_interrupted_generation_leaves_no_store(tmp_path: Path, stage: str) -> None:
    def progress(what: str, _done: float) -> None:
        if what == stage:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, Sizes(100, 50, 40, 100), seed=1, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_only_once_complete_and_stale_partials_go(tmp_path: Path) -> None:
    small = Sizes(100, 50, 40, 100)
    first = generate(tmp_path, small, seed=1)
    before = _dump(first.path)

    def progress(what: str, _done: float) -> None:
        if what == "indexing cluster low":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, small, seed=2, force=True, progress=progress)
    assert _dump(tmp_path / STORE_FILE) == before  # the old store is untouched
    stale = tmp_path / f"{PARTIAL_PREFIX}999999999-deadbeef"  # left by a killed generator
    stale.write_bytes(b"x")
    generate(tmp_path, small, seed=2, force=True)
    assert not stale.exists()
    assert _dump(tmp_path / STORE_FILE) != before


def test_training_beats_the_baselines_and_saves_plain_state_dicts(trained: tuple[Path, Any]) -> None:
    import torch

    out, report = trained
    r = report["ranker"]
    assert r["lists"] > 0
    assert r["trained"] > r["baseline_popularity"], r
    assert r["trained"] > r["baseline_random"], r
    p = report["preference"]
    assert p["category_loglik"] > p["category_loglik_baseline_popularity"], p
    for name in ("classifier", "preference", "ranker"):
        state = torch.load(out / "models" / f"{name}.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    desc = json.loads((out / "models" / "models.json").read_text())
    assert desc["quality"]["ranker"]["trained"] == r["trained"]


def test_the_path_serves_a_page_and_times_each_module(trained: tuple[Path, Any]) -> None:
    from aibench.ecommerce.path import MODULES, RANKER_PARTS, RECOMMENDER_PARTS, Query, ShopPath

    out, _ = trained
    path = ShopPath(out, window=50)
    try:
        queries = path.sample(20, seed=0)
        served = 0
        for q in queries:
            page, seconds = path.handle(q)
            assert set(seconds) == set(MODULES) | set(RECOMMENDER_PARTS) | set(RANKER_PARTS)
            assert all(v >= 0 for v in seconds.values())
            if page.status == "ok":
                served += 1
                assert 1 <= len(page.products) <= 10 and page.hits >= len(page.products)
                scores = [p["score"] for p in page.products]
                assert scores == sorted(scores, reverse=True)
                assert {"id", "title", "price", "rating_sum", "category", "related"} <= set(page.products[0])
        assert served > 0
        # no hits: an outcome, not an error; operator-like input is only terms; an unknown user is anonymous
        for text in ("", "nosuchterm", 'a" OR NEAR(b', "999999999999"):
            page, seconds = path.handle(Query(10**9, text))
            assert page.status == "no_hits" and page.products == [] and page.anonymous
            assert seconds["ranker"] == 0.0
    finally:
        path.close()


def test_cli_generate_train_search(cli, tmp_path: Path) -> None:
    code, out, err = cli("scenario", "ecommerce", "generate", *TINY_FLAGS, "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["products"] == 400
    code, out, err = cli("scenario", "ecommerce", "train", "--store", str(tmp_path), "--epochs", "1", "--json")
    assert code == 0, err
    assert "ranker" in json.loads(out)
    code, out, err = cli("scenario", "ecommerce", "search", "--store", str(tmp_path), "--user", "3", "--json",
                         "1 2 3 201 401")
    assert code == 0, err
    assert set(json.loads(out)) == {"page", "seconds"}
    code, _out, err = cli("scenario", "ecommerce", "search", "--store", str(tmp_path), "--user", str(2**70), "x")
    assert code == 2 and len(err.strip().splitlines()) == 1  # beyond SQLite's integers: usage, not a crash


@pytest.mark.parametrize("args", [["--products", "0"], ["--users", "-5"], ["--queries", "0"],
                                  ["--sessions", "0"], ["--products", "abc"]])
def test_bad_sizes_are_one_line_usage_errors(cli, tmp_path: Path, args: list[str]) -> None:
    code, _out, err = cli("scenario", "ecommerce", "generate", *args, "--out", str(tmp_path / "s"))
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and err.startswith("aibench: error:")
    assert not (tmp_path / "s").exists()


def test_an_existing_store_is_kept_without_force(cli, tmp_path: Path) -> None:
    generate(tmp_path, Sizes(100, 50, 40, 100), seed=1)
    before = _dump(tmp_path / STORE_FILE)
    code, _out, err = cli("scenario", "ecommerce", "generate", "--products", "100", "--out", str(tmp_path))
    assert code == EXIT_USAGE and "--force" in err
    assert _dump(tmp_path / STORE_FILE) == before


def _half_written(folder: Path, src: Path) -> None:
    shutil.copy(src, folder / STORE_FILE)
    con = sqlite3.connect(folder / STORE_FILE)
    con.execute("UPDATE meta SET value = '0' WHERE key = 'complete'")
    con.commit()
    con.close()


def _foreign_sqlite(folder: Path) -> None:
    con = sqlite3.connect(folder / STORE_FILE)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


@pytest.mark.parametrize(("make", "says"), [
    (lambda folder, src: None, "no e-commerce store"),
    (lambda folder, src: (folder / STORE_FILE).write_text("hello"), "not an SQLite file"),
    (lambda folder, src: _foreign_sqlite(folder), "not an e-commerce store"),
    (_half_written, "half-written"),
])
def test_bad_stores_are_refused_in_one_line(cli, trained: tuple[Path, Any], tmp_path: Path, make: Any,
                                           says: str) -> None:
    make(tmp_path, trained[0] / STORE_FILE)
    with pytest.raises(StoreError, match=says):
        read_info(tmp_path)
    for cmd in (["train"], ["search", "1"]):
        code, _out, err = cli("scenario", "ecommerce", cmd[0], "--store", str(tmp_path), *cmd[1:])
        assert code == EXIT_IO, err
        assert len(err.strip().splitlines()) == 1 and says in err


def test_models_of_another_store_or_none_are_refused(cli, trained: tuple[Path, Any], tmp_path: Path) -> None:
    generate(tmp_path, Sizes(100, 50, 40, 100), seed=1)
    code, _out, err = cli("scenario", "ecommerce", "search", "--store", str(tmp_path), "1")
    assert code == EXIT_IO and "no trained models" in err
    shutil.copytree(trained[0] / "models", tmp_path / "models")
    code, _out, err = cli("scenario", "ecommerce", "search", "--store", str(tmp_path), "1")
    assert code == EXIT_IO and "another store" in err


def test_models_swap_in_for_later_queries(trained: tuple[Path, Any]) -> None:
    import torch

    from aibench.ecommerce.models import build
    from aibench.ecommerce.path import ShopPath

    out, _ = trained
    path = ShopPath(out, window=50)
    try:
        q = next(q for q in path.sample(50, seed=1) if path.handle(q)[0].status == "ok")
        before = [p["id"] for p in path.handle(q)[0].products]
        other = build(path.models.config)
        with torch.no_grad():
            for p in other.ranker.mlp.parameters():
                p.zero_()  # every candidate scores the same: the page comes in the searcher's order
        other.ranker.load_state_dict({**path.models.ranker.state_dict(),
                                      **{k: v for k, v in other.ranker.state_dict().items() if k.startswith("mlp")}})
        other.classifier.load_state_dict(path.models.classifier.state_dict())
        other.preference.load_state_dict(path.models.preference.state_dict())
        path.swap_models(other)
        page, _ = path.handle(q)
        assert {p["score"] for p in page.products} == {0.0}
        path.swap_models()  # back to the saved set
        assert [p["id"] for p in path.handle(q)[0].products] == before
    finally:
        path.close()


def test_an_interrupted_model_save_keeps_the_old_set(trained: tuple[Path, Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from aibench.ecommerce import models as models_mod
    from aibench.ecommerce.path import ShopPath

    out, _ = trained
    shutil.copy(out / STORE_FILE, tmp_path / STORE_FILE)
    shutil.copytree(out / "models", tmp_path / "models")
    info = read_info(tmp_path)
    loaded = models_mod.load(info, models_mod.store_id(info))
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".models.partial-"):
            raise KeyboardInterrupt  # between moving the old set aside and moving the new one in
        real_replace(src, dst)

    monkeypatch.setattr(models_mod.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        models_mod.save(loaded, info)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", STORE_FILE]
    ShopPath(tmp_path).close()  # the old set still loads


def test_the_path_serves_concurrent_threads(trained: tuple[Path, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aibench.ecommerce.path import ShopPath

    out, _ = trained
    path = ShopPath(out, window=50)
    try:
        queries = path.sample(40, seed=2)
        serial = [[p["id"] for p in path.handle(q)[0].products] for q in queries]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda q: [p["id"] for p in path.handle(q)[0].products], queries))
        assert threaded == serial
        assert len(path._connections._cons) >= 2  # one connection per serving thread
    finally:
        path.close()
    assert path._connections._cons == []


def test_streaming_updates_swap_a_fine_tuned_ranker_in(trained: tuple[Path, Any]) -> None:
    import torch

    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.stream import StreamingUpdater

    out, _ = trained
    path = ShopPath(out, window=50)
    try:
        first = path.models
        upd = StreamingUpdater(path, every_s=0.05, sessions=300, steps=5, lr=1e-2)
        assert upd.eval_size > 0 and upd.ndcg10_start is not None
        one = upd.update_once()
        assert one.sessions > 0 and one.loss_after <= one.loss_before
        assert one.version == 1 and one.ended >= one.started and one.cpu_s >= 0
        assert one.ndcg10 is not None and 0 < one.ndcg10 <= 1  # the quality after the update, held out
        assert path.models is not first and path.models.classifier is first.classifier
        changed = any(not torch.equal(a, b) for a, b in zip(first.ranker.state_dict().values(),
                                                          path.models.ranker.state_dict().values(), strict=True))
        assert changed
        upd.start()
        queries = path.sample(30, seed=4)
        deadline = time.monotonic() + 20
        while len(upd.updates) < 3 and time.monotonic() < deadline:
            for q in queries:
                path.handle(q)  # serving goes on while the models change under it
        assert upd.stop()
        assert upd.error is None and len(upd.updates) >= 3
    finally:
        path.close()


def test_the_stream_trains_on_training_queries_only(trained: tuple[Path, Any]) -> None:
    """The held-out tenth of the queries stays held out: the updates' quality figure is on lists they never saw."""
    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.store import PAGE, connect
    from aibench.ecommerce.stream import StreamingUpdater
    from aibench.ecommerce.train import HOLDOUT_EVERY

    out, _ = trained
    path = ShopPath(out, window=50)
    try:
        upd = StreamingUpdater(path, every_s=1, sessions=path.info.sessions, steps=1)
        lists = upd._slice()
        con = connect(path.info.path)
        try:  # every complete list with a click of a training query, none of a held-out one
            expected = sum(1 for (n, clicks, q) in con.execute(
                "SELECT count(*), sum(label > 0), s.query FROM impressions i JOIN sessions s ON s.id = i.session "
                "GROUP BY i.session") if n == PAGE and clicks > 0 and q % HOLDOUT_EVERY != 0)
        finally:
            con.close()
        assert len(lists.labels) == expected > 0
    finally:
        path.close()


def test_queries_never_see_a_half_swapped_model(trained: tuple[Path, Any]) -> None:
    """While updates swap new rankers in, every scoring a query does reads a ranker whose weights never change
    (the updater trains a copy), and queries move on to the new sets."""
    import hashlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from aibench.ecommerce.models import Ranker
    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.stream import StreamingUpdater

    out, _ = trained
    path = ShopPath(out, window=50)
    seen: dict[int, set[str]] = {}
    keep: list[Any] = []  # the rankers seen stay alive, so no id is reused
    lock = threading.Lock()

    def hook(module: Any, _args: Any, _output: Any) -> None:
        if isinstance(module, Ranker) and threading.current_thread().name.startswith("serve"):
            digest = hashlib.sha1(b"".join(t.numpy().tobytes() for t in module.state_dict().values())).hexdigest()
            with lock:
                if id(module) not in seen:
                    keep.append(module)
                seen.setdefault(id(module), set()).add(digest)

    stop = threading.Event()
    served = [0]

    def serve(queries: list[Any]) -> None:
        while not stop.is_set():
            for q in queries:
                path.handle(q)
                with lock:
                    served[0] += 1

    registered = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        upd = StreamingUpdater(path, every_s=1, sessions=200, steps=5, lr=1e-2)
        queries = [q for q in path.sample(40, seed=2) if path.handle(q)[0].status == "ok"]
        with ThreadPoolExecutor(2, thread_name_prefix="serve") as pool:
            futures = [pool.submit(serve, queries) for _ in range(2)]
            for _ in range(4):
                mark = served[0]
                while served[0] < mark + 5 and not any(f.done() for f in futures):
                    time.sleep(0.01)  # some queries with the set now serving
                upd.update_once()
            mark = served[0]
            while served[0] < mark + 5 and not any(f.done() for f in futures):
                time.sleep(0.01)
            stop.set()
            for f in futures:
                f.result()
    finally:
        registered.remove()
        path.close()
    assert [u.version for u in upd.updates] == [1, 2, 3, 4]
    assert len(seen) >= 2  # queries moved on to swapped-in rankers
    assert all(len(digests) == 1 for digests in seen.values())  # none changed under a query


def test_the_size_study_trains_a_set_beside_the_default_one(trained: tuple[Path, Any], tmp_path: Path,
                                                             cli: Any) -> None:
    from aibench.ecommerce.models import resolve, size_variant

    out, _ = trained
    shutil.copy(out / STORE_FILE, tmp_path / STORE_FILE)
    shutil.copytree(out / "models", tmp_path / "models")
    default = (tmp_path / "models" / "models.json").read_text()
    info = read_info(tmp_path)
    with pytest.raises(StoreError, match="--pref-hidden 16 --size-study"):
        resolve(info, 16)
    code, text, err = cli("scenario", "ecommerce", "train", "--store", str(tmp_path), "--epochs", "1",
                          "--pref-hidden", "16", "--size-study", "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["models"] == size_variant(16) == "models-pref16"
    small = doc["sizes"]["preference"]
    assert (tmp_path / "models" / "models.json").read_text() == default  # the default set is left as it is
    desc = json.loads((tmp_path / "models-pref16" / "models.json").read_text())
    assert desc["pref_hidden"] == 16 and desc["sizes"]["preference"] == small
    big = json.loads(default)["sizes"]["preference"]  # 64 units
    assert big["parameters"] > small["parameters"] > 0 and big["bytes"] > small["bytes"] >= 4 * small["parameters"]
    assert resolve(info, 16) == "models-pref16"
    assert resolve(info, 64) == resolve(info, 0) == "models"  # the default set has 64 units


def test_a_store_too_small_to_hold_out_is_refused_before_training(cli, tmp_path: Path) -> None:
    generate(tmp_path, Sizes(products=20, users=1, queries=10, sessions=10), seed=0)
    code, _out, err = cli("scenario", "ecommerce", "train", "--store", str(tmp_path))
    assert code == EXIT_USAGE and "too small" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists()


def test_sigterm_during_generation_leaves_nothing(tmp_path: Path) -> None:
    """The real command, stopped by SIGTERM once its temporary store exists: exit 143, no file left."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "aibench", "scenario", "ecommerce", "generate",
                             "--products", "30000", "--users", "20000", "--queries", "6000", "--out", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f"{PARTIAL_PREFIX}*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "generation ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert list(tmp_path.iterdir()) == []
