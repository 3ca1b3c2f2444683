"""Load-generation settings: scenarios, presets (quick / ci / official), validation and LoadGen's TestSettings.

Everything a user can get wrong is refused here, before a model is built: a Server run without a target
QPS, a latency bound of 0, an option that belongs to another scenario. No torch and no LoadGen import at
module level (the CLI imports this module to declare its options).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aibench.errors import UnavailableError, UsageError
from aibench.loadgen.logparse import queries_for_rank

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
LOADGEN_NAMES = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server",
                 "offline": "Offline"}
PROFILES = ("quick", "ci", "official")

# MLPerf's own values, as embedded in LoadGen 6.0.17's mlperf.conf (read out of the installed wheel):
# seeds, 600 s minimum duration in every scenario, 662 queries for MultiStream, 8 samples per MultiStream
# query, Server p99 <= 10 ms, SingleStream p90, MultiStream p99.
OFFICIAL_SEEDS = {"qsl_rng_seed": 2085463073848966840, "sample_index_rng_seed": 2747215439041700203,
                  "schedule_rng_seed": 16159082839903944936}
DEFAULT_SERVER_LATENCY_MS = 10.0
DEFAULT_SERVER_PERCENTILE = 99.0
DEFAULT_SAMPLES_PER_QUERY = 8
# The idle worker polls this long before sleeping where the next query comes right after a completion
# (closed-loop users; SingleStream and MultiStream when the system cannot compute inline). Offline never
# idles. Server queries arrive at Poisson times, so the worker polls for 3 mean gaps (95% of queries find it
# awake), within these bounds. What polling saves, measured: docs/loadgen.md ("Overhead").
DEFAULT_SPIN_US = {"single-stream": 100.0, "multi-stream": 100.0, "closed-loop": 100.0}
SERVER_SPIN_MEAN_GAPS = 3.0
SERVER_SPIN_BOUNDS_US = (100.0, 2000.0)


def server_spin_us(target_qps: float) -> float:
    lo, hi = SERVER_SPIN_BOUNDS_US
    return min(hi, max(lo, SERVER_SPIN_MEAN_GAPS * 1e6 / target_qps))


# Minimum query (Offline: sample) counts. 64 and 662 are what LoadGen's early stopping needs to decide
# at all for SingleStream (p90) and MultiStream (p99); 100 and 1 are LoadGen's own struct defaults. With
# fewer than 81 SingleStream queries (838 MultiStream) the early-stopping estimate, the primary metric, is
# simply the highest latency: quick SingleStream runs at least 81, so its estimate is never just the maximum
# (quick MultiStream stays at 662, already minutes for a real network: there the result marks the estimate
# as the maximum, see logparse.estimate_rank).
QUICK_SINGLE_STREAM_QUERIES = queries_for_rank(2, 0.90)  # 81
MIN_QUERIES = {
    "quick": {"single-stream": QUICK_SINGLE_STREAM_QUERIES, "multi-stream": 662, "server": 100, "offline": 1},
    "ci": {"single-stream": 1024, "multi-stream": 662, "server": 1024, "offline": 1},
    "official": {"single-stream": 100, "multi-stream": 662, "server": 100, "offline": 1},
}
DURATION_S = {"quick": 2.0, "ci": 20.0, "official": 600.0}
# --find-peak's default time budget for the whole search: at least 5 minutes, or 10 probes of --duration-s.
FIND_PEAK_BUDGET_MIN_S = 300.0
FIND_PEAK_BUDGET_PROBES = 10


def default_find_peak_budget_s(duration_s: float) -> float:
    return max(FIND_PEAK_BUDGET_MIN_S, FIND_PEAK_BUDGET_PROBES * duration_s)

# LoadGen pre-generates every query before timing; reference/loadgen.md measured about 350 bytes each.
BYTES_PER_QUERY = 350
BYTES_PER_EXTRA_SAMPLE = 16  # a sample index and id held per sample beyond the first (our estimate)
MEMORY_SHARE = 0.5  # refuse a run whose pre-generated queries would take more than half of free memory


@dataclass(frozen=True)
class LoadgenOptions:
    """What the user asked for (None: not given). ``explicit`` lists the options given on the command line,
    so contradictions can be refused and a non-LoadGen benchmark can refuse LoadGen options."""

    scenario: str | None = None
    profile: str = "quick"
    duration_s: float | None = None
    min_queries: int | None = None
    seed: int | None = None  # None: the profile's seeds (official: MLPerf's; quick/ci: 0)
    target_qps: float | None = None
    latency_bound_ms: float | None = None
    latency_percentile: float | None = None
    expected_qps: float | None = None
    samples_per_query: int | None = None
    max_wait_us: float = 0.0
    spin_us: float | None = None  # None: DEFAULT_SPIN_US, or for Server server_spin_us(target_qps)
    find_peak: bool = False
    find_peak_budget_s: float | None = None  # None: default_find_peak_budget_s(duration)
    users: int | None = None
    think_time_ms: float | None = None
    breakdown: bool = False
    remote: str | None = None  # an inference endpoint (aibench.sut.remote): the network runs there
    out_dir: Path | None = None
    explicit: tuple[str, ...] = ()

    def resolve(self) -> Scenario:
        """Validate and fill defaults. Raises UsageError (exit 2) on contradictory settings."""
        o = self
        if o.profile not in PROFILES:
            raise UsageError(f"--profile must be one of {', '.join(PROFILES)}; got {o.profile!r}")
        if o.users is not None or o.think_time_ms is not None:
            if o.users is None:
                raise UsageError("--think-time-ms needs --users N (closed-loop users)")
            if o.scenario is not None:
                raise UsageError(f"--users runs closed-loop users without LoadGen; drop --scenario {o.scenario}")
            clash = [f for f in ("target_qps", "latency_bound_ms", "latency_percentile", "expected_qps",
                                 "samples_per_query", "find_peak", "min_queries") if f in o.explicit]
            if clash:
                raise UsageError(f"{_flags(clash)} do(es) not apply to closed-loop users (--users)")
            if o.users < 1:
                raise UsageError(f"--users must be >= 1, got {o.users}")
            if o.think_time_ms is not None and (o.think_time_ms < 0 or not math.isfinite(o.think_time_ms)):
                raise UsageError(f"--think-time-ms must be >= 0, got {o.think_time_ms}")
        scenario = o.scenario or ("closed-loop" if o.users is not None else "offline")
        if scenario not in (*SCENARIOS, "closed-loop"):
            raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}")
        own = {"target_qps": "server", "latency_bound_ms": "server", "latency_percentile": "server",
               "find_peak": "server", "find_peak_budget_s": "server", "expected_qps": "offline",
               "samples_per_query": "multi-stream"}
        if scenario != "closed-loop":
            wrong = [f for f, s in own.items() if f in o.explicit and s != scenario]
            if wrong:
                raise UsageError(f"{_flags(wrong)} {'applies' if len(wrong) == 1 else 'apply'} only to --scenario "
                                 f"{own[wrong[0]]}, not {scenario}")
        if scenario == "server" and o.target_qps is None and not o.find_peak:
            raise UsageError("--scenario server needs --target-qps Q (or --find-peak to search for it)")
        for name, value in (("target_qps", o.target_qps), ("latency_bound_ms", o.latency_bound_ms),
                            ("expected_qps", o.expected_qps), ("duration_s", o.duration_s)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{_flags([name])} must be a positive number, got {value}")
        duration = o.duration_s if o.duration_s is not None else DURATION_S[o.profile]
        if o.find_peak_budget_s is not None:
            if not o.find_peak:
                raise UsageError("--find-peak-budget-s applies only with --find-peak")
            if not (o.find_peak_budget_s > 0 and math.isfinite(o.find_peak_budget_s)):
                raise UsageError(f"--find-peak-budget-s must be a positive number, got {o.find_peak_budget_s}")
            if o.find_peak_budget_s < duration:
                raise UsageError(f"--find-peak-budget-s {o.find_peak_budget_s:g} is shorter than one probe "
                                 f"(--duration-s {duration:g}): give the search at least that")
        if o.latency_percentile is not None and not 0 < o.latency_percentile < 100:
            raise UsageError(f"--latency-percentile must be between 0 and 100 (exclusive), got "
                             f"{o.latency_percentile}")
        if o.min_queries is not None and o.min_queries < 1:
            raise UsageError(f"--min-queries must be >= 1, got {o.min_queries}")
        if o.samples_per_query is not None and o.samples_per_query < 1:
            raise UsageError(f"--samples-per-query must be >= 1, got {o.samples_per_query}")
        if o.max_wait_us < 0 or not math.isfinite(o.max_wait_us):
            raise UsageError(f"--max-wait-us must be >= 0, got {o.max_wait_us}")
        if o.spin_us is not None and not 0 <= o.spin_us <= 1e6:
            raise UsageError(f"--spin-us must be between 0 and 1000000, got {o.spin_us}")
        if o.seed is not None and not 0 <= o.seed < 2**64:
            raise UsageError(f"--seed must be in 0..2^64-1 for LoadGen, got {o.seed}")
        mq_profile = "quick" if scenario == "closed-loop" else o.profile
        return Scenario(
            scenario=scenario,
            profile=o.profile,
            duration_s=duration,
            min_queries=(o.min_queries if o.min_queries is not None
                         else MIN_QUERIES[mq_profile].get(scenario, 1)),
            seeds=_seeds(o.profile, o.seed),
            target_qps=o.target_qps,
            latency_bound_ms=(o.latency_bound_ms if o.latency_bound_ms is not None
                              else DEFAULT_SERVER_LATENCY_MS) if scenario == "server" else None,
            latency_percentile=(o.latency_percentile if o.latency_percentile is not None
                                else DEFAULT_SERVER_PERCENTILE) if scenario == "server" else None,
            expected_qps=o.expected_qps,
            samples_per_query=(o.samples_per_query or DEFAULT_SAMPLES_PER_QUERY) if scenario == "multi-stream"
            else 1,
            max_wait_us=float(o.max_wait_us),
            spin_us=float(o.spin_us) if o.spin_us is not None else (
                server_spin_us(o.target_qps) if scenario == "server" and o.target_qps
                else DEFAULT_SPIN_US.get(scenario, 0.0)),
            spin_auto=o.spin_us is None and scenario == "server",
            find_peak=o.find_peak,
            find_peak_budget_s=(o.find_peak_budget_s if o.find_peak_budget_s is not None
                                else default_find_peak_budget_s(duration)) if o.find_peak else None,
            users=o.users,
            think_time_ms=(o.think_time_ms if o.think_time_ms is not None else 0.0) if o.users else None,
            breakdown=o.breakdown,
            out_dir=Path(o.out_dir) if o.out_dir is not None else Path("results"),
        )


def _flags(names: list[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _seeds(profile: str, seed: int | None) -> dict[str, int]:
    if seed is None:
        return dict(OFFICIAL_SEEDS) if profile == "official" else dict.fromkeys(OFFICIAL_SEEDS, 0)
    return dict.fromkeys(OFFICIAL_SEEDS, seed)


@dataclass(frozen=True)
class Scenario:
    """Validated, complete settings for one run (or one find-peak probe)."""

    scenario: str
    profile: str
    duration_s: float
    min_queries: int
    seeds: dict[str, int]
    target_qps: float | None
    latency_bound_ms: float | None
    latency_percentile: float | None
    expected_qps: float | None
    samples_per_query: int
    max_wait_us: float
    spin_us: float
    find_peak: bool
    users: int | None
    think_time_ms: float | None
    breakdown: bool = False
    out_dir: Path = field(default=Path("results"))
    spin_auto: bool = False  # Server without --spin-us: the poll window follows the target QPS
    find_peak_budget_s: float | None = None  # --find-peak: wall-time budget of the whole search
    # closed-loop users, set by a benchmark's own parameters (closed_loop_from): the warm-up excluded from the
    # figures (None: 10% of the duration, 0.05..10 s), the measured requests after which the users stop (None:
    # after --duration-s), the think-time distribution (exponential: a Poisson process; constant)
    warmup_s: float | None = None
    max_queries: int | None = None
    think: str = "exponential"

    def closed_loop_from(self, params: dict[str, Any]) -> Scenario:
        """The closed-loop settings a benchmark declares as its own parameters (``warmup_s``, ``queries``,
        ``think``; scenario/ecommerce), applied when the run is closed-loop; 0 warm-up counts, 0 queries
        means none set."""
        if self.scenario != "closed-loop":
            return self
        out = self
        if params.get("warmup_s") is not None:
            out = replace(out, warmup_s=float(params["warmup_s"]))
        if params.get("queries"):
            out = replace(out, max_queries=int(params["queries"]))
        if params.get("think") in ("exponential", "constant"):
            out = replace(out, think=str(params["think"]))
        return out

    def with_target(self, qps: float) -> Scenario:
        return replace(self, target_qps=qps, spin_us=server_spin_us(qps) if self.spin_auto else self.spin_us)

    def config(self) -> dict[str, Any]:
        """What changes the measured work: enters the config hash (durations and seeds do not)."""
        out: dict[str, Any] = {"scenario": self.scenario, "max_wait_us": self.max_wait_us,
                               "spin_us": "auto" if self.spin_auto and self.find_peak else self.spin_us}
        if self.scenario == "server":
            out.update(latency_bound_ms=self.latency_bound_ms, latency_percentile=self.latency_percentile,
                       target_qps="find-peak" if self.find_peak else self.target_qps)
        if self.scenario == "multi-stream":
            out["samples_per_query"] = self.samples_per_query
        if self.scenario == "closed-loop":
            out.update(users=self.users, think_time_ms=self.think_time_ms)
        return out

    def method(self) -> dict[str, Any]:
        """How long and with which seeds: recorded in result.method, not hashed."""
        out = {"profile": self.profile, "duration_s": self.duration_s, "min_queries": self.min_queries,
               "loadgen_seeds": dict(self.seeds), "breakdown": self.breakdown}
        if self.find_peak:
            out["find_peak_budget_s"] = self.find_peak_budget_s
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


@dataclass(frozen=True)
class Sizing:
    """How many queries/samples LoadGen will pre-generate, and the expected-rate settings used for it."""

    queries: int
    samples: int
    bytes: int
    expected_qps: float | None = None
    expected_latency_ns: int | None = None


def size_run(s: Scenario, per_sample_s: float, batch_sample_s: float) -> Sizing:
    """Expected settings from an untimed calibration, and the memory LoadGen's query pre-generation takes.

    ``per_sample_s`` is the calibrated latency of a one-sample batch and ``batch_sample_s`` the calibrated
    time per sample at the full batch, both of the system alone (an upper bound of its rate under a load
    generator). Rates are over-estimated (latencies under-estimated) on purpose: a SUT that runs out of
    generated queries before the minimum duration makes the run INVALID, while spare queries only cost
    memory (SingleStream/MultiStream) or a longer Offline run.
    """
    dur = s.duration_s
    if s.scenario == "offline":
        qps = s.expected_qps if s.expected_qps is not None else 1.1 / max(batch_sample_s, 1e-9)
        samples = max(s.min_queries, math.ceil(1.1 * dur * qps))
        return Sizing(1, samples, BYTES_PER_QUERY + BYTES_PER_EXTRA_SAMPLE * samples, expected_qps=qps)
    if s.scenario == "server":
        assert s.target_qps is not None
        queries = max(s.min_queries, math.ceil(1.1 * dur * s.target_qps))
        return Sizing(queries, queries, BYTES_PER_QUERY * queries)
    # SingleStream / MultiStream: LoadGen generates queries for about twice the minimum duration at the
    # expected latency (1001 queries for 0.5 s at 1 ms, measured here).
    per_query = per_sample_s if s.scenario == "single-stream" else batch_sample_s * s.samples_per_query
    latency_ns = max(1000, int(0.8 * per_query * 1e9))
    queries = max(s.min_queries, math.ceil(2 * dur * 1e9 / latency_ns) + 1)
    samples = queries * s.samples_per_query
    return Sizing(queries, samples, BYTES_PER_QUERY * queries + BYTES_PER_EXTRA_SAMPLE * (samples - queries),
                  expected_latency_ns=latency_ns)


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(sizing: Sizing, s: Scenario, available: int | None = None) -> dict[str, Any]:
    """Refuse, with the numbers, a run whose pre-generated queries would not fit; return the estimate."""
    free = available if available is not None else available_memory_bytes()
    info = {"queries": sizing.queries, "samples": sizing.samples, "estimated_bytes": sizing.bytes,
            "bytes_per_query": BYTES_PER_QUERY, "available_bytes": free}
    if free is not None and sizing.bytes > MEMORY_SHARE * free:
        raise UnavailableError(
            f"LoadGen would pre-generate {sizing.queries:,} queries ({sizing.samples:,} samples), about "
            f"{sizing.bytes / 2**30:.2f} GiB at ~{BYTES_PER_QUERY} B/query, but only "
            f"{free / 2**30:.2f} GiB is free (limit {MEMORY_SHARE:.0%}): shorten --duration-s "
            f"(now {s.duration_s:g} s) or lower the rate")
    return info


def test_settings(lg: Any, s: Scenario, sizing: Sizing, max_async_queries: int = 0) -> Any:
    """LoadGen TestSettings for ``s`` (performance mode)."""
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, LOADGEN_NAMES[s.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = max(1, round(s.duration_s * 1000))
    ts.min_query_count = s.min_queries
    for name, value in s.seeds.items():
        setattr(ts, name, value)
    if s.scenario == "server":
        ts.server_target_qps = float(s.target_qps)  # type: ignore[arg-type]
        ts.server_target_latency_ns = round(s.latency_bound_ms * 1e6)  # type: ignore[operator]
        ts.server_target_latency_percentile = s.latency_percentile / 100.0  # type: ignore[operator]
        ts.server_max_async_queries = max_async_queries
    elif s.scenario == "offline":
        ts.offline_expected_qps = float(sizing.expected_qps)  # type: ignore[arg-type]
    elif s.scenario == "single-stream":
        ts.single_stream_expected_latency_ns = int(sizing.expected_latency_ns)  # type: ignore[arg-type]
    else:
        ts.multi_stream_expected_latency_ns = int(sizing.expected_latency_ns)  # type: ignore[arg-type]
        ts.multi_stream_samples_per_query = s.samples_per_query
    return ts
