"""From a benchmark and its parameters to finished :class:`Result` records.

The runner knows no particular workload: it validates parameters, expands named sets, pins threads,
dispatches to the measuring part named by the benchmark's ``runner`` and stamps each record with the
machine, code version and load. Everything the CLI does goes through here, so it is callable from Python.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench import system
from aibench.errors import AibenchError, UsageError
from aibench.measure.timer import TimerSettings
from aibench.registry import Benchmark
from aibench.results.schema import Result, now_iso
from aibench.spec import config_hash

log = logging.getLogger(__name__)

# Micro benchmarks default to one thread, as torch.utils.benchmark.Timer does: it is the only setting
# whose timings were stable enough to compare on these 2-core machines (reference/measurement.md).
DEFAULT_THREADS = {"micro": 1}


@dataclass(frozen=True)
class RunOptions:
    """Harness settings. The thread count a run uses (``threads``, or torch's own default when None) enters
    the config hash; the timer settings only say how long."""

    threads: int | None = None
    timer: TimerSettings = field(default_factory=TimerSettings)
    seed: int = 0
    loadgen: Any = None  # aibench.loadgen.settings.LoadgenOptions for runner "loadgen" (None: its defaults)
    # Where an interrupted run's record goes (None: not written here). The LoadGen runner writes its own,
    # with LoadGen's partial logs; this covers the kernel and training runners.
    interrupted_dir: Path | None = None
    ttq_budget_s: float | None = None  # runner "training" with --ttq: time budget (None: its default, 600 s)

    def threads_for(self, bench: Benchmark) -> int | None:
        return self.threads if self.threads is not None else DEFAULT_THREADS.get(bench.kind)


@dataclass(frozen=True)
class PlannedRun:
    bench: Benchmark
    params: dict[str, Any]
    context: dict[str, Any]


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


RunnerFn = Callable[[Benchmark, dict[str, Any], Result, RunOptions], None]


def _kernel(bench: Benchmark, params: dict[str, Any], result: Result, opts: RunOptions) -> None:
    from aibench.measure.kernel import run_kernel

    run_kernel(bench, params, result, opts.timer)


def _loadgen(bench: Benchmark, params: dict[str, Any], result: Result, opts: RunOptions) -> None:
    from aibench.loadgen.run import run_loadgen_benchmark

    run_loadgen_benchmark(bench, params, result, opts)


def _training(bench: Benchmark, params: dict[str, Any], result: Result, opts: RunOptions) -> None:
    from aibench.measure.training import run_training

    run_training(bench, params, result, opts)


RUNNERS: dict[str, RunnerFn] = {"kernel": _kernel, "loadgen": _loadgen, "training": _training}


def new_result(bench: Benchmark, params: dict[str, Any], config: dict[str, Any],
               context: Mapping[str, Any] | None = None) -> Result:
    return Result(
        benchmark={"id": bench.id, "kind": bench.kind, "name": bench.name, "source": bench.source,
                   "description": bench.description},
        params=dict(params),
        config=config,
        config_hash=config_hash(bench.id, params, config),
        primary_metric=bench.primary_metric,
        context=dict(context or {}),
        declared={m.name: {"unit": m.unit, "direction": m.direction, **m.declaration()} for m in bench.metrics},
    )


def execute(run: PlannedRun, opts: RunOptions) -> Result:
    """Measure one planned run. Refusals (AibenchError) propagate before any record exists; any other
    failure is recorded in a ``failed`` result; Ctrl-C (or SIGTERM) propagates, after the run is recorded as
    ``interrupted`` in ``opts.interrupted_dir`` (the file is the exception's ``record``)."""
    import torch

    from aibench.measure.device import pinned_threads

    bench = run.bench
    if bench.runner not in RUNNERS:
        raise UsageError(f"{bench.id}: runner {bench.runner!r} is not available in this aibench")
    threads = opts.threads_for(bench)
    with pinned_threads(threads) as thread_info:
        # The effective count, not the request: a default run (None) and '--threads N' with N what torch
        # uses anyway measure the same work and share a hash; default runs on machines with different core
        # counts do not.
        result = new_result(bench, run.params, {"threads": thread_info["threads"]}, run.context)
        result.load["loadavg_start"] = system.load_average()
        t0 = time.perf_counter()
        torch.manual_seed(opts.seed)
        try:
            RUNNERS[bench.runner](bench, run.params, result, opts)
        except AibenchError:
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (aibench.lifetime.Terminated)
            if result.status != "interrupted" and opts.interrupted_dir is not None:
                exc.record = _write_interrupted(  # type: ignore[attr-defined]
                    result, opts.interrupted_dir, time.perf_counter() - t0, exc)
            raise
        except Exception as exc:  # recorded, not raised: a set goes on past one failing point
            log.debug("benchmark failed", exc_info=True)
            result.status = "failed"
            result.error = {"type": type(exc).__name__, "message": str(exc).strip().splitlines()[0][:2000]
                            if str(exc).strip() else type(exc).__name__,
                            "traceback": traceback.format_exc(limit=8)}
            result.metrics = {}
    undeclared = result.declare_metrics()
    if undeclared:
        log.debug("metrics of %s not declared by the benchmark (declared plain values): %s", bench.id, undeclared)
    result.method["seed"] = opts.seed
    result.method["threads"] = thread_info
    result.duration_s = time.perf_counter() - t0
    result.finished_at = now_iso()
    result.load["loadavg_end"] = system.load_average()
    result.machine = system.fingerprint()
    result.code = system.code_version()
    return result


def _write_interrupted(result: Result, out_dir: Path, elapsed_s: float, exc: BaseException) -> Path:
    """Record a run cut short by Ctrl-C or SIGTERM (no figures: a partial measurement is not one)."""
    from aibench import lifetime
    from aibench.results.store import write_result

    result.status = "interrupted"
    result.error = {"type": type(exc).__name__, "message": f"interrupted ({lifetime.describe(exc)}) before the "
                    "measurement finished; no figures were kept"}
    result.metrics = {}
    result.duration_s = elapsed_s
    result.finished_at = now_iso()
    result.load["loadavg_end"] = system.load_average()
    result.machine = system.fingerprint()
    result.code = system.code_version()
    return write_result(result, out_dir)


def run_all(runs: list[PlannedRun], opts: RunOptions) -> Iterator[Result]:
    for run in runs:
        yield execute(run, opts)
