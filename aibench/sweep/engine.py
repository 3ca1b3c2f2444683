"""Running a sweep: plan every point up front, then measure them one by one.

Each point is one :class:`~aibench.results.schema.Result`, written through the results store as soon as it is
measured, with ``context["sweep"] = {"id", "kind", "param", "value", "index", "size"}``. The sweep record
(:mod:`aibench.sweep.record`) is rewritten after every point. A point that fails is recorded (its result says
why) and the sweep goes on; a point the machine refuses (exit-3 kind: a size that does not fit, a device it
lacks) is recorded as ``refused`` and the sweep goes on; Ctrl-C keeps every finished point, marks the sweep
``interrupted`` and raises :class:`SweepInterrupted`. With ``resume``, points already done (status ok, result
file present) in the latest record of the same sweep are kept and not measured again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from aibench import lifetime
from aibench.errors import AibenchError, ResultIOError, UsageError
from aibench.harness import PlannedRun, RunOptions
from aibench.registry import Benchmark
from aibench.results.schema import Result, now_iso
from aibench.sweep import analysis
from aibench.sweep.record import Point, SweepRecord, definition_hash, find_resumable, new_id, write_record

log = logging.getLogger(__name__)


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep; the record was written with what was finished."""

    def __init__(self, record: SweepRecord, record_path: Path) -> None:
        super().__init__("interrupted")
        self.record = record
        self.record_path = record_path


@dataclass(frozen=True)
class KneeRequest:
    latency_bound_ms: float
    latency_metric: str  # a result metric name: latency_p99, batch_latency, ...
    metric: str = "samples_per_s"


@dataclass
class PointPlan:
    index: int
    value: int | float
    run: PlannedRun
    opts: RunOptions
    extra: dict[str, Any] = field(default_factory=dict)  # what an executor needs (devices, workers, ...)


@dataclass
class SweepPlan:
    kind: str
    bench: Benchmark
    param: str
    values: list[int | float]
    points: list[PointPlan]
    definition: dict[str, Any]
    knee: KneeRequest | None = None
    scaling: dict[str, Any] | None = None  # {"metric", "direction", "unit"} for scaling sweeps
    batch_latency: bool = False  # add batch_latency (batch / samples_per_s) to every point
    notes: list[str] = field(default_factory=list)


