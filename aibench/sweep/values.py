"""``--values``: the points of a sweep, as a list and/or ranges.

``1,2,4,8`` lists values; ``START:STOP`` counts up by one; ``START:STOP:+STEP`` (or ``:STEP``) adds a step;
``START:STOP:xFACTOR`` multiplies (``1:64:x2`` is 1,2,4,…,64). Items combine: ``1,2,4:16:x2``. STOP is
included when the progression reaches it exactly. Values must be distinct; order is kept (it is the
order the points run in, and the first point is the baseline of a scaling sweep).
"""

from __future__ import annotations

import math
import re

from aibench.errors import UsageError

MAX_POINTS = 1000
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*(?::\s*([x*+]?)\s*({_NUMBER}))?\s*$")


def _number(text: str, integer: bool, where: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--values: {where!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"--values: {where!r} is not a finite number")
    if integer:
        if not value.is_integer():
            raise UsageError(f"--values: {where!r} is not an integer, and this parameter takes integers")
        return int(value)
    return value


def parse_values(text: str, integer: bool = True) -> list[int | float]:
    """The values named by ``text`` (see the module docstring). Raises UsageError on anything else."""
    if not text or not text.strip():
        raise UsageError("--values is empty: give a list such as 1,2,4,8 or a range such as 1:64:x2")
    out: list[int | float] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(f"--values {text!r}: an empty item between commas")
        m = _RANGE.match(item)
        if m is None:
            if ":" in item:
                raise UsageError(f"--values: {item!r} is not a range START:STOP[:STEP|:xFACTOR]")
            out.append(_number(item, integer, item))
            continue
        start = _number(m.group(1), integer, item)
        stop = _number(m.group(2), integer, item)
        op, step_text = m.group(3), m.group(4)
        out.extend(_progression(item, start, stop, op, step_text, integer))
        if len(out) > MAX_POINTS:
            break
    if len(out) > MAX_POINTS:
        raise UsageError(f"--values {text!r} names more than {MAX_POINTS} points")
    seen: set[float] = set()
    for v in out:
        if v in seen:
            raise UsageError(f"--values {text!r} names {v} twice; each point is measured once")
        seen.add(v)
    return out


def _progression(item: str, start: float, stop: float, op: str | None, step_text: str | None,
                 integer: bool) -> list[int | float]:
    if step_text is None:
        op, step = "+", 1.0
    else:
        step = float(step_text)
        op = "x" if op in ("x", "*") else "+"
    if op == "x":
        if start <= 0 or stop <= 0 or step <= 1:
            raise UsageError(f"--values {item!r}: a geometric range needs START, STOP > 0 and a factor > 1")
        if stop < start:
            raise UsageError(f"--values {item!r}: STOP is below START")
    else:
        if step <= 0:
            raise UsageError(f"--values {item!r}: the step must be positive")
        if stop < start:
            raise UsageError(f"--values {item!r}: STOP is below START")
    if integer and not float(step).is_integer():
        raise UsageError(f"--values {item!r}: the step must be an integer for this parameter")
    values: list[int | float] = []
    k = 0
    while len(values) <= MAX_POINTS:
        v = start * step ** k if op == "x" else start + step * k
        if v > stop * (1 + 1e-12):
            break
        values.append(round(v) if integer else _tidy(v))
        k += 1
    return values


def _tidy(x: float) -> float:
    """Round away binary noise from repeated steps (0.1 + 0.1 + 0.1) without changing real values."""
    return float(f"{x:.12g}")


def default_counts(maximum: int) -> list[int]:
    """1..N for a scaling sweep: every count up to 8, then powers of two and N itself."""
    if maximum <= 8:
        return list(range(1, maximum + 1))
    out = list(range(1, 9))
    p = 16
    while p < maximum:
        out.append(p)
        p *= 2
    out.append(maximum)
    return out
