"""Throughput per Tonic application, read from result files (or given as a speed-up), with where each figure
came from.

A result counts for an application when it is a run of that application (``component/<app>``, or a scenario
whose ``app`` parameter names it, e.g. ``scenario/djinn``), finished (``ok``), not INVALID, and its primary
metric *declares* itself a throughput: ``statistic: rate`` with ``direction: higher`` (read from the
declaration, never from the metric's name; a SingleStream run, whose primary metric is a latency, does not
count). Per application and unit the best such figure is taken, and the file it came from is named. Results
that do not count are skipped and summed up in one note; a file named directly that does not count is
refused (exit 4), as is a side with no usable figure at all.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench.errors import ResultIOError, UsageError
from aibench.results.files import scan
from aibench.results.schema import Result
from aibench.results.validate import shown
from aibench.tco.params import APPS


@dataclass(frozen=True)
class Figure:
    """One throughput figure: per CPU-only server (CPU side) or per accelerator (accelerator side)."""

    app: str
    value: float
    unit: str
    provenance: str  # measured | given
    source: str  # the result file, or the --speedup given
    benchmark: str | None = None
    metric: str | None = None
    run_id: str | None = None
    device: str | None = None
    devices: int = 1  # a measured figure over this many devices, divided by it
    load_scenario: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Measured:
    """A model input measured by a run (the DNN share of an app's time, its bytes per query)."""

    value: float
    source: str  # the result file
    benchmark: str
    throughput: float  # the run's throughput (the best run that has the figure is taken)
    basis: str

    def text(self) -> str:
        return f"{self.source} ({self.benchmark}; {self.basis})"


@dataclass
class Side:
    """What one side (CPU or accelerator) holds: per app, the best figure per unit, and what was skipped."""

    name: str
    paths: list[str]
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)  # app -> unit -> best
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # app -> unit -> runs that counted
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files
    file_notes: list[str] = field(default_factory=list)  # from the reader (damaged, foreign files)
    # per app, the DNN share and the bytes per query measured by its best run that has them (see measured())
    shares: dict[str, Measured] = field(default_factory=dict)
    query_bytes: dict[str, Measured] = field(default_factory=dict)

    def note(self) -> str | None:
        parts = [f"{n} {why}" for why, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
        parts += self.file_notes
        return shown("; ".join(parts)) if parts else None


def app_of(r: Result) -> str | None:
    """The Tonic application a result measured, or None."""
    kind = r.benchmark.get("kind")
    if kind == "component" and r.benchmark.get("name") in APPS:
        return str(r.benchmark["name"])
    app = r.params.get("app") if isinstance(r.params, dict) else None
    if kind == "scenario" and isinstance(app, str) and app in APPS:
        return app
    return None


def device_of(r: Result) -> tuple[str, int]:
    """(the device(s) a run used as written, how many): ``device`` (component) or ``devices`` (a served
    scenario, comma-separated); CPU when neither is given."""
    dev = r.params.get("device") if isinstance(r.params, dict) else None
    if not isinstance(dev, str):
        dev = r.params.get("devices") if isinstance(r.params, dict) else None
    if not isinstance(dev, str) or not dev.strip():
        return "cpu", 1
    names = [d.strip() for d in dev.split(",") if d.strip()]
    return dev, max(1, len(names))


def is_resident(r: Result) -> bool:
    """A run whose inputs were resident on the server's devices (``scenario/djinn --resident-inputs``)."""
    inputs = r.context.get("inputs") if isinstance(r.context, dict) else None
    if isinstance(inputs, dict) and isinstance(inputs.get("mode"), str):
        return inputs["mode"] == "resident"
    return bool(isinstance(r.params, dict) and r.params.get("resident_inputs"))


def measured_inputs(r: Result) -> tuple[dict[str, Any] | None, float | None]:
    """(the DNN split of the run's time, its bytes per query both ways) where the run has them: the same
    figures the report's DjiNN studies draw (:mod:`aibench.report.djinn_studies`). A resident-input run moves
    no inputs: its bytes do not count."""
    from aibench.report.djinn_studies import bandwidth, dnn_split

    split = dnn_split(r)
    if split is not None and not 0 < split["dnn_share"] <= 1:
        split = None
    bw = None if is_resident(r) else bandwidth(r, [])
    total = bw["up"] + bw["down"] if bw is not None else None
    return split, total if total is not None and math.isfinite(total) and total > 0 else None


def is_cpu(device: str) -> bool:
    return all(d.strip().startswith("cpu") for d in device.split(",") if d.strip())


def throughput_of(r: Result) -> tuple[str, dict[str, Any]] | None:
    """(metric name, entry) of the primary metric when it declares a throughput with a usable value."""
    name = r.primary_metric
    entry = r.metrics.get(name) if isinstance(name, str) else None
    if not isinstance(entry, dict) or entry.get("statistic") != "rate" or entry.get("direction") != "higher":
        return None
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    if entry.get("valid") is False:
        return None
    return str(name), entry


def why_not(r: Result, side: str) -> str | None:
    """Why a result does not count on ``side`` (cpu | accelerator), or None when it does."""
    kind = r.benchmark.get("kind")
    if app_of(r) is None:
        if kind == "micro":
            return "micro benchmark result(s) (not an application's throughput)"
        return "result(s) of no Tonic application (imc dig face asr pos chk ner)"
    if r.status != "ok":
        return f"{r.status} run(s)"
    if isinstance(r.validity, dict) and r.validity.get("valid") is False:
        return "INVALID run(s)"
    if throughput_of(r) is None:
        entry = r.metrics.get(r.primary_metric or "")
        stat = entry.get("statistic") if isinstance(entry, dict) else None
        if stat == "rate":
            return "run(s) whose throughput is unavailable"
        return "run(s) whose primary metric is not a throughput (e.g. a SingleStream latency)"
    device, _ = device_of(r)
    if side == "cpu" and not is_cpu(device):
        return "accelerator run(s) (name their folder with --accelerator)"
    if side == "cpu" and is_resident(r):
        return ("resident-input run(s) (scenario/djinn --resident-inputs: their throughput leaves out moving the "
                "inputs, which a CPU-only server must do)")
    if side == "accelerator" and is_cpu(device):
        return "CPU run(s)"
    return None


def read_side(name: str, paths: Sequence[str | os.PathLike[str]]) -> Side:
    """Every usable figure under ``paths`` for side ``name`` (cpu | accelerator). Exit 4 when a file named
    directly does not count or when nothing counts."""
    found = scan(paths)
    side = Side(name, [os.fspath(p) for p in paths])
    named = {Path(p) for p in found.named}
    for r in found.results:
        path = found.files[r.run_id]
        why = why_not(r, name)
        if why is not None:
            if path in named:
                where = "" if name == "cpu" else " (--accelerator)"
                raise ResultIOError(f"{shown(path)}{where}: {r.id} is not usable for `aibench tco`: "
                                    f"{why.replace('(s)', '')}")
            side.skipped[why] += 1
            continue
        app = app_of(r)
        assert app is not None
        metric, entry = throughput_of(r)  # type: ignore[misc]
        device, n = device_of(r)
        per = float(entry["value"]) / (1 if name == "cpu" else n)
        unit = str(entry.get("unit") or "")
        fig = Figure(app, per, unit, "measured", str(path), r.id, metric, r.run_id, device, 1 if name == "cpu"
                     else n, r.load_scenario)
        best = side.figures.setdefault(app, {})
        side.counts.setdefault(app, Counter())[unit] += 1
        if unit not in best or fig.value > best[unit].value:
            best[unit] = fig
        split, nbytes = measured_inputs(r)
        rate = float(entry["value"])
        if split is not None and (app not in side.shares or rate > side.shares[app].throughput):
            side.shares[app] = Measured(split["dnn_share"], str(path), r.id, rate, split["basis"])
        if nbytes is not None and (app not in side.query_bytes or rate > side.query_bytes[app].throughput):
            side.query_bytes[app] = Measured(nbytes, str(path), r.id, rate, "bytes per query up + down, as sent")
    others = found.named_non_results()
    if others:
        raise ResultIOError(f"{shown(others[0])}: a sweep record or comparison, not a result: not usable for "
                            "`aibench tco`")
    note = found.note()
    if note:
        side.file_notes.append(note)
    for exc in found.other_versions:
        if exc.detail.get("named"):
            raise exc
        side.skipped["result(s) of another schema version"] += 1
    if not side.figures:
        where = ", ".join(shown(p) for p in side.paths)
        what = f" ({side.note()})" if side.note() else ""
        label = "a CPU" if name == "cpu" else "an accelerator"
        raise ResultIOError(f"no usable throughput figure of {label} under {where}{what}: tco needs finished, "
                            "not INVALID runs of imc dig face asr pos chk ner whose primary metric is a "
                            "throughput (e.g. aibench run component imc)")
    return side


def measured_params(cpu: Side, acc: Side | None) -> dict[str, tuple[float, str]]:
    """The model inputs the results measured, as (value, where): each app's DNN share from the CPU side (the
    CPU-only server's split of the app's time) and its bytes per query from the CPU side, else the
    accelerator side (bytes do not depend on the machine)."""
    out: dict[str, tuple[float, str]] = {}
    for app, m in cpu.shares.items():
        out[f"dnn_share_{app}"] = (m.value, m.text())
    for side in (acc, cpu):  # the CPU side's figure wins: written last
        for app, m in (side.query_bytes.items() if side is not None else ()):
            out[f"query_bytes_{app}"] = (m.value, m.text())
    return out


def parse_speedup(texts: Iterable[str]) -> dict[str, float | None]:
    """``--speedup 20`` (every app), ``--speedup imc=20,pos=7`` (those apps), repeatable; ``None`` keys the
    value for every app. A bad one: exit 2."""
    out: dict[str, float | None] = {}
    for text in texts:
        for token in text.split(","):
            token = token.strip()
            if not token:
                raise UsageError(f"--speedup {text!r}: an empty entry; expected X or APP=X[,APP=X…]")
            app, eq, value = token.rpartition("=")
            key = app.strip().lower() if eq else "*"
            if eq and key not in APPS:
                raise UsageError(f"--speedup {text!r}: unknown application {app.strip()!r} (one of "
                                 f"{', '.join(APPS)})")
            try:
                x = float(value)
            except ValueError:
                raise UsageError(f"--speedup {text!r}: {value.strip()!r} is not a number") from None
            if not math.isfinite(x) or x <= 0:
                raise UsageError(f"--speedup {text!r}: a speed-up must be a positive finite number, not {value}")
            out[key] = x
    return out  # type: ignore[return-value]


def pair(cpu: Side, acc: Side | None, speedup: Mapping[str, float] | None) -> tuple[dict[str, Figure],
                                                                               dict[str, Figure], list[str]]:
    """The CPU and accelerator figure of each app, in one unit per app; notes on apps left out."""
    notes: list[str] = []
    cpu_out: dict[str, Figure] = {}
    acc_out: dict[str, Figure] = {}
    for app in APPS:
        mine = cpu.figures.get(app, {})
        if not mine:
            continue
        if acc is not None:
            theirs = acc.figures.get(app, {})
            common = set(mine) & set(theirs)
            if not common:
                if theirs:
                    notes.append(f"{app}: the CPU and accelerator figures have no unit in common "
                                 f"({', '.join(sorted(mine))} vs {', '.join(sorted(theirs))}); left out")
                else:
                    notes.append(f"{app}: no accelerator figure; left out")
                continue
            counts = cpu.counts[app] + acc.counts.get(app, Counter())
            unit = sorted(common, key=lambda u: (-counts[u], u))[0]
            cpu_out[app], acc_out[app] = mine[unit], theirs[unit]
            continue
        assert speedup is not None
        x = speedup.get(app, speedup.get("*"))
        if x is None:
            notes.append(f"{app}: no --speedup given for it; left out")
            continue
        unit = sorted(mine, key=lambda u: (-cpu.counts[app][u], u))[0]
        base = mine[unit]
        given = "--speedup " + (f"{app}={x:g}" if app in speedup else f"{x:g}")
        acc_out[app] = Figure(app, base.value * x, unit, "given", f"{given} (over the CPU figure)")
        cpu_out[app] = base
    if not cpu_out:
        raise ResultIOError("no application has both a CPU and an accelerator throughput figure: "
                            + "; ".join(notes))
    return cpu_out, acc_out, notes
