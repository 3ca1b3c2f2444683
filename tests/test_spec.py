from __future__ import annotations

import pytest

from aibench.errors import UsageError
from aibench.spec import Param, ParamSet, config_hash, parse_cli_params

PARAMS = ParamSet((
    Param("m", int, 8, "rows", minimum=1, maximum=100),
    Param("scale", float, 1.0, "scale", minimum=0.0),
    Param("mode", str, "fwd", "pass", choices=("fwd", "bwd")),
    Param("flag", bool, False, "a switch"),
    Param("device", str, "cpu", "device", pattern=r"(cpu|cuda)(:\d+)?"),
))


def test_defaults_and_parsing() -> None:
    given = parse_cli_params(["--m", "12", "--scale=2.5", "--flag", "--mode", "bwd"], PARAMS)
    values = PARAMS.resolve(given)
    assert values == {"m": 12, "scale": 2.5, "mode": "bwd", "flag": True, "device": "cpu"}


def test_bool_forms() -> None:
    assert PARAMS.resolve(parse_cli_params(["--no-flag"], PARAMS))["flag"] is False
    assert PARAMS.resolve(parse_cli_params(["--flag", "false"], PARAMS))["flag"] is False
    assert PARAMS.resolve(parse_cli_params(["--flag=yes"], PARAMS))["flag"] is True


def test_int_accepts_exponent_but_not_fraction() -> None:
    assert PARAMS.resolve({"m": "1e1"})["m"] == 10
    with pytest.raises(UsageError, match="expects int"):
        PARAMS.resolve({"m": "1.5"})


@pytest.mark.parametrize("args, message", [
    (["--m", "0"], ">= 1"),
    (["--m", "101"], "<= 100"),
    (["--m", "abc"], "expects int"),
    (["--mode", "fwdd"], "did you mean fwd"),
    (["--mdoe", "fwd"], "unknown parameter --mdoe.*did you mean --mode"),
    (["--scale", "nan"], "finite"),
    (["--device", "tpu"], "not of the form"),
    (["--m"], "needs a value"),
    (["--m", "1", "--m", "2"], "given twice"),
    (["stray"], "unexpected argument"),
])
def test_bad_values_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        PARAMS.resolve(parse_cli_params(args, PARAMS))


def test_python_values_are_type_checked() -> None:
    with pytest.raises(UsageError):
        PARAMS.resolve({"m": True})
    assert PARAMS.resolve({"scale": 2})["scale"] == 2.0


def test_config_hash_is_stable_and_sensitive() -> None:
    a = config_hash("micro/x", {"m": 1, "n": 2}, {"threads": 1})
    assert a == config_hash("micro/x", {"n": 2, "m": 1}, {"threads": 1})
    assert a != config_hash("micro/x", {"m": 1, "n": 3}, {"threads": 1})
    assert a != config_hash("micro/x", {"m": 1, "n": 2}, {"threads": 2})
    assert len(a) == 16
