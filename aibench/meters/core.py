"""The meter protocol, the background sampler and the measured window.

A meter reads something at the start of a window and at its end (a counter, a peak) and may ask the
sampler for periodic readings in between. :class:`Window` runs a set of meters around exactly the measured
work and assembles their readings into the JSON ``meters`` section of a result. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Provenance of a figure: a hardware counter read at both ends, power sampled and integrated, or nothing.
MEASURED = "measured"
SAMPLED = "sampled"
UNAVAILABLE = "unavailable"
PROVENANCES = (MEASURED, SAMPLED, UNAVAILABLE)

# Reason codes of an unavailable reading (docs/meters.md explains each).
REASONS = {
    "no_powercap": "the kernel exposes no /sys/class/powercap (no RAPL driver, or a VM that hides it)",
    "no_rapl_zones": "/sys/class/powercap has no RAPL package zone",
    "permission_denied": "the counter exists but this user may not read it",
    "read_error": "the counter could not be read",
    "no_nvml": "the NVML library (pynvml / libnvidia-ml) cannot be loaded or initialised",
    "no_gpu": "NVML found no GPU for the device in scope",
    "not_supported": "the device supports neither an energy counter nor power readings",
    "counter_reset": "the counter went backwards during the window (driver reload?)",
    "too_few_samples": "fewer than two power samples: nothing to integrate",
    "not_in_scope": "no device of this kind does the measured work",
    "meter_error": "the meter itself failed; detail says how",
}

# NVML averages power over ~1 s and utilisation over 1/6-1 s: sampling faster than 4 Hz adds cost, not detail.
DEFAULT_INTERVAL_S = 0.25


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Stamp:
    """A moment read from both clocks: wall (for the record) and monotonic (for durations)."""

    wall: float
    mono: float

    @classmethod
    def now(cls) -> Stamp:
        return cls(time.time(), time.perf_counter())


def window_json(start: Stamp, end: Stamp) -> dict[str, Any]:
    return {"start": iso(start.wall), "end": iso(end.wall), "duration_s": end.mono - start.mono}


def unavailable(reason: str, detail: str = "", **fields: Any) -> dict[str, Any]:
    """A reading that has no value, with its reason code (one of :data:`REASONS`) and a human detail."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason code {reason!r}")
    out: dict[str, Any] = dict(fields)
    out.update({"provenance": UNAVAILABLE, "reason": reason, "detail": detail or REASONS[reason]})
    return out


