"""``aibench report``: loading, the CSV, the HTML page and the github-action-benchmark export, from synthetic
result files with hostile names (tests/report_fixtures.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench.errors import ResultIOError
from aibench.report.csv_export import render_csv
from aibench.report.github import github_entries
from aibench.report.html_report import render_html
from aibench.report.load import load_inputs
from aibench.results.store import write_result
from tests.report_fixtures import ANSI, FORMULA, LG_ID, MICRO_ID, SQL, SWEEP_ID, UNICODE, XSS, loadgen, write_fixture

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    written = write_fixture(root / "results")
    written["dir"] = root / "results"
    return written


@pytest.fixture(scope="module")
def page(fixture_dir: dict[str, Any]) -> str:
    inputs = load_inputs([fixture_dir["dir"], fixture_dir["comparison"], fixture_dir["gate"]])
    return render_html(inputs, title=f"title {XSS}")


# ------------------------------------------------------------------------------------------------ loading
def test_folder_loading_classifies_and_skips(fixture_dir: dict[str, Any]) -> None:
    inputs = load_inputs([fixture_dir["dir"]])
    assert len(inputs.results) == len(fixture_dir["results"])
    assert {s["id"] for s in inputs.sweeps} == {"threads-1", "batch-1"}
    assert not inputs.comparisons
    # foreign, list, broken, other schema version; LoadGen's *.loadgen folder is not even walked
    assert len(inputs.skipped) == fixture_dir["skipped"]
    assert not any(".loadgen" in s.path for s in inputs.skipped)
    note = inputs.note()
    assert note is not None and "\n" not in note and "skipped 4" in note


def test_duplicates_and_order(fixture_dir: dict[str, Any]) -> None:
    first = fixture_dir["results"][0]
    inputs = load_inputs([fixture_dir["dir"], first])  # the same file twice: read once
    assert len(inputs.results) == len(fixture_dir["results"]) and inputs.duplicates == 0
    ids = [r.id for r in inputs.results]
    assert ids == sorted(ids)


@pytest.mark.parametrize("content, message", [
    ('{"hello": 1}', "not an aibench file"),
    ("{not json", "not valid JSON"),
    ('{"schema": "aibench-result", "schema_version": 7}', "version 7"),
    ('{"schema": "aibench-sweep", "schema_version": 1, "id": 3}', "malformed sweep record"),
    ('{"schema": "aibench-comparison", "schema_version": 1, "pairs": [1]}', "malformed comparison"),
    ('{"schema": "aibench-result", "schema_version": 1, "benchmark": {"id": "a/b"}, "params": {}, '
     '"config_hash": "x", "metrics": {"m": {"value": "fast"}}}', "damaged aibench result"),
])
def test_named_bad_file_is_exit_4(tmp_path: Path, cli: Cli, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ResultIOError, match=message):
        load_inputs([bad])
    code, _, err = cli("report", str(bad), "--html", str(tmp_path / "r.html"))
    assert code == 4 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_missing_and_empty_paths(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("report", str(tmp_path / "nope"))
    assert code == 4 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.json").write_text("[]")
    code, _, err = cli("report", str(tmp_path / "empty"))
    assert code == 4 and "no aibench result files" in err


# ------------------------------------------------------------------------------------------------ CSV
def test_csv_one_row_per_result_and_metric(fixture_dir: dict[str, Any]) -> None:
    inputs = load_inputs([fixture_dir["dir"]])
    rows = list(csv.DictReader(io.StringIO(render_csv(inputs))))
    expected = sum(max(1, len(r.metrics)) for r in inputs.results)
    assert len(rows) == expected
    head = list(rows[0])
    for col in ("benchmark", "load_scenario", "metric", "value", "unit", "statistic", "of", "validity", "machine",
                "param.batch", "sweep.id", "sweep.value"):
        assert col in head
    assert head.index("param.batch") > head.index("error")
    # hostile names survive as data (the csv module quotes them); formulas are defused
    assert {MICRO_ID, LG_ID, SWEEP_ID} <= {r["benchmark"] for r in rows}
    micro_rows = [r for r in rows if r["benchmark"] == MICRO_ID]
    assert all(r["param.note"] == SQL for r in micro_rows)
    assert all(r["param.formula"] == "'" + FORMULA for r in micro_rows)
    # a failed run is one row with its error; an INVALID run says so on every row; unmeasured has the reason
    failed = [r for r in micro_rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["metric"] == "" and "exploded" in failed[0]["error"]
    invalid = [r for r in rows if r["run_id"] == inputs.results[[x.run_id for x in inputs.results].index(
        next(x.run_id for x in inputs.results if x.validity and not x.validity["valid"]))].run_id]
    assert invalid and all(r["validity"] == "INVALID" for r in invalid)
    energy = [r for r in rows if r["metric"] == "energy_per_sample"]
    assert energy and all(r["value"] == "" and "no_powercap" in r["unavailable"] for r in energy)
    primary = [r for r in rows if r["primary"] == "True"]
    assert len(primary) == len(inputs.results) - 1  # the failed run has no metrics
    # integers stay integers where other benchmarks leave the column blank
    assert {r["param.batch"] for r in micro_rows} == {"1", "2", "4", "8", "64"}
    assert {r["sweep.value"] for r in rows if r["sweep.id"] == "threads-1"} == {"1", "2"}


# ------------------------------------------------------------------------------------------------ HTML
def test_html_is_self_contained_and_escaped(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()  # nothing executable, hostile names included
    assert XSS not in page and html_escaped(XSS) in page
    assert "onerror" not in page and "<b>9000" not in page
    assert "\x1b" not in page  # terminal escapes from an error message
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    # no external resource: the only URLs left are the SVG/XLink namespace names inside inline <svg>
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>)]*", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    links = re.findall(r"\b(?:src|href)\s*=\s*[\"']([^\"']*)", page)
    assert links and all(link.startswith("#") for link in links), links
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert "plot could not be drawn" not in page
    assert len(page.encode()) < 600_000  # inline SVG keeps the page small


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_html_has_each_plot(page: str) -> None:
    kinds = re.findall(r'<figure class="plot" data-plot="(\w+)">\s*<svg', page)
    assert kinds.count("batch") == 2  # the micro and the LoadGen benchmark, both over batch 1..8
    assert kinds.count("latency") == 1 + 2 + 2 + 4  # every LoadGen run, the INVALID one included
    assert kinds.count("sweep") == 2
    assert kinds.count("energy") == 1
    assert kinds.count("kernel") == 1  # the micro results' kept block times
    assert kinds.count("comparison") == 2  # the comparison file and the gate file
    for section in ("summary", "kernels", "batch", "latency", "sweeps", "energy", "comparisons", "failures",
                    "environment"):
        assert f'<section id="{section}">' in page


def test_html_invalid_never_a_plain_number(page: str) -> None:
    row = next(line for line in page.split("<tr>") if "batch=8" in line and "offline" in line
               and SQL.replace('"', "&quot;") in line)
    assert "INVALID (1414 samples/s)" in row
    assert ">INVALID<" in page  # the validity column
    assert "INVALID · " in page  # the CDF title of that run, in the SVG


def test_html_sweep_knee_failures_and_energy(page: str) -> None:
    assert "knee (threads=2)" in page and "knee (batch=4)" in page
    assert "latency bound 50 ms" in page
    assert "failed point (no result)" in page and f"OOM {html_escaped(XSS)}" in page
    assert "speedup (x)" in page and "efficiency" in page
    assert "unavailable: energy_per_sample: no energy counter: no_powercap (9 runs)" in page
    assert "energy per call (mJ)" in page


def test_html_comparison_and_environment(page: str) -> None:
    assert "×1.2 worse" in page and "×1.04 inconclusive" in page and "refused" in page
    assert 'outcome <span class="regression">regression</span>' in page
    assert "per-round ratios" in page  # the gate's rounds
    assert "0123456789ab+dirty" in page and "0.50 → 0.70" in page
    assert f"host{html_escaped(XSS)}" in page
    assert UNICODE in page


def test_html_deterministic_ids_do_not_collide(page: str) -> None:
    ids = re.findall(r'\bid="([^"]+)"', page)
    clip_ids = [i for i in ids if re.fullmatch(r"p[0-9a-f]{10}", i)]
    assert clip_ids and len(clip_ids) == len(set(clip_ids))


def test_tex_in_a_name_is_drawn_as_text(fixture_dir: dict[str, Any]) -> None:
    from aibench.report import plots

    svg = plots.latency_cdf("$\\frac{a}{b}$ ^_{", [0.001, 0.002, 0.003], [(50.0, 0.002)])
    assert "$\\frac{a}{b}$ ^_{" in svg


# ------------------------------------------------------------------------------------------------ github
def test_github_export(fixture_dir: dict[str, Any]) -> None:
    inputs = load_inputs([fixture_dir["dir"]])
    with pytest.raises(Exception, match="point both ways"):
        github_entries(inputs)
    direction, entries, notes = github_entries(inputs, "smaller")
    assert direction == "smaller" and len(entries) == 4  # micro time_median at batch 1, 2, 4, 8
    assert all(set(e) <= {"name", "unit", "value", "range", "extra"} for e in entries)
    assert all(e["unit"] == "s" and isinstance(e["value"], float) for e in entries)
    assert all(e["range"].startswith("± ") for e in entries)
    assert len({e["name"] for e in entries}) == 4 and all("time_median" in e["name"] for e in entries)
    assert any("bigger-is-better" in n for n in notes) and any("failed run" in n for n in notes)
    direction, entries, notes = github_entries(inputs, "bigger")
    names = [e["name"] for e in entries]
    assert not any("batch=8, stage" in n and LG_ID in n for n in names)  # INVALID run left out
    assert any("INVALID" in n for n in notes)
    # the same configuration run twice: one entry, the later run, with a note
    assert len(names) == len(set(names))
    assert any("older run" in n for n in notes)
    _, p99, _ = github_entries(inputs, metrics=["latency_p99"])
    assert p99 and all("latency_p99" in e["name"] and e["unit"] == "s" for e in p99)


def test_github_cli(fixture_dir: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "gh.json"
    code, stdout, err = cli("report", str(fixture_dir["dir"]), "--github-benchmark", str(out),
                            "--github-benchmark-direction", "bigger")
    assert code == 0 and "customBiggerIsBetter" in stdout
    data = json.loads(out.read_text())
    assert isinstance(data, list) and data and all(d["value"] > 0 for d in data)
    code, _, err = cli("report", str(fixture_dir["dir"]), "--github-benchmark", str(tmp_path / "x.json"))
    assert code == 2 and "--github-benchmark-direction" in err and not (tmp_path / "x.json").exists()
    code, _, err = cli("report", str(fixture_dir["dir"]), "--github-benchmark", str(tmp_path / "x.json"),
                       "--github-benchmark-metric", "no_such_metric")
    assert code == 2 and "no_such_metric" in err
    code, _, err = cli("report", str(fixture_dir["dir"]), "--github-benchmark-direction", "smaller")
    assert code == 2 and "need --github-benchmark" in err


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_named_files_only(fixture_dir: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "out"
    before = sorted(p.name for p in fixture_dir["dir"].iterdir())
    code, _, err = cli("report", str(fixture_dir["dir"]), "--html", str(out / "r.html"))
    assert code == 4 and "does not exist" in err and not out.exists()  # an output's folder is never made
    out.mkdir()
    code, stdout, err = cli("report", str(fixture_dir["dir"]), str(fixture_dir["comparison"]),
                            "--html", str(out / "r.html"), "--csv", str(out / "r.csv"), "--title", "T<i>")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.html"]  # no temporary files left
    assert sorted(p.name for p in fixture_dir["dir"].iterdir()) == before  # inputs untouched
    assert "wrote" in stdout and "rows" in stdout and "KiB" in stdout
    assert "skipped 4" in err and len(err.strip().splitlines()) == 1
    assert "<title>T&lt;i&gt;</title>" in (out / "r.html").read_text()
    # a second report replaces the files the user named, atomically
    code, _, _ = cli("report", str(fixture_dir["dir"]), "--csv", str(out / "r.csv"))
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["r.csv", "r.html"]


def test_cli_refuses_to_overwrite_an_input(fixture_dir: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    victim = fixture_dir["results"][0]
    text = victim.read_text()
    code, _, err = cli("report", str(fixture_dir["dir"]), "--csv", str(victim))
    assert code == 2 and "input" in err and victim.read_text() == text
    code, _, err = cli("report", str(fixture_dir["dir"]), "--csv", str(tmp_path / "a"), "--html", str(tmp_path / "a"))
    assert code == 2 and "same file" in err
    code, _, err = cli("report", str(fixture_dir["dir"]), "--html", str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_cli_summary_without_outputs(fixture_dir: dict[str, Any], cli: Cli) -> None:
    code, out, err = cli("report", str(fixture_dir["dir"]))
    assert code == 0
    assert "--html FILE" in out and "--csv FILE" in out and "--github-benchmark FILE" in out
    assert f"{LG_ID}: 3 run(s)" in out and "INVALID" in out
    assert "\x1b" not in out + err


def test_cli_default_path_is_results(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from aibench.results.store import write_result

    monkeypatch.chdir(tmp_path)
    write_result(loadgen(2, "2026-01-01T00:00:00.000Z"), tmp_path / "results")
    code, out, _ = cli("report")
    assert code == 0 and "1 result(s)" in out


def test_terminal_escapes_are_neutralised(tmp_path: Path, cli: Cli) -> None:
    from aibench.results.store import write_result

    r = loadgen(2, "2026-01-01T00:00:00.000Z", bench_id=f"component/x{ANSI}")
    write_result(r, tmp_path)
    code, out, _ = cli("report", str(tmp_path))
    assert code == 0 and "\x1b" not in out and "?[31mred" in out


def test_report_never_imports_torch(fixture_dir: dict[str, Any], tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom aibench.cli import main\n"
        f"try:\n    main(['report', {str(fixture_dir['dir'])!r}, '--html', {str(tmp_path / 'r.html')!r}, "
        f"'--csv', {str(tmp_path / 'r.csv')!r}])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-ABSENT', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "TORCH-ABSENT" in proc.stderr, proc.stderr[-2000:]


def test_ill_typed_free_form_fields_degrade_to_blanks(tmp_path: Path, cli: Cli) -> None:
    """Wrong types where the schema leaves a section free-form (load, context, the machine's fields, extra
    metric keys) still report: blanks, not a crash or a traceback."""
    doc = loadgen(4, "2026-01-01T00:00:00.000Z").to_dict()
    doc.update(load={"loadavg_start": "x"}, context={"sweep": {"id": 1}, "task": [1]}, method={"threads": "x"},
               machine={"machine": {"hostname": ["h"], "logical_cpus": "many"},
                        "software": {"gpus": "many", "env": []}})
    doc["metrics"]["samples_per_s"] = {"value": 1e308, "unit": "samples/s", "direction": "higher", "valid": "x",
                                       "statistic": "rate", "of": None}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    assert len(load_inputs([path]).results) == 1
    code, _, err = cli("report", str(path), "--html", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"))
    assert code == 0, err
    assert "plot could not be drawn" not in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("change, field", [
    ({"status": 5}, "status"), ({"load_scenario": [1]}, "load_scenario"), ({"validity": "x"}, "validity"),
    ({"error": "boom"}, "error"), ({"primary_metric": 7}, "primary_metric"), ({"noisy": "yes"}, "noisy"),
    ({"started_at": 3}, "started_at"), ({"duration_s": "x"}, "duration_s"), ({"samples": {"time": 5}}, "samples.time"),
    ({"params": {"batch": "x", "n": [1, {"a": 2}]}}, "params.n"), ({"code": {"git_commit": 5}}, "code."),
    ({"code": []}, "code"), ({"machine": {"machine": 3, "software": {}}}, "machine.machine"),
    ({"parts": {"stage": {"dnn": {"unit": "s", "values": [1], "summary": 3}}}}, "parts.stage.dnn.summary"),
    ({"parts": {"rank": {}}}, "parts.rank"),
    ({"metrics": {"x": {"value": 1, "unit": "s", "direction": "lower", "statistic": "p42", "of": None}}},
     "metrics.x.statistic"),
    ({"metrics": {"x": {"value": 1, "unit": "s", "direction": "lower", "statistic": "p99", "of": "time"}}},
     "metrics.x.of"),
    ({"metrics": {"x": {"value": 1, "unit": "s", "direction": "lower", "statistic": "median", "of": "samples.t",
                        "inverse_of": "median"}}}, "metrics.x.statistic"),
])
def test_ill_typed_schema_fields_are_damaged(tmp_path: Path, cli: Cli, change: dict[str, Any], field: str) -> None:
    """Wrong types where the schema says what a field is: a damaged result, named in one line (exit 4), or
    skipped with a note inside a folder while the rest is reported."""
    doc = loadgen(4, "2026-01-01T00:00:00.000Z").to_dict() | change
    folder = tmp_path / "res"
    folder.mkdir()
    path = folder / "odd.json"
    path.write_text(json.dumps(doc))
    code, _, err = cli("report", str(path))
    assert code == 4 and "damaged aibench result" in err and field in err and len(err.strip().splitlines()) == 1
    write_result(loadgen(8, "2026-01-01T00:01:00.000Z"), folder)
    code, out, err = cli("report", str(folder))
    assert code == 0 and "1 result(s)" in out and "skipped 1 damaged aibench file(s)" in err and field in err


def test_device_gain_section(tmp_path: Path) -> None:
    """CPU and GPU runs of one benchmark that differ only in ``device`` give the Minsky-style speed-up."""
    from aibench.report.html_report import _device_section
    from tests.report_fixtures import micro

    cpu = micro(4, "2026-01-01T00:00:00Z")
    gpu = micro(4, "2026-01-01T00:01:00Z")
    gpu.params["device"] = "cuda:0"
    gpu.metrics["time_median"]["value"] = cpu.metrics["time_median"]["value"] / 8
    other = micro(8, "2026-01-01T00:02:00Z")  # a different batch: not paired
    html_text = _device_section([cpu, gpu, other])
    assert 'data-plot="devices"' in html_text and "8×" in html_text and "cuda:0" in html_text
    assert "&lt;script&gt;" in html_text and "<script>" not in html_text
    assert _device_section([cpu, other]) == ""


def test_damaged_result_in_a_folder_is_named(tmp_path: Path) -> None:
    """A result file cut short is named as damaged, not lumped with foreign JSON."""
    from aibench.report.load import load_inputs

    (tmp_path / "micro-gemm-cut.json").write_text('{"schema": "aibench-result", "schema_version": 1, "run')
    (tmp_path / "other.json").write_text('{"hello": 1}')
    note = load_inputs([tmp_path]).note() or ""
    assert "1 damaged aibench file(s)" in note and "micro-gemm-cut.json" in note
    assert "1 JSON file(s) that are not aibench results" in note
