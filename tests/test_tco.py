"""aibench tco: the reconstructed model against hand-computed cases, input provenance, the CLI over tiny
result files, every bad input's exit code, and the report section (rendered and escaped)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench.errors import UsageError
from aibench.report.html_report import render_html
from aibench.report.load import load_inputs
from aibench.results.schema import Result, metric
from aibench.results.store import write_result
from aibench.tco import model
from aibench.tco import params as tparams
from aibench.tco.inputs import parse_speedup, read_side

Cli = Callable[..., tuple[int, str, str]]


def write_run(out: Path, app: str, value: float | None, *, device: str = "cpu", kind: str = "component",
              primary: str = "samples_per_s", valid: bool = True, status: str = "ok",
              devices_param: str | None = None, split: tuple[float, float, float] | None = None,
              query_bytes: tuple[float, float] | None = None, resident: bool = False) -> Path:
    """A tiny result file through the project's writer: a Tonic app's run with one throughput figure (and,
    as scenario/djinn writes them, seconds of DNN, pre- and post-processing in ``parts.stage`` and bytes per
    query up and down)."""
    params: dict[str, Any] = {"batch": 4}
    if devices_param is not None:
        params.update(app=app, devices=devices_param)
    else:
        params["device"] = device
    name = "djinn" if kind == "scenario" else app
    metrics = {"samples_per_s": metric(value, "samples/s", "higher", statistic="rate", of=None,
                                       **({} if value is not None else {"unavailable": "test"})),
               "latency_early_stopping": metric(0.01, "s", "lower", statistic="early_stopping", of=None)}
    r = Result(benchmark={"id": f"{kind}/{name}", "kind": kind, "name": name, "source": "test",
                          "description": "test"},
               params=params, config_hash="ab" * 8, primary_metric=primary, metrics=metrics, status=status,
               load_scenario="offline", validity={"valid": valid, "result": "VALID" if valid else "INVALID"})
    if split is not None:
        from aibench.results.parts import part_entry

        r.parts["stage"] = {name: part_entry([t / 2, t / 2], "s", "request")
                            for name, t in zip(("server_compute", "client_pre", "client_post"), split, strict=True)}
    if query_bytes is not None:
        r.metrics["bytes_up_per_query"] = metric(query_bytes[0], "B", "lower")
        r.metrics["bytes_down_per_query"] = metric(query_bytes[1], "B", "lower")
    if resident:
        r.params["resident_inputs"] = 16
        r.context["inputs"] = {"mode": "resident", "rows": 16, "text": "inputs resident"}
    out.mkdir(parents=True, exist_ok=True)
    return write_result(r, out)


def plain(**over: float) -> dict[str, float]:
    """Parameters where only the purchase price counts, over 36 months at 0% (hand-computable)."""
    p = tparams.values(tparams.resolve())
    p.update(interest_rate=0.0, facility_capex_per_w=0.0, opex_per_w_month=0.0, electricity_per_kwh=0.0,
             maintenance_per_year=0.0, nic_price=0.0, query_bytes_imc=0.0)
    p.update(over)
    return p


# ------------------------------------------------------------------------------------------------ model
def test_monthly_cost_by_hand() -> None:
    p = tparams.values(tparams.resolve())
    c = model.monthly_cost(p, 1000.0, 100.0)
    r = 0.08 / 12
    assert c["capex"] == pytest.approx(1000 * r / (1 - (1 + r) ** -36))  # 31.34 $/month
    assert c["capex"] == pytest.approx(31.336, abs=1e-3)
    assert c["facility"] == pytest.approx(10 * 100 * r / (1 - (1 + r) ** -144))
    assert c["opex"] == pytest.approx(4.0)
    assert c["power"] == pytest.approx(0.1 * 1.1 * 730 * 0.067)  # 5.38 $/month
    assert c["maintenance"] == pytest.approx(1000 * 0.05 / 12)
    assert model.annuity(0.0, 36) == pytest.approx(1 / 36)
    # a loan shorter than the life: its payments spread over the life
    p.update(interest_rate=0.0, loan_years=1.0, server_lifetime_years=3.0)
    assert model.monthly_cost(p, 3600.0, 0.0)["capex"] == pytest.approx(100.0)


def ratio(p: dict[str, float], design: str, share: float, cpu: float = 10.0, acc: float = 100.0) -> float:
    w = {"imc": 1.0}
    got = model.build(p, model.DESIGN[design], share, w, {"imc": cpu}, {"imc": acc}).total
    return got / model.build(p, model.DESIGN["cpu-only"], share, w, {"imc": cpu}, {"imc": acc}).total


def test_degenerate_shares_by_hand() -> None:
    p = plain()
    for d in model.DESIGNS:  # 0% DNN: every design is the CPU-only datacenter
        assert ratio(p, d.name, 0.0) == pytest.approx(1.0)
    # 100% DNN, 10 q/s per CPU server, 100 q/s per GPU: 0.1 GPU per CPU-only server
    assert ratio(p, "integrated", 1.0) == pytest.approx((6864 + 12 * 3314) / 120 / 6864)  # 0.0566
    assert ratio(p, "disaggregated", 1.0) == pytest.approx((0.1 * 3314 + 0.1 / 12 * 1716) / 6864)  # 0.0504
    assert ratio(p, "integrated-pcie4", 1.0) == pytest.approx((8864 + 12 * 3314) / 120 / 6864)
    # 50%: half the CPU servers stay, plus half the GPU part
    assert ratio(p, "integrated", 0.5) == pytest.approx(0.5 + (6864 + 12 * 3314) / 240 / 6864)
    assert ratio(p, "disaggregated", 0.5) == pytest.approx(0.5 + (0.05 * 3314 + 0.05 / 12 * 1716) / 6864)


def test_bandwidth_bound_service_by_hand() -> None:
    # 10 q/s of 1.5875 GB each fill exactly one PCIe v3 bus (15.875 GB/s): 1 server, whatever the GPUs do
    p = plain(query_bytes_imc=1.5875e9)
    assert ratio(p, "integrated", 1.0) == pytest.approx((6864 + 12 * 3314) / 6864)
    # disaggregated: the link is min(bus, 16 x 1.25 GB/s x 0.8 = 16 GB/s) = the bus: 1 wimpy server, 0.1 GPU
    assert ratio(p, "disaggregated", 1.0) == pytest.approx((1716 + 0.1 * 3314) / 6864)
    # QPI (307.2 GB/s) lowers the bound to 15.875/307.2 of a server (still above the GPUs' 1/120), at the QPI price
    assert ratio(p, "integrated-qpi", 1.0) == pytest.approx(15.875 / 307.2 * (10864 + 12 * 3314) / 6864)


def test_dnn_share_keeps_the_rest_of_the_app_on_beefy_servers_by_hand() -> None:
    """dnn_share_imc = 0.5: half of the CPU servers the app had stay (its pre- and post-processing); the GPUs
    take the DNN queries as before. At 1 (the default) the model is the DNN service alone."""
    p = plain(dnn_share_imc=0.5)
    gpu_part_int, gpu_part_dis = (6864 + 12 * 3314) / 120, 0.1 * 3314 + 0.1 / 12 * 1716
    assert ratio(p, "integrated", 0.0) == pytest.approx(1.0) and ratio(p, "disaggregated", 0.0) == pytest.approx(1.0)
    assert ratio(p, "integrated", 1.0) == pytest.approx((0.5 * 6864 + gpu_part_int) / 6864)
    assert ratio(p, "disaggregated", 1.0) == pytest.approx((0.5 * 6864 + gpu_part_dis) / 6864)
    # 50% DNN: the non-DNN half, plus half of the app's half, plus half the GPU part
    assert ratio(p, "integrated", 0.5) == pytest.approx(0.5 + 0.25 + gpu_part_int / 2 / 6864)
    assert ratio(plain(dnn_share_imc=1.0), "integrated", 1.0) == pytest.approx(gpu_part_int / 6864)
    # a mix: only the apps in it count, each with its weight
    w = {"imc": 0.5, "pos": 0.5}
    p = plain(dnn_share_imc=0.5, dnn_share_pos=0.9, query_bytes_pos=0.0)
    pt = model.build(p, model.DESIGN["integrated"], 1.0, w, {"imc": 10.0, "pos": 10.0}, {"imc": 100.0, "pos": 100.0})
    assert pt.counts()["server"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.1)


def test_rounding_to_whole_servers() -> None:
    p = plain(datacenter_servers=100)
    # 100 CPU servers at 1% DNN: 1 CPU server of imc = 10 q/s = 0.1 GPU: one whole 12-GPU server
    assert ratio(p, "integrated", 0.01) == pytest.approx((99 * 6864 + 6864 + 12 * 3314) / (100 * 6864))
    assert ratio(p, "disaggregated", 0.01) == pytest.approx((99 * 6864 + 1716 + 3314) / (100 * 6864))


def test_crossings_located() -> None:
    grid = [i / 100 for i in range(101)]
    assert model.crossings(lambda s: s - 0.3051, grid) == [(pytest.approx(0.3051, abs=1e-5), "above")]
    assert model.crossings(lambda s: -s, grid) == [(0.0, "below")]  # equal at 0%, cheaper beyond
    assert model.crossings(lambda s: 1.0, grid) == []
    st = model.study(plain(), {"imc": 10.0}, {"imc": 100.0})
    assert {"mix": "MIXED", "design": "disaggregated", "versus": "cpu-only", "share": 0.0,
            "becomes": "cheaper"} in st.crossovers
    assert st.mixes["MIXED"]["missing"] == ["dig", "face", "asr", "pos", "chk", "ner"]
    assert "NLP" not in st.mixes  # no app of it has figures
    slow = model.study(plain(), {"imc": 10.0}, {"imc": 1.0})  # a GPU slower than a server: never cheaper
    assert all(c["becomes"] == "dearer" for c in slow.crossovers if c["versus"] == "cpu-only")


# ------------------------------------------------------------------------------------------- parameters
def test_params_sources_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("gpu_price = 2000\npue = 1.5\n[tco]\nwimpy_price = 1000\n")
    got = tparams.resolve(["gpu_price=2500"], [f])
    assert got["gpu_price"].value == 2500 and got["gpu_price"].source == "--param"
    assert got["pue"].value == 1.5 and got["pue"].source == f"file {f}"
    assert got["wimpy_price"].value == 1000
    assert got["server_price"].source == "paper Table 4" and got["server_price"].value == 6864
    assert got["maintenance_per_year"].source.startswith("paper Table 4 (printed '5%/month'")
    assert tparams.resolve()["query_bytes_imc"].value / 1024 == pytest.approx(604, abs=0.5)  # Table 3


@pytest.mark.parametrize("text, words", [
    ("gpu_prize=1", "unknown TCO parameter 'gpu_prize' (did you mean gpu_price"),
    ("gpu_price=-5", "must be zero or positive"),
    ("gpu_price=nan", "must be finite"), ("pue=inf", "must be finite"),
    ("gpus_per_server=0", "must be positive"), ("gpu_price=cheap", "must be a number"),
    ("gpu_price", "expected NAME=VALUE"),
    ("dnn_share_imc=1.5", "must be at most 1"), ("dnn_share_pos=0", "must be positive"),
])
def test_bad_params(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=None) as exc:
        tparams.resolve([text])
    assert words in str(exc.value)


def test_bad_speedup() -> None:
    assert parse_speedup(["20"]) == {"*": 20.0}
    assert parse_speedup(["imc=20,pos=7", "dig=3"]) == {"imc": 20.0, "pos": 7.0, "dig": 3.0}
    for bad in ("foo=3", "imc=0", "imc=-2", "x", "imc=nan", "imc=20,,pos=7"):
        with pytest.raises(UsageError):
            parse_speedup([bad])


# ------------------------------------------------------------------------------------------- inputs
def test_best_valid_figure_and_its_file(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    write_run(cpu, "imc", 10.0)
    best = write_run(cpu, "imc", 12.0)
    write_run(cpu, "imc", 99.0, valid=False)  # INVALID: never counted, however high
    write_run(cpu, "imc", 50.0, primary="latency_early_stopping")  # a SingleStream run: not a throughput
    write_run(cpu, "pos", 500.0, device="cuda:0")  # an accelerator run in the CPU folder
    side = read_side("cpu", [cpu])
    fig = side.figures["imc"]["samples/s"]
    assert (fig.value, fig.source, fig.provenance, fig.metric) == (12.0, str(best), "measured", "samples_per_s")
    assert "pos" not in side.figures
    note = side.note() or ""
    assert "1 INVALID run" in note and "primary metric is not a throughput" in note and "accelerator run" in note


def test_measured_dnn_share_and_bytes_replace_defaults_not_given_values(tmp_path: Path) -> None:
    """Per app the best run (by throughput) that has per-part figures gives the DNN share; bytes per query
    come from the CPU side, else the accelerator side; a resident-input run's bytes do not count (and on the
    CPU side its throughput does not either); --param wins over any of them."""
    from aibench.tco.inputs import measured_params

    cpu, acc = tmp_path / "cpu", tmp_path / "acc"
    write_run(cpu, "pos", 100.0, kind="scenario", devices_param="cpu", split=(1.0, 2.0, 1.0))  # share 0.25
    best = write_run(cpu, "pos", 200.0, kind="scenario", devices_param="cpu", split=(3.0, 0.5, 0.5),
                     query_bytes=(33600.0, 5000.0))  # share 0.75
    write_run(cpu, "pos", 900.0, kind="scenario", devices_param="cpu", split=(1.0, 0.0, 0.0),
              query_bytes=(150.0, 5000.0), resident=True)  # skipped: resident, on the CPU side
    write_run(cpu, "imc", 10.0)  # no parts, no bytes: defaults stay
    acc_imc = write_run(acc, "imc", 500.0, kind="scenario", devices_param="cuda:0", query_bytes=(618000.0, 8.0))
    write_run(acc, "pos", 9000.0, kind="scenario", devices_param="cuda:0", query_bytes=(100.0, 5000.0),
              resident=True)  # counts as the accelerator's throughput; its bytes do not
    cpu_side, acc_side = read_side("cpu", [cpu]), read_side("accelerator", [acc])
    assert cpu_side.figures["pos"]["samples/s"].value == 200.0 and "resident-input run" in (cpu_side.note() or "")
    assert acc_side.figures["pos"]["samples/s"].value == 9000.0
    got = measured_params(cpu_side, acc_side)
    assert got["dnn_share_pos"][0] == pytest.approx(0.75) and got["dnn_share_pos"][1].startswith(str(best))
    assert got["query_bytes_pos"][0] == 38600.0 and str(best) in got["query_bytes_pos"][1]
    assert got["query_bytes_imc"][0] == 618008.0 and str(acc_imc) in got["query_bytes_imc"][1]
    assert "dnn_share_imc" not in got
    resolved = tparams.with_measured(tparams.resolve(["dnn_share_pos=0.5"]), got)
    assert (resolved["dnn_share_pos"].value, resolved["dnn_share_pos"].source) == (0.5, "--param")
    assert resolved["query_bytes_pos"].value == 38600.0 and resolved["query_bytes_pos"].source.startswith("measured: ")
    assert resolved["dnn_share_imc"].value == 1.0 and resolved["dnn_share_imc"].source.startswith("chosen: 1")


def test_accelerator_figure_per_device(tmp_path: Path) -> None:
    acc = tmp_path / "acc"
    write_run(acc, "pos", 800.0, kind="scenario", devices_param="cuda:0,cuda:1")
    write_run(acc, "pos", 5000.0, device="cpu")  # a CPU run: not the accelerator's
    fig = read_side("accelerator", [acc]).figures["pos"]["samples/s"]
    assert (fig.value, fig.devices, fig.benchmark) == (400.0, 2, "scenario/djinn")


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    cpu, acc = tmp_path / "cpu", tmp_path / "acc"
    for app, v in (("imc", 10.0), ("dig", 40.0), ("face", 4.0), ("pos", 1000.0)):
        write_run(cpu, app, v)
        write_run(acc, app, v * 50, device="cuda:0")
    return cpu, acc


def test_cli_outputs_and_provenance(folders: tuple[Path, Path], tmp_path: Path, cli: Cli) -> None:
    cpu, acc = folders
    j, c = tmp_path / "tco.json", tmp_path / "tco.csv"
    code, out, err = cli("tco", str(cpu), "--accelerator", str(acc), "--param", "gpu_price=2500",
                         "--json", str(j), "--csv", str(c))
    assert code == 0, err
    assert "a reconstruction" in out and "measured: " + str(cpu) in out
    assert "gpu_price" in out and "--param" in out and "paper Table 4" in out
    assert "PARTIAL: no figure for asr chk ner" in out and "Crossovers" in out
    doc = json.loads(j.read_text())
    assert doc["schema"] == "aibench-tco" and doc["shares"] == list(range(101))
    assert doc["params"]["gpu_price"] == {"value": 2500.0, "unit": "$", "source": "--param"}
    assert doc["throughput"]["imc"]["accelerator"]["provenance"] == "measured"
    assert doc["throughput"]["imc"]["speedup_per_accelerator"] == pytest.approx(50.0)
    assert set(doc["mixes"]) == {"MIXED", "IMAGE", "NLP"}
    series = {(s["mix"], s["design"]): s for s in doc["series"]}
    assert series[("IMAGE", "cpu-only")]["tco"] == [1.0] * 101
    assert all(math.isclose(s["tco"][0], 1.0) for s in doc["series"])
    rows = c.read_text().splitlines()
    assert rows[0].startswith("mix,design,dnn_share_percent,tco_vs_cpu_only")
    assert len(rows) == 1 + 3 * len(model.DESIGNS) * 101


def test_cli_shows_measured_dnn_share_and_bytes_with_their_files(tmp_path: Path, cli: Cli) -> None:
    cpu = tmp_path / "cpu"
    run = write_run(cpu, "pos", 200.0, kind="scenario", devices_param="cpu", split=(3.0, 0.5, 0.5),
                    query_bytes=(33600.0, 5000.0))
    code, out, err = cli("tco", str(cpu), "--speedup", "10", "--json", "-")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["params"]["dnn_share_pos"]["value"] == pytest.approx(0.75)
    assert doc["params"]["dnn_share_pos"]["source"].startswith(f"measured: {run} (scenario/djinn; served")
    assert doc["params"]["query_bytes_pos"]["value"] == 38600.0
    assert doc["params"]["dnn_share_imc"]["source"].startswith("chosen")
    assert "dnn_share" in err and f"measured: {run}" in err  # the table goes to stderr with --json -
    # 100% NLP on integrated GPUs keeps a quarter of the POS servers (its pre- and post-processing)
    nlp = next(x for x in doc["series"] if x["mix"] == "NLP" and x["design"] == "integrated")
    assert nlp["counts"]["server"][-1] == pytest.approx(0.25)


def test_cli_speedup_is_given_not_measured(folders: tuple[Path, Path], cli: Cli) -> None:
    cpu, _ = folders
    code, out, err = cli("tco", str(cpu), "--speedup", "20,pos=7", "--json", "-")
    assert code == 0, err
    doc = json.loads(out)
    acc = doc["throughput"]["pos"]["accelerator"]
    assert acc["provenance"] == "given" and acc["value"] == pytest.approx(7000.0)
    assert acc["source"] == "--speedup pos=7 (over the CPU figure)"
    assert doc["throughput"]["imc"]["accelerator"]["source"] == "--speedup 20 (over the CPU figure)"
    assert "given: --speedup" in err  # the table went to stderr, the JSON to stdout


@pytest.mark.parametrize("extra, code, words", [
    ([], 2, "no accelerator figures"),
    (["--speedup", "5", "--accelerator", "ACC"], 2, "exclude each other"),
    (["--speedup", "5", "--param", "gpu_prise=3"], 2, "unknown TCO parameter"),
    (["--speedup", "5", "--param", "gpu_price=-1"], 2, "gpu_price must be zero or positive"),
    (["--speedup", "5", "--param", "pue=nan"], 2, "must be finite"),
    (["--speedup", "imc=x"], 2, "is not a number"),
    (["--speedup", "5", "--params", "MISSING.toml"], 4, "no such file"),
    (["--speedup", "5", "--params", "BAD.toml"], 2, "not valid TOML"),
    (["--speedup", "5", "--params", "NEG.toml"], 2, "wimpy_price must be zero or positive"),
    (["--speedup", "5", "--json", "INPUT"], 2, "one of this command's input files"),
])
def test_cli_bad_input(folders: tuple[Path, Path], tmp_path: Path, cli: Cli, extra: list[str], code: int,
                       words: str) -> None:
    cpu, acc = folders
    (tmp_path / "BAD.toml").write_text("gpu_price = = 3\n")
    (tmp_path / "NEG.toml").write_text("wimpy_price = -1716\n")
    an_input = next(cpu.iterdir())
    subst = {"ACC": str(acc), "MISSING.toml": str(tmp_path / "missing.toml"), "BAD.toml": str(tmp_path / "BAD.toml"),
             "NEG.toml": str(tmp_path / "NEG.toml"), "INPUT": str(an_input)}
    before = an_input.read_bytes()
    got, _out, err = cli("tco", str(cpu), *[subst.get(a, a) for a in extra])
    assert got == code, err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert an_input.read_bytes() == before


def test_cli_no_usable_figure_and_wrong_kind(tmp_path: Path, cli: Cli) -> None:
    micro = tmp_path / "micro"
    f = write_run(micro, "gemm", 3.0, kind="micro")
    code, _, err = cli("tco", str(micro), "--speedup", "10")
    assert code == 4 and "no usable throughput figure of a CPU" in err and "micro benchmark" in err
    code, _, err = cli("tco", str(f), "--speedup", "10")  # named directly: refused, not skipped
    assert code == 4 and "micro/gemm is not usable" in err and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("tco", str(empty), "--speedup", "10")[0] == 4
    cpu = tmp_path / "cpu"
    write_run(cpu, "imc", 10.0)
    code, _, err = cli("tco", str(cpu), "--accelerator", str(cpu))  # the same CPU runs are no accelerator
    assert code == 4 and "no usable throughput figure of an accelerator" in err


def test_list_params(cli: Cli) -> None:
    code, out, _ = cli("tco", "--list-params")
    assert code == 0 and "gpu_price" in out and "paper Table 4" in out and "chosen" in out


# ------------------------------------------------------------------------------------------------ report
def test_report_draws_tco_and_escapes(folders: tuple[Path, Path], tmp_path: Path, cli: Cli) -> None:
    cpu, acc = folders
    j = tmp_path / "tco.json"
    assert cli("tco", str(cpu), "--accelerator", str(acc), "--json", str(j))[0] == 0
    doc = json.loads(j.read_text())
    doc["notes"].append("<script>alert(1)</script>")
    doc["series"] = [s for s in doc["series"] if s["mix"] == "IMAGE"][:3]  # a small page: two plots
    doc["series"][1]["mix"] = "<img src=x onerror=alert(1)>"
    doc["series"].append({"mix": "MIXED", "design": "broken", "tco": ["x"]})
    doc["mixes"]["IMAGE"]["apps"] = 5  # a damaged field: drawn without it, not an internal error
    j.write_text(json.dumps(doc))
    page = render_html(load_inputs([j]))
    assert 'id="tco"' in page and "reconstruct" in page
    assert page.count('data-plot="tco"') == 2  # IMAGE, and the series renamed above
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "1 malformed series skipped" in page
    assert "Crossovers" in page and "paper Table 4" in page
    code, _out, err = cli("report", str(j))  # no output asked: the summary, no refusal of the TCO file
    assert code == 0, err
    assert cli("compare", str(j), str(j))[0] == 4  # other commands refuse it, one line
