"""The round runner of ``aibench gate``: baseline and candidate measured interleaved in one job.

For each of K rounds and each benchmark, the two sides run back to back as fresh processes::

    <prefix> -m aibench -q run <benchmark> <its arguments> --json --out <work>/<round>-<side>-<bench>

in an order drawn per round from a seeded, *balanced* schedule (each order occurs K/2 times, shuffled), so
neither side is favoured by going first or by a slow drift of the machine. A round pairs the two processes'
figures (each side's figure for a metric is that process's value) into one ratio candidate/baseline; the
decision (:mod:`aibench.gate.decide`) is taken on the K ratios.

Children run with ``PYTHONSAFEPATH=1``, so the working directory (often a checkout) never shadows the
aibench of a side's tree or environment. Before round 1 every side runs ``--dry-run`` of every benchmark:
a command prefix that does not work, a benchmark or parameter one side does not know, is refused before
anything is measured. A process that fails, or runs past ``timeout_s``, ends the gate with outcome *error*
and its stderr tail; Ctrl-C (or SIGTERM) kills the running child and ends the gate as interrupted, keeping
the rounds gathered so far.

Nothing here imports torch: the children do the measuring.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aibench import lifetime
from aibench.errors import EXIT_INVALID, UsageError
from aibench.gate import decide, stats
from aibench.gate.pairs import GATE_SCHEMA, Pair, document
from aibench.results.schema import Result, now_iso
from aibench.results.store import load_results

STDERR_TAIL = 1500  # characters of a failed child's stderr kept in the error message
DRY_RUN_TIMEOUT_S = 120.0


def _shell_words(text: str, option: str) -> list[str]:
    """``text`` split as a shell would; an unclosed quote or a trailing escape is bad usage (exit 2)."""
    try:
        return shlex.split(text)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise UsageError(f"{option} {text!r}: cannot split it into words as a shell would ({exc})") from None


@dataclass(frozen=True)
class SideSpec:
    """One environment: ``prefix`` is the command that runs its Python (``-m aibench …`` is appended)."""

    name: str  # "baseline" | "candidate"
    prefix: tuple[str, ...]
    label: str

    @classmethod
    def from_python(cls, name: str, python: str, label: str | None = None) -> SideSpec:
        return cls(name, (python,), label or python)

    @classmethod
    def from_prefix(cls, name: str, prefix: str, label: str | None = None) -> SideSpec:
        words = tuple(_shell_words(prefix, f"--{name}"))
        if not words:
            raise UsageError(f"--{name}: empty command prefix")
        return cls(name, words, label or prefix)


@dataclass(frozen=True)
class BenchSpec:
    """A benchmark reference and the arguments passed to ``aibench run`` after it."""

    ref: str
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> BenchSpec:
        return cls.from_words(_shell_words(text, "-b"), text)

    @classmethod
    def from_words(cls, words: list[str], text: str | None = None) -> BenchSpec:
        text = text if text is not None else " ".join(words)
        if not words:
            raise UsageError("name a benchmark (KIND/NAME), then its arguments")
        owned = [w for w in words if w.split("=", 1)[0] in ("--out", "--json", "--dry-run")]
        if owned:
            opt = owned[0].split("=", 1)[0]
            why = {"--out": "the gate's own --out DIR keeps the result files",
                   "--json": "the gate's own --json FILE writes its record",
                   "--dry-run": "a gate always measures"}[opt]
            raise UsageError(f"{text!r}: {opt} cannot be passed to the benchmark's runs ({why}); gate options go "
                             "before the benchmark: everything after KIND/NAME is passed to 'aibench run'")
        # Accept "micro gemm --m 1" as well as "micro/gemm --m 1".
        if words[0] in ("micro", "component", "scenario") and len(words) > 1 and not words[1].startswith("-"):
            return cls(f"{words[0]}/{words[1]}", tuple(words[2:]))
        if words[0].startswith("-"):
            raise UsageError(f"{text!r}: unknown gate option, or a benchmark that does not start with KIND/NAME "
                             "(gate options come first; the benchmark and its arguments after them)")
        return cls(words[0], tuple(words[1:]))

    @property
    def label(self) -> str:
        return " ".join([self.ref, *self.args])


@dataclass
class GateConfig:
    baseline: SideSpec
    candidate: SideSpec
    benches: list[BenchSpec]
    rounds: int = 10
    metrics: tuple[str, ...] = ()  # gated besides each benchmark's primary metric
    ignore: tuple[str, ...] = ()  # never gated (e.g. a primary metric too noisy on this runner)
    threshold: float = decide.DEFAULT_THRESHOLD
    thresholds: dict[str, float] = field(default_factory=dict)
    confidence: float = stats.CONFIDENCE
    seed: int = 0
    timeout_s: float = 600.0
    out_dir: Path | None = None
    method: str = "trimmed-t"
    trim: float = stats.TRIM
    env: dict[str, str] | None = None  # environment of the children (default: this process's)


class ProcessFailed(Exception):
    """A child ``aibench run`` failed: the gate's outcome becomes *error* with this message."""


