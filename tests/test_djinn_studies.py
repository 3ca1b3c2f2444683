"""DjiNN's studies as sweeps over scenario/djinn at a tiny size (app pos, 7-word sentences, 0.2 s runs), and
the report's DjiNN studies section and CSV rows drawn from them: batch knee (Fig. 7), instances with the
device sharing said (Figs. 8/9), devices refused or planned (Figs. 11/12), DNN share (Fig. 4), bandwidth
against reference links (Fig. 13)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench.cli import main

TINY = ["--app", "pos", "--num-samples", "3", "--words", "7", "--data", "synthetic", "--duration-s", "0.2",
        "--min-queries", "1"]


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(["-q", *args])
    return exc.value.code if isinstance(exc.value.code, int) else 1


def _docs(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return [d for d in docs if d.get("schema") == "aibench-result"], [d for d in docs if d.get("schema") ==
                                                                      "aibench-sweep"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding a batch sweep with a knee, an instances sweep, and a component --breakdown run."""
    out = tmp_path_factory.mktemp("studies")
    assert _run("sweep", "batch", "scenario", "djinn", *TINY, "--values", "1,3", "--latency-bound-ms", "10000",
                "--out", str(out / "batch")) == 0
    # instances swept with a knee: the batch latency uses the point's own batch (3), not the swept value
    assert _run("sweep", "instances", "scenario", "djinn", *TINY, "--batch", "3", "--values", "1,2",
                "--latency-bound-ms", "10000", "--out", str(out / "instances")) == 0
    assert _run("run", "component", "pos", "--batch", "3", "--num-samples", "3", "--words", "7", "--data",
                "synthetic", "--duration-s", "0.2", "--min-queries", "1", "--breakdown",
                "--out", str(out / "breakdown")) == 0
    return out


def test_batch_sweep_names_the_knee(studies: Path) -> None:
    results, (record,) = _docs(studies / "batch")
    assert record["param"] == "batch" and record["status"] == "complete"
    assert record["knee"] is not None and record["knee"]["value"] in (1, 3)
    assert record["knee"]["latency_metric"] == "batch_latency"
    for r in results:
        m = r["metrics"]
        assert m["batch_latency"]["value"] == pytest.approx(r["params"]["batch"] / m["samples_per_s"]["value"])


def test_instances_sweep_says_how_instances_share_the_device(studies: Path) -> None:
    results, (record,) = _docs(studies / "instances")
    assert [p["status"] for p in record["points"]] == ["ok", "ok"]
    by_n = {r["params"]["instances"]: r for r in results}
    for n, r in by_n.items():
        sharing = r["method"]["djinn"]["instances"]
        assert sharing["mode"] == "cpu-split-cores" and sharing["instances_per_device"] == n
        assert r["context"]["device_sharing"]["text"].startswith(f"{n} CPU instance")
        assert len([p for p in r["method"]["djinn"]["server_processes"] if p["role"].startswith("instance")]) == n
        # not the swept value: the request batch (3)
        rate = r["metrics"]["samples_per_s"]["value"]
        assert r["metrics"]["batch_latency"]["value"] == pytest.approx(3 / rate)


def test_sweep_table_shows_the_sharing(studies: Path) -> None:
    from aibench.results.schema import Result
    from aibench.sweep.display import sharing_text

    results, _ = _docs(studies / "instances")
    texts = [sharing_text(Result.from_dict(d)) for d in results]
    assert all(t and "split" in t for t in texts)


