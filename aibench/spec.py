"""Typed benchmark parameters: declaration, parsing from the command line, validation, config hash.

A benchmark declares its parameters as :class:`Param` objects; the harness turns user input (strings from
the CLI or values from Python) into a validated ``dict`` and hashes it. Two results are comparable only when
their config hashes are equal, so everything that changes *what* is measured belongs in the hashed config,
and nothing that only changes *how long* it is measured does.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from aibench.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TYPES: dict[type, str] = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class Param:
    """One parameter of a benchmark.

    ``choices`` restricts a ``str`` parameter; ``minimum``/``maximum`` bound numbers (inclusive).
    """

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # a full-match regular expression for str parameters

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"parameter {self.name}: unsupported type {self.type!r}")
        if self.default is not None:
            self.validate(self.default)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self) -> str:
        return _TYPES[self.type]

    def describe_range(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        if self.type is bool:
            return "true|false"
        lo = "" if self.minimum is None else _fmt_num(self.minimum)
        hi = "" if self.maximum is None else _fmt_num(self.maximum)
        return f"{lo}..{hi}" if (lo or hi) else ""

    def parse(self, raw: Any) -> Any:
        """Convert ``raw`` (a CLI string or a Python value) and validate it."""
        value = raw
        if isinstance(raw, str) and self.type is not str:
            text = raw.strip().lower()
            try:
                if self.type is bool:
                    if text in _TRUE:
                        value = True
                    elif text in _FALSE:
                        value = False
                    else:
                        raise ValueError(raw)
                elif self.type is int:
                    number = float(text)  # accepts 1e3; 1.5 is refused below
                    if not number.is_integer():
                        raise ValueError(raw)
                    value = int(number)
                else:
                    value = float(text)
            except ValueError:
                raise UsageError(f"{self.flag} expects {self.type_name}, got {raw!r}") from None
        elif self.type is float and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        elif not isinstance(raw, self.type) or (self.type is int and isinstance(raw, bool)):
            raise UsageError(f"{self.flag} expects {self.type_name}, got {raw!r}")
        self.validate(value)
        return value

    def validate(self, value: Any) -> None:
        if self.choices is not None and value not in self.choices:
            hint = _did_you_mean(str(value), self.choices)
            raise UsageError(
                f"{self.flag} must be one of {', '.join(self.choices)}; got {value!r}{hint}"
            )
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            raise UsageError(f"{self.flag}: {value!r} is not of the form {self.pattern}")
        if self.type in (int, float):
            if not is_finite(value):
                raise UsageError(f"{self.flag} must be a finite number, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise UsageError(f"{self.flag} must be >= {_fmt_num(self.minimum)}, got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise UsageError(f"{self.flag} must be <= {_fmt_num(self.maximum)}, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flag": self.flag,
            "type": self.type_name,
            "default": self.default,
            "unit": self.unit,
            "min": self.minimum,
            "max": self.maximum,
            "choices": list(self.choices) if self.choices else None,
            "pattern": self.pattern,
            "help": self.help,
        }


def is_finite(value: float) -> bool:
    """False for nan, inf and -inf: no option or parameter of aibench takes them. (Range checks alone let nan
    through: every comparison with nan is false.)"""
    return isinstance(value, int) or math.isfinite(value)


class FiniteFloat(click.FloatRange):
    """The type of every float option of every command: a finite number, optionally within a range.

    ``click.FloatRange`` lets ``nan`` through (``nan < 0`` and ``nan > 1`` are both false), and a plain
    ``float`` takes ``inf``; either then reached the measurement and failed there. This type refuses them while
    the command line is parsed, so nothing is measured or written (exit 2, one line).
    """

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not is_finite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "finite" if self.min is None and self.max is None else super()._describe_range()


# LoadGen takes its seeds as uint64 and torch.manual_seed as a 64-bit integer: a seed outside this range
# used to be accepted on the command line and fail inside the run.
SEED_MAX = 2**64 - 1


class Seed(click.IntRange):
    """``--seed``: an integer in 0..2^64-1, refused with the range otherwise (exit 2)."""

    name = "seed"

    def __init__(self) -> None:
        super().__init__(0, SEED_MAX)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.INT.convert(value, param, ctx)
        if not 0 <= number <= SEED_MAX:
            self.fail(f"{value!r} is outside 0..2^64-1 ({SEED_MAX}): LoadGen and torch take 64-bit unsigned "
                      "seeds", param, ctx)
        return number

    def _describe_range(self) -> str:
        return "0..2^64-1"


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _did_you_mean(word: str, options: Iterable[str], n: int = 3) -> str:
    close = difflib.get_close_matches(word, list(options), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


@dataclass(frozen=True)
class ParamSet:
    """The ordered parameters of one benchmark."""

    params: tuple[Param, ...]
    by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate parameter names: {sorted(dupes)}")
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    def __iter__(self):
        return iter(self.params)

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def lookup(self, name: str) -> Param:
        key = name.lstrip("-").replace("-", "_")
        if key not in self.by_name:
            hint = _did_you_mean("--" + key.replace("_", "-"), [p.flag for p in self.params])
            raise UsageError(f"unknown parameter --{key.replace('_', '-')}{hint}")
        return self.by_name[key]

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given`` (names with - or _), every value parsed and validated."""
        values = self.defaults()
        for name, raw in given.items():
            p = self.lookup(name)
            values[p.name] = p.parse(raw)
        return values


