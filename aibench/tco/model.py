"""The TCO model: a reconstruction of DjiNN & Tonic's §6 (ISCA 2015), which gives its parameters (Table 4,
Table 6) and its method in words ("a methodology inspired by Barroso et al.") but no formulas. The formulas
are written out in docs/tco.md; this module is exactly them, on plain numbers (no files, no torch).

Counts of servers, GPUs and NICs are in units of the CPU-only datacenter's servers, so every TCO is per
CPU-only server and its ratio to CPU-only is the figure the paper draws (Fig. 15). By default they are
*fluid* (real numbers: a large datacenter); ``datacenter_servers`` N > 0 rounds each service's counts up to
whole units of a datacenter of N CPU-only servers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibench.tco.params import APPS

RECONSTRUCTION = ("a reconstruction of the TCO model of DjiNN & Tonic (ISCA 2015, §6): the paper gives its "
                  "parameters and method but no formulas; the formulas used are in docs/tco.md")

# Table 5. Weights are shares of the CPU-only datacenter's *servers*, equal per service within a mix: the
# paper's example (70% MIXED: 30% of servers non-DNN, 10% to each of the 7 DNN services).
MIXES: dict[str, tuple[str, ...]] = {"MIXED": APPS, "IMAGE": ("imc", "dig", "face"), "NLP": ("pos", "chk", "ner")}


@dataclass(frozen=True)
class Design:
    name: str
    kind: str  # cpu | integrated | disaggregated
    interconnect: str | None  # pcie3 | pcie4 | qpi: the bus between a server's CPUs and its GPUs
    network: str | None  # 10gbe | 40gbe | 400gbe: the NICs of a disaggregated GPU server
    description: str


DESIGNS: tuple[Design, ...] = (
    Design("cpu-only", "cpu", None, None, "beefy CPU servers do everything (the baseline)"),
    Design("integrated", "integrated", "pcie3", None,
           "beefy servers each holding gpus_per_server GPUs on one PCIe v3 bus serve the DNN"),
    Design("disaggregated", "disaggregated", "pcie3", "10gbe",
           "beefy CPU servers for non-DNN work; wimpy servers hold the GPUs behind 16 x 10GbE NICs"),
    Design("integrated-pcie4", "integrated", "pcie4", None, "integrated with a PCIe v4 bus (Table 6)"),
    Design("disaggregated-pcie4-40gbe", "disaggregated", "pcie4", "40gbe",
           "disaggregated with PCIe v4 and 9 x 40GbE NICs (Table 6)"),
    Design("integrated-qpi", "integrated", "qpi", None, "integrated with 12 QPI links to the GPUs (Table 6)"),
    Design("disaggregated-qpi-400gbe", "disaggregated", "qpi", "400gbe",
           "disaggregated with QPI and 8 x 400GbE NICs (Table 6)"),
)
DESIGN = {d.name: d for d in DESIGNS}
# The integrated and disaggregated design of each interconnect: the paper's IMAGE crossover (72%) is between them.
PAIRS = (("integrated", "disaggregated"), ("integrated-pcie4", "disaggregated-pcie4-40gbe"),
         ("integrated-qpi", "disaggregated-qpi-400gbe"))
_NETWORK = {"10gbe": ("nic10_gbs", None, "nics_10gbe"), "40gbe": ("nic40_gbs", "nic40_extra", "nics_40gbe"),
            "400gbe": ("nic400_gbs", "nic400_extra", "nics_400gbe")}
_BUS = {"pcie3": ("pcie3_gbs", None), "pcie4": ("pcie4_gbs", "pcie4_extra"), "qpi": ("qpi_gbs", "qpi_extra")}
COST_PARTS = ("capex", "facility", "opex", "power", "maintenance")


def annuity(rate_per_month: float, months: float) -> float:
    """The monthly payment of a loan of 1 repaid over ``months`` at ``rate_per_month`` (1/months at 0%)."""
    if rate_per_month == 0:
        return 1.0 / months
    return rate_per_month / (1.0 - (1.0 + rate_per_month) ** -months)


def monthly_cost(p: Mapping[str, float], price: float, watts: float) -> dict[str, float]:
    """What one item (a server, a GPU, a NIC) costs per month, by part (docs/tco.md, "Cost of one item")."""
    r = p["interest_rate"] / 12.0
    loan = p["loan_years"] * 12.0
    life = p["server_lifetime_years"] * 12.0
    return {
        # the loan's payments, spread over the item's life (equal when the loan runs as long as the item lives)
        "capex": price * annuity(r, loan) * loan / life,
        "facility": p["facility_capex_per_w"] * watts * annuity(r, p["facility_lifetime_years"] * 12.0),
        "opex": p["opex_per_w_month"] * watts,
        "power": watts / 1000.0 * p["pue"] * p["hours_per_month"] * p["electricity_per_kwh"],
        "maintenance": price * p["maintenance_per_year"] / 12.0,
    }


@dataclass(frozen=True)
class Item:
    """One kind of equipment in a design: its price, power and count (per CPU-only server)."""

    name: str
    price: float
    watts: float
    count: float


@dataclass
class Point:
    """One design at one DNN share: what it is built of and what it costs per month (per CPU-only server)."""

    design: str
    share: float  # 0..1
    items: list[Item] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)  # by part

    @property
    def total(self) -> float:
        return sum(self.cost.values())

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for it in self.items:
            out[it.name] = out.get(it.name, 0.0) + it.count
        return out


def _priced(p: Mapping[str, float], design: str, share: float, items: list[Item]) -> Point:
    cost = dict.fromkeys(COST_PARTS, 0.0)
    for it in items:
        for part, value in monthly_cost(p, it.price, it.watts).items():
            cost[part] += value * it.count
    return Point(design, share, items, cost)


def build(p: Mapping[str, float], design: Design, share: float, weights: Mapping[str, float],
          cpu: Mapping[str, float], acc: Mapping[str, float]) -> Point:
    """Design ``design`` sized for a datacenter whose CPU-only build has 1 server, ``share`` of it serving the
    DNN services of ``weights`` (app -> share of the DNN servers) and the rest non-DNN work. ``cpu``: queries/s
    of one CPU-only server per app; ``acc``: queries/s of one accelerator per app (docs/tco.md, "Designs").

    Non-DNN work runs on beefy CPU servers in every design, and so does the part of each DNN service's work
    that is not its DNN (``dnn_share_<app>``); each DNN service is provisioned on its own (the paper's "10% to
    each of the DNN services"). With ``datacenter_servers`` N > 0 the CPU-only build has N
    servers and every count of a service is rounded up to whole units (then divided by N again)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"DNN share must be within 0..1, not {share}")
    n = p["datacenter_servers"]
    scale = n if n > 0 else 1.0

    def whole(x: float) -> float:  # a count of one service, in units of the scaled datacenter
        return math.ceil(x * scale - 1e-9) / scale if n > 0 else x

    nic, nic_w = p["nic_price"], p["nic_power"]
    # Beefy servers of the GPU designs: the non-DNN work, and each DNN service's share of the work that is not
    # its DNN (1 - dnn_share_<app> of the servers the CPU-only build gives it: the app's pre- and post-
    # processing, measured or given; by default 0: the CPU figure is the DNN's alone).
    rest = 1.0 - share + share * math.fsum(w * (1.0 - p.get(f"dnn_share_{a}", 1.0)) for a, w in weights.items())
    beefy = [Item("server", p["server_price"], p["server_power"], rest),
             Item("nic", nic, nic_w, rest * p["nics_per_server"])]
    load = {a: share * w * cpu[a] for a, w in weights.items()}  # queries/s the CPU-only build serves
    if design.kind == "cpu":
        return _priced(p, design.name, share, [
            Item("server", p["server_price"], p["server_power"], 1.0),
            Item("nic", nic, nic_w, p["nics_per_server"])])
    bus_key, extra_key = _BUS[design.interconnect or "pcie3"]
    bus = p[bus_key] * 1e9  # bytes/s
    extra = p[extra_key] if extra_key else 0.0
    if design.kind == "integrated":
        g = p["gpus_per_server"]
        servers = sum(whole(max(load[a] / (g * acc[a]), load[a] * p[f"query_bytes_{a}"] / bus)) for a in load)
        return _priced(p, design.name, share, [
            *beefy,
            Item("gpu_server", p["server_price"] + extra, p["server_power"], servers),
            Item("gpu", p["gpu_price"], p["gpu_power"], servers * g),
            Item("nic", nic, nic_w, servers * p["nics_per_server"])])
    nic_bw_key, nic_extra_key, nics_key = _NETWORK[design.network or "10gbe"]
    nics = p[nics_key]
    link = min(bus, nics * p[nic_bw_key] * 1e9 * p["nic_efficiency"])  # bytes/s into one wimpy server
    gpus = {a: whole(load[a] / acc[a]) for a in load}
    wimpy = sum(whole(max(gpus[a] / p["gpus_per_wimpy"], load[a] * p[f"query_bytes_{a}"] / link)) for a in load)
    nic_price = nic + (p[nic_extra_key] if nic_extra_key else 0.0)
    return _priced(p, design.name, share, [
        *beefy,
        Item("wimpy", p["wimpy_price"] + extra, p["wimpy_power"], wimpy),
        Item("gpu", p["gpu_price"], p["gpu_power"], sum(gpus.values())),
        Item("gpu_server_nic", nic_price, nic_w, wimpy * nics)])