def stats(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


class Sampler:
    """One low-rate background thread that calls the registered functions every ``interval_s``.

    It never runs on the measuring thread, and not at all when nothing registered a function (so a
    machine with no GPU pays nothing). Each function keeps its own samples; the sampler keeps the tick
    count and how long the sampling itself took on its thread.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._fns: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.busy_s = 0.0
        self.errors = 0

    def register(self, fn: Callable[[], None]) -> None:
        if self._thread is not None:
            raise RuntimeError("register sampling functions before the sampler starts")
        self._fns.append(fn)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            t0 = time.perf_counter()
            for fn in self._fns:
                try:
                    fn()
                except Exception:  # a failing sample is counted, never raised into the benchmark
                    self.errors += 1
            self.busy_s += time.perf_counter() - t0
            self.ticks += 1

    def start(self) -> None:
        if self._fns and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="aibench-meter-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def to_json(self) -> dict[str, Any]:
        return {"running": self._thread is not None, "interval_s": self.interval_s, "ticks": self.ticks,
                "functions": len(self._fns), "busy_s": self.busy_s, "errors": self.errors,
                "thread": "aibench-meter-sampler" if self._thread is not None else None}


class Meter(Protocol):
    """What every meter does. ``start`` runs just before the window opens (it may ``register`` a sampling
    function with the sampler), ``stop`` just after it closes. ``readings`` returns sections of the
    ``meters`` record: ``{"energy": [...], "memory": {...}, "utilisation": {"cpu": {...}, "gpu": [...]}}``
    (lists are concatenated across meters, dicts merged)."""

    name: str

    def start(self, sampler: Sampler) -> None: ...

    def stop(self) -> None: ...

    def readings(self) -> dict[str, Any]: ...


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def energy_total(readings: list[dict[str, Any]], domains: Sequence[str], scope: str) -> dict[str, Any]:
    """Sum the energy readings of ``domains`` (the devices doing the work). Provenance is the weakest of
    the parts: ``sampled`` if any part was sampled; readings without a value are listed as ``missing``."""
    parts = [r for r in readings if r.get("domain") in domains]
    have = [r for r in parts if r.get("energy_j") is not None]
    missing = [r["scope"] for r in parts if r.get("energy_j") is None]
    if not have:
        first = next(iter(parts), None)
        if first is None:
            return unavailable("not_in_scope", f"no energy meter covers {scope}", scope=scope, parts=[])
        return unavailable(first["reason"], first.get("detail", ""), scope=scope, parts=[], missing=missing)
    energy = sum(r["energy_j"] for r in have)
    duration = max(r["window"]["duration_s"] for r in have)
    out: dict[str, Any] = {
        "scope": scope,
        "provenance": SAMPLED if any(r["provenance"] == SAMPLED for r in have) else MEASURED,
        "energy_j": energy,
        "duration_s": duration,
        "avg_power_w": energy / duration if duration > 0 else None,
        "parts": [r["scope"] for r in have],
    }
    if missing:
        out["missing"] = missing
    return out


class Window:
    """Meters around one measured window. A context manager; after it closes, :meth:`readings` gives the
    JSON ``meters`` record. A meter that fails never breaks the measurement: it is recorded instead."""

    def __init__(self, meters: Sequence[Meter], *, sampler: Sampler | None = None, device: str = "cpu",
                 energy_domains: Sequence[str] = ("package", "dram"), what: str = "measured window") -> None:
        self.meters = list(meters)
        self.sampler = sampler or Sampler()
        self.device = device
        self.energy_domains = tuple(energy_domains)
        self.what = what
        self._start: Stamp | None = None
        self._end: Stamp | None = None
        self._failed: dict[str, str] = {}

    def _guard(self, meter: Meter, action: str, fn: Callable[[], Any]) -> Any:
        if meter.name in self._failed:
            return None
        try:
            return fn()
        except Exception as exc:
            log.debug("meter %s failed in %s", meter.name, action, exc_info=True)
            self._failed[meter.name] = f"{action}: {type(exc).__name__}: {exc}"
            return None

    def __enter__(self) -> Window:
        if self._start is not None:
            raise RuntimeError("a meter window is used once")
        for m in self.meters:
            self._guard(m, "start", lambda m=m: m.start(self.sampler))
        self.sampler.start()
        self._start = Stamp.now()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = Stamp.now()
        self.sampler.stop()
        for m in reversed(self.meters):
            self._guard(m, "stop", m.stop)

    @property
    def duration_s(self) -> float | None:
        if self._start is None or self._end is None:
            return None
        return self._end.mono - self._start.mono

    def readings(self) -> dict[str, Any]:
        """The ``meters`` record (docs/meters.md): window, energy (total and per-domain readings), memory,
        utilisation, sampler, and any meter errors."""
        if self._start is None or self._end is None:
            raise RuntimeError("the window has not been closed yet")
        out: dict[str, Any] = {
            "window": {**window_json(self._start, self._end), "what": self.what, "device": self.device},
            "energy": [],
            "memory": {},
            "utilisation": {"cpu": {}, "gpu": []},
        }
        for m in self.meters:
            part = self._guard(m, "readings", m.readings)
            if isinstance(part, dict):
                _merge(out, part)
        parts = out["energy"]
        out["energy"] = {"total": energy_total(parts, self.energy_domains, self.device), "readings": parts}
        out["sampler"] = self.sampler.to_json()
        if self._failed:
            out["meter_errors"] = [unavailable("meter_error", why, meter=name) for name, why in self._failed.items()]
        return out
