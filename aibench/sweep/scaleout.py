"""One point of an inference scale-out sweep: a load-generated benchmark over a pool of worker processes.

The measuring is the ``loadgen`` runner's (:func:`aibench.loadgen.run.drive_system`): one LoadGen in this
process, the same calibration, scenarios, validity, meters and result fields; only the system under test is
the pool (:class:`aibench.sut.pool.PoolSystem`). It runs inside :func:`aibench.harness.execute` (so a
failure is recorded like any other) under the runner ``scale-out``, which this module registers
(:data:`SCALE_OUT`) as every runner registers itself; its options are LoadGen's
(``runner_options["loadgen"]``) and the pool (``runner_options["scale_out"]``, a :class:`PoolRunOptions`). The
pool's settings enter the result's ``config`` (and so its hash): ``config.scale_out = {devices,
instances_per_device, workers, worker_threads}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aibench.errors import UsageError
from aibench.harness import RunOptions, execute
from aibench.loadgen.metrics import COMPONENT_METRICS, INFERENCE_CONTRACT
from aibench.registry import RunnerSpec, register_runner

if TYPE_CHECKING:
    from aibench.registry import Benchmark
    from aibench.results.measurement import Measurement
    from aibench.results.schema import Result
    from aibench.sut.pool import WorkerPool
    from aibench.sweep.engine import PointPlan

RUNNER = "scale-out"
METERS_NOTE = ("meters cover this (the load-generating) process: its memory and CPU time; energy counts the "
               "devices (CPU packages via RAPL, the GPUs via NVML), which include the workers' work. Each "
               "worker's own CPU time, peak memory and busy time are in context.scale_out.worker_stats")


@dataclass(frozen=True)
class PoolRunOptions:
    """The ``scale-out`` runner's options (``RunOptions.runner_options["scale_out"]``): the pool a point runs
    on and which of its workers it uses."""

    pool: Any = None
    workers: tuple[int, ...] = ()
    scale: dict[str, Any] = field(default_factory=dict)  # config.scale_out of the point


def run_scale_out(bench: Benchmark, params: dict[str, Any], result: Measurement, opts: RunOptions) -> Measurement:
    """The ``scale-out`` runner: :func:`aibench.loadgen.run.run_loadgen_benchmark` with a pool of workers as
    the system under test."""
    from aibench.loadgen import logparse
    from aibench.loadgen.run import drive_system, options_from
    from aibench.sut.pool import PoolSystem

    pooled = opts.runner_options.get("scale_out")
    if not isinstance(pooled, PoolRunOptions) or pooled.pool is None:
        raise UsageError(f"{bench.id}: the scale-out runner needs a worker pool (aibench sweep gpus)")
    s = options_from(opts).resolve()
    if s.breakdown:
        raise UsageError("--breakdown times stages inside one process; it is not available across worker processes")
    pool: WorkerPool = pooled.pool
    if not pool.healthy():
        pool.close()
        pool.start()
    batch = int(params.get("batch", 1) or 1)
    workers = list(pooled.workers)
    result.load_scenario = s.scenario
    result.config["loadgen"] = s.config()
    result.config["scale_out"] = dict(pooled.scale)
    result.method.update(s.method())
    result.method["loadgen_request"] = s.to_dict()
    result.method["runner"] = ("loadgen" if s.scenario != "closed-loop" else "closed-loop users") + \
        f", scaled out over {len(workers)} worker process(es)"
    result.primary_metric = logparse.PRIMARY[s.scenario]
    infos = [pool.workers[i].info or {} for i in workers]
    devices = sorted({str(i.get("device")) for i in infos})
    scale_ctx: dict[str, Any] = {
        "workers": [{k: i.get(k) for k in ("index", "pid", "device", "threads", "affinity")} for i in infos],
        "process_start": "spawn", "pool_start_s": pool.start_s,
        "dispatch": "one LoadGen in the parent; each worker gets batches of the benchmark's --batch (several per "
                    "message while much is queued), at most 2 messages outstanding per worker",
        "meters_note": METERS_NOTE}
    if any(d.startswith("cuda") for d in devices):
        scale_ctx["mps"] = mps_note()
    result.context["scale_out"] = scale_ctx
    sut = PoolSystem(pool, workers, batch, name=f"{bench.id} x{len(workers)}")
    meter_devices: Any = [d for d in devices if d.startswith("cuda")] or "cpu"
    try:
        drive_system(sut, s, batch * len(workers), result, seed=opts.seed, device=meter_devices)
    finally:
        adapter = result.method.get("adapter")
        wall = adapter.get("test_wall_s") if isinstance(adapter, dict) else None
        # Not after an interruption: the run is recorded already, and the dispatcher's threads may still be
        # reading the workers' pipes (they are left behind when they outlast the abort's grace).
        if pool.healthy() and result.status != "interrupted":
            try:
                stats = pool.stats(workers)
            except Exception as exc:  # the figures above stand without them
                scale_ctx["worker_stats_error"] = str(exc)
            else:
                for st in stats:  # shares of the LoadGen test's wall time (the counters were reset at its start)
                    st["busy_share"] = st["busy_s"] / wall if wall else None
                    st["cpu_share"] = st["cpu_s"] / wall if wall else None
                scale_ctx["worker_stats"] = stats
                scale_ctx["worker_stats_note"] = (
                    "since the last LoadGen test started: busy_s is time inside the model (batches), cpu_s the "
                    "worker's CPU time; a cpu_share well below busy_share means the worker waited for a core")
        if isinstance(adapter, dict):
            adapter.update(max_batch=batch, pool_max_batch=batch * len(workers), workers=len(workers))
    return result


def mps_note() -> dict[str, Any]:
    """Whether NVIDIA's Multi-Process Service looks active: without it, processes on one GPU time-share it."""
    import os

    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    active = os.path.exists(os.path.join(pipe, "control"))
    return {"daemon_detected": active, "pipe_directory": pipe,
            "note": "instances on one GPU run kernels concurrently only under MPS; otherwise they time-share it"}


