"""Export for github-action-benchmark's custom tools, for teams that chart history on GitHub Pages.

The action reads a JSON list of ``{"name", "unit", "value", "range"?, "extra"?}`` and is told by its
``tool`` input which way is better: ``customSmallerIsBetter`` or ``customBiggerIsBetter``, one direction per
file. So one export holds the metrics of one direction: ``--github-benchmark-direction smaller|bigger``, or,
when not given, the direction the selected metrics share (mixed directions are refused, naming the split).

- Which metrics: each result's primary metric, or the names given with ``--github-benchmark-metric``.
- ``name`` is stable across commits, since the action keys its history charts by name: benchmark id, metric,
  then every parameter and harness setting of the configuration (``threads``, LoadGen scenario, ...), and
  for LoadGen runs the profile (``profile=quick``/``ci``/``official``): a quick run and an official run of
  one configuration share a config hash but are not one series.
  When the same configuration was run several times, the latest run is exported.
- ``range`` is ``± half-width`` of the 95% CI of the median where the metric is a median of kept samples.
- ``extra`` says which run, machine, commit and thread count the value came from.
- Failed runs, INVALID LoadGen runs and unmeasured (``unavailable``) metrics are left out, with a note:
  the action charts numbers, and these are not numbers to chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aibench.errors import UsageError
from aibench.report.load import ReportInputs
from aibench.report.view import (
    as_dict,
    code_text,
    fmt_param,
    is_invalid,
    machine_text,
    metric_entry,
    num,
    num_pair,
    threads_of,
    write_atomic,
)
from aibench.results.declaration import kept
from aibench.results.schema import Result

DIRECTIONS = {"smaller": "lower", "bigger": "higher"}
TOOLS = {"smaller": "customSmallerIsBetter", "bigger": "customBiggerIsBetter"}


def _config_words(r: Result) -> list[str]:
    words = []
    for key, value in as_dict(r.config).items():
        if isinstance(value, dict):
            words.extend(f"{k}={fmt_param(v)}" for k, v in value.items() if v is not None)
        elif value is not None:
            words.append(f"{key}={fmt_param(value)}")
    return words


def entry_name(r: Result, metric: str) -> str:
    words = [f"{k}={fmt_param(v)}" for k, v in r.params.items()] + _config_words(r)
    profile = as_dict(r.method).get("profile")
    if isinstance(profile, str):  # LoadGen's profile is not in the config hash, yet quick ≠ official: own series
        words.append(f"profile={profile}")
    return f"{r.id} {metric} [{', '.join(words)}]" if words else f"{r.id} {metric}"


def _range(r: Result, metric: str, value: float) -> str | None:
    """± half-width of the median's 95% CI, for a metric declared the median of samples that were kept."""
    entry = as_dict(r.metrics.get(metric))
    if entry.get("statistic") not in ("median", "p50"):
        return None
    summary = as_dict(as_dict(kept(r.samples, r.parts, entry.get("of"))).get("summary"))
    ci = num_pair(summary.get("median_ci95"))
    return None if ci is None else f"± {max(value - ci[0], ci[1] - value):.4g}"


def _extra(r: Result) -> str:
    lines = [f"run {r.run_id[:8]} at {r.started_at}"]
    for label, text in (("machine", machine_text(r)), ("code", code_text(r))):
        if text:
            lines.append(f"{label}: {text}")
    if threads_of(r) is not None:
        lines.append(f"threads: {threads_of(r)}")
    if r.load_scenario:
        lines.append(f"load scenario: {r.load_scenario}")
    if r.noisy:
        lines.append("noisy: IQR above 10% of the median")
    return "\n".join(lines)


def github_entries(inputs: ReportInputs, direction: str | None = None,
                   metrics: Sequence[str] = ()) -> tuple[str, list[dict[str, Any]], list[str]]:
    """(direction, entries, notes). ``direction`` None: the one direction the selected metrics share."""
    if direction is not None and direction not in DIRECTIONS:
        raise UsageError(f"--github-benchmark-direction must be smaller or bigger, not {direction!r}")
    candidates: list[tuple[Result, str, dict[str, Any]]] = []
    left_out = {"failed": 0, "INVALID": 0, "unavailable": 0}  # runs, metrics, metrics
    seen_metrics: set[str] = set()
    for r in inputs.results:
        if r.status != "ok":  # a failed run may have no metrics at all: count the run once
            left_out["failed"] += 1
            seen_metrics.update(r.metrics)
            continue
        for name in (metrics or ([r.primary_metric] if r.primary_metric else [])):
            entry = metric_entry(r, name)
            if entry is None:
                continue
            seen_metrics.add(name)
            if is_invalid(r) or entry.get("valid") is False:
                left_out["INVALID"] += 1
            elif num(entry.get("value")) is None:
                left_out["unavailable"] += 1
            else:
                candidates.append((r, name, entry))
    missing = [m for m in metrics if m not in seen_metrics]
    if missing:
        raise UsageError(f"no result has a metric named {', '.join(map(repr, missing))} (see the CSV's metric "
                         f"column for the names)")
    by_dir = {word: [c for c in candidates if c[2].get("direction") == d] for word, d in DIRECTIONS.items()}
    if direction is None:
        present = [word for word, cs in by_dir.items() if cs]
        if len(present) > 1:
            raise UsageError(
                f"the selected metrics point both ways ({len(by_dir['smaller'])} smaller-is-better, "
                f"{len(by_dir['bigger'])} bigger-is-better) and github-action-benchmark takes one direction per "
                f"file: add --github-benchmark-direction smaller or bigger")
        direction = present[0] if present else "smaller"
    chosen = by_dir[direction]
    other = len(candidates) - len(chosen)
    if not chosen:
        hint = (f" ({other} metric(s) are the other way: --github-benchmark-direction "
                f"{'bigger' if direction == 'smaller' else 'smaller'})") if other else ""
        raise UsageError(f"nothing to export as {direction}-is-better{hint}")
    entries: dict[str, dict[str, Any]] = {}
    replaced = 0
    for r, name, entry in chosen:  # results are sorted by benchmark and start time: later runs win
        value = float(entry["value"])
        item: dict[str, Any] = {"name": entry_name(r, name), "unit": str(entry.get("unit") or ""), "value": value}
        rng = _range(r, name, value)
        if rng:
            item["range"] = rng
        item["extra"] = _extra(r)
        replaced += item["name"] in entries
        entries[item["name"]] = item
    notes = [f"left out {n} {why} {'run' if why == 'failed' else 'metric'}(s)" for why, n in left_out.items() if n]
    if other:
        notes.append(f"left out {other} {'bigger' if direction == 'smaller' else 'smaller'}-is-better metric(s)")
    if replaced:
        notes.append(f"{replaced} older run(s) of an exported configuration left out (the latest is exported)")
    return direction, list(entries.values()), notes


def write_github(inputs: ReportInputs, path: Path, direction: str | None = None,
                 metrics: Sequence[str] = ()) -> tuple[str, int, list[str]]:
    """Write the export atomically; returns (the action's tool name, entries, notes)."""
    direction, entries, notes = github_entries(inputs, direction, metrics)
    write_atomic(path, json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    return TOOLS[direction], len(entries), notes
