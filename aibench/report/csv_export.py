"""The CSV view: one row per result *and metric* (long format), MLPerf-summary-like columns.

"benchmark, load_scenario, metric, value, unit, validity, machine" name one figure each, so a result with twelve
metrics is twelve rows that share its identifying columns (``run_id`` ties them together; ``primary`` marks
the row to compare on). A result without metrics (a failed run) is one row with an empty metric and its
error. Every parameter is a ``param.<name>`` column (empty where a benchmark lacks it); sweep points add
``sweep.*`` columns. A value that was not measured is empty, with the reason in ``unavailable``; figures of
an INVALID LoadGen run carry ``validity`` INVALID on every row.

Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage
return) are prefixed with ``'`` (OWASP's advice against CSV injection): result files may hold any text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aibench.report.djinn_studies import load_links, study_figures
from aibench.report.load import ReportInputs
from aibench.report.view import (
    as_dict,
    code_text,
    is_invalid,
    machine_text,
    num,
    sweep_of,
    threads_of,
    validity_text,
)
from aibench.results.schema import Result

BASE_COLUMNS = ("benchmark", "kind", "name", "load_scenario", "metric", "value", "unit", "direction", "statistic",
                "of", "primary", "validity", "status", "unavailable", "noisy", "machine", "threads", "code",
                "config_hash", "run_id", "started_at", "file", "error")
SWEEP_COLUMNS = ("sweep.id", "sweep.kind", "sweep.param", "sweep.value")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(x: Any) -> Any:
    """Numbers stay numbers; text is defused against spreadsheet formulas; other JSON becomes text."""
    if x is None or isinstance(x, bool | int | float):
        return x
    text = x if isinstance(x, str) else str(x)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _rows(r: Result, file: Path | None, param_keys: Sequence[str], with_sweep: bool,
          links: Sequence[Any] = ()) -> list[dict[str, Any]]:
    bench = as_dict(r.benchmark)
    common: dict[str, Any] = {
        "benchmark": r.id, "kind": bench.get("kind"), "name": bench.get("name"), "load_scenario": r.load_scenario,
        "validity": validity_text(r) or None, "status": r.status, "noisy": r.noisy,
        "machine": machine_text(r) or None, "threads": threads_of(r), "code": code_text(r) or None,
        "config_hash": r.config_hash, "run_id": r.run_id, "started_at": r.started_at,
        "file": str(file) if file else None, "error": as_dict(r.error).get("message"),
    }
    if with_sweep:
        sweep = sweep_of(r) or {}
        for col in SWEEP_COLUMNS:
            common[col] = sweep.get(col.removeprefix("sweep."))
    for k in param_keys:
        common[f"param.{k}"] = r.params.get(k)
    rows = []
    for name, entry in r.metrics.items():
        entry = as_dict(entry)
        rows.append({**common, "metric": name, "value": num(entry.get("value")), "unit": entry.get("unit"),
                     "direction": entry.get("direction"), "statistic": entry.get("statistic"),
                     "of": entry.get("of"), "primary": name == r.primary_metric,
                     "unavailable": entry.get("unavailable"),
                     "validity": "INVALID" if is_invalid(r) or entry.get("valid") is False else common["validity"]})
    # the DjiNN studies' derived figures (aibench.report.djinn_studies): study.* metrics, never primary
    for fig in study_figures(r, links):
        rows.append({**common, **fig, "value": num(fig["value"]), "primary": False, "unavailable": None,
                     "validity": "INVALID" if is_invalid(r) else common["validity"]})
    if not rows:
        rows.append({**common, "metric": None, "value": None, "unit": None, "direction": None, "primary": None,
                     "unavailable": None})
    return rows


def results_frame(inputs: ReportInputs, links: Sequence[Any] | None = None) -> Any:
    """A pandas DataFrame of every result's metrics (see the module docstring for the columns), with the
    DjiNN studies' ``study.*`` rows (``links``: their reference links, default their table)."""
    import pandas as pd

    links = list(links) if links is not None else load_links()
    param_keys: list[str] = []
    for r in inputs.results:
        param_keys.extend(k for k in r.params if k not in param_keys)
    with_sweep = any(sweep_of(r) for r in inputs.results)
    columns = [*BASE_COLUMNS, *(SWEEP_COLUMNS if with_sweep else ()), *(f"param.{k}" for k in param_keys)]
    rows = [{k: _cell(v) for k, v in row.items()}
            for r in inputs.results for row in _rows(r, inputs.result_file(r), param_keys, with_sweep, links)]
    # dtype=object: an integer column with blanks stays integers (pandas would turn 4 into 4.0).
    return pd.DataFrame(rows, columns=columns, dtype=object)


def render_csv(inputs: ReportInputs) -> str:
    return results_frame(inputs).to_csv(index=False, lineterminator="\n")