@dataclass
class Observation:
    """One metric of one configuration in one round."""

    round: int
    baseline: float
    candidate: float
    first: str  # which side ran first


@dataclass
class Key:
    benchmark: str
    config_hash: str
    metric: str
    unit: str
    direction: str
    params: dict[str, Any]
    statistic: str | None = None  # what the metric declares it is (a tail statistic widens the threshold)


class Gate:
    """Runs the rounds and keeps everything gathered, so an interrupted or failed gate still reports."""

    def __init__(self, cfg: GateConfig, progress: Callable[[str, str], None] | None = None) -> None:
        self.cfg = cfg
        # progress(kind, message): kind "process" before each child starts, "round" after each round.
        self.progress = progress or (lambda _kind, _msg: None)
        self.rng = random.Random(cfg.seed)
        self.schedule: list[dict[str, Any]] = []
        self.obs: dict[tuple[str, str, str], list[Observation]] = {}
        self.keys: dict[tuple[str, str, str], Key] = {}
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.rounds_done = 0
        self.interrupted = False
        self.started_at = now_iso()
        self.t0 = time.monotonic()
        self.load_start = _loadavg()
        self.invalid_seen: set[str] = set()
        self.noisy = 0
        self.processes = 0
        self._child: subprocess.Popen[str] | None = None

    # -- processes ------------------------------------------------------------------------------------
    def _command(self, side: SideSpec, bench: BenchSpec, out: Path, dry: bool = False) -> list[str]:
        cmd = [*side.prefix, "-m", "aibench", "-q", "run", bench.ref, *bench.args]
        return cmd + (["--dry-run"] if dry else ["--json", "--out", str(out)])

    def _spawn(self, cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
        t = time.monotonic()
        # PYTHONSAFEPATH: `python -m aibench` would otherwise put the working directory first on sys.path, and
        # a checkout there would shadow the side's own tree (its PYTHONPATH) or installed package.
        env = dict(self.cfg.env if self.cfg.env is not None else os.environ, PYTHONSAFEPATH="1")
        try:
            # A session of its own: the child is not hit by the terminal's Ctrl-C; we end it ourselves.
            # Bound to this process: it dies with the gate even if the gate is killed (aibench.lifetime).
            proc = subprocess.Popen(lifetime.bound_command(cmd, env), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        except OSError as exc:
            raise ProcessFailed(f"cannot start {shlex.join(cmd[:1])}: {exc.strerror or exc}") from None
        self._child = proc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise ProcessFailed(f"{shlex.join(cmd)} ran past the {timeout:g} s process timeout and was "
                                "killed") from None
        finally:
            if self._child is proc and proc.returncode is not None:
                self._child = None
        return proc.returncode, out, err, time.monotonic() - t

    def _kill(self) -> None:
        proc, self._child = self._child, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def preflight(self) -> None:
        """``--dry-run`` of every benchmark on both sides: refuse a broken prefix or an unknown benchmark or
        parameter before measuring anything (exit 2), and check that both sides plan the same work."""
        for bench in self.cfg.benches:
            plans = {}
            for side in (self.cfg.baseline, self.cfg.candidate):
                cmd = self._command(side, bench, Path("."), dry=True)
                try:
                    code, out, err, _ = self._spawn(cmd, min(self.cfg.timeout_s, DRY_RUN_TIMEOUT_S))
                except ProcessFailed as exc:
                    raise UsageError(f"{side.name}: {exc}") from None
                if code != 0:
                    raise UsageError(f"{side.name} ({side.label}) refused '{bench.label}': {_last_line(err)}")
                plans[side.name] = [line for line in out.splitlines() if line.strip()]
            if plans["baseline"] != plans["candidate"]:
                self.warnings.append(
                    f"{bench.ref}: baseline and candidate plan different configurations (their parameters or "
                    f"defaults differ); configurations whose config hash differs will be refused")

    def _run_side(self, side: SideSpec, bench: BenchSpec, out: Path) -> list[Result]:
        cmd = self._command(side, bench, out)
        code, _stdout, err, _wall = self._spawn(cmd, self.cfg.timeout_s)
        self.processes += 1
        results = load_results([out], skip_foreign=True) if out.exists() else []
        failed = [r for r in results if r.status != "ok"]
        if failed:
            msg = (failed[0].error or {}).get("message") or failed[0].status
            raise ProcessFailed(f"{side.name} run of {bench.label}: {failed[0].id} {failed[0].status}: {msg}")
        if code not in (0, EXIT_INVALID):  # INVALID LoadGen figures are used, with a warning (below)
            raise ProcessFailed(f"{side.name} run of {bench.label} exited {code}: {_tail(err)}")
        if not results:
            raise ProcessFailed(f"{side.name} run of {bench.label} wrote no result: {_tail(err)}")
        self.noisy += sum(1 for r in results if r.noisy)
        return results

    # -- rounds ---------------------------------------------------------------------------------------
    def _orders(self) -> dict[int, list[bool]]:
        """Balanced, shuffled side orders per benchmark: True means the baseline runs first."""
        k = self.cfg.rounds
        out = {}
        for i in range(len(self.cfg.benches)):
            order = [True] * ((k + 1) // 2) + [False] * (k // 2)
            self.rng.shuffle(order)
            out[i] = order
        return out

    def run(self) -> None:
        """All rounds; stops at the first failure (recorded in ``errors``) or on Ctrl-C/SIGTERM."""
        work_ctx = (contextlib.nullcontext(self.cfg.out_dir) if self.cfg.out_dir is not None
                    else tempfile.TemporaryDirectory(prefix="aibench-gate-"))
        # SIGTERM arrives as KeyboardInterrupt too (aibench.lifetime, installed by the CLI's entry point).
        with work_ctx as work:
            work = Path(work)
            try:
                self.preflight()
                orders = self._orders()
                for r in range(self.cfg.rounds):
                    entry: dict[str, Any] = {"index": r, "benchmarks": []}
                    self.schedule.append(entry)
                    for i, bench in enumerate(self.cfg.benches):
                        base_first = orders[i][r]
                        sides = (self.cfg.baseline, self.cfg.candidate)
                        if not base_first:
                            sides = sides[::-1]
                        got: dict[str, list[Result]] = {}
                        walls: dict[str, float] = {}
                        for side in sides:
                            self.progress("process", f"round {r + 1}/{self.cfg.rounds} · {bench.ref} · {side.name}")
                            out = work / f"r{r:03d}-b{i}-{side.name}"
                            t = time.monotonic()
                            got[side.name] = self._run_side(side, bench, out)
                            walls[side.name] = round(time.monotonic() - t, 3)
                        entry["benchmarks"].append({"benchmark": bench.ref, "first": sides[0].name,
                                                    "wall_s": walls})
                        self._pair_round(r, bench, got, sides[0].name)
                    self.rounds_done = r + 1
                    self.progress("round", self._round_line(r))
            except ProcessFailed as exc:
                self.errors.append(str(exc))
            except KeyboardInterrupt:
                self._kill()
                self.interrupted = True
                self.errors.append(f"interrupted after {self.rounds_done} complete round(s)")
            finally:
                self._kill()

    def _pair_round(self, r: int, bench: BenchSpec, got: dict[str, list[Result]], first: str) -> None:
        base = {(x.id, x.config_hash): x for x in got["baseline"]}
        cand = {(x.id, x.config_hash): x for x in got["candidate"]}
        if set(base) != set(cand):
            lone_b = sorted(f"{i} [{h[:8]}]" for i, h in set(base) - set(cand))
            lone_c = sorted(f"{i} [{h[:8]}]" for i, h in set(cand) - set(base))
            raise ProcessFailed(
                f"{bench.ref}: baseline and candidate measured different configurations (config hash differs: "
                f"baseline {', '.join(lone_b) or '-'}, candidate {', '.join(lone_c) or '-'}); results with "
                "different hashes are not comparable")
        for (bid, h), rb in base.items():
            rc = cand[(bid, h)]
            wanted = [m for m in dict.fromkeys([rb.primary_metric or "", *self.cfg.metrics])
                      if m and m not in self.cfg.ignore]
            if not wanted:
                raise ProcessFailed(f"{bid}: no metric left to gate on (its primary metric "
                                    f"{rb.primary_metric!r} is ignored and no --metric it reports was named)")
            for m in wanted:
                eb, ec = rb.metrics.get(m), rc.metrics.get(m)
                if eb is None and ec is None and m != rb.primary_metric:
                    note = f"{bid}: no metric {m!r} in its results (not gated)"
                    if note not in self.warnings:
                        self.warnings.append(note)
                    if len(wanted) == 1 or all(x not in rb.metrics for x in wanted):
                        raise ProcessFailed(f"{bid}: none of the metrics to gate on ({', '.join(wanted)}) is in "
                                            "its results")
                    continue
                for which, e in (("baseline", eb), ("candidate", ec)):
                    if e is None:
                        raise ProcessFailed(f"{bid}: the {which} result has no metric {m!r}")
                    if e.get("value") is None:
                        raise ProcessFailed(f"{bid}: {m} is unavailable in the {which} result: "
                                            f"{e.get('unavailable') or 'no value'}")
                    if e.get("valid") is False:
                        self.invalid_seen.add(f"{bid} {m}")
                vb, vc = float(eb["value"]), float(ec["value"])
                if not (vb > 0 and vc > 0 and math.isfinite(vb) and math.isfinite(vc)):
                    raise ProcessFailed(f"{bid}: {m} must be positive to form a ratio (baseline {vb}, "
                                        f"candidate {vc})")
                key = (bid, h, m)
                self.keys.setdefault(key, Key(bid, h, m, eb.get("unit", ""), eb.get("direction", "lower"),
                                              dict(rb.params), eb.get("statistic")))
                self.obs.setdefault(key, []).append(Observation(r, vb, vc, first))

    def _round_line(self, r: int) -> str:
        parts = []
        for key, obs in self.obs.items():
            if obs and obs[-1].round == r:
                parts.append(f"{key[0]} {key[2]} {obs[-1].candidate / obs[-1].baseline:.3f}")
        return f"round {r + 1}/{self.cfg.rounds} done: " + ", ".join(parts)

    # -- decision -------------------------------------------------------------------------------------
    def pairs(self) -> list[Pair]:
        out = []
        for key, obs in self.obs.items():
            k = self.keys[key]
            ratios = [o.candidate / o.baseline for o in obs]
            thr = decide.threshold_for(k.metric, self.cfg.threshold, self.cfg.thresholds, k.statistic)
            d = decide.decide_rounds(ratios, k.direction, thr, self.cfg.confidence, self.cfg.seed,
                                     self.cfg.method, self.cfg.trim)
            out.append(Pair(
                benchmark=k.benchmark, config_hash=k.config_hash, metric=k.metric, unit=k.unit,
                direction=k.direction, baseline=stats.geomean([o.baseline for o in obs]),
                candidate=stats.geomean([o.candidate for o in obs]), ratio=d.ratio, ci=d.ci,
                verdict=d.verdict, reason=d.reason, threshold=thr, confidence=self.cfg.confidence,
                params=k.params,
                extra={"rounds": ratios, "baseline_rounds": [o.baseline for o in obs],
                       "candidate_rounds": [o.candidate for o in obs],
                       "first": [o.first for o in obs]}))
        return out

    def document(self, inconclusive: str = "fail", improved: str = "pass") -> dict[str, Any]:
        pairs = self.pairs()
        outcome = decide.overall([decide.VERDICT_OUTCOME[p.verdict] for p in pairs]
                                 + (["error"] if self.errors else []))
        if not pairs and not self.errors:
            outcome = "error"
            self.errors.append("no figures were gathered")
        warnings = list(self.warnings)
        if self.invalid_seen:
            warnings.append("figures from INVALID LoadGen runs (e.g. minimum duration not met) were used: "
                            + ", ".join(sorted(self.invalid_seen)))
        if self.noisy:
            warnings.append(f"{self.noisy} of {self.processes} runs were flagged noisy (IQR > 10% of the "
                            "median inside the run)")
        return document(
            GATE_SCHEMA, self.cfg.baseline.label, self.cfg.candidate.label, pairs, warnings,
            outcome=outcome, exit_code=decide.exit_code(outcome, inconclusive, improved),
            rounds=self.rounds_done, rounds_requested=self.cfg.rounds, interrupted=self.interrupted,
            errors=list(self.errors), seed=self.cfg.seed, confidence=self.cfg.confidence,
            threshold=self.cfg.threshold, thresholds=dict(self.cfg.thresholds), tail_factor=decide.TAIL_FACTOR,
            inconclusive_policy=inconclusive, improved_policy=improved,
            method=(f"per-round ratio candidate/baseline; geometric mean of the ratios with {self.cfg.trim:g} of "
                    f"the rounds trimmed at each end and its {self.cfg.confidence * 100:g}% CI ({self.cfg.method}); "
                    "regression: worse than the threshold and the CI excludes 1; pass: the CI lies within "
                    "±threshold"),
            ci_method=self.cfg.method,
            trim=self.cfg.trim,
            benchmarks=[b.label for b in self.cfg.benches],
            commands={s.name: list(s.prefix) for s in (self.cfg.baseline, self.cfg.candidate)},
            schedule=self.schedule,
            load={"loadavg_start": self.load_start, "loadavg_end": _loadavg()},
            started_at=self.started_at, finished_at=now_iso(),
            duration_s=round(time.monotonic() - self.t0, 3),
        )


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _tail(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return "(no output on stderr)"
    return ("…" + text[-STDERR_TAIL:]) if len(text) > STDERR_TAIL else text


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output on stderr)"


def run_gate(cfg: GateConfig, progress: Callable[[str, str], None] | None = None, inconclusive: str = "fail",
             improved: str = "pass") -> dict[str, Any]:
    """Run a gate and return its document (contract 2, schema ``aibench-gate``)."""
    if cfg.rounds < decide.MIN_ROUNDS:
        raise UsageError(f"--rounds must be at least {decide.MIN_ROUNDS}")
    if not cfg.benches:
        raise UsageError("name at least one benchmark (positional, or -b 'KIND/NAME --param value')")
    gate = Gate(cfg, progress)
    gate.run()
    return gate.document(inconclusive, improved)