def test_device_sweep_refused_without_gpus(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--out", str(tmp_path))
    assert code == 3 and "needs two or more" in err and err.count("\n") == 1
    code, _, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cuda:0", "--out", str(tmp_path))
    assert code == 3 and "needs two or more" in err and err.count("\n") == 1
    code, _, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cpu:2", "--out", str(tmp_path))
    assert code == 2 and "sweep instances" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_device_sweep_plans_one_server_per_point(cli: Callable[..., tuple[int, str, str]], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With GPUs (pretended: a dry run measures nothing), each point is scenario/djinn with its own devices and
    instances parameters, not a pool of workers."""
    import aibench.sweep.cli as sweep_cli

    monkeypatch.setattr(sweep_cli, "_cuda_count", lambda text: 4)
    code, out, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cuda:0,1,2", "--dry-run",
                         "--out", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert "--devices=cuda:0 " in lines[0] and "--devices=cuda:0,1 " in lines[1]
    assert "--devices=cuda:0,1,2 " in lines[2] and all("--instances=1 " in ln for ln in lines[:3])
    code, out, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cuda:0",
                         "--instances-per-device", "1,2,4", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    assert [("--instances=1 " in ln, "--instances=2 " in ln, "--instances=4 " in ln)
            for ln in out.splitlines()[:3]] == [(True, False, False), (False, True, False), (False, False, True)]
    # Fig. 12: the same device sweep with inputs resident on the devices
    code, out, err = cli("sweep", "gpus", "scenario", "djinn", *TINY, "--devices", "cuda:0,1", "--resident-inputs",
                         "64", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    assert all("--resident-inputs=64" in ln for ln in out.splitlines()[:2])


def test_instance_sharing_modes() -> None:
    from aibench.workloads.scenario._served import instance_sharing

    assert instance_sharing(2, ["cpu"], 1, 2, False)["mode"] == "cpu-split-cores"
    assert instance_sharing(4, ["cuda:0"], 1, 2, False)["mode"] == "gpu-time-shared"
    assert "without MPS" in instance_sharing(4, ["cuda:0"], 1, 2, False)["text"]
    assert instance_sharing(4, ["cuda:0", "cuda:1"], 1, 2, True)["mode"] == "gpu-mps"


def test_effective_batch() -> None:
    from aibench.results.schema import Result
    from aibench.sweep.analysis import add_batch_latency, effective_batch

    r = Result(benchmark={"id": "x/y"}, params={"batch": 0}, config_hash="h")
    r.metrics["samples_per_s"] = {"value": 100.0, "unit": "samples/s"}
    assert effective_batch(r, r.params) is None
    add_batch_latency(r, effective_batch(r, r.params))
    assert r.metrics["batch_latency"]["value"] is None and "not recorded" in r.metrics["batch_latency"]["unavailable"]
    r.method["calibration"] = {"batch": 16}
    assert effective_batch(r, r.params) == 16


def test_report_draws_every_study(studies: Path, cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    page, table = tmp_path / "r.html", tmp_path / "r.csv"
    code, _, err = cli("report", str(studies), "--html", str(page), "--csv", str(table))
    assert code == 0, err
    html = page.read_text()
    section = html[html.index('<section id="studies">'):]
    section = section[:section.index("</section>")]
    for heading in ("Batch size per application (Fig. 7)", "Instances and devices (Figs. 8/9, 11/12)",
                    "DNN share of each application (Fig. 4)", "Bandwidth per query and at the measured rate"):
        assert heading in section
    assert 'data-plot="djinn-share"' in section and 'data-plot="djinn-bandwidth"' in section
    assert "split 2 core" in section or "split 1 core" in section or "CPU instance" in section
    assert "PCIe v3 x16" in section and "400GbE" in section
    assert "no sweep with inputs resident" in section and "--resident-inputs N" in section  # Fig. 12: how
    assert "component/pos" in section  # the --breakdown run's DNN share
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    shares = [r for r in rows if r["metric"] == "study.dnn_share"]
    assert shares and all(0 < float(r["value"]) <= 1 for r in shares)
    assert {r["benchmark"] for r in shares} == {"scenario/djinn", "component/pos"}
    assert any(r["metric"] == "study.link_share[10GbE]" for r in rows)
    assert all(r["primary"] == "False" for r in rows if r["metric"].startswith("study."))


def test_report_draws_resident_beside_transferred(studies: Path, cli: Callable[..., tuple[int, str, str]],
                                                  tmp_path: Path) -> None:
    """The same instances sweep with inputs transferred (Fig. 11) and resident (Fig. 12): one plot, and a
    table pairing the points. The resident sweep is the fixture's, relabelled (its server is the same)."""
    results, _ = _docs(studies / "instances")
    for doc in results:
        (tmp_path / f"t-{doc['run_id']}.json").write_text(json.dumps(doc))
        res = json.loads(json.dumps(doc))
        res["run_id"] = doc["run_id"][:-4] + "beef"
        res["context"]["sweep"]["id"] = "resident-sweep"
        res["params"]["resident_inputs"] = 16
        res["context"]["inputs"] = {"mode": "resident", "rows": 16, "text": "inputs resident"}
        res["metrics"]["samples_per_s"]["value"] *= 2
        (tmp_path / f"r-{res['run_id']}.json").write_text(json.dumps(res))
    page = tmp_path / "r.html"
    code, _, err = cli("report", str(tmp_path), "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    section = html[html.index('<section id="studies">'):]
    assert "inputs transferred (Fig. 11) and resident (Fig. 12)" in section
    assert 'data-plot="djinn-resident-pos-instances"' in section
    assert section.count("2.00x") >= 2  # resident / transferred at each of the two points
    assert "no host-to-device copy to remove" in section and "no sweep with inputs resident" not in section
    # the resident runs (twice the samples/s here) are not the application's: Figs. 4 and 13 keep the others
    from aibench.report.djinn_studies import bandwidth, dnn_split
    from aibench.results.schema import Result

    for path in tmp_path.glob("r-*.json"):
        r = Result.from_dict(json.loads(path.read_text()))
        assert dnn_split(r) is None and bandwidth(r, []) is None


def test_report_links_override_and_refusal(studies: Path, cli: Callable[..., tuple[int, str, str]],
                                           tmp_path: Path) -> None:
    links = tmp_path / "links.json"
    links.write_text(json.dumps({"links": [{"name": "<b>my link</b>", "bytes_per_s": 1e6, "efficiency": 0.5}]}))
    page = tmp_path / "r.html"
    code, _, err = cli("report", str(studies / "instances"), "--html", str(page), "--links", str(links))
    assert code == 0, err
    html = page.read_text()
    assert "&lt;b&gt;my link&lt;/b&gt;" in html and "<b>my link" not in html and "PCIe v3" not in html
    for bad in ({"links": []}, {"links": [{"name": "x", "bytes_per_s": -1}]},
                {"links": [{"name": "x", "bytes_per_s": 1, "efficiency": 2}]}):
        links.write_text(json.dumps(bad))
        code, _, err = cli("report", str(studies), "--html", str(tmp_path / "s.html"), "--links", str(links))
        assert code == 2 and "--links" in err and err.count("\n") == 1
    links.write_text("{not json")
    code, _, err = cli("report", str(studies), "--csv", str(tmp_path / "s.csv"), "--links", str(links))
    assert code == 2 and not (tmp_path / "s.csv").exists()
