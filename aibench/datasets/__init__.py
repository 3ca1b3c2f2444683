"""Inputs for the benchmarks: seeded synthetic generators and loaders for real samples.

Import path ``aibench.datasets`` (not a top-level ``datasets``, which is Hugging Face's). Every loader
returns :class:`Samples`: the items plus an ``info`` dict that the benchmark copies into its result
(``InferenceTask.data``), so a result always says whether its inputs were real or synthetic.

Modes (the benchmarks' ``--data`` parameter):

- ``auto`` (default): real samples when their source is installed (``pip install 'aibench[data]'``, or the
  Debian package named in the loader), otherwise seeded synthetic samples; the fallback is logged as a
  warning and recorded in ``info["fallback"]``.
- ``synthetic``: always the seeded synthetic samples (identical on every machine).
- ``real``: real samples or a clear refusal (exit code 3) when the source is absent.

Nothing here downloads anything: the real sources are files that ship inside installed packages
(``../shared/reference/data.md`` lists what can be had offline). Modules do not import torch at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibench.errors import UnavailableError

log = logging.getLogger(__name__)

MODES = ("auto", "synthetic", "real")


class SourceMissing(Exception):
    """A real-data loader's source is not installed here (the message says what to install)."""


@dataclass
class Samples:
    items: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


def pick(mode: str, what: str, real: Callable[[], Samples], synthetic: Callable[[], Samples]) -> Samples:
    """Real samples or synthetic ones according to ``mode`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"data mode must be one of {MODES}, got {mode!r}")
    if mode == "synthetic":
        return synthetic()
    try:
        return real()
    except SourceMissing as exc:
        if mode == "real":
            raise UnavailableError(f"--data real: no real {what} here: {exc}") from None
        note = f"real {what} unavailable ({exc}); using seeded synthetic {what} instead"
        log.warning(note)
        out = synthetic()
        out.info["fallback"] = note
        return out


def cycle(items: list[Any], n: int) -> list[Any]:
    """``n`` items taken round-robin from ``items`` (a small real source fills a larger sample library)."""
    if not items:
        raise ValueError("nothing to cycle")
    return [items[i % len(items)] for i in range(n)]
