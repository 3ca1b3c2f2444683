"""scenario/ecommerce under load on a tiny store: closed-loop users (exponential and constant think time, a
warm-up, a query count), LoadGen's Server through the same system, a module that fails (recorded, the run
goes on), bad stores refused in one line, the users sweep's knee, and the HTML breakdown (escaped)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench.ecommerce.generate import Sizes, generate
from aibench.errors import EXIT_IO
from aibench.results.schema import json_schema

TINY = Sizes(products=300, users=100, queries=100, sessions=600)
# small and short: a pinned torch thread, one worker, a short warm-up and a fixed count of measured requests
FAST = ("--threads", "1", "--workers", "1", "--samples", "30", "--window", "100")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny store, generated and trained once for the module."""
    from aibench.ecommerce.models import size_variant
    from aibench.ecommerce.train import train

    out = tmp_path_factory.mktemp("shop")
    info = generate(out, TINY, seed=5)
    train(info, seed=0, epochs=1)
    train(info, seed=0, epochs=1, pref_hidden=8, models_name=size_variant(8))  # the model-size study's set
    return out


@pytest.fixture(scope="module")
def closed_loop(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One closed-loop run through the CLI, shared by the tests that read its result."""
    from aibench.cli import main

    out = tmp_path_factory.mktemp("results")
    args = ["-q", "run", "scenario", "ecommerce", "--store", str(store), *FAST, "--users", "3",
            "--think-time-ms", "2", "--warmup-s", "0.2", "--queries", "60", "--out", str(out), "--json"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    return json.loads(buf.getvalue())


def test_closed_loop_reports_every_module_the_ai_split_counts_and_quality(closed_loop: dict[str, Any]) -> None:
    from aibench.ecommerce.figures import AI_PARTS, MODULES, PARTS

    doc = closed_loop
    assert doc["status"] == "ok" and doc["benchmark"]["id"] == "scenario/ecommerce"
    jsonschema.validate(doc, json_schema())
    cl = doc["method"]["closed_loop"]
    assert cl["warmup_s"] == 0.2 and cl["max_queries"] == 60 and cl["think"] == "exponential"
    assert cl["requests_in_window"] == 60  # the count ends the run; warm-up requests are not in it
    info = doc["method"]["ecommerce"]
    assert info["served"] == 60 and info["ai_parts"] == list(AI_PARTS)
    m = doc["metrics"]
    assert m["queries_ok"]["value"] + m["queries_no_hits"]["value"] == 60 and m["queries_failed"]["value"] == 0
    modules = doc["parts"]["module"]
    assert set(modules) <= set(PARTS) and set(MODULES) | {"queue", "whole_path"} <= set(modules)
    for name in (*MODULES, "whole_path", "recommender/preference", "ranker/model"):
        s = modules[name]["summary"]
        assert {"mean", "p50", "p90", "p99", "p99_9"} <= set(s) and s["p50"] <= s["p99"] <= s["max"]
    assert modules["planner"]["seen"] == 60  # every measured query, none of the warm-up
    # the split: AI + non-AI is the five modules' time, query by query
    stage = doc["parts"]["stage"]
    total = stage["ai"]["total"] + stage["non_ai"]["total"]
    modules_total = sum(modules[n]["total"] for n in MODULES if n not in ("ranker", "fetch"))
    modules_total += modules["ranker"]["total"] + modules["fetch"]["total"]
    assert total == pytest.approx(modules_total, rel=1e-6)
    assert m["share_ai"]["value"] == pytest.approx(stage["ai"]["total"] / total)
    assert m["share_ai"]["value"] + m["share_non_ai"]["value"] == pytest.approx(1.0)
    assert m["share_ai"]["of"] == "parts.stage.ai" and m["share_ai"]["statistic"] == "ratio"
    # the models' quality, from the store's training record
    q = info["quality"]
    assert m["ranker_ndcg10"]["value"] == q["ranker"]["trained"]
    assert m["classifier_accuracy"]["value"] == q["classifier"]["trained"]
    assert m["samples_per_s"]["value"] > 0
    # the query generator's and harness's CPU share (one torch thread: the serving threads' time is the path's)
    cpu = m["harness_cpu_share"]
    assert 0 <= cpu["value"] <= 1 and cpu["process_cpu_s"] > 0 and 0 < cpu["path_cpu_s"] <= cpu["process_cpu_s"]
    assert m["path_cpu_ms"]["value"] > 0
    assert m["updates"]["value"] is None and "--update-every-s 0" in m["updates"]["unavailable"]
    assert "updates" not in info and "update" not in modules
    models = doc["context"]["store"]["models"]
    assert models["folder"] == "models" and models["pref_hidden"] == 64
    assert models["sizes"]["preference"]["bytes"] > models["sizes"]["ranker"]["bytes"] > 0


def test_constant_think_time_and_a_module_failure_recorded_while_the_run_goes_on(store: Path) -> None:
    import torch

    from aibench.ecommerce.figures import summarize_records
    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.system import ShopSystem
    from aibench.loadgen.settings import LoadgenOptions
    from aibench.loadgen.users import run_users

    path = ShopPath(store, window=100)
    calls = [0]
    lock = threading.Lock()
    real = path.models.ranker.forward

    def flaky(x: torch.Tensor) -> torch.Tensor:  # every third scoring fails
        with lock:
            calls[0] += 1
            n = calls[0]
        if n % 3 == 0:
            raise RuntimeError("ranker replica down")
        return real(x)

    path.models.ranker.forward = flaky  # type: ignore[method-assign]
    try:
        system = ShopSystem(path, path.sample(30), workers=2, threads=1)
        s = LoadgenOptions(users=2, think_time_ms=1.0).resolve().closed_loop_from(
            {"warmup_s": 0.0, "queries": 40, "think": "constant"})
        out = run_users(system, s, 1, seed=0)
        assert out.error is None and not out.interrupted
        assert out.adapter["think"] == "constant" and out.adapter["requests_in_window"] == 40
        parts, metrics, info = summarize_records(system.report().extra["records"],
                                                 tuple(out.adapter["window_perf_s"]))
    finally:
        path.close()
    failed = metrics["queries_failed"]["value"]
    assert failed > 0 and info["failed_by_module"] == {"ranker": failed}
    assert "ranker replica down" in info["errors"][0]["message"]
    assert metrics["queries_ok"]["value"] > 0  # the run went on
    assert parts["module"]["queue"]["seen"] == 40  # failed queries waited too; their module times are left out
    assert parts["module"]["whole_path"]["seen"] == 40 - failed


def test_loadgen_server_drives_the_same_system(store: Path, cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "run", "scenario", "ecommerce", "--store", str(store), *FAST, "--scenario",
                         "server", "--target-qps", "40", "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    assert code in (0, 5), err  # 5: INVALID by LoadGen's rules (so short a run), still written
    doc = json.loads(out)
    assert doc["load_scenario"] == "server"
    assert doc["method"]["ecommerce"]["window"] == "every query served after the calibration"
    assert doc["parts"]["module"]["searcher"]["seen"] >= 1


def test_bad_stores_are_one_line(store: Path, cli: Any, tmp_path: Path) -> None:
    import shutil

    untrained = tmp_path / "untrained"
    generate(untrained, Sizes(products=40, users=10, queries=20, sessions=40), seed=1)
    half = tmp_path / "half"
    half.mkdir()
    (half / "store.sqlite").write_bytes((store / "store.sqlite").read_bytes()[:4096])
    other = tmp_path / "other"  # models of another store
    shutil.copytree(untrained, other)
    shutil.copytree(store / "models", other / "models")
    for where, says in ((tmp_path / "missing", "no e-commerce store"), (untrained, "no trained models"),
                        (half, "is not an e-commerce store"), (other, "trained on another store")):
        code, _out, err = cli("run", "scenario", "ecommerce", "--store", str(where), "--users", "1",
                             "--out", str(tmp_path / "r"))
        assert code == EXIT_IO, (where, err)
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_users_sweep_finds_where_p99_crosses_the_bound(store: Path, cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "sweep", "users", "scenario", "ecommerce", "--store", str(store), *FAST,
                         "--values", "1,4", "--think-time-ms", "1", "--warmup-s", "0", "--queries", "20",
                         "--latency-bound-ms", "100000", "--out", str(tmp_path), "--json")
    assert code == 0, err
    record = json.loads(out)["sweep"]
    assert [p["value"] for p in record["points"]] == [1, 4]
    assert record["knee"] is not None  # a bound no point crosses: the knee is the fastest point
    code, out, err = cli("-q", "sweep", "users", "scenario", "ecommerce", "--store", str(store), *FAST,
                         "--values", "1", "--think-time-ms", "1", "--warmup-s", "0", "--queries", "10",
                         "--latency-bound-ms", "0.000001", "--out", str(tmp_path / "b"), "--json")
    assert code == 0, err
    record = json.loads(out)["sweep"]
    assert record["knee"] is None and record["knee_note"]  # every point crosses a bound of a nanosecond


def test_streaming_updates_during_a_run_are_recorded(store: Path, cli: Any, tmp_path: Path) -> None:
    """--update-every-s starts the updater with the run: every update is recorded (when, how long, the quality
    after), and the path's latency is split by whether an update ran meanwhile."""
    code, out, err = cli("-q", "run", "scenario", "ecommerce", "--store", str(store), *FAST, "--users", "2",
                         "--think-time-ms", "5", "--warmup-s", "0.5", "--queries", "40", "--update-every-s", "0.05",
                         "--update-sessions", "200", "--update-steps", "2", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, json_schema())
    upd = doc["method"]["ecommerce"]["updates"]
    assert upd["every_s"] == 0.05 and upd["sessions"] == 200 and upd["steps"] == 2
    assert upd["error"] is None and upd["stopped"] and upd["eval_lists"] > 0
    rows = upd["list"]
    assert len(rows) >= 2  # the warm-up alone lasts ten periods
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert r["seconds"] > 0 and r["sessions"] > 0 and 0 < r["ndcg10"] <= 1 and r["at_window_s"] is not None
    assert rows[0]["at_window_s"] < 0  # the first ones ran during the warm-up
    assert doc["metrics"]["ranker_ndcg10_streamed"]["value"] == rows[-1]["ndcg10"]
    assert doc["metrics"]["updates"]["value"] == sum(1 for r in rows if r["at_window_s"] >= 0)
    modules = doc["parts"]["module"]
    assert modules["update"]["seen"] == len(rows)
    split = sum(modules[n]["seen"] for n in ("whole_path/during_update", "whole_path/between_updates")
                if n in modules)
    assert split == modules["whole_path"]["seen"]
    cpu = doc["metrics"]["harness_cpu_share"]
    assert cpu["updater_cpu_s"] > 0 and 0 <= cpu["value"] <= 1
    code, _out, err = cli("report", str(tmp_path), "--html", str(tmp_path.parent / f"{tmp_path.name}.html"))
    assert code == 0, err
    page = (tmp_path.parent / f"{tmp_path.name}.html").read_text()
    assert "Streaming updates every 0.05 s" in page and "NDCG@10 after" in page and "· during_update" in page


def test_the_model_size_study_sweeps_the_preference_network(store: Path, cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "sweep", "pref_hidden", "scenario", "ecommerce", "--store", str(store), *FAST,
                         "--values", "8,64", "--users", "1", "--think-time-ms", "1", "--warmup-s", "0",
                         "--queries", "10", "--out", str(tmp_path), "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    models = [r["context"]["store"]["models"] for r in results]
    assert [m["pref_hidden"] for m in models] == [8, 64] and [m["folder"] for m in models] == ["models-pref8",
                                                                                            "models"]
    assert models[0]["sizes"]["preference"]["bytes"] < models[1]["sizes"]["preference"]["bytes"]
    assert all(r["parts"]["module"]["recommender/preference"]["seen"] == 10 for r in results)
    code, _out, err = cli("run", "scenario", "ecommerce", "--store", str(store), "--pref-hidden", "32",
                          "--users", "1", "--out", str(tmp_path / "none"))
    assert code == EXIT_IO and "--pref-hidden 32 --size-study" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "html").mkdir()
    code, _out, err = cli("report", str(tmp_path), "--html", str(tmp_path / "html" / "r.html"))
    assert code == 0, err
    page = (tmp_path / "html" / "r.html").read_text()
    section = page[page.index('<section id="ecommerce">'):]
    assert "Model size" in section and "models-pref8" in section


def test_html_breakdown_escapes_everything(closed_loop: dict[str, Any], tmp_path: Path, cli: Any) -> None:
    doc = json.loads(json.dumps(closed_loop))
    doc["params"]["store"] = "<script>alert(1)</script>"
    doc["method"]["ecommerce"]["failed_by_module"] = {"<b>ranker</b>": 2}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    code, _out, err = cli("report", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert '<section id="ecommerce">' in page and 'href="#ecommerce"' in page
    section = page[page.index('<section id="ecommerce">'):]
    section = section[:section.index("</section>")]
    assert "<script>" not in section and "&lt;script&gt;" in section and "&lt;b&gt;ranker" in section
    for name in ("searcher", "whole_path", "· preference", "AI (the models)", "ranker NDCG@10"):
        assert name in section


def test_a_many_sample_query_is_served_one_sample_per_item(store: Path) -> None:
    """LoadGen's Offline sends every sample in one query: each becomes its own item, so every worker serves."""
    from aibench.ecommerce.path import ShopPath
    from aibench.ecommerce.system import ShopSystem

    path = ShopPath(store, window=50)
    done: list[tuple[Any, Any, Any]] = []
    all_in = threading.Event()

    def on_complete(tokens: Any, responses: Any, issued: Any) -> None:
        done.append((list(tokens), responses, issued))
        if sum(len(t) for t, _, _ in done) == 6:
            all_in.set()

    try:
        system = ShopSystem(path, path.sample(6), workers=2, threads=1)
        system.start(on_complete, max_batch=1)
        system.submit(list("abcdef"), list(range(6)))
        assert all_in.wait(30)
        assert system.stop(timeout=30)
    finally:
        path.close()
    assert sorted(t for toks, _, _ in done for t in toks) == list("abcdef")
    assert all(len(toks) == 1 and issued[0][1] == 1 and responses[0] in ("ok", "no_hits")
               for toks, responses, issued in done)
    assert system.report().samples == 6
