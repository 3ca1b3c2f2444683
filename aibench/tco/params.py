"""The cost parameters of the TCO model: the paper's Table 4 (and Table 6, its §6.2 and footnote) as defaults,
each overridable by ``--param NAME=VALUE`` or a TOML file, and each shown with where its value came from.

A value the paper does not give is *chosen* here and says so (``source`` starts with ``chosen``); see
docs/tco.md for why each choice was made. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aibench.errors import ResultIOError, UsageError

APPS = ("imc", "dig", "face", "asr", "pos", "chk", "ner")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float
    unit: str
    source: str  # where the default comes from
    help: str
    positive: bool = False  # used as a divisor or a count: must be > 0 (every value must be >= 0)
    at_most: float | None = None  # a share: must be <= this


def _query_bytes(app: str) -> float:
    """Bytes per query of the paper's Table 3, decoded as 4 bytes x (input floats + output floats):
    the reference notes in docs/tco.md check this against all seven printed sizes."""
    floats = {"imc": 3 * 227 * 227 + 1, "dig": 100 * 784 + 100, "face": 3 * 152 * 152 + 1,
              "asr": 548 * (440 + 1706), "pos": 28 * (300 + 45), "ner": 28 * (375 + 17),
              "chk": 28 * (300 + 45) + 28 * (300 + 42)}[app]
    return 4.0 * floats


T4, T6 = "paper Table 4", "paper Table 6"
SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("server_price", 6864, "$", T4, "300 W GPU-capable (beefy) server"),
    ParamSpec("server_power", 300, "W", T4, "beefy server power"),
    ParamSpec("gpu_price", 3314, "$", T4, "high-end GPU (accelerator)"),
    ParamSpec("gpu_power", 240, "W", T4, "GPU power"),
    ParamSpec("wimpy_price", 1716, "$", T4, "wimpy server holding GPUs (disaggregated design)"),
    ParamSpec("wimpy_power", 75, "W", T4, "wimpy server power"),
    ParamSpec("nic_price", 750, "$", T4, "one 10GbE NIC with its share of a 500-leaf hierarchical network"),
    ParamSpec("nic_power", 0, "W", "chosen: not in the paper (counted in the servers' power)", "power of one NIC"),
    ParamSpec("facility_capex_per_w", 10, "$/W", T4, "datacenter construction per watt of critical power"),
    ParamSpec("facility_lifetime_years", 12, "years", "chosen: Barroso et al.'s facility amortisation (not in "
              "Table 4)", "years over which the facility capex is financed", positive=True),
    ParamSpec("opex_per_w_month", 0.04, "$/W/month", T4, "facility operating expense per watt"),
    ParamSpec("pue", 1.1, "", T4, "power usage effectiveness (facility power / IT power)"),
    ParamSpec("electricity_per_kwh", 0.067, "$/kWh", T4, "electricity price"),
    ParamSpec("interest_rate", 0.08, "per year", T4, "interest on capital expenditures"),
    ParamSpec("server_lifetime_years", 3, "years", T4, "life of servers, GPUs and NICs", positive=True),
    ParamSpec("loan_years", 3, "years", T4, "loan amortisation period of equipment", positive=True),
    ParamSpec("maintenance_per_year", 0.05, "of price per year", "paper Table 4 (printed '5%/month'; read as "
              "per year: chosen)", "server maintenance and operations"),
    ParamSpec("datacenter_servers", 0, "servers", "chosen: 0 = fluid counts (no rounding)", "CPU-only servers "
              "of the datacenter; > 0 rounds each service's servers, GPUs and NICs up to whole units"),
    ParamSpec("hours_per_month", 730, "h", "chosen: 8,760 h / 12", "hours in a month", positive=True),
    ParamSpec("gpus_per_server", 12, "GPUs", "paper §6.2", "GPUs in every integrated server", positive=True),
    ParamSpec("gpus_per_wimpy", 12, "GPUs", "chosen: as many x16 slots as the integrated server",
              "GPUs one wimpy server can hold at most", positive=True),
    ParamSpec("nics_per_server", 1, "NICs", "chosen: one 10GbE NIC per beefy server", "NICs of a beefy server"),
    ParamSpec("nic_efficiency", 0.8, "", "paper §6.2 footnote (80% of peak)", "share of an Ethernet link's peak "
              "that carries data", positive=True),
    ParamSpec("cpu_server_scale", 1, "x", "chosen: the measured machine is one CPU-only server",
              "a CPU-only server serves this many times the CPU figure measured", positive=True),
    ParamSpec("pcie3_gbs", 15.875, "GB/s", "paper §6.2 footnote (Table 6: 15.87)", "PCIe v3 x16 bus shared by "
              "a server's GPUs", positive=True),
    ParamSpec("nic10_gbs", 1.25, "GB/s", T6, "one 10GbE NIC", positive=True),
    ParamSpec("nics_10gbe", 16, "NICs", T6, "10GbE NICs per wimpy server", positive=True),
    ParamSpec("pcie4_gbs", 31.75, "GB/s", T6, "PCIe v4 bus shared by a server's GPUs", positive=True),
    ParamSpec("pcie4_extra", 2000, "$", T6, "server price over the PCIe v3 design"),
    ParamSpec("nic40_gbs", 5, "GB/s", T6, "one 40GbE NIC", positive=True),
    ParamSpec("nic40_extra", 1250, "$", T6, "price of a 40GbE NIC over a 10GbE one"),
    ParamSpec("nics_40gbe", 9, "NICs", T6, "40GbE NICs per wimpy server", positive=True),
    ParamSpec("qpi_gbs", 307.2, "GB/s", T6, "12 QPI links (25.6 GB/s each) between GPUs and CPU sockets",
              positive=True),
    ParamSpec("qpi_extra", 4000, "$", T6, "server price over the PCIe v3 design"),
    ParamSpec("nic400_gbs", 50, "GB/s", T6, "one 400GbE NIC", positive=True),
    ParamSpec("nic400_extra", 4250, "$", T6, "price of a 400GbE NIC over a 10GbE one"),
    ParamSpec("nics_400gbe", 8, "NICs", T6, "400GbE NICs per wimpy server", positive=True),
    *(ParamSpec(f"query_bytes_{app}", _query_bytes(app), "B", "paper Table 3 (decoded: 4 B x (input + output "
                "floats))", f"bytes moved to and from the accelerator per {app.upper()} query (one sample)")
      for app in APPS),
    *(ParamSpec(f"dnn_share_{app}", 1.0, "fraction", "chosen: 1 = the CPU figure is the DNN service's alone (the "
                "app's pre- and post-processing counted with the non-DNN work)", f"share of a {app.upper()} "
                "query's time on the CPU-only server spent in the DNN; the rest stays on beefy servers in every "
                "design", positive=True, at_most=1.0)
      for app in APPS),
)
SPEC = {s.name: s for s in SPECS}
# Inputs that results can give (scenario/djinn's per-part figures and bytes per query): a measured value
# replaces the default, never a value given with --param or a --params file.
MEASURABLE = tuple(f"{what}_{app}" for what in ("dnn_share", "query_bytes") for app in APPS)


@dataclass(frozen=True)
class Value:
    value: float
    unit: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "source": self.source}


def _closest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, SPEC, n=2)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _check(name: str, value: Any, where: str) -> float:
    """The value of parameter ``name`` given at ``where``, or a one-line UsageError (exit 2)."""
    spec = SPEC.get(name)
    if spec is None:
        raise UsageError(f"{where}: unknown TCO parameter {name!r}{_closest(name)}; `aibench tco --list-params` "
                         "lists them")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(f"{where}: {name} must be a number, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: {name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise UsageError(f"{where}: {name} must be finite, not {value}")
    if value < 0 or (spec.positive and value == 0):
        need = "positive" if spec.positive else "zero or positive"
        raise UsageError(f"{where}: {name} must be {need}, not {value:g}")
    if spec.at_most is not None and value > spec.at_most:
        raise UsageError(f"{where}: {name} must be at most {spec.at_most:g}, not {value:g}")
    return value


def parse_assignment(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise UsageError(f"--param {text!r}: expected NAME=VALUE (e.g. gpu_price=2500)")
    return name.strip(), value


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parameters of a TOML file: top-level ``name = number`` pairs (a ``[tco]`` table is read too)."""
    from aibench.results.files import read_bytes
    from aibench.results.validate import ResultFileError

    try:
        data = read_bytes(path, max_bytes=1 << 20)
    except ResultFileError as exc:
        raise ResultIOError(f"--params {os.fspath(path)!r}: {exc.why}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--params {os.fspath(path)!r}: not valid TOML ({exc})") from None
    if isinstance(doc.get("tco"), dict):
        doc = {**{k: v for k, v in doc.items() if k != "tco"}, **doc["tco"]}
    return doc


