"""Bandwidth traces replayed during a split run (Neurosurgeon's Fig. 14): a file of time and rate.

Format: CSV lines ``time_s,rate_mbit`` (a header line and ``#`` comments are skipped), times from 0 and
increasing, rates above 0. The rate of a line holds until the next line's time; after the last line the
trace starts again from 0 (its length: the last time plus the median step). ``lte-synthetic`` names the
trace shipped with aibench (``aibench/partition/traces/lte-synthetic.csv``): **synthetic**, a seeded random
walk shaped like an LTE trace, not a measurement.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from aibench.errors import ResultIOError, UsageError

SHIPPED = {"lte-synthetic": Path(__file__).with_name("traces") / "lte-synthetic.csv"}
MAX_TRACE_BYTES = 16 << 20


@dataclass(frozen=True)
class Trace:
    name: str
    times: tuple[float, ...]
    rates_bit_s: tuple[float, ...]
    period_s: float
    synthetic: bool

    def rate_at(self, elapsed_s: float) -> float:
        t = elapsed_s % self.period_s
        return self.rates_bit_s[max(0, bisect.bisect_right(self.times, t) - 1)]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "points": len(self.times), "period_s": self.period_s,
                "min_bit_s": min(self.rates_bit_s), "max_bit_s": max(self.rates_bit_s),
                "median_bit_s": statistics.median(self.rates_bit_s),
                "source": "synthetic (shipped with aibench; not measured)" if self.synthetic else "file given"}


def read_trace(spec: str) -> Trace:
    """The trace named ``spec`` (``lte-synthetic``) or in the file ``spec``. A missing or unreadable file:
    ResultIOError (exit 4); a malformed one: UsageError (exit 2), naming the line."""
    path = SHIPPED.get(spec, Path(spec))
    try:
        if not path.is_file():
            raise ResultIOError(f"--trace {spec}: no such file (or not a regular file)")
        if path.stat().st_size > MAX_TRACE_BYTES:
            raise ResultIOError(f"--trace {spec}: over {MAX_TRACE_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultIOError(f"--trace {spec}: cannot read it ({exc})") from None
    times: list[float] = []
    rates: list[float] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or (not times and not line[0].isdigit() and line[0] not in "-+."):
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            t, r = float(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError(f"--trace {spec}: line {n} is not 'time_s,rate_mbit': {raw[:80]!r}") from None
        if not (math.isfinite(t) and math.isfinite(r) and r > 0):
            raise UsageError(f"--trace {spec}: line {n}: a rate must be above 0 Mbit/s and times finite")
        if (times and t <= times[-1]) or (not times and t != 0):
            raise UsageError(f"--trace {spec}: line {n}: times must start at 0 and increase")
        times.append(t)
        rates.append(r * 1e6)
    if not times:
        raise UsageError(f"--trace {spec}: no 'time_s,rate_mbit' line")
    step = statistics.median([b - a for a, b in itertools.pairwise(times)]) if len(times) > 1 else 1.0
    return Trace(spec, tuple(times), tuple(rates), times[-1] + step, spec in SHIPPED)
