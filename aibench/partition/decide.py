"""The split decision (Neurosurgeon's Algorithm 1, with the corrections in docs/partition.md). Plain Python.

Layers ``1..N``; cut ``j`` runs layers ``1..j`` on the device and ``j+1..N`` on the server. Cut 0 sends the
input (``D_0``, the input's bytes) and runs everything on the server; cut N runs everything on the device
and sends nothing. For ``j < N``:

* device compute ``Σ_{i≤j} TM_i``; server compute ``(1 + K) · Σ_{k>j} TC_k`` (``K`` the server load: how
  many jobs as heavy as this one share the server; the paper does not say how load enters, this is
  processor sharing);
* upload ``8·D_j / B_up + RTT/2``; download of the result ``8·D_N / B_down + RTT/2`` (the paper has no term
  for the return trip; it is small but not zero).

Latency target: the cut with the least total. Energy target (the device's energy): ``Σ_{i≤j} TM_i·PM_i``
plus the radio's power times the upload and download time; the powers come from the caller (a meter, or
model inputs the user gives, which the output labels as such). Ties go to the smaller ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aibench.errors import UsageError

TARGETS = ("latency", "energy")

# The paper measured upload times of a 152 KB image, not rates (§6: 3G 870 ms, LTE 180 ms, Wi-Fi 95 ms).
PAPER_IMAGE_BYTES = 152_000
PAPER_UPLOAD_S = {"3g": 0.870, "lte": 0.180, "wifi": 0.095}


@dataclass(frozen=True)
class Link:
    """A link between device and server. ``derived`` links come from the paper's upload times."""

    name: str
    up_mbit: float
    down_mbit: float
    rtt_ms: float = 0.0
    source: str = "given"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def named_link(name: str, rtt_ms: float = 0.0, down_mbit: float | None = None) -> Link:
    """``3g``, ``lte`` or ``wifi``: the rate that moves the paper's 152 KB image in its measured upload time
    (derived, not measured here; the round trip is inside those times, so RTT is 0 unless given; down = up
    unless given)."""
    if name not in PAPER_UPLOAD_S:
        raise UsageError(f"--network must be one of {', '.join(PAPER_UPLOAD_S)}, not {name!r} (or give "
                         "--bandwidth-mbit and --rtt-ms)")
    _check_link(None, rtt_ms, down_mbit)
    rate = PAPER_IMAGE_BYTES * 8 / PAPER_UPLOAD_S[name] / 1e6
    source = (f"derived: {PAPER_IMAGE_BYTES // 1000} KB uploaded in {PAPER_UPLOAD_S[name] * 1e3:.0f} ms "
              "(Neurosurgeon §6), " + ("download = upload" if down_mbit is None else f"download {down_mbit:g} "
                                       "Mbit/s given"))
    if rtt_ms:
        source += f"; round trip {rtt_ms:g} ms given"
    return Link(name, rate, down_mbit or rate, rtt_ms, source)


def custom_link(up_mbit: float, rtt_ms: float = 0.0, down_mbit: float | None = None) -> Link:
    _check_link(up_mbit, rtt_ms, down_mbit)
    return Link(f"{up_mbit:g} Mbit/s, {rtt_ms:g} ms", up_mbit, down_mbit or up_mbit, rtt_ms, "given")


def link_from(network: str | None, up_mbit: float | None, rtt_ms: float = 0.0,
              down_mbit: float | None = None) -> Link:
    """``partition choose``'s link: a named one or a rate (one of the two), each with the round trip and the
    downlink rate when given."""
    if network is not None and up_mbit is not None:
        raise UsageError("give one link, not both: --network 3g|lte|wifi, or --bandwidth-mbit R")
    if network is None and up_mbit is None:
        raise UsageError("give a link: --network 3g|lte|wifi, or --bandwidth-mbit R (each with [--rtt-ms T] "
                         "[--download-mbit R])")
    return named_link(network, rtt_ms, down_mbit) if network is not None else custom_link(up_mbit, rtt_ms, down_mbit)