SCALE_OUT = register_runner(RunnerSpec(
    name=RUNNER, contract=INFERENCE_CONTRACT, measure="aibench.sweep.scaleout:run_scale_out",
    capabilities=frozenset({"inference"}), metrics=COMPONENT_METRICS, options="loadgen",
    options_type="aibench.loadgen.settings:LoadgenOptions", primary="aibench.loadgen.metrics:primary",
    describe="LoadGen over a pool of worker processes (aibench sweep gpus)"))


class PoolExecutor:
    """Runs the points of a ``gpus`` sweep of a load-generated benchmark on one pool, started at the first
    point with every worker slot any point uses and restarted if a worker was lost."""

    def __init__(self, bench: Benchmark, slots: list[str], threads: int, seed: int, params: dict[str, Any]) -> None:
        self.bench = bench
        self.slots = slots
        self.threads = threads
        self.seed = seed
        self.params = params
        self.pool: WorkerPool | None = None

    def _pool(self) -> WorkerPool:
        from aibench.sut.pool import WorkerConfig, WorkerPool

        if self.pool is None:
            module = getattr(self.bench.factory, "__module__", "") or ""
            modules = (module,) if module and not module.startswith("aibench.") and module != "__main__" else ()
            self.pool = WorkerPool([WorkerConfig(index=i, device=d, threads=self.threads, bench_id=self.bench.id,
                                                 params=self.params, seed=self.seed, modules=modules)
                                    for i, d in enumerate(self.slots)])
        return self.pool

    def run(self, point: PointPlan) -> Result:
        opts = point.opts.with_options(scale_out=PoolRunOptions(
            pool=self._pool(), workers=tuple(point.extra["workers"]), scale=point.extra["scale"]))
        run = replace(point.run, bench=replace(point.run.bench, runner=RUNNER))
        return execute(run, opts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
