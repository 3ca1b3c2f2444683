"""Result files of schema version 1, read as version 2: the one conversion on read.

Files written before schema version 2 stay readable by ``report``, ``compare``, ``gate`` and ``sweep
--resume``: :meth:`aibench.results.schema.Result.from_dict` checks a version-1 document against the frozen
version-1 schema (``result-v1.schema.json``), converts it here, and checks the outcome against the current
schema. The file on disk is never changed. The rules:

* ``schema_version`` 1 -> 2; ``scenario`` (LoadGen's) -> ``load_scenario``; ``system`` (the machine
  fingerprint) -> ``machine``; ``parts`` is added, empty (version 1 kept stage times only as summed shares).
* Every metric entry gets the declaration version 1 did not write (:mod:`aibench.results.declaration`),
  inferred from its name by :func:`legacy_declaration`. This is the **only** code in aibench allowed to read
  meaning into a metric's name; it gives each name exactly the declaration the current benchmark
  definitions give it (``tests/test_results_v1.py`` checks the two agree for every registered benchmark).
  A name it does not know is declared a plain ``value`` with no samples behind it, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aibench.results.declaration import declaration

FROM_VERSION = 1
TO_VERSION = 2

# <samples>_<statistic>: the kernel timer's time_*, the training loop's step_time_*, LoadGen's latency_*.
_OF_SAMPLES = re.compile(r"^(?P<key>time|step_time|latency)_(?P<stat>median|p50|p90|p95|p97|p99|p99_9|min|max|"
                         r"mean|iqr)$")
# Rates at the kernel timer's median time per call (work / median).
_RATES_OF_TIME = ("gflops", "gbps", "algbw", "busbw")
# Means by name (path_cpu_ms is newer than version 1: listed so that one name keeps one meaning everywhere).
_MEANS = ("loss_final", "epoch_time", "avg_power", "path_cpu_ms")
_COUNTS = ("steps_to_target", "updates")  # updates: scenario/ecommerce's streaming updates, newer than version 1


def legacy_declaration(name: str, samples: Mapping[str, Any] | None = None,
                       method: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The declaration of a version-1 metric called ``name`` in a result with these ``samples`` and
    ``method`` (a rate is the inverse of a time only where that time's samples were kept)."""
    samples = samples if isinstance(samples, Mapping) else {}
    method = method if isinstance(method, Mapping) else {}
    if name in _RATES_OF_TIME:
        # The kernel runner's rates are work / median time per call; LoadGen's gflops is FLOPs × samples/s.
        return declaration("rate", "samples.time", "median") if "time" in samples else declaration("rate")
    m = _OF_SAMPLES.match(name)
    if m:
        return declaration(m["stat"], f"samples.{m['key']}")
    if name == "latency_early_stopping":
        return declaration("early_stopping")
    if name.startswith("share_") and len(name) > len("share_"):
        return declaration("ratio", f"parts.stage.{name.removeprefix('share_')}")
    if name in ("samples_per_s", "samples_per_s_per_rank") and "step_time" in samples and \
            str(method.get("rate", "")).startswith("samples / sum"):
        return declaration("rate", "samples.step_time", "mean")  # the training loop's samples / sum of steps
    if name.endswith(("_per_s", "_per_s_no_overhead", "_per_s_per_rank", "_per_joule")):
        return declaration("rate")
    if name.startswith("energy_per_") or name in _MEANS:
        return declaration("mean")
    if name in _COUNTS:
        return declaration("count")
    if name in ("speedup", "efficiency"):
        return declaration("ratio")
    # peak_target_qps, batch_latency, time_init … time_to_target, quality, target_reached, energy_to_target, and
    # any name this aibench does not know: one figure, no statistic of samples (nothing is guessed).
    return declaration("value")


def v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """A version-2 document from a version-1 one that passed the version-1 schema (a new dict; the raw
    sample lists are shared, not copied)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "scenario":
            out["load_scenario"] = value
        elif key == "system":
            out["machine"] = value
        elif key == "schema_version":
            out[key] = TO_VERSION
        elif key == "metrics":
            out[key] = {name: {**entry, **legacy_declaration(name, doc.get("samples"), doc.get("method"))}
                        for name, entry in value.items()}
        else:
            out[key] = value
    out.setdefault("parts", {})
    out.setdefault("load_scenario", None)
    return out