def resolve(assignments: Iterable[str] = (), files: Iterable[str | os.PathLike[str]] = (),
            base: Mapping[str, Any] | None = None) -> dict[str, Value]:
    """Every parameter's value and source: defaults, then each TOML file in order, then each ``--param``
    (the last one given wins). ``base`` (name -> number) overrides the defaults, for library callers."""
    out = {s.name: Value(float(s.default), s.unit, s.source) for s in SPECS}
    for name, value in (base or {}).items():
        out[name] = Value(_check(name, value, "parameters"), SPEC[name].unit, "given")
    for path in files:
        where = f"--params {os.fspath(path)}"
        for name, value in read_toml(path).items():
            out[name] = Value(_check(name, value, where), SPEC[name].unit, f"file {os.fspath(path)}")
    for text in assignments:
        name, value = parse_assignment(text)
        out[name] = Value(_check(name, value, f"--param {text}"), SPEC[name].unit, "--param")
    return out


def with_measured(resolved: Mapping[str, Value], measured: Mapping[str, tuple[float, str]]) -> dict[str, Value]:
    """``resolved`` with each measured input (name -> (value, where it came from)) in place of its default; a
    value given (``--param``, a ``--params`` file) stays, whatever was measured."""
    out = dict(resolved)
    for name, (value, source) in measured.items():
        if name in MEASURABLE and out[name].source == SPEC[name].source:
            out[name] = Value(_check(name, value, f"measured {name}"), SPEC[name].unit, f"measured: {source}")
    return out


def values(resolved: Mapping[str, Value]) -> dict[str, float]:
    return {name: v.value for name, v in resolved.items()}
