"""The command line as a user types it: output, result files, and one-line errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from aibench.errors import EXIT_FAILED, EXIT_IO, EXIT_UNAVAILABLE, EXIT_USAGE
from aibench.results.schema import json_schema
from tests.conftest import TINY_FLAGS

GEMM = ["run", "micro", "gemm", "--m", "8", "--n", "8", "--k", "8", *TINY_FLAGS]


def test_list_and_wildcards(cli) -> None:
    code, out, _ = cli("list")
    assert code == 0 and "micro/gemm" in out and "micro/softmax" in out
    code, out, _ = cli("list", "micro/*pool*", "--json")
    assert code == 0 and {b["id"] for b in json.loads(out)} == {"micro/maxpool", "micro/avgpool"}
    code, out, _ = cli("list", "--kind", "micro", "--json")
    assert len(json.loads(out)) >= 13


def test_info_shows_params_metrics_and_sets(cli) -> None:
    code, out, _ = cli("info", "micro/gemm")
    assert code == 0 and "--m" in out and "GFLOP/s" in out and "deepbench-inference-server" in out
    assert "example: aibench run micro gemm --device cpu" in out
    # a scenario that places its own system has no --device: its example must not give one
    code, out, _ = cli("info", "scenario/neurosurgeon")
    assert code == 0 and "example: aibench run scenario neurosurgeon\n" in out
    code, out, _ = cli("info", "micro", "conv", "--json")
    doc = json.loads(out)
    assert doc["id"] == "micro/conv" and doc["sets"]["deepbench-training"] > 0
    assert {p["name"] for p in doc["params"]} >= {"batch", "kernel_h", "pass", "device", "dtype"}


def test_run_writes_a_schema_valid_result_and_prints_a_table(cli, tmp_path: Path) -> None:
    code, out, _ = cli(*GEMM, "--out", str(tmp_path))
    assert code == 0, out
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    jsonschema.validate(doc, json_schema())
    assert doc["params"]["m"] == 8 and doc["benchmark"]["id"] == "micro/gemm"
    assert "micro/gemm" in out and "GFLOP/s" in out and "results written to" in out


def test_run_json_goes_to_stdout(cli, tmp_path: Path) -> None:
    code, out, err = cli(*GEMM, "--out", str(tmp_path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["metrics"]["time_median"]["value"] > 0
    assert "micro/gemm" in err  # the table moved to stderr


def test_kind_slash_name_and_pattern_forms(cli, tmp_path: Path) -> None:
    code, out, _ = cli("run", "micro/*pool", "--batch", "1", "--channels", "2", "--height", "6", "--width", "6",
                       *TINY_FLAGS, "--out", str(tmp_path), "--json")
    assert code == 0
    assert {d["benchmark"]["id"] for d in json.loads(out)} == {"micro/maxpool", "micro/avgpool"}


def test_named_set_writes_one_result_per_size(cli, tmp_path: Path) -> None:
    code, out, _ = cli("run", "micro", "conv", "--set", "deepbench-inference-device", *TINY_FLAGS,
                       "--out", str(tmp_path), "--json")
    assert code == 0
    docs = json.loads(out)
    assert len(docs) == len(list(tmp_path.glob("*.json"))) == 16
    assert [d["context"]["set_index"] for d in docs] == list(range(16))


def test_dry_run_measures_nothing(cli, tmp_path: Path) -> None:
    code, out, _ = cli("run", "micro", "gemm", "--set", "deepbench-training", "--dry-run", "--out",
                       str(tmp_path / "x"))
    assert code == 0 and out.count("micro/gemm") > 100
    assert not (tmp_path / "x").exists()


def test_run_help_lists_the_benchmark_parameters(cli) -> None:
    code, out, _ = cli("run", "micro", "conv", "--help")
    assert code == 0 and "--max-time" in out and "--kernel-h" in out


@pytest.mark.parametrize("args, code, message", [
    (["run", "micro", "gemn"], EXIT_USAGE, "did you mean micro/gemm"),
    (["run", "micro/gemm", "--mm", "3"], EXIT_USAGE, "unknown parameter --mm"),
    (["run", "micro/gemm", "--m", "x"], EXIT_USAGE, "--m expects int"),
    (["run", "micro/gemm", "--m", "0"], EXIT_USAGE, "--m must be >= 1"),
    (["run", "micro/gemm", "--dtype", "int4"], EXIT_USAGE, "--dtype must be one of"),
    (["run", "micro/gemm", "--device", "tpu"], EXIT_USAGE, "--device"),
    (["run", "micro/gemm", "--threads", "0"], EXIT_USAGE, "--threads"),
    (["run", "micro/conv", "--groups", "3"], EXIT_USAGE, "--groups 3 must divide"),
    (["run", "micro/conv", "--height", "2", "--pad-h", "0"], EXIT_USAGE, "does not fit"),
    (["run", "micro/gemm", "--set", "nope"], EXIT_USAGE, "has no set 'nope'"),
    (["run", "micro/gemm", "--device", "cuda"], EXIT_UNAVAILABLE, "no CUDA GPU"),
    (["run", "micro/gemm", "--m", "1048576", "--n", "1048576"], EXIT_UNAVAILABLE, "GiB"),
    (["info", "micro/nothing"], EXIT_USAGE, "unknown benchmark"),
    (["lst"], EXIT_USAGE, "did you mean list"),
])
def test_bad_input_is_one_line_with_its_exit_code(cli, tmp_path: Path, args, code, message) -> None:
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    got, out, err = cli(*args, *TINY_FLAGS if args[0] == "run" else [], "--out", str(tmp_path)) \
        if args[0] == "run" else cli(*args)
    assert got == code, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))


def test_unwritable_out_is_refused_before_measuring(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli(*GEMM, "--out", str(blocker / "sub"))
    assert code == EXIT_IO and "cannot write results" in err


def test_bad_input_never_touches_earlier_results(cli, tmp_path: Path) -> None:
    assert cli(*GEMM, "--out", str(tmp_path))[0] == 0
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    cli("run", "micro/gemm", "--m", "-5", "--out", str(tmp_path))
    cli("run", "micro/gemm", "--device", "cuda:7", "--out", str(tmp_path))
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_unsupported_dtype_on_device_is_refused(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from aibench import registry

    bench = registry.get("micro/relu")

    def half_unsupported(params, device, dtype):
        raise RuntimeError('"relu_cpu" not implemented for \'Half\'')

    monkeypatch.setitem(registry._REGISTRY, "micro/relu", replace(bench, factory=half_unsupported))
    code, _, err = cli("run", "micro/relu", "--dtype", "float16", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == EXIT_UNAVAILABLE and "not implemented for 'Half'" in err
    assert not list(tmp_path.glob("*.json"))


def test_a_failing_benchmark_is_recorded_and_exits_1(cli, tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    from aibench import registry

    bench = registry.get("micro/relu")

    def oom(params, device, dtype):
        raise MemoryError("simulated")

    monkeypatch.setitem(registry._REGISTRY, "micro/relu", replace(bench, factory=oom))
    code, out, _ = cli("run", "micro/relu", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == EXIT_FAILED and "failed" in out
    (f,) = tmp_path.glob("*.json")
    assert json.loads(f.read_text())["status"] == "failed"


def test_interrupt_keeps_finished_results(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aibench import harness

    real = harness.execute
    calls = []

    def interrupt_second(run, opts):
        calls.append(run)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(run, opts)

    monkeypatch.setattr(harness, "execute", interrupt_second)
    code, _, err = cli("run", "micro/*pool", "--batch", "1", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 130 and "1 of 2 result(s) were finished and kept" in err
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_interrupted_run_is_recorded(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside a kernel or training run leaves a record with status interrupted (LoadGen runs write
    their own, with LoadGen's partial logs)."""

    def ctrl_c(*_a: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("aibench.measure.kernel.run_kernel", ctrl_c)
    code, _, _ = cli("run", "micro/relu", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 130
    (f,) = tmp_path.glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "interrupted" and doc["metrics"] == {} and "Ctrl-C" in doc["error"]["message"]
