"""What every output of a report agrees on: how a metric reads, when a run is INVALID, how a machine is
named, which parameters tell runs apart, and writing a named output file atomically.

Result files are read defensively here: a field of the wrong type reads as absent, never as a crash, so a
hand-edited or hostile file degrades to blanks in the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aibench.display import fmt_seconds
from aibench.results.schema import Result
from aibench.results.store import write_text_atomic

# Metrics that are energy per unit of work (the kernel runner's and the LoadGen runner's names).
ENERGY_METRICS = ("energy_per_sample", "energy_per_call", "energy_per_query")
# LoadGen latency percentiles, in the order they are drawn.
LATENCY_PERCENTILES = (("latency_p50", 50.0), ("latency_p90", 90.0), ("latency_p95", 95.0),
                       ("latency_p97", 97.0), ("latency_p99", 99.0), ("latency_p99_9", 99.9))


def num(x: Any) -> float | None:
    """``x`` as a finite float, or None (booleans, strings, NaN and infinities are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def num_pair(x: Any) -> tuple[float, float] | None:
    """A two-number list (a confidence interval) as a tuple of finite floats, or None."""
    if not isinstance(x, list) or len(x) != 2:
        return None
    lo, hi = num(x[0]), num(x[1])
    return None if lo is None or hi is None else (lo, hi)


def as_dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def metric_entry(r: Result, name: str) -> dict[str, Any] | None:
    entry = r.metrics.get(name)
    return entry if isinstance(entry, dict) else None


def metric_value(r: Result, name: str) -> float | None:
    return num(as_dict(metric_entry(r, name)).get("value"))


def is_invalid(r: Result) -> bool:
    """An INVALID load-generator run: its figures are never shown as plain numbers."""
    return isinstance(r.validity, dict) and r.validity.get("valid") is False


def validity_text(r: Result) -> str:
    if not isinstance(r.validity, dict):
        return ""
    return "INVALID" if r.validity.get("valid") is False else str(r.validity.get("result") or "VALID")


def invalid_reasons(r: Result) -> list[str]:
    if not isinstance(r.validity, dict):
        return []
    reasons = r.validity.get("reasons")
    return [str(x) for x in reasons] if isinstance(reasons, list) else []


def fmt_number(value: float, unit: str = "") -> str:
    """A value with its unit, seconds scaled to ms/µs/ns; 4 significant digits."""
    if unit == "s":
        return fmt_seconds(value)
    return f"{value:.4g} {unit}".strip()


def fmt_metric(r: Result, name: str | None) -> str:
    """A metric as people read it: the number, ``INVALID (…)`` for an INVALID run, or why it is missing."""
    entry = metric_entry(r, name) if name else None
    if entry is None:
        return "–"
    value = num(entry.get("value"))
    if value is None:
        why = entry.get("unavailable")
        return f"unavailable: {why}" if why else "unavailable"
    text = fmt_number(value, str(entry.get("unit") or ""))
    if is_invalid(r) or entry.get("valid") is False:
        return f"INVALID ({text})"
    return text


def status_text(r: Result) -> str:
    if r.status != "ok":
        err = as_dict(r.error)
        msg = err.get("message")
        return f"{r.status}: {msg}" if msg else str(r.status)
    if is_invalid(r):
        return "INVALID"
    return "noisy" if r.noisy else "ok"


def machine_text(r: Result) -> str:
    """hostname · CPU model · N CPUs · GPUs: short enough for a table cell or a CSV column."""
    machine = as_dict(as_dict(r.machine).get("machine"))
    software = as_dict(as_dict(r.machine).get("software"))
    parts = [str(machine[k]) for k in ("hostname", "cpu_model") if machine.get(k)]
    if machine.get("logical_cpus"):
        parts.append(f"{machine['logical_cpus']} CPUs")
    gpus = software.get("gpus")
    if isinstance(gpus, list) and gpus:
        names = [str(as_dict(g).get("name") or g) for g in gpus]
        parts.append(", ".join(names))
    return " · ".join(parts)


def threads_of(r: Result) -> Any:
    threads = as_dict(r.config).get("threads")
    if threads is None:
        threads = as_dict(as_dict(r.method).get("threads")).get("threads")
    return threads


def code_text(r: Result) -> str:
    code = as_dict(r.code)
    commit = code.get("git_commit")
    text = str(commit)[:12] if commit else str(code.get("package_version") or "")
    return text + ("+dirty" if code.get("git_dirty") else "")


def sweep_of(r: Result) -> dict[str, Any] | None:
    """``context["sweep"]`` (contract 1) when it is well formed."""
    sweep = as_dict(r.context).get("sweep")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("id"), str) or num(sweep.get("value")) is None:
        return None
    return sweep


def fmt_param(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def varying_params(results: Sequence[Result]) -> list[str]:
    """Parameters that differ between ``results`` (all of them when there is one)."""
    keys: list[str] = []
    for r in results:
        keys.extend(k for k in r.params if k not in keys)
    if len(results) <= 1:
        return keys
    return [k for k in keys if len({repr(r.params.get(k)) for r in results}) > 1]


def params_text(r: Result, keys: Sequence[str]) -> str:
    return " ".join(f"{k}={fmt_param(r.params[k])}" for k in keys if k in r.params)


def write_atomic(path: Path, data: str) -> None:
    """Write a file the user named, atomically (see :func:`aibench.results.store.write_text_atomic`)."""
    write_text_atomic(path, data)