def weights_of(mix: str, available: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    """Equal weights over the mix's apps that have figures, and the apps it lacks."""
    apps = [a for a in MIXES[mix] if a in available]
    missing = [a for a in MIXES[mix] if a not in available]
    return ({a: 1.0 / len(apps) for a in apps} if apps else {}), missing


def crossings(f: Callable[[float], float], grid: Sequence[float], tol: float = 1e-6) -> list[tuple[float, str]]:
    """Where ``f`` (a difference of two TCOs over the share 0..1) changes sign: (share, what it becomes:
    ``below`` / ``above`` / ``equal``), each located by bisection between grid points to ``tol``."""

    def sign(x: float) -> int:
        v = f(x)
        return 0 if abs(v) <= 1e-12 else (1 if v > 0 else -1)

    words = {-1: "below", 0: "equal", 1: "above"}
    out: list[tuple[float, str]] = []
    prev_x, prev_s = grid[0], sign(grid[0])
    for x in grid[1:]:
        s = sign(x)
        if s != prev_s:
            if prev_s == 0:  # leaving equality (both designs equal at 0% DNN): it happens at that point
                at = prev_x
            else:
                lo, hi = prev_x, x
                while hi - lo > tol:
                    mid = (lo + hi) / 2
                    if sign(mid) == prev_s:
                        lo = mid
                    else:
                        hi = mid
                at = hi
            out.append((at, words[s]))
        prev_x, prev_s = x, s
    return out


@dataclass
class Study:
    """The whole comparison: every design for every mix at every share, with the crossovers."""

    params: dict[str, float]
    cpu: dict[str, float]  # per CPU-only server (cpu_server_scale applied)
    acc: dict[str, float]  # per accelerator
    shares: list[float]  # 0..1
    mixes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mix -> {weights, missing}
    points: dict[str, dict[str, list[Point]]] = field(default_factory=dict)  # mix -> design -> per share
    crossovers: list[dict[str, Any]] = field(default_factory=list)

    def ratio(self, mix: str, design: str) -> list[float]:
        base = self.points[mix]["cpu-only"]
        return [pt.total / b.total for pt, b in zip(self.points[mix][design], base, strict=True)]


def study(params: Mapping[str, float], cpu: Mapping[str, float], acc: Mapping[str, float],
          shares: Sequence[float] | None = None, designs: Sequence[Design] = DESIGNS) -> Study:
    """Run the model for every mix that has at least one app with both figures."""
    p = dict(params)
    grid = list(shares) if shares is not None else [i / 100 for i in range(101)]
    apps = [a for a in APPS if a in cpu and a in acc]
    cpu_srv = {a: cpu[a] * p["cpu_server_scale"] for a in apps}
    acc_dev = {a: acc[a] for a in apps}
    out = Study(p, cpu_srv, acc_dev, grid)
    for mix in MIXES:
        weights, missing = weights_of(mix, apps)
        if not weights:
            continue
        out.mixes[mix] = {"apps": list(weights), "weights": weights, "missing": missing}
        out.points[mix] = {d.name: [build(p, d, s, weights, cpu_srv, acc_dev) for s in grid] for d in designs}

        def diff(s: float, a: Design, b: Design | None, w: dict[str, float] = weights) -> float:
            ta = build(p, a, s, w, cpu_srv, acc_dev).total
            tb = build(p, b or DESIGN["cpu-only"], s, w, cpu_srv, acc_dev).total
            return ta - tb

        for d in designs:
            if d.kind == "cpu":
                continue
            for share, becomes in crossings(lambda s, d=d: diff(s, d, None), grid):
                out.crossovers.append({"mix": mix, "design": d.name, "versus": "cpu-only", "share": share,
                                       "becomes": {"below": "cheaper", "above": "dearer"}.get(becomes, "equal")})
        names = {d.name for d in designs}
        for a, b in PAIRS:
            if a in names and b in names:
                for share, becomes in crossings(lambda s, a=a, b=b: diff(s, DESIGN[a], DESIGN[b]), grid):
                    out.crossovers.append({"mix": mix, "design": a, "versus": b, "share": share,
                                           "becomes": {"below": "cheaper", "above": "dearer"}.get(becomes,
                                                                                                  "equal")})
    return out

