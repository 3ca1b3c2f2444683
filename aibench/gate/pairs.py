"""The comparison record shared by ``compare`` and ``gate``: one :class:`Pair` per benchmark configuration and
metric, and the document both commands write with ``--json`` (contract 2 in the project notes; the report
draws comparison bars with CI whiskers from it).

Document::

    {"schema": "aibench-comparison" | "aibench-gate", "schema_version": 1,
     "baseline": label, "candidate": label, "created_at": ISO time,
     "pairs": [{"benchmark", "config_hash", "metric", "unit", "direction", "baseline", "candidate",
                "ratio", "ci", "confidence", "verdict", "reason", "threshold", ...}],
     "warnings": [str]}

``ratio`` is always candidate/baseline of the metric's value; ``direction`` says whether lower or higher
is better, so a reader need not know the metric. The gate adds ``outcome`` and ``rounds`` at the top level
and per pair ``rounds`` (the per-round ratios). Extra keys beyond the contract (``threshold``, ``params``,
the gate's per-round values) are informative; readers ignore what they do not know.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from aibench.gate.stats import CONFIDENCE
from aibench.results.schema import now_iso
from aibench.results.store import write_text_atomic

COMPARISON_SCHEMA = "aibench-comparison"
GATE_SCHEMA = "aibench-gate"
DOC_SCHEMA_VERSION = 1


@dataclass
class Pair:
    """One metric of one benchmark configuration, baseline against candidate."""

    benchmark: str
    config_hash: str
    metric: str
    unit: str
    direction: str
    baseline: float | None
    candidate: float | None
    ratio: float | None
    ci: tuple[float, float] | None
    verdict: str
    reason: str | None
    threshold: float | None = None
    confidence: float = CONFIDENCE
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "benchmark": self.benchmark, "config_hash": self.config_hash, "metric": self.metric,
            "unit": self.unit, "direction": self.direction, "baseline": self.baseline,
            "candidate": self.candidate, "ratio": self.ratio,
            "ci": [self.ci[0], self.ci[1]] if self.ci is not None else None,
            "confidence": self.confidence, "verdict": self.verdict, "reason": self.reason,
            "threshold": self.threshold, "params": self.params,
        }
        d.update(self.extra)
        return d


def document(schema: str, baseline: str, candidate: str, pairs: list[Pair], warnings: list[str],
             **top: Any) -> dict[str, Any]:
    """The JSON document of a comparison or a gate (``top`` adds e.g. ``outcome`` and ``rounds``)."""
    doc: dict[str, Any] = {"schema": schema, "schema_version": DOC_SCHEMA_VERSION, "baseline": baseline,
                           "candidate": candidate, "created_at": now_iso()}
    doc.update(top)
    doc["pairs"] = [p.to_dict() for p in pairs]
    doc["warnings"] = list(warnings)
    return doc


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a file the user named (atomically: temp file + rename), or to stdout for ``-``."""
    if str(target) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    write_text_atomic(target, text if text.endswith("\n") else text + "\n")


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False)