def _check_link(up_mbit: float | None, rtt_ms: float, down_mbit: float | None) -> None:
    for what, v in (("--bandwidth-mbit", up_mbit), ("--download-mbit", down_mbit)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise UsageError(f"{what} must be a rate above 0, not {v}")
    if not (math.isfinite(rtt_ms) and rtt_ms >= 0):
        raise UsageError(f"--rtt-ms must be 0 or more, not {rtt_ms}")


@dataclass(frozen=True)
class Cut:
    """The priced parts of one cut (seconds; joules for energy, None when not asked for)."""

    j: int
    layer: str
    device_s: float
    upload_s: float
    server_s: float
    download_s: float
    energy_j: float | None = None

    @property
    def total_s(self) -> float:
        return self.device_s + self.upload_s + self.server_s + self.download_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": self.total_s}


def price_cuts(names: Sequence[str], device_s: Sequence[float], server_s: Sequence[float],
               data_bytes: Sequence[int], link: Link, server_load: float = 0.0,
               device_power_w: Sequence[float] | None = None, radio_power_w: float | None = None) -> list[Cut]:
    """Every cut 0..N. ``data_bytes[i]`` crosses a cut after layer i (``data_bytes[0]``: the input), so it
    has N+1 entries; ``device_power_w`` one per layer."""
    n = len(names)
    if not (len(device_s) == len(server_s) == n and len(data_bytes) == n + 1):
        raise ValueError("per-layer figures of unequal lengths")
    if not (math.isfinite(server_load) and server_load >= 0):
        raise UsageError(f"--server-load must be 0 or more, not {server_load}")
    if device_power_w is not None and len(device_power_w) != n:
        raise ValueError("one device power per layer")
    energy = device_power_w is not None and radio_power_w is not None
    half_rtt = link.rtt_ms / 2e3
    down = 8 * data_bytes[n] / (link.down_mbit * 1e6) + half_rtt
    dev_prefix = [0.0]
    en_prefix = [0.0]
    for i in range(n):
        dev_prefix.append(dev_prefix[-1] + device_s[i])
        if energy:
            en_prefix.append(en_prefix[-1] + device_s[i] * device_power_w[i])  # type: ignore[index]
    server_suffix = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        server_suffix[i] = server_suffix[i + 1] + server_s[i]
    cuts = []
    for j in range(n + 1):
        remote = j < n
        up = 8 * data_bytes[j] / (link.up_mbit * 1e6) + half_rtt if remote else 0.0
        dn = down if remote else 0.0
        e = en_prefix[j] + (up + dn) * radio_power_w if energy else None  # type: ignore[operator]
        cuts.append(Cut(j, "input" if j == 0 else names[j - 1], dev_prefix[j], up,
                        (1 + server_load) * server_suffix[j], dn, e))
    return cuts


def choose(cuts: Sequence[Cut], target: str = "latency") -> Cut:
    """The best cut for ``target`` (ties: the smaller j)."""
    if target not in TARGETS:
        raise UsageError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "energy":
        if any(c.energy_j is None for c in cuts):
            raise UsageError("--target energy needs the device's power per layer and the radio's power")
        return min(cuts, key=lambda c: (c.energy_j, c.j))
    return min(cuts, key=lambda c: (c.total_s, c.j))


def cut_index(names: Sequence[str], cut: str) -> int:
    """The j of a cut given as a layer name (the last layer on the device), ``input`` (0) or a number."""
    if cut == "input":
        return 0
    if cut.isdigit():
        j = int(cut)
        if j > len(names):
            raise UsageError(f"no cut {j}: this network has cuts 0..{len(names)}")
        return j
    if cut not in names:
        import difflib

        close = difflib.get_close_matches(cut, names, n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"no layer {cut!r} to cut after{hint}; layers: {', '.join(names)}")
    return names.index(cut) + 1


def as_json(cuts: Sequence[Cut], chosen: Cut, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**(extra or {}), "cuts": [c.as_dict() for c in cuts], "chosen": {"j": chosen.j, "layer": chosen.layer}}
