"""CPU energy from RAPL through the Linux powercap interface (``/sys/class/powercap``).

Package zones (``intel-rapl:N``, named ``package-N``; AMD CPUs appear under the same driver) and their
``dram`` sub-zones are read. ``core``/``uncore`` sub-zones are parts of a package and ``psys`` overlaps
everything, so neither is added. ``energy_uj`` counts microjoules and wraps to 0 after
``max_energy_range_uj``; one wrap per window is corrected, more than one cannot be seen (at 200 W the usual
262 kJ range lasts about 20 minutes). The root directory is a parameter so tests use a fake tree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aibench.meters.core import MEASURED, Sampler, Stamp, unavailable, window_json

POWERCAP_ROOT = "/sys/class/powercap"
_ZONE = re.compile(r"^intel-rapl:\d+(?::\d+)?$")


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def energy_delta_uj(start: int, end: int, max_range: int | None) -> tuple[int, int]:
    """(delta in µJ, wraps) between two reads of a counter that wraps to 0 after ``max_range``."""
    if end >= start:
        return end - start, 0
    if not max_range:
        raise ValueError("the counter went backwards and its range is unknown")
    return end - start + max_range, 1


class RaplMeter:
    """Energy of each CPU package and its DRAM over the window (provenance ``measured``)."""

    name = "rapl"

    def __init__(self, root: str | Path = POWERCAP_ROOT) -> None:
        self.root = Path(root)
        self._zones: list[dict[str, Any]] = []
        self._problem: dict[str, Any] | None = None
        self._start: Stamp | None = None
        self._end: Stamp | None = None

    def _discover(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            self._problem = unavailable("no_powercap", f"{self.root} does not exist", domain="package",
                                        scope="cpu", meter=self.name)
            return []
        zones = []
        for top in sorted(p for p in self.root.iterdir() if _ZONE.match(p.name) and p.name.count(":") == 1):
            for path in [top, *sorted(p for p in top.iterdir() if _ZONE.match(p.name))]:
                try:
                    label = (path / "name").read_text().strip()
                except OSError:
                    continue
                if label.startswith("package"):
                    domain = "package"
                elif label == "dram":
                    domain = "dram"
                else:
                    continue
                scope = label if domain == "package" else f"{(top / 'name').read_text().strip()}/dram"
                zones.append({"path": path, "domain": domain, "scope": scope})
        if not zones:
            self._problem = unavailable("no_rapl_zones", f"{self.root} has no intel-rapl package zone",
                                        domain="package", scope="cpu", meter=self.name)
        return zones

    def _read(self, zone: dict[str, Any]) -> int | dict[str, Any]:
        path = zone["path"] / "energy_uj"
        try:
            return _read_int(path)
        except PermissionError:
            return unavailable("permission_denied", f"cannot read {path} (root-only since Linux 5.10; "
                               "grant read access to measure CPU energy)")
        except (OSError, ValueError) as exc:
            return unavailable("read_error", f"{path}: {exc}")

    def start(self, sampler: Sampler) -> None:
        self._zones = self._discover()
        for z in self._zones:
            try:
                z["max_range"] = _read_int(z["path"] / "max_energy_range_uj")
            except (OSError, ValueError):
                z["max_range"] = None
        self._start = Stamp.now()
        for z in self._zones:
            z["start"] = self._read(z)

    def stop(self) -> None:
        for z in self._zones:
            z["end"] = self._read(z)
        self._end = Stamp.now()

    def readings(self) -> dict[str, Any]:
        if self._problem is not None:
            return {"energy": [self._problem]}
        assert self._start is not None and self._end is not None
        out = []
        for z in self._zones:
            base = {"meter": self.name, "domain": z["domain"], "scope": z["scope"]}
            a, b = z.get("start"), z.get("end")
            if isinstance(a, dict) or isinstance(b, dict):
                bad = a if isinstance(a, dict) else b
                out.append({**base, **bad})
                continue
            assert isinstance(a, int) and isinstance(b, int)
            try:
                delta, wraps = energy_delta_uj(a, b, z["max_range"])
            except ValueError as exc:
                out.append({**base, **unavailable("counter_reset", str(exc))})
                continue
            win = window_json(self._start, self._end)
            out.append({**base, "provenance": MEASURED, "energy_j": delta / 1e6,
                        "avg_power_w": delta / 1e6 / win["duration_s"] if win["duration_s"] > 0 else None,
                        "window": win,
                        "counter": {"source": str(z["path"] / "energy_uj"), "unit": "uJ", "start": a, "end": b,
                                    "max_range": z["max_range"], "wraps": wraps}})
        return {"energy": out}
