"""From a benchmark and its parameters to finished :class:`Result` records.

The harness knows no particular workload nor runner: it validates parameters, expands named sets, pins
threads, calls the measure function the benchmark's runner registered (:class:`~aibench.registry.RunnerSpec`),
which returns a :class:`~aibench.results.measurement.Measurement`, and builds and stamps the one record from
it (:func:`build_result`: config hash computed once; the one writer of interrupted records).
Everything the CLI does goes through here, so it is callable from Python.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aibench import machine, registry
from aibench.errors import AibenchError, UsageError
from aibench.measure.timer import TimerSettings
from aibench.registry import Benchmark
from aibench.results.measurement import Measurement
from aibench.results.schema import Result, now_iso
from aibench.spec import config_hash

log = logging.getLogger(__name__)

# Micro benchmarks default to one thread, as torch.utils.benchmark.Timer does: it is the only setting
# whose timings were stable enough to compare on these 2-core machines (reference/measurement.md).
DEFAULT_THREADS = {"micro": 1}


@dataclass(frozen=True)
class RunOptions:
    """Harness settings. The thread count a run uses (``threads``, or torch's own default when None) enters
    the config hash; the timer settings only say how long.

    ``runner_options`` holds each runner's own typed options by the key its :class:`~aibench.registry.RunnerSpec`
    declares (``loadgen``: a LoadgenOptions, ``training``: a TrainingOptions, ``scale_out``: the pool); a
    runner reads its own with :meth:`options_for`, which gives the type's defaults when none were set."""

    threads: int | None = None
    timer: TimerSettings = field(default_factory=TimerSettings)
    seed: int = 0
    # Where an interrupted run's record goes (None: not written here). The LoadGen runner writes its own,
    # with LoadGen's partial logs; this covers the kernel and training runners.
    interrupted_dir: Path | None = None
    runner_options: Mapping[str, Any] = field(default_factory=dict)

    def threads_for(self, bench: Benchmark) -> int | None:
        return self.threads if self.threads is not None else DEFAULT_THREADS.get(bench.kind)

    def with_options(self, **by_key: Any) -> RunOptions:
        """These options with some runner options set (``opts.with_options(loadgen=LoadgenOptions(...))``)."""
        return replace(self, runner_options={**self.runner_options, **by_key})

    def options_for(self, key: str) -> Any:
        """The runner options under ``key``, or the defaults of the type a registered runner declares for it
        (None when no runner declares one)."""
        if key in self.runner_options:
            return self.runner_options[key]
        for spec in registry.all_runners():
            if spec.options == key and spec.options_type is not None:
                return registry.load(spec.options_type)()
        return None

    def options_of(self, bench: Benchmark) -> Any:
        """The options of the runner that measures ``bench`` (None for a runner without options)."""
        key = bench.runner_spec.options
        return self.options_for(key) if key is not None else None


@dataclass(frozen=True)
class PlannedRun:
    """One configuration to measure. ``config``: what the launch adds to what is measured (a distributed
    sweep's world), hashed with the rest by :func:`build_result`."""

    bench: Benchmark
    params: dict[str, Any]
    context: dict[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)


def plan(bench: Benchmark, given: Mapping[str, Any], set_name: str | None = None) -> list[PlannedRun]:
    """Validated parameter sets to run: one, or one per entry of a named set. Everything is checked here,
    before anything is measured, so a bad entry late in a set cannot waste the earlier work."""
    if set_name is None:
        return [PlannedRun(bench, bench.resolve(given), {})]
    rows = bench.expand_set(set_name)
    clash = sorted(set(rows[0]) & {k.replace("-", "_") for k in given}) if rows else []
    if clash:
        raise UsageError(f"--set {set_name} already sets {', '.join('--' + c for c in clash)}; "
                         "drop them or run without --set")
    runs = []
    for i, row in enumerate(rows):
        try:
            params = bench.resolve({**given, **row})
        except UsageError as exc:
            raise UsageError(f"set {set_name} entry {i + 1}: {exc.message}") from None
        runs.append(PlannedRun(bench, params, {"set": set_name, "set_index": i, "set_size": len(rows)}))
    return runs


# A runner's measure function: fills the Measurement it is given and returns it.
RunnerFn = Callable[[Benchmark, dict[str, Any], Measurement, RunOptions], Measurement | None]


def measure_fn(bench: Benchmark) -> RunnerFn:
    """The measuring function of ``bench``'s runner, imported now (its registration names it lazily)."""
    fn: RunnerFn = registry.load(bench.runner_spec.measure)
    return fn


def primary_metric(bench: Benchmark, params: Mapping[str, Any] | None, opts: RunOptions) -> str:
    """The headline metric of a run of ``bench`` with these parameters and options: its runner's ``primary``
    hook where it declares one (LoadGen's scenario, --ttq), else the benchmark's own."""
    spec = bench.runner_spec
    if spec.primary is None:
        return bench.primary_metric
    name: str = registry.load(spec.primary)(bench, dict(params or {}), opts.options_of(bench))
    return name


def build_result(run: PlannedRun, m: Measurement, *, threads: int | None, seed: int | None = None,
                 thread_info: Mapping[str, Any] | None = None, duration_s: float | None = None,
                 load_start: float | None = None, stamp: bool = True) -> Result:
    """The one place a :class:`Result` is built from a measurement and stamped.

    ``config`` is exactly what enters the hash, computed here once: the thread count the run used (the
    effective one), the run's planned additions (a distributed launch) and what the runner's settings add
    (``m.config``). ``stamp``: machine, code version, load and finish time (not for a provisional record
    whose only use is its file name)."""
    bench = run.bench
    config: dict[str, Any] = {"threads": threads, **run.config, **m.config}
    result = Result(
        benchmark={"id": bench.id, "kind": bench.kind, "name": bench.name, "source": bench.source,
                   "description": bench.description},
        params=dict(run.params), config=config, config_hash=config_hash(bench.id, run.params, config),
        status=m.status, error=m.error, primary_metric=m.primary_metric or bench.primary_metric,
        metrics=m.metrics, samples=m.samples, parts=m.parts, method=dict(m.method), load_scenario=m.load_scenario,
        validity=m.validity, noisy=m.noisy, meters=m.meters, context={**run.context, **m.context},
        started_at=m.started_at, run_id=m.run_id, declared=_declared(bench))
    if result.validity is not None and not result.validity.get("valid", True):
        for entry in result.metrics.values():  # a figure from an INVALID run is never a plain number, also
            entry["valid"] = False             # one a system under test added after the driver was done
    if seed is not None:
        result.method["seed"] = seed
    if thread_info is not None:
        result.method["threads"] = dict(thread_info)
    if not stamp:
        return result
    undeclared = result.declare_metrics()
    if undeclared:
        log.debug("metrics of %s not declared by the benchmark (declared plain values): %s", bench.id, undeclared)
    result.duration_s = duration_s
    result.finished_at = now_iso()
    if load_start is not None:
        result.load["loadavg_start"] = load_start
    result.load["loadavg_end"] = machine.load_average()
    result.machine = machine.fingerprint()
    result.code = machine.code_version()
    return result


def _declared(bench: Benchmark) -> dict[str, dict[str, Any]]:
    return {m.name: {"unit": m.unit, "direction": m.direction, **m.declaration()} for m in bench.metrics}


class Recorder:
    """The harness side of a running measurement: the name its record will have, and the one writer of
    interrupted records (the kernel and training runners' interruptions, LoadGen's partial runs)."""

    def __init__(self, run: PlannedRun, opts: RunOptions, thread_info: Mapping[str, Any], load_start: float,
                 t0: float) -> None:
        self.run, self.opts, self.thread_info = run, opts, thread_info
        self.load_start, self.t0 = load_start, t0

    def build(self, m: Measurement, stamp: bool = True) -> Result:
        return build_result(self.run, m, threads=self.thread_info["threads"], seed=self.opts.seed,
                            thread_info=self.thread_info, duration_s=time.perf_counter() - self.t0,
                            load_start=self.load_start, stamp=stamp)

    def stem(self, m: Measurement) -> str:
        from aibench.results.store import result_filename

        return result_filename(self.build(m, stamp=False)).removesuffix(".json")

    def record_interrupted(self, m: Measurement, out_dir: Path, exc: BaseException | None, note: str | None,
                           keep_figures: bool) -> Path:
        from aibench import lifetime
        from aibench.results.store import write_result

        what = lifetime.describe(exc)
        m.status = "interrupted"
        m.error = {"type": type(exc).__name__ if exc is not None else
                   ("Terminated" if what == "SIGTERM" else "KeyboardInterrupt"),
                   "message": f"interrupted ({what}) before the measurement finished; "
                              f"{note or 'no figures were kept'}"}
        if not keep_figures:
            m.metrics = {}
        return write_result(self.build(m), out_dir)


def execute(run: PlannedRun, opts: RunOptions) -> Result:
    """Measure one planned run. Refusals (AibenchError) propagate before any record exists; any other
    failure is recorded in a ``failed`` result; Ctrl-C (or SIGTERM) propagates, after the run is recorded as
    ``interrupted`` (by the runner where it keeps partial figures, else here in ``opts.interrupted_dir``;
    the file is the exception's ``record``)."""
    import torch

    from aibench.measure.device import pinned_threads

    bench = run.bench
    measure = measure_fn(bench)  # an unknown runner is refused before any record exists
    threads = opts.threads_for(bench)
    with pinned_threads(threads) as thread_info:
        # The effective count, not the request: a default run (None) and '--threads N' with N what torch
        # uses anyway measure the same work and share a hash; default runs on machines with different core
        # counts do not.
        t0 = time.perf_counter()
        recorder = Recorder(run, opts, thread_info, machine.load_average(), t0)
        m = Measurement(benchmark_id=bench.id, declared=_declared(bench), recorder=recorder)
        torch.manual_seed(opts.seed)
        try:
            m = measure(bench, run.params, m, opts) or m
        except AibenchError:
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (aibench.lifetime.Terminated)
            if m.status != "interrupted" and opts.interrupted_dir is not None:
                exc.record = m.record_interrupted(opts.interrupted_dir, exc)  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # recorded, not raised: a set goes on past one failing point
            log.debug("benchmark failed", exc_info=True)
            m.status = "failed"
            m.error = {"type": type(exc).__name__, "message": str(exc).strip().splitlines()[0][:2000]
                       if str(exc).strip() else type(exc).__name__,
                       "traceback": traceback.format_exc(limit=8)}
            m.metrics = {}
    return recorder.build(m)
