"""Per-part figures of a result (schema version 2): the distribution of each stage, layer or module.

``Result.parts`` maps a kind of part to its parts by name, each with its own samples::

    "parts": {"stage": {"preprocess": {"unit": "s", "per": "batch", "values": [...], "summary": {...},
                                       "total": 0.021, "seen": 1204, "stride": 1},
                        "dnn": {...}, "postprocess": {...}},
              "layer": {...}, "module": {...}}

The kinds are :data:`~aibench.results.declaration.PART_KINDS`; the names are whatever the system under test
declares (the in-process system's preprocess/dnn/postprocess, a service's queue and compute stages, a
network's layers), in its order. ``values`` keeps at most :data:`MAX_PART_VALUES` of the values (every
``stride``-th, the way LoadGen latencies are kept); ``summary``, ``total`` and ``seen`` are over all of them.
A metric summarising a part declares ``"of": "parts.<kind>.<name>"`` (:mod:`aibench.results.declaration`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from aibench.results.stats import summarize

MAX_PART_VALUES = 10_000
STAGE_NOTE = ("the time of each batch in this stage, measured by the system under test (host clock; a device "
              "stage ends after the device is synchronised)")


def part_entry(values: Sequence[float], unit: str = "s", per: str = "batch",
               note: str | None = None) -> dict[str, Any] | None:
    """One part: its values (every stride-th when there are more than :data:`MAX_PART_VALUES`), their
    summary and total over all of them; None when there are no values."""
    xs = [float(v) for v in values]
    if not xs:
        return None
    stride = max(1, math.ceil(len(xs) / MAX_PART_VALUES))
    entry: dict[str, Any] = {"unit": unit, "per": per, "values": xs[::stride], "summary": summarize(xs),
                             "total": math.fsum(xs), "seen": len(xs), "stride": stride}
    if note:
        entry["note"] = note
    return entry


def stage_parts(durations_by_stage: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``parts["stage"]`` from the seconds each stage took per batch, ``{stage: [s, s, …]}``, in the
    system's order. A stage with no timed batch is left out."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in durations_by_stage.items():
        entry = part_entry(values, "s", "batch", STAGE_NOTE)
        if entry is not None:
            out[str(name)] = entry
    return out


def shares(group: Mapping[str, Any]) -> dict[str, float]:
    """Each part's share of the group's total (``{"dnn": 0.94, …}``); empty when the total is not positive
    or a part has no total."""
    totals = {name: entry.get("total") for name, entry in group.items() if isinstance(entry, Mapping)}
    if not totals or not all(isinstance(t, int | float) and not isinstance(t, bool) for t in totals.values()):
        return {}
    whole = math.fsum(totals.values())
    return {name: t / whole for name, t in totals.items()} if whole > 0 else {}
