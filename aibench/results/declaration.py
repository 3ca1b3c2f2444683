"""What a metric *is*: the declaration every metric entry of a result carries (schema version 2).

A metric entry says, beside its value, unit and direction, which statistic of which samples it is::

    "time_p99": {"value": 2.1e-05, "unit": "s", "direction": "lower",
                 "statistic": "p99", "of": "samples.time"}
    "gflops":   {"value": 41.2, "unit": "GFLOP/s", "direction": "higher",
                 "statistic": "rate", "of": "samples.time", "inverse_of": "median", "work": 0.000524}
    "share_dnn": {"value": 0.94, "unit": "fraction", "direction": "higher",
                  "statistic": "ratio", "of": "parts.stage.dnn"}

* ``statistic`` — one of :data:`STATISTICS`: a quantile (``median``, ``p50`` … ``p99_9``, ``min``, ``max``),
  ``mean``, ``iqr``, ``sum``; ``rate`` (work per unit of time); ``count``; ``ratio`` (a dimensionless quotient:
  a share, a speed-up); ``early_stopping`` (LoadGen's early-stopping estimate of its scenario's percentile);
  ``value`` (one figure that is no statistic of repeated samples: a phase time, a loss, a search result).
* ``of`` — what the figure summarises: ``samples.<name>`` (the result's raw samples of that name) or
  ``parts.<kind>.<name>`` (one part's distribution, :mod:`aibench.results.parts`), or null when no samples
  stand behind it. A reader must expect the samples to be absent (an unavailable figure, a file cut short).
* ``inverse_of`` — for a rate of a time: the statistic of ``of`` whose inverse, times ``work`` (the work per
  sample, in the unit's numerator: GFLOP per call for GFLOP/s), the rate is.

``compare``, ``gate``, ``sweep`` and the reports read these fields and never a metric's *name*: a per-layer
or per-module figure called anything is compared and gated by what it declares. The declarations come from
one place, the benchmark's :class:`aibench.registry.MetricSpec` list, filled into each entry when the result
is finished (:meth:`aibench.results.schema.Result.declare_metrics`); the one exception is reading a file of
schema version 1, whose metrics declared nothing (:mod:`aibench.results.convert`, the only code that infers a
declaration from a metric name). Nothing here imports more than the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Quantiles, in percent (numpy's linear interpolation, as aibench.results.stats.percentile).
QUANTILES: dict[str, float] = {"median": 50.0, "p50": 50.0, "p90": 90.0, "p95": 95.0, "p97": 97.0,
                               "p99": 99.0, "p99_9": 99.9}
STATISTICS = (*QUANTILES, "min", "max", "mean", "iqr", "sum", "rate", "count", "ratio", "early_stopping",
              "value")
# Tail figures move more from run to run than central ones: the gate widens their threshold.
TAIL_STATISTICS = frozenset({"p99", "p99_9", "max"})
# What a rate of a time can be the inverse of.
INVERSE_OF = (*QUANTILES, "mean")
PART_KINDS = ("stage", "layer", "module")
DECLARATION_KEYS = ("statistic", "of", "inverse_of")


def of_problem(of: Any) -> str | None:
    """Why ``of`` is not a valid sample reference (``samples.<name>``, ``parts.<kind>.<name>`` or None)."""
    if of is None:
        return None
    if not isinstance(of, str):
        return f"'of' must be a string or null, not {type(of).__name__}"
    head, _, rest = of.partition(".")
    if head == "samples" and rest and "." not in rest:
        return None
    if head == "parts":
        kind, _, name = rest.partition(".")
        if kind in PART_KINDS and name:
            return None
    return (f"'of' must be samples.<name> or parts.<{'|'.join(PART_KINDS)}>.<name>, not {of!r}")


def check(statistic: str, of: str | None = None, inverse_of: str | None = None) -> None:
    """Raise ValueError when a declaration is not one this schema knows."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, not {statistic!r}")
    if (why := of_problem(of)) is not None:
        raise ValueError(why)
    if inverse_of is not None:
        if statistic != "rate":
            raise ValueError("only a rate can be the inverse of a statistic (inverse_of)")
        if inverse_of not in INVERSE_OF:
            raise ValueError(f"inverse_of must be one of {', '.join(INVERSE_OF)}, not {inverse_of!r}")
        if of is None:
            raise ValueError("inverse_of needs 'of': the samples whose statistic the rate inverts")


def declaration(statistic: str, of: str | None = None, inverse_of: str | None = None) -> dict[str, Any]:
    """The declaration fields of a metric entry (checked)."""
    check(statistic, of, inverse_of)
    out: dict[str, Any] = {"statistic": statistic, "of": of}
    if inverse_of is not None:
        out["inverse_of"] = inverse_of
    return out


# The declaration of a figure nobody declared: one value, no samples behind it. Never a guess at a
# statistic: the gate then uses its plain threshold and compare no sample interval.
UNDECLARED = {"statistic": "value", "of": None}


def declare(metrics: dict[str, dict[str, Any]], declared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Fill the declaration of every entry of ``metrics`` that has none, in place, from ``declared`` (metric
    name -> declaration). An entry that declares itself (``statistic`` present) is left as it is. Returns
    the names that had no declaration anywhere (they get :data:`UNDECLARED`)."""
    missing = []
    for name, entry in metrics.items():
        if not isinstance(entry, dict) or "statistic" in entry:
            continue
        decl = declared.get(name)
        if decl is None:
            missing.append(name)
            decl = UNDECLARED
        for key in DECLARATION_KEYS:
            if key in decl:
                entry[key] = decl[key]
        entry.setdefault("of", None)
    return missing


def kept(samples: Any, parts: Any, of: Any) -> Mapping[str, Any] | None:
    """The entry ``of`` refers to (``{"unit", "values", "summary", …}``) in a result's ``samples`` or
    ``parts``, or None when it is absent or malformed."""
    if not isinstance(of, str) or of_problem(of) is not None:
        return None
    head, _, rest = of.partition(".")
    if head == "samples":
        entry = samples.get(rest) if isinstance(samples, Mapping) else None
    else:
        kind, _, name = rest.partition(".")
        group = parts.get(kind) if isinstance(parts, Mapping) else None
        entry = group.get(name) if isinstance(group, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def values_of(samples: Any, parts: Any, of: Any) -> list[float] | None:
    """The values ``of`` refers to in a result's ``samples`` / ``parts``, or None when absent or malformed."""
    values = (kept(samples, parts, of) or {}).get("values")
    return values if isinstance(values, list) else None


def quantile_basis(entry: Mapping[str, Any] | None) -> tuple[str, float, bool] | None:
    """(``of``, quantile in %, inverse?) when a metric is a quantile of kept samples (``time_median``: the
    median of ``samples.time``) or a rate that is the inverse of one (``gflops``: work over that median);
    None for anything else (a mean, a max, a LoadGen rate, a share…). Read from the declaration only."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("of"), str):
        return None
    statistic = entry.get("statistic")
    if statistic in QUANTILES:
        return entry["of"], QUANTILES[statistic], False
    if statistic == "rate" and entry.get("inverse_of") in QUANTILES:
        return entry["of"], QUANTILES[entry["inverse_of"]], True
    return None


def is_tail(entry_or_statistic: Mapping[str, Any] | str | None) -> bool:
    """Whether a metric (its entry, or its statistic) is a tail figure: p99, p99.9, max."""
    statistic = entry_or_statistic.get("statistic") if isinstance(entry_or_statistic, Mapping) \
        else entry_or_statistic
    return statistic in TAIL_STATISTICS
