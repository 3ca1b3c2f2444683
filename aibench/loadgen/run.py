"""The ``loadgen`` runner: a component benchmark's InferenceTask under MLPerf LoadGen (or closed-loop users),
turned into one :class:`~aibench.results.schema.Result`.

Contract for a benchmark with ``runner="loadgen"``: ``factory(params, device=..., dtype=...) ->
InferenceTask``; a ``batch`` parameter, when declared, is the largest batch the adapter forms. A scenario
benchmark builds and owns its system: ``factory(params, result=result)`` is a context manager yielding
``(system, batch)``, left (its processes stopped, its own figures recorded) however the run ends.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aibench import lifetime, meters
from aibench.errors import UnavailableError
from aibench.loadgen import logparse
from aibench.loadgen.drive import Calibration, Outcome, calibrate, run_loadgen
from aibench.loadgen.settings import LoadgenOptions, Scenario, size_run
from aibench.loadgen.users import run_users
from aibench.results.parts import shares, stage_parts
from aibench.results.stats import summarize

if TYPE_CHECKING:
    from aibench.registry import Benchmark
    from aibench.results.measurement import Measurement
    from aibench.results.schema import Result
    from aibench.sut import SystemUnderTest

FIND_PEAK_MAX_PROBES = 12
FIND_PEAK_TOLERANCE = 0.05  # stop bisecting once the VALID/INVALID bracket is within 5%
SAMPLE_NOTE = ("per-sample latency measured by aibench's adapter, from LoadGen's issue callback to "
               "completion; a deterministic subsample (every stride-th sample, stride doubling) capped at "
               "10000 values: the full-run percentiles are LoadGen's, in metrics")

log = logging.getLogger(__name__)


def options_from(opts: Any) -> LoadgenOptions:
    return opts.options_for("loadgen")


def run_loadgen_benchmark(bench: Benchmark, params: dict[str, Any], result: Measurement, opts: Any) -> Measurement:
    """The runner registered as ``loadgen`` (:data:`aibench.loadgen.metrics.LOADGEN`)."""
    from aibench.measure.device import refusing_unsupported, resolve_device, resolve_dtype

    s = options_from(opts).resolve().closed_loop_from(params)
    remote = options_from(opts).remote
    batch = int(params.get("batch", 1) or 1)
    result.load_scenario = s.scenario
    result.config["loadgen"] = s.config()
    if remote is not None:
        from aibench.sut.remote import parse_endpoint

        result.config["remote"] = parse_endpoint(remote).url
    result.method.update(s.method())
    result.method["loadgen_request"] = s.to_dict()
    result.method["runner"] = "loadgen" if s.scenario != "closed-loop" else "closed-loop users"
    if s.scenario == "closed-loop":
        result.method["think_time"] = ("constant (the first wait uniform below it), seeded per user "
                                       "(seed * 1000003 + user)" if s.think == "constant" else
                                       "exponential, seeded per user (seed * 1000003 + user)")
    result.primary_metric = logparse.PRIMARY[s.scenario]
    if remote is not None:  # the network runs at the endpoint; the client side here
        from aibench.sut.remote import remote_system

        drive_system(remote_system(bench, params, remote), s, batch, result, seed=getattr(opts, "seed", 0))
        return result
    if bench.can("owns-system"):  # its factory builds and owns its system (scenario/djinn: the server it starts)
        with bench.factory(params, result=result) as (sut, qbatch):
            drive_system(sut, s, qbatch, result, seed=getattr(opts, "seed", 0))
        return result
    device = resolve_device(params.get("device", "cpu"))
    dtype = resolve_dtype(params["dtype"], device) if "dtype" in params else None
    with refusing_unsupported(device, dtype):
        task = bench.factory(params, device=device, dtype=dtype)
        task.run_batch()  # one untimed batch: an unsupported dtype is refused before LoadGen starts
    from aibench.sut.inprocess import InProcessSystem

    sut = InProcessSystem(task, name=bench.id, breakdown=s.breakdown)
    drive_system(sut, s, batch, result, seed=getattr(opts, "seed", 0), device=device)
    return result


# What the result's context.task records of the system under test's description.
TASK_CONTEXT = ("num_samples", "stage", "data", "flops_per_sample", "flops_note")


def drive_system(sut: SystemUnderTest, s: Scenario, batch: int, result: Result, seed: int = 0,
                 device: Any = "cpu") -> None:
    """Measure ``sut`` (any system under test: in-process, worker processes, remote) and fill ``result``.
    Raises the model's exception after recording (the caller marks the result failed); on Ctrl-C (or
    SIGTERM) writes the result as interrupted and raises KeyboardInterrupt (Terminated) naming that file
    (``record``). The meters wrap exactly the measured run(s), not the calibration; ``device`` is what they
    meter (for a remote system, the local side). The system records its own figures (``sut.record``) once,
    however the run ends, before any record is written: an interrupted record keeps what the system had
    measured up to then (a server's statistics, its processes' CPU and memory), marked partial."""
    recorded: list[bool] = []

    def system_figures(partial: str | None = None) -> None:
        if not recorded:
            recorded.append(True)
            sut.record(result, partial)

    try:
        _drive(sut, s, batch, result, seed, device, system_figures)
    except KeyboardInterrupt as exc:  # one not caught by the test's own handler (between two tests)
        system_figures(f"interrupted ({lifetime.describe(exc)}): up to the interruption")
        raise
    finally:
        system_figures()  # a failure: what the system has, before the caller records the failed run


def _drive(sut: SystemUnderTest, s: Scenario, batch: int, result: Result, seed: int, device: Any,
           system_figures: Any) -> None:
    info = sut.describe()
    result.context["task"] = {k: info.get(k) for k in TASK_CONTEXT}
    try:
        cal = calibrate(sut, batch, budget_s=min(0.5, max(0.02, 0.1 * s.duration_s)))
    except KeyboardInterrupt as exc:
        system_figures(f"interrupted ({lifetime.describe(exc)}) during the calibration, before the measured run")
        exc.record = _write_interrupted(result, s.out_dir, exc)  # type: ignore[attr-defined]
        raise
    result.method["calibration"] = cal.to_dict()
    if s.find_peak:
        _check_bound_reachable(s, cal)
    sut.reset_report()
    stem = _stem(result)
    base = s.out_dir / f"{stem}.loadgen"
    window = meters.window(device, what="closed-loop users" if s.scenario == "closed-loop" else
                           "LoadGen test(s), calibration excluded")
    with window:
        if s.scenario == "closed-loop":
            out = run_users(sut, s, batch, seed)
            result.method["closed_loop"] = out.adapter
            _fill(result, out, s)
            samples_done = out.latencies.seen
        elif s.find_peak:
            out = _find_peak(sut, s, batch, cal, base, result)
            samples_done = sum(p["samples"] for p in result.method["find_peak"]["probes"])
        else:
            out, samples_done = _run_sized(sut, s, batch, cal, base, result)
    meters.fold_into(result, window, count=samples_done or None, per="sample")
    _derived_metrics(result, sut)
    if (out.interrupted or out.error is not None) and result.validity is not None:
        why = f"interrupted ({lifetime.describe()})" if out.interrupted else "the system under test failed"
        result.validity = {**result.validity, "valid": False, "loadgen_result": result.validity.get("result"),
                           "result": "INVALID", "summary": f"INVALID: {why}; LoadGen's verdict on the partial "
                           f"run was {result.validity.get('result')}"}
    system_figures(f"interrupted ({lifetime.describe()}): over the measured run up to the interruption"
                   if out.interrupted else None)
    if out.interrupted:
        raise lifetime.interruption(_write_interrupted(result, s.out_dir))
    if out.error is not None:
        raise out.error


def _check_bound_reachable(s: Scenario, cal: Calibration) -> None:
    """--find-peak: refuse a latency bound below the fastest one-sample call the calibration measured. No
    target rate can meet it, and the search would halve its target (each probe longer) until its budget."""
    fastest = cal.min_sample_s if cal.min_sample_s is not None else cal.per_sample_s
    bound_s = (s.latency_bound_ms or 0.0) / 1e3
    if bound_s < fastest:
        raise UnavailableError(
            f"--latency-bound-ms {s.latency_bound_ms:g} is below this system's shortest measured latency: one "
            f"sample took at least {fastest * 1e3:.4g} ms (median {cal.per_sample_s * 1e3:.4g} ms) in the "
            f"calibration, so no target QPS can meet the bound; give --latency-bound-ms above "
            f"{fastest * 1e3:.4g} (several times it, to leave room for queueing)")


def _say(message: str) -> None:
    """A progress line on stderr (not with -q: the CLI then sets the log level to errors only)."""
    if logging.getLogger("aibench").isEnabledFor(logging.WARNING):
        print(f"aibench: {message}", file=sys.stderr, flush=True)


# A run that ran out of LoadGen's pre-generated queries before the minimum duration is re-sized from its own
# measured rate and run again, at most this many times (each attempt keeps its logs).
MAX_RESIZES = 2


def _too_short(out: Outcome) -> bool:
    """INVALID only because the pre-generated queries ran out before the minimum duration: the calibration
    over-estimated the time per sample (seen at 3-12x on a contended 2-core VM)."""
    v = out.validity
    if out.error is not None or out.interrupted or v is None or v.get("valid"):
        return False
    failed = {name for name, c in v.get("constraints", {}).items() if c.get("met") is False}
    other_errors = [err for err in v.get("errors") or () if "Ran out of generated queries" not in str(err)]
    return bool(failed) and failed <= {"min_duration", "min_queries", "early_stopping"} \
        and "min_duration" in failed and not other_errors


def _measured_sizes(out: Outcome, s: Scenario) -> tuple[float, float] | None:
    """(per-sample latency, time per sample at the batch) for the next attempt: half what the too-short run
    measured. A short run under-states the steady rate (its start-up weighs more), and over-sizing only
    costs a longer run, while under-sizing costs another attempt."""
    m = out.metrics
    if s.scenario == "offline":
        rate = (m.get("samples_per_s") or {}).get("value")
        return (0.5 / rate, 0.5 / rate) if rate else None
    mean = (m.get("latency_mean") or {}).get("value")
    if not mean:
        return None
    return 0.5 * mean, 0.5 * mean / max(1, s.samples_per_query)


def _run_sized(sut: SystemUnderTest, s: Scenario, batch: int, cal: Calibration, base: Path,
               result: Result) -> tuple[Outcome, int]:
    """One LoadGen test sized from the calibration; re-sized from its own rate when it ran out of queries
    (Offline without --expected-qps, SingleStream, MultiStream). Returns the last outcome and the samples
    answered over all attempts (what the meters' window covered)."""
    per_sample, batch_sample = cal.per_sample_s, cal.batch_sample_s
    resizable = s.scenario in ("single-stream", "multi-stream") or (s.scenario == "offline" and s.expected_qps is None)
    attempts: list[dict[str, Any]] = []
    folder = base
    samples = 0
    while True:
        sizing = size_run(s, per_sample, batch_sample)
        out = run_loadgen(sut, s, batch, sizing, folder, one_sample_s=cal.per_sample_s)
        samples += out.latencies.seen
        measured = _measured_sizes(out, s) if resizable and _too_short(out) else None
        if measured is None or len(attempts) >= MAX_RESIZES:
            break
        attempts.append({"log_dir": str(folder), "expected_qps": sizing.expected_qps,
                         "expected_latency_ns": sizing.expected_latency_ns, "summary": out.validity["summary"],
                         "stop_fault": out.adapter.get("stop_fault")})
        log.info("LoadGen ran out of queries before the minimum duration; re-sizing from the measured rate")
        per_sample, batch_sample = measured
        folder = base.with_name(f"{base.name[:-len('.loadgen')]}.resized-{len(attempts)}.loadgen")
    result.method["loadgen_logs"] = str(folder)
    if attempts:
        result.method["resized_after"] = attempts
    _carry_stop_fault(out, attempts)
    _fill(result, out, s)
    return out, samples


def _carry_stop_fault(out: Outcome, earlier: list[dict[str, Any]]) -> None:
    """A system that did not stop after an earlier test of the same run (a re-sized attempt, a find-peak
    probe) is a fault of the run, though only one test's adapter record reaches the result."""
    if not out.adapter.get("stop_fault"):
        fault = next((e["stop_fault"] for e in earlier if e.get("stop_fault")), None)
        if fault:
            out.adapter["stop_fault"] = fault


def _derived_metrics(result: Result, sut: SystemUnderTest) -> None:
    """Achieved GFLOP/s from the system's counted FLOPs, bytes moved into it, and the stage shares when its
    stages were timed: all from what the system declares (capabilities, describe) and reports."""
    from aibench.results.schema import metric

    info = sut.describe()
    caps = sut.capabilities
    rep = sut.report()
    flops = info.get("flops_per_sample")
    rate = (result.metrics.get("samples_per_s") or {}).get("value")
    if flops and rate:
        result.metrics["gflops"] = metric(flops * rate / 1e9, "GFLOP/s", "higher")
    else:
        why = (info.get("flops_note") or "the system under test did not count its FLOPs") if not flops \
            else "no samples/s was measured"
        result.metrics["gflops"] = metric(None, "GFLOP/s", "higher", unavailable=why)
    samples = (result.meters.get("work") or {}).get("count")
    if caps.reports_bytes and rep.bytes_in is not None and samples:
        on_host = str(info.get("device", "")).split(":")[0] == "cpu"
        result.meters.setdefault("memory", {})["host_to_device"] = {
            "bytes_total": rep.bytes_in, "bytes_per_sample": rep.bytes_in / samples, "provenance": "measured",
            "scope": "input tensors passed to the device by the adapter (collated, pre-processed)",
            **({"note": "the device is the host: nothing is copied"} if on_host else {})}
    timed = {name: rep.stages.get(name, ()) for name in caps.stages}
    parts = stage_parts(timed)
    if parts:
        result.parts["stage"] = parts
    # the stages the system times, and those the benchmark declares a share of (unavailable when untimed)
    declared = [n[len("share_"):] for n in result.declared if n.startswith("share_")]
    _stage_metrics(result, [*caps.stages, *declared],
                   "no batch was timed" if caps.stages else
                   info.get("stages_note") or "run with --breakdown to time the stages")


def _stage_metrics(result: Result, stages: Sequence[str], why_not: str) -> None:
    """``share_<stage>``: each stage's share of the summed stage times, for the stages the system declares
    (and any it timed), declared as a ratio of ``parts.stage.<stage>``; unavailable, saying why, when the
    stages were not timed. Direction and unit come from the benchmark's metric list where it names the
    stage (the in-process system's dnn share is higher-is-better), else lower-is-better."""
    from aibench.results.schema import metric

    group = result.parts.get("stage") or {}
    share = shares(group)
    for stage in dict.fromkeys([*stages, *group]):
        name = f"share_{stage}"
        direction = (result.declared.get(name) or {}).get("direction", "lower")
        decl = {"statistic": "ratio", "of": f"parts.stage.{stage}"}
        if stage in share:
            result.metrics[name] = metric(share[stage], "fraction", direction, seconds=group[stage]["total"],
                                          **decl)
        else:
            result.metrics[name] = metric(None, "fraction", direction, unavailable=why_not, **decl)


def _stem(result: Measurement) -> str:
    return result.stem()


def _fill(result: Result, out: Outcome, s: Scenario) -> None:
    result.metrics = out.metrics
    result.validity = out.validity
    if out.validity is not None:
        result.validity = {**out.validity, "log_dir": str(out.log_dir)}
        result.method["requested_settings"] = out.requested
        result.method["effective_settings"] = out.effective
        result.method["adapter"] = out.adapter
        result.method["query_memory_estimate"] = out.memory
    kept = out.latencies.kept()
    if kept:
        result.samples["latency"] = {"unit": "s", "per": "sample", "values": kept, "summary": summarize(kept),
                                     "note": SAMPLE_NOTE, "seen": out.latencies.seen,
                                     "stride": out.latencies.stride}


def probe_seconds(s: Scenario, q: float) -> float:
    """About how long a Server probe at ``q`` QPS runs: LoadGen issues max(min queries, 1.1 × duration × q)
    queries at q per second (its own sizing, :func:`~aibench.loadgen.settings.size_run`)."""
    return max(1.1 * s.duration_s, s.min_queries / q)


def _find_peak(sut: SystemUnderTest, s: Scenario, batch: int, cal: Calibration, base: Path,
               result: Result) -> Outcome:
    """Galloping then bisection on the target QPS: the highest target whose run is VALID, within the time
    budget (a probe that would end past it is not started). One line per probe on stderr."""
    capacity = 1.0 / max(cal.batch_sample_s, 1e-9)
    q = s.target_qps if s.target_qps is not None else max(1.0, 0.5 * capacity)
    lo: tuple[float, Outcome] | None = None
    hi: float | None = None
    probes: list[dict[str, Any]] = []
    base.mkdir(parents=True, exist_ok=True)
    result.method["loadgen_logs"] = str(base)
    last: Outcome | None = None
    budget = s.find_peak_budget_s if s.find_peak_budget_s is not None else float("inf")
    t_start = time.monotonic()
    stop_reason = f"bracket within {FIND_PEAK_TOLERANCE:.0%} or {FIND_PEAK_MAX_PROBES} probes"
    _say(f"find-peak: latency bound {s.latency_bound_ms:g} ms at p{s.latency_percentile:g}, time budget "
         f"{budget:g} s, first target {q:.4g} QPS")
    while len(probes) < FIND_PEAK_MAX_PROBES:
        spent = time.monotonic() - t_start
        expected = probe_seconds(s, q)
        if probes and spent + expected > budget:
            stop_reason = (f"time budget: {spent:.0f} s spent of {budget:g} s and the next probe (target "
                           f"{q:.4g} QPS) would take about {expected:.0f} s (--find-peak-budget-s)")
            break
        probe = s.with_target(q)
        folder = base / f"probe-{len(probes) + 1:02d}-{q:.6g}qps"
        t_probe = time.monotonic()
        out = run_loadgen(sut, probe, batch, size_run(probe, cal.per_sample_s, cal.batch_sample_s), folder,
                          one_sample_s=cal.per_sample_s)
        last = out
        ok = bool(out.validity and out.validity["valid"])
        probes.append({"target_qps": q, "valid": ok, "summary": out.validity and out.validity["summary"],
                       "samples": out.latencies.seen, "wall_s": time.monotonic() - t_probe,
                       "completed_samples_per_s": out.metrics["samples_per_s"]["value"],
                       "latency_p99_s": out.metrics["latency_p99"]["value"], "log_dir": str(folder),
                       "stop_fault": out.adapter.get("stop_fault")})
        _say(_probe_line(len(probes), probes[-1], out))
        if out.error is not None or out.interrupted:
            break
        if ok:
            if lo is None or q > lo[0]:
                lo = (q, out)
        else:
            hi = q if hi is None else min(hi, q)
            bound = (out.validity or {}).get("constraints", {}).get("latency_bound", {})
            if lo is None and bound.get("met") is True:
                stop_reason = ("a probe met the latency bound but was INVALID for another reason (too few "
                               "queries, duration or early stopping): lowering the target cannot help; run "
                               "longer (--duration-s, --min-queries)")
                break
        if hi is None:
            q *= 2
        elif lo is None:
            q /= 2
            if q < 1e-3:
                break
        else:
            if hi / lo[0] - 1 <= FIND_PEAK_TOLERANCE:
                break
            q = (lo[0] * hi) ** 0.5
    assert last is not None
    chosen = lo[1] if lo is not None else last
    _carry_stop_fault(chosen, probes)
    _fill(result, chosen, s)
    peak = lo[0] if lo is not None else None
    result.method["find_peak"] = {
        "peak_target_qps": peak, "bracket": [peak, hi], "tolerance": FIND_PEAK_TOLERANCE,
        "max_probes": FIND_PEAK_MAX_PROBES, "probes": probes, "stopped": stop_reason,
        "budget_s": s.find_peak_budget_s, "wall_s": time.monotonic() - t_start,
        "search": "start at --target-qps (or half the calibrated capacity), double until INVALID, halve "
                  "until VALID, then bisect (geometric mean) until the bracket is within the tolerance"}
    from aibench.results.schema import metric

    if peak is not None:
        result.metrics["peak_target_qps"] = metric(peak, "queries/s", "higher", None)
        result.config["loadgen"]["target_qps"] = "find-peak"
    else:
        result.metrics["peak_target_qps"] = metric(None, "queries/s", "higher",
                                                   "no probed target QPS was VALID", valid=False)
        lowest = min(p["target_qps"] for p in probes)
        result.validity = {**(result.validity or {}), "valid": False, "result": "INVALID",
                           "summary": f"INVALID: no probed target QPS was VALID (lowest tried {lowest:.4g})"}
    if not (last.error or last.interrupted):
        _say(f"find-peak: {'peak ' + format(peak, '.4g') + ' QPS' if peak is not None else 'no VALID target'}"
             f" after {len(probes)} probe(s), {time.monotonic() - t_start:.0f} s ({stop_reason})")
    return chosen if not (last.error or last.interrupted) else last


def _probe_line(n: int, probe: dict[str, Any], out: Outcome) -> str:
    p99 = probe["latency_p99_s"]
    rate = probe["completed_samples_per_s"]
    verdict = "interrupted" if out.interrupted else "failed" if out.error is not None else \
        ("VALID" if probe["valid"] else "INVALID")
    figures = ", ".join(x for x in (f"p99 {p99 * 1e3:.4g} ms" if p99 is not None else "",
                                    f"{rate:.4g} samples/s" if rate is not None else "") if x)
    return (f"find-peak probe {n}: target {probe['target_qps']:.4g} QPS: {verdict}"
            f"{' (' + figures + ')' if figures else ''}, {probe['wall_s']:.1f} s")


def _write_interrupted(result: Measurement, out_dir: Path, exc: BaseException | None = None) -> Path | None:
    """Record an interrupted run before Ctrl-C (or SIGTERM) propagates (the CLI then exits 130, or 143), by
    the harness's one writer of interrupted records; LoadGen's partial figures stay, marked INVALID."""
    return result.record_interrupted(out_dir, exc, note="LoadGen's partial logs are kept in method.loadgen_logs",
                                     keep_figures=True)