def parse_cli_params(args: Sequence[str], params: ParamSet) -> dict[str, str | bool]:
    """Turn ``['--m', '1024', '--channels-last', '--k=8']`` into ``{'m': '1024', ...}``.

    Values stay strings here; :meth:`ParamSet.resolve` types and validates them. A ``bool`` parameter may
    be given bare (``--x``), negated (``--no-x``) or with a value (``--x=false``).
    """
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or tok == "--":
            raise UsageError(f"unexpected argument {tok!r}: benchmark parameters are given as --name VALUE")
        name, eq, inline = tok[2:].partition("=")
        negated = False
        if name.startswith("no-") and name.replace("-", "_") not in params:
            candidate = name[3:].replace("-", "_")
            if candidate in params and params.by_name[candidate].type is bool:
                name, negated = name[3:], True
        p = params.lookup(name)
        if p.name in out:
            raise UsageError(f"{p.flag} given twice")
        if negated:
            if eq:
                raise UsageError(f"--no-{name} takes no value")
            out[p.name] = False
            i += 1
        elif eq:
            out[p.name] = inline
            i += 1
        elif p.type is bool and (i + 1 >= len(args) or args[i + 1].startswith("--")
                                 or args[i + 1].lower() not in _TRUE | _FALSE):
            out[p.name] = True
            i += 1
        else:
            if i + 1 >= len(args):
                raise UsageError(f"{p.flag} needs a value")
            out[p.name] = args[i + 1]
            i += 2
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(benchmark_id: str, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """A short stable hash of what is measured: benchmark, every parameter, and harness settings that
    change the measured work (e.g. thread count). Equal hashes mean comparable results."""
    payload = {"benchmark": benchmark_id, "params": dict(params), "extra": dict(extra or {})}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def option_bundle(dest: str, cls: type, *options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Click options that arrive as one typed object: the command receives ``dest=cls(**those options)``
    instead of one keyword argument per option (the dataclass ``cls`` names its fields as the options'
    destinations). The options keep their place in ``--help``."""
    import dataclasses
    import functools

    names = [f.name for f in dataclasses.fields(cls)]

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[dest] = cls(**{n: kwargs.pop(n) for n in names})
            return fn(*args, **kwargs)

        out: Any = wrapper
        for opt in reversed(options):
            out = opt(out)
        return out  # type: ignore[no-any-return]

    return deco


@dataclass(frozen=True)
class RunnerArgs:
    """What the runners' declared command-line options (:class:`~aibench.registry.RunnerCli`) received on one
    command line: ``values`` by runner options key, then by option name; ``given``, the names of the command's
    options given on its command line."""

    values: Mapping[str, Mapping[str, Any]]
    given: frozenset[str]
    clis: Mapping[str, Any] = field(repr=False)

    def build(self, measure: Any) -> dict[str, Any]:
        """Each runner's typed options, by key (for :meth:`aibench.harness.RunOptions.with_options`)."""
        return {key: cli.build(self.values[key], measure, self.given) for key, cli in self.clis.items()}

    def check(self, runs: Sequence[Any], opts: Any) -> None:
        """Each runner refuses what does not apply to ``runs`` under the run options ``opts`` (UsageError)."""
        for key, cli in self.clis.items():
            if cli.check is not None:
                cli.check(runs, opts.options_for(key))


def runner_option_bundle(dest: str) -> Callable[[Any], Any]:
    """The command-line options every runner declares (:attr:`aibench.registry.RunnerSpec.cli_options`), added
    to a command; the command receives ``dest=`` a :class:`RunnerArgs` instead of one keyword argument per
    option. The command names no runner: a new runner's options appear by its declaration."""
    import functools

    from aibench import registry

    clis = registry.runner_clis()
    names: dict[str, list[str]] = {}
    for key, cli in clis.items():
        def probe() -> None: ...

        for opt in cli.options:
            opt(probe)
        names[key] = [p.name for p in getattr(probe, "__click_params__", [])]

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            given = frozenset(p.name for p in ctx.command.params if p.name is not None
                              and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE)
            values = {key: {n: kwargs.pop(n) for n in names[key]} for key in clis}
            kwargs[dest] = RunnerArgs(values, given, clis)
            return fn(*args, **kwargs)

        out: Any = wrapper
        for cli in reversed(list(clis.values())):
            for opt in reversed(cli.options):
                out = opt(out)
        return out  # type: ignore[no-any-return]

    return deco