class Executor(Protocol):
    """Measures one planned point. Refusals raise AibenchError; other failures are recorded in the Result.
    None: the point ran but its result is kept elsewhere (another node of a multi-node launch)."""

    def run(self, point: PointPlan) -> Result | None: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Points measured in this process by :func:`aibench.harness.execute` (parameter and thread sweeps)."""

    def run(self, point: PointPlan) -> Result:
        from aibench.harness import execute

        return execute(point.run, point.opts)

    def close(self) -> None:
        pass


@dataclass
class SweepOutcome:
    record: SweepRecord
    record_path: Path
    results: list[Result | None]  # one per point (None: refused, or not run)
    reused: int = 0  # points kept from an earlier, resumed session


ProgressFn = Callable[[str, int, int], None]


def sweep_context(record_id: str, plan: SweepPlan, point: PointPlan) -> dict[str, Any]:
    return {"id": record_id, "kind": plan.kind, "param": plan.param, "value": point.value,
            "index": point.index, "size": len(plan.points)}


class SweepLock:
    """An exclusive ``flock`` on ``.sweep-<definition hash>.lock`` beside the sweep records, held while a sweep
    of that definition runs in ``out_dir``: a second process (a ``--resume`` of a running sweep, or the same
    sweep started twice) would measure every pending point again, each disturbing the other's timings. It is
    refused at once (exit 2) with the sweep that is running; nothing waits. The kernel drops the lock when
    the holder exits, however it ends, so a crash never leaves a stale lock. Each node of a multi-node sweep
    takes its own (they share the definition, and maybe the folder)."""

    def __init__(self, out_dir: Path, def_hash: str, node_rank: int = 0) -> None:
        suffix = f"-node{node_rank}" if node_rank else ""
        self.path = Path(out_dir) / f".sweep-{def_hash}{suffix}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import os

        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultIOError(f"cannot create the sweep's lock file {str(self.path)!r}: "
                                f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder(fd)
            os.close(fd)
            raise UsageError(f"this sweep is already running in {str(self.path.parent)!r} ({holder}): a second "
                             "process would measure its points again; wait for it to end (then --resume "
                             "continues what is left), or give another --out") from None
        self.fd = fd
        self.describe(None)

    def describe(self, record_id: str | None) -> None:
        """Write who holds the lock (and which record) into the lock file, for the refusal of a second."""
        import json
        import os

        if self.fd is None:
            return
        text = json.dumps({"pid": os.getpid(), "sweep": record_id, "since": now_iso()})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    @staticmethod
    def _holder(fd: int) -> str:
        import json
        import os

        try:
            doc = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError, UnicodeDecodeError):
            doc = {}
        if not isinstance(doc, dict) or not doc:
            return "held by another process"
        sweep = f"sweep {doc.get('sweep')}, " if doc.get("sweep") else ""
        return f"{sweep}process {doc.get('pid')}, since {doc.get('since')}"

    def release(self) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new holder)
            self.fd = None


def run_sweep(plan: SweepPlan, out_dir: Path, executor: Executor, resume: bool = False,
              progress: ProgressFn | None = None, say: Callable[[str], None] | None = None) -> SweepOutcome:
    """Measure every point of ``plan`` not already done, writing results and the record into ``out_dir``.
    One process at a time per sweep definition and folder (:class:`SweepLock`)."""
    lock = SweepLock(out_dir, definition_hash(plan.definition), int(getattr(executor, "node_rank", 0) or 0))
    try:
        lock.acquire()
    except BaseException:
        executor.close()  # run_sweep owns the executor: closed however it ends
        raise
    try:
        return _run_sweep(plan, out_dir, executor, lock, resume, progress, say)
    finally:
        lock.release()


def _run_sweep(plan: SweepPlan, out_dir: Path, executor: Executor, lock: SweepLock, resume: bool,
               progress: ProgressFn | None, say: Callable[[str], None] | None) -> SweepOutcome:
    from aibench.results.store import load_result, write_result

    say = say or (lambda _msg: None)
    def_hash = definition_hash(plan.definition)
    record = find_resumable(out_dir, def_hash) if resume else None
    results: list[Result | None] = [None] * len(plan.points)
    done: set[int] = set()
    reused = 0
    if record is not None and [p.value for p in record.points] == plan.values:
        for p in record.points:
            if p.status == "ok" and not p.result and p.note:  # another node holds it (multi-node)
                done.add(p.index)
                reused += 1
                continue
            if p.status != "ok" or not p.result:
                continue
            try:
                r = load_result(out_dir / p.result)
            except ResultIOError as exc:
                say(f"point {p.index} ({plan.param}={p.value}) will be measured again: {exc.message}")
                p.status, p.result, p.error = "pending", None, None
                continue
            if (r.context.get("sweep") or {}).get("id") != record.id:
                p.status, p.result = "pending", None
                continue
            results[p.index] = r
            done.add(p.index)
            reused += 1
        record.status, record.finished_at = "running", None
        say(f"resuming sweep {record.id}: {reused} of {len(plan.points)} point(s) already done")
    else:
        if resume:
            say("nothing to resume (no earlier record of this sweep in the output folder): starting it")
        started = now_iso()
        record = SweepRecord(
            id=new_id(plan.bench.id, plan.param, def_hash, started), kind=plan.kind, benchmark=plan.bench.id,
            param=plan.param, values=list(plan.values),
            points=[Point(index=p.index, value=p.value) for p in plan.points], started_at=started,
            definition=plan.definition, definition_hash=def_hash,
            scaling=({**plan.scaling, "baseline_index": 0} if plan.scaling else None),
            knee_request=(None if plan.knee is None else {"latency_bound_ms": plan.knee.latency_bound_ms,
                                                          "latency_metric": plan.knee.latency_metric,
                                                          "metric": plan.knee.metric}),
            notes=list(plan.notes))
    session = {"started_at": now_iso(), "finished_at": None, "status": "running", "reused_points": reused}
    record.sessions.append(session)
    lock.describe(record.id)
    path = write_record(record, out_dir)
    try:
        for point in plan.points:
            rp = record.points[point.index]
            if point.index in done:
                continue
            if progress is not None:
                progress(f"{plan.bench.id} {plan.param}={point.value}", point.index, len(plan.points))
            run = replace(point.run, context={**point.run.context,
                                              "sweep": sweep_context(record.id, plan, point)})
            before = set(out_dir.glob("*.json"))
            t0 = time.perf_counter()
            try:
                result = executor.run(replace(point, run=run))
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (aibench.lifetime)
                rp.status, rp.error = "interrupted", f"interrupted ({lifetime.describe(exc)})"
                rp.result = _partial_result(out_dir, before, record.id, point.index)
                raise
            except ResultIOError:
                raise
            except AibenchError as exc:  # refused for this point only: record it and go on
                rp.status, rp.error, rp.result = "refused", exc.format_message(), None
                say(f"{plan.param}={point.value}: refused: {exc.format_message()}")
                record.knee = None
                write_record(record, out_dir)
                continue
            log.debug("point %d measured in %.1f s", point.index, time.perf_counter() - t0)
            if result is None:  # a node other than 0 of a multi-node launch: rank 0 wrote the result there
                rp.status, rp.result, rp.error = "ok", None, None
                rp.note = "measured by rank 0 on node 0; its result file is written there"
                write_record(record, out_dir)
                continue
            _derive(plan, point, result, results)
            results[point.index] = result
            written = write_result(result, out_dir)
            rp.status = result.status
            rp.result = written.name
            rp.error = result.error["message"] if result.error else None
            rp.valid = None if result.validity is None else bool(result.validity.get("valid"))
            spread = analysis.point_spread(result, _primary(plan, result))
            rp.spread, rp.noisy = spread["spread"], spread["noisy"]
            if result.status != "ok":
                say(f"{plan.param}={point.value}: {result.status}: {rp.error}")
            _update_knee(plan, record, results)
            write_record(record, out_dir)
    except KeyboardInterrupt:
        session.update(finished_at=now_iso(), status="interrupted")
        record.status, record.finished_at = "interrupted", now_iso()
        _update_knee(plan, record, results)
        write_record(record, out_dir)
        raise SweepInterrupted(record, path) from None
    finally:
        executor.close()
    _update_knee(plan, record, results)
    record.status = "complete"
    record.finished_at = now_iso()
    session.update(finished_at=record.finished_at, status="complete")
    write_record(record, out_dir)
    return SweepOutcome(record, path, results, reused)


def _derive(plan: SweepPlan, point: PointPlan, result: Result, results: list[Result | None]) -> None:
    if plan.batch_latency:
        analysis.add_batch_latency(result, point.value if plan.param == "batch"
                                   else analysis.effective_batch(result, point.run.params))
    if plan.scaling is not None:
        base_point = plan.points[0]
        base = result if point.index == 0 else results[0]
        analysis.add_scaling(result, float(point.value), base, float(base_point.value), plan.scaling["metric"],
                             plan.scaling["direction"], plan.scaling["unit"], plan.scaling.get("unavailable"))


def _primary(plan: SweepPlan, result: Result | None) -> str:
    """The figure a point is judged by: the scaling basis of a scaling sweep, else the result's primary."""
    if plan.scaling is not None:
        return str(plan.scaling["metric"])
    return (result.primary_metric if result is not None else None) or plan.bench.primary_metric


def _update_knee(plan: SweepPlan, record: SweepRecord, results: list[Result | None]) -> None:
    if plan.knee is None:
        return
    pairs = [(float(p.value), results[p.index]) for p in plan.points]
    knee, note = analysis.find_knee(pairs, plan.knee.metric, plan.knee.latency_metric, plan.knee.latency_bound_ms)
    if knee is not None:
        knee["value"] = plan.points[knee["index"]].value  # keep the value's own type (int batch)
    record.knee, record.knee_note = knee, note


def _partial_result(out_dir: Path, before: set[Path], sweep_id: str, index: int) -> str | None:
    """A result a runner wrote for the interrupted point itself (LoadGen runs record their partial logs)."""
    from aibench.results.files import read_json

    for p in sorted(set(out_dir.glob("*.json")) - before):
        try:
            doc = read_json(p)  # regular files only, bounded: a FIFO in --out cannot block the sweep
        except ResultIOError:
            continue
        sw = (doc.get("context") or {}).get("sweep") or {} if isinstance(doc, dict) else {}
        if sw.get("id") == sweep_id and sw.get("index") == index:
            return p.name
    return None
