"""Every bad option of every command is refused while the command line is parsed: exit 2, one line on stderr,
nothing measured and nothing written (issue 12, item 5). Also: one "did you mean" per error."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import Any

import click
import pytest

from aibench.errors import EXIT_USAGE
from aibench.registry import RunnerCli, RunnerSpec
from aibench.spec import SEED_MAX, FiniteFloat, Seed
from tests.conftest import TINY_FLAGS

GEMM = ["micro/gemm", "--m", "8", "--n", "8", "--k", "8"]
PY = sys.executable
GATE = ["gate", "--baseline-python", PY, "--candidate-python", PY]


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any measurement (run, sweep point) or gate round fails the test loudly."""

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a measurement started although an option was bad")

    monkeypatch.setattr("aibench.harness.execute", refuse)
    monkeypatch.setattr("aibench.gate.gate.run_gate", refuse)


def _refused(cli: Any, out: Path, *args: str, message: str = "") -> str:
    code, stdout, err = cli(*args)
    assert code == EXIT_USAGE, (stdout, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists(), "the refusal wrote something"
    return err


NON_FINITE = ("nan", "inf", "-inf", "NaN")


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("option", ["--max-time", "--warmup", "--target-ci"])
def test_run_and_sweep_refuse_non_finite_timer_options(cli, tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "out"
    _refused(cli, out, "run", *GEMM, option, value, "--out", str(out), message=option)
    # A sweep used to measure, exit 70 and leave its record "running".
    _refused(cli, out, "sweep", "m", "micro/gemm", "--values", "8,16", "--n", "8", "--k", "8", option, value,
             "--out", str(out), message=option)


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize("option", ["--target-qps", "--latency-bound-ms", "--duration-s", "--think-time-ms",
                                    "--spin-us", "--max-wait-us", "--expected-qps", "--latency-percentile"])
def test_loadgen_float_options_refuse_nan_and_inf(cli, tmp_path: Path, option: str) -> None:
    out = tmp_path / "out"
    for value in ("nan", "inf"):
        _refused(cli, out, "run", "component/imc", option, value, "--out", str(out), message=option)
    # The knee's bound of a sweep never reaches LoadGen outside Server: it was not checked at all.
    _refused(cli, out, "sweep", "batch", "component/imc", "--values", "1,2", "--latency-bound-ms", "nan",
             "--out", str(out), message="--latency-bound-ms")


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize(("option", "value"), [("--confidence", "nan"), ("--process-timeout", "nan"),
                                               ("--process-timeout", "inf"), ("--trim", "nan"),
                                               ("--threshold", "nan"), ("--threshold", "inf%"),
                                               ("--metric-threshold", "time_median=nan")])
def test_gate_refuses_non_finite_options(cli, tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "out"
    _refused(cli, out, *GATE, option, value, "--out", str(out), *GEMM)


@pytest.mark.usefixtures("nothing_runs")
def test_benchmark_float_parameters_refuse_nan(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for value in ("nan", "inf"):
        _refused(cli, out, "run", "micro/dropout", "--p", value, "--out", str(out), message="finite")


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize("seed", [str(SEED_MAX + 1), str(2**70), "-1"])
def test_seed_is_bounded_to_64_bits_in_every_command(cli, tmp_path: Path, seed: str) -> None:
    out = tmp_path / "out"
    _refused(cli, out, "run", *GEMM, "--seed", seed, "--out", str(out), message="0..2^64-1")
    _refused(cli, out, "sweep", "m", "micro/gemm", "--values", "8,16", "--seed", seed, "--out", str(out),
             message="0..2^64-1")
    _refused(cli, out, *GATE, "--seed", seed, "--out", str(out), *GEMM, message="0..2^64-1")
    _refused(cli, out, "compare", str(tmp_path), str(tmp_path), "--seed", seed, message="0..2^64-1")


def test_the_largest_seed_is_accepted(cli, tmp_path: Path) -> None:
    code, stdout, err = cli("run", *GEMM, "--seed", str(SEED_MAX), "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 0 and "micro/gemm" in stdout, err


@pytest.mark.usefixtures("nothing_runs")
def test_gate_refuses_a_folder_as_an_output_before_the_first_round(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for option in ("--junit", "--json", "--markdown"):
        _refused(cli, out, *GATE, option, str(tmp_path), "--out", str(out), *GEMM, message="is a folder")


@pytest.mark.usefixtures("nothing_runs")
def test_gate_refuses_ignoring_the_primary_metric_with_nothing_left(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    err = _refused(cli, out, *GATE, "--ignore-metric", "time_median", "--out", str(out), *GEMM,
                   message="--ignore-metric time_median")
    assert "primary metric" in err and "--metric NAME" in err
    # A load-generated benchmark's primary depends on its scenario: SingleStream's is the early-stopping figure.
    _refused(cli, out, *GATE, "--ignore-metric", "latency_early_stopping", "--out", str(out), "component/dig",
             "--scenario", "single-stream", message="primary metric of component/dig")


def test_gate_ignoring_the_primary_with_another_metric_named_is_allowed() -> None:
    from aibench.gate.cli import _check_metrics
    from aibench.gate.gate import BenchSpec

    dig = BenchSpec.from_words(["component/dig", "--scenario", "single-stream"])
    _check_metrics([dig], ("latency_min",), ("latency_early_stopping",))  # what docs/gate.md recommends
    _check_metrics([dig], (), ("samples_per_s",))  # not this scenario's primary: ignoring it is harmless
    gemm = BenchSpec.from_words(list(GEMM))
    _check_metrics([gemm], ("time_p99",), ("time_median",))


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize("args", [["--baseline", 'a "b', "--candidate", PY],
                                  ["--baseline-python", PY, "--candidate", "x\\"],
                                  ["--baseline-python", PY, "--candidate-python", PY, "-b", 'micro/gemm --m "8']])
def test_gate_refuses_a_command_it_cannot_split(cli, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    err = _refused(cli, out, "gate", *args, "--out", str(out), *(GEMM if "-b" not in args else []))
    assert "cannot split it into words" in err


def _all_commands() -> list[tuple[str, click.Command]]:
    from aibench.cli import cli as root

    ctx = click.Context(root)
    out = []
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        assert cmd is not None
        out.append((name, cmd))
    return out


def test_every_float_option_of_every_command_is_finite_and_every_seed_bounded() -> None:
    """One mechanism: a float option added later with plain ``float`` or ``click.FloatRange`` fails here."""
    seen = 0
    for name, cmd in _all_commands():
        for p in cmd.params:
            if isinstance(p.type, click.types.FloatParamType):
                assert isinstance(p.type, FiniteFloat), f"aibench {name} {p.opts[0]} takes nan/inf"
                seen += 1
            if p.name == "seed":
                assert isinstance(p.type, Seed), f"aibench {name} --seed is not bounded to 64 bits"
    assert seen >= 15


@pytest.mark.parametrize("word", ["lst", "sweeep", "reprt", "gat"])
def test_a_did_you_mean_is_given_once(cli, word: str) -> None:
    code, _out, err = cli(word)
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1
    assert err.lower().count("did you mean") == 1, err


@pytest.mark.parametrize("args", [["run", "micro", "gemn"], ["run", "micro/gemm", "--mm", "4"],
                                  ["info", "micro/gemn"], ["sweep", "batch", "micro", "gemn"],
                                  ["sweep", "mm", "micro/gemm", "--values", "1"], ["list", "gemn"],
                                  ["run", "micro/gemm", "--dtype", "flaot32"]])
def test_every_suggestion_is_given_once(cli, tmp_path: Path, args: list[str]) -> None:
    code, _out, err = cli(*args, *(TINY_FLAGS if args[0] == "run" else []))
    assert code == EXIT_USAGE and err.lower().count("did you mean") == 1, err


# -- the runners' own options: declared by each runner (RunnerSpec.cli_options), offered by run and sweep -------

@dataclasses.dataclass(frozen=True)
class _KnobOptions:
    knob: int = 1
    given: bool = False
    seed: int = 0


KNOB_CHECKED: list[tuple[list[Any], Any]] = []


def _knob_build(values: Any, measure: Any, given: frozenset[str]) -> _KnobOptions:
    return _KnobOptions(knob=values["knob"], given="knob" in given, seed=measure.seed)


def _knob_check(runs: Any, options: Any) -> None:
    KNOB_CHECKED.append((list(runs), options))


KNOB_CLI = RunnerCli(build=_knob_build, options=(click.option("--knob", type=int, default=1, help="A knob."),),
                     check=_knob_check)


@pytest.mark.parametrize("args", [[], ["--knob", "7", "--max-time", "5", "--seed", "3"]])
def test_a_runner_s_declared_options_reach_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       args: list[str]) -> None:
    """A new runner's options appear on a command through its declaration alone; its build gets their values,
    the shared measuring options and what was given; its check sees the planned runs. Training's declaration
    (no option of its own) makes an explicit --max-time the --ttq budget."""
    from click.testing import CliRunner

    from aibench import registry
    from aibench.cli import MeasureOptions, measure_options
    from aibench.spec import runner_option_bundle

    spec = RunnerSpec(name="knob-runner", contract="x:Y", measure="x:y", options="knob",
                      cli_options=f"{__name__}:KNOB_CLI")
    monkeypatch.setitem(registry._RUNNERS, spec.name, spec)
    KNOB_CHECKED.clear()
    got: dict[str, Any] = {}

    @click.command()
    @measure_options
    @runner_option_bundle("runner_args")
    def cmd(measure: MeasureOptions, runner_args: Any) -> None:
        opts = measure.run_options(runner_args.build(measure))
        run = types.SimpleNamespace(bench=types.SimpleNamespace(id="x/y", runner_spec=spec))
        runner_args.check([run], opts)
        got["opts"] = opts

    res = CliRunner().invoke(cmd, [*args, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "--knob" in CliRunner().invoke(cmd, ["--help"]).output
    opts = got["opts"]
    knob = opts.options_for("knob")
    assert knob == (_KnobOptions(7, True, 3) if args else _KnobOptions(1, False, 0))
    assert KNOB_CHECKED and KNOB_CHECKED[0][1] == knob
    assert opts.options_for("training").ttq_budget_s == (5.0 if args else None)
    assert opts.options_for("loadgen").explicit == () and opts.options_for("loadgen").out_dir == tmp_path


def test_run_and_sweep_take_the_loadgen_options_from_its_declaration() -> None:
    """The commands name no runner: LoadGen's options are on run and sweep because its RunnerSpec declares
    them."""
    import inspect

    import aibench.cli
    import aibench.sweep.cli
    from aibench import registry
    from aibench.loadgen.metrics import LOADGEN

    assert LOADGEN.cli_options is not None
    declared = registry.load(LOADGEN.cli_options)

    def probe() -> None: ...

    for opt in declared.options:
        opt(probe)
    names = {p.name for p in probe.__click_params__}  # type: ignore[attr-defined]
    assert {"scenario", "target_qps", "users", "remote"} <= names
    for module, cmd in ((aibench.cli, aibench.cli.run_cmd), (aibench.sweep.cli, aibench.sweep.cli.sweep)):
        assert names <= {p.name for p in cmd.params}, cmd.name
        assert "aibench.loadgen" not in inspect.getsource(module), module.__name__
