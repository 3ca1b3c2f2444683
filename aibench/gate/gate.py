"""The round runner of ``aibench gate``: baseline and candidate measured interleaved in one job.

For each round and each benchmark, the two sides run as fresh processes::

    <prefix> -m aibench -q run <benchmark> <its arguments> --json --out <work>/<round>-<side>-<bench>

in an order drawn per round from a seeded, *balanced* schedule (each order occurs equally often in every
batch of rounds, shuffled), so neither side is favoured by going first or by a slow drift of the machine.

**Lockstep.** The two processes of a round run at the same time and take turns: each is given two pipes
(``AIBENCH_PACE``, :mod:`aibench.measure.pace`); a kernel benchmark (micro) answers ``hello`` when its op is
built, and the gate then pins both to one CPU and grants them alternate turns of ~20 ms (ABBA…) until both
timers are satisfied. Each side's figure then covers the same moments of the machine, which on the 2-core VMs
drifts by 10-60% within a second (docs/gate.md). A process that never says hello (a LoadGen benchmark, an
older aibench) measures on its own: the gate waits for it to end before the other side measures, as before.

A round pairs the two processes' figures into one ratio candidate/baseline; the decision
(:mod:`aibench.gate.decide`) is taken on the ratios at fixed looks: after ``rounds``, then every
``look_step`` rounds up to ``max_rounds`` while a metric is undecided and the budget allows.

Children run with ``PYTHONSAFEPATH=1``, so the working directory (often a checkout) never shadows the
aibench of a side's tree or environment. Before round 1 every side runs ``--dry-run`` of every benchmark:
a command prefix that does not work, a benchmark or parameter one side does not know, is refused before
anything is measured. A process that fails, or runs past ``timeout_s``, ends the gate with outcome *error*
and its stderr tail; Ctrl-C (or SIGTERM) kills the running children and ends the gate as interrupted,
keeping the rounds gathered so far.

Nothing here imports torch: the children do the measuring.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import select
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
from aibench.measure.pace import PACE_ENV, PROTOCOL
from aibench.results.schema import Result, now_iso
from aibench.results.store import load_results

STDERR_TAIL = 1500  # characters of a failed child's stderr kept in the error message
DRY_RUN_TIMEOUT_S = 120.0
TURN_S = 0.02  # one lockstep turn: short against the machine's drift (docs/gate.md), long against a block
PACE_ENV_SWITCH = "AIBENCH_GATE_PACE"  # "0": no lockstep, the two sides of a round one after the other


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
    rounds: int = 10  # the first look
    max_rounds: int | None = None  # None: DEFAULT_MAX_ROUNDS_FACTOR × rounds; = rounds: one look, no extension
    budget_s: float | None = decide.DEFAULT_BUDGET_S  # no further batch of rounds that would end past this
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
    paced: bool = True  # lockstep where both sides can take turns
    turn_s: float = TURN_S

    @property
    def rounds_max(self) -> int:
        return self.max_rounds if self.max_rounds is not None else decide.DEFAULT_MAX_ROUNDS_FACTOR * self.rounds

    def looks(self) -> list[int]:
        return decide.look_schedule(self.rounds, self.rounds_max)


class ProcessFailed(Exception):
    """A child ``aibench run`` failed: the gate's outcome becomes *error* with this message."""


class _Child:
    """One measuring process of a round with its ends of the pacing pipes (``aibench.measure.pace``); its
    output goes to unnamed temporary files, so two children running at once can never fill a pipe and stall."""

    def __init__(self, cmd: list[str], env: dict[str, str], timeout_s: float, name: str, paced: bool) -> None:
        self.cmd = cmd
        self.name = name
        self.timeout_s = timeout_s
        self.stdout = tempfile.TemporaryFile()
        self.stderr = tempfile.TemporaryFile()
        self._buf = b""
        self._r: int | None = None
        self._w: int | None = None
        self.t0 = time.monotonic()
        self.wall_s: float | None = None
        fds: tuple[int, ...] = ()
        ends: list[int] = []
        if paced:
            to_r, to_w = os.pipe()
            from_r, from_w = os.pipe()
            env = dict(env, **{PACE_ENV: f"{to_r},{from_w}"})
            fds, ends = (to_r, from_w), [to_r, from_w]
            self._r, self._w = from_r, to_w
        try:
            # A session of its own: the child is not hit by the terminal's Ctrl-C; we end it ourselves.
            # Bound to this process: it dies with the gate even if the gate is killed (aibench.lifetime).
            self.proc = subprocess.Popen(lifetime.bound_command(cmd, env), stdout=self.stdout, stderr=self.stderr,
                                         env=env, start_new_session=True, pass_fds=fds)
        except OSError as exc:
            self.close()
            raise ProcessFailed(f"cannot start {shlex.join(cmd[:1])}: {exc.strerror or exc}") from None
        finally:
            for fd in ends:
                os.close(fd)

    @property
    def deadline(self) -> float:
        return self.t0 + self.timeout_s

    def _timed_out(self) -> ProcessFailed:
        self.kill()
        return ProcessFailed(f"{shlex.join(self.cmd)} ran past the {self.timeout_s:g} s process timeout and was "
                             "killed")

    def recv(self) -> str | None:
        """The child's next line; None once it has closed its pipe or exited (it measures on its own)."""
        while b"\n" not in self._buf:
            if self._r is None:
                return None
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out()
            ready, _, _ = select.select([self._r], [], [], min(left, 0.25))
            if not ready:
                if self.proc.poll() is not None:  # exited; a grandchild may still hold the pipe open
                    self._close_pipes()
                continue
            chunk = os.read(self._r, 4096)
            if not chunk:
                self._close_pipes()
                continue
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def send(self, line: str) -> None:
        if self._w is None:
            raise ProcessFailed(f"{self.name}: the measuring process closed its pacing pipe")
        try:
            os.write(self._w, (line + "\n").encode())
        except OSError:
            self._close_pipes()
            raise self._died() from None

    def expect(self, prefix: str) -> str:
        """The next line, which must start with ``prefix``; a child that died instead fails the gate."""
        line = self.recv()
        if line is None:
            raise self._died()
        if not line.startswith(prefix):
            self.kill()
            raise ProcessFailed(f"{self.name}: unexpected answer {line[:80]!r} to the gate (expected {prefix!r})")
        return line

    def _died(self) -> ProcessFailed:
        code = self.wait()
        return ProcessFailed(f"{self.name} process stopped while taking turns (exit {code}): "
                             f"{_tail(self.stderr_text())}")

    def wait(self) -> int:
        """Wait for the child to end (within its timeout); its exit code."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._timed_out() from None
        if self.wall_s is None:
            self.wall_s = round(time.monotonic() - self.t0, 3)
        self._close_pipes()
        return code

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def _close_pipes(self) -> None:
        for attr in ("_r", "_w"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def kill(self) -> None:
        self._close_pipes()
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        self._close_pipes()
        self.stdout.close()
        self.stderr.close()


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
        # progress(kind, message): kind "process" before each child starts, "round" after each round, "extend"
        # when a look left a metric undecided and more rounds follow.
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
        self._children: list[_Child] = []
        self.paced = cfg.paced and os.environ.get(PACE_ENV_SWITCH, "1").strip() != "0"
        self.cpu_rng = random.Random(f"{cfg.seed}-cpu")
        self.both_pace: dict[int, bool] = {}  # per benchmark: both sides took turns in an earlier round
        self.paced_rounds = 0
        self.looks = cfg.looks()
        self.look_confs = [decide.look_confidence(cfg.confidence, len(self.looks), i) for i in range(len(self.looks))]
        self.decided: dict[tuple[str, str, str], tuple[decide.Decision, float]] = {}
        self.looks_taken = 0
        self.stopped = "not started"

    # -- processes ------------------------------------------------------------------------------------
    def _command(self, side: SideSpec, bench: BenchSpec, out: Path, dry: bool = False) -> list[str]:
        cmd = [*side.prefix, "-m", "aibench", "-q", "run", bench.ref, *bench.args]
        return cmd + (["--dry-run"] if dry else ["--json", "--out", str(out)])

    def _spawn(self, cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
        t = time.monotonic()
        env = self._env()
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
        """End every child still running (a dry run, or the measuring processes of a round)."""
        for child in self._children:
            child.kill()
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

    def _env(self) -> dict[str, str]:
        # PYTHONSAFEPATH: `python -m aibench` would otherwise put the working directory first on sys.path, and
        # a checkout there would shadow the side's own tree (its PYTHONPATH) or installed package.
        return dict(self.cfg.env if self.cfg.env is not None else os.environ, PYTHONSAFEPATH="1")

    def _start(self, side: SideSpec, bench: BenchSpec, out: Path, paced: bool) -> _Child:
        child = _Child(self._command(side, bench, out), self._env(), self.cfg.timeout_s, side.name, paced)
        self._children.append(child)
        return child

    def _collect(self, child: _Child, side: SideSpec, bench: BenchSpec, out: Path) -> list[Result]:
        """Wait for a child and read its results; a failure is a ProcessFailed with the child's stderr."""
        code = child.wait()
        self.processes += 1
        results = load_results([out], skip_foreign=True) if out.exists() else []
        err = child.stderr_text()
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
    def _orders(self, k: int) -> dict[int, list[bool]]:
        """Balanced, shuffled side orders per benchmark for a batch of ``k`` rounds: True means the baseline
        runs first."""
        out = {}
        for i in range(len(self.cfg.benches)):
            order = [True] * ((k + 1) // 2) + [False] * (k // 2)
            self.rng.shuffle(order)
            out[i] = order
        return out

    def _pair_sides(self, r: int, i: int, bench: BenchSpec, base_first: bool,
                    work: Path) -> tuple[dict[str, list[Result]], dict[str, Any]]:
        """Both sides of one benchmark in one round: in lockstep where both take turns, else one after the
        other. Returns each side's results and the schedule entry."""
        sides = (self.cfg.baseline, self.cfg.candidate)
        if not base_first:
            sides = sides[::-1]
        a_side, b_side = sides
        outs = {side.name: work / f"r{r:03d}-b{i}-{side.name}" for side in sides}
        label = f"round {r + 1} · {bench.ref}"
        self.progress("process", f"{label} · {a_side.name}")
        a = self._start(a_side, bench, outs[a_side.name], self.paced)
        # Both started at once only where both sides took turns before: a side that measures on its own must
        # never overlap the other's start-up.
        b = None
        if self.both_pace.get(i) and self.paced:
            self.progress("process", f"{label} · {b_side.name} (lockstep)")
            b = self._start(b_side, bench, outs[b_side.name], True)
        turns = 0
        got: dict[str, list[Result]] = {}
        try:
            a_hello = self.paced and a.recv() is not None
            if not a_hello:  # a measures on its own: let it end before b measures
                got[a_side.name] = self._collect(a, a_side, bench, outs[a_side.name])
            if b is None:
                self.progress("process", f"{label} · {b_side.name}")
                b = self._start(b_side, bench, outs[b_side.name], self.paced)
            b_hello = self.paced and b.recv() is not None
            if not b_hello:  # b measured on its own while a (if it said hello) waited
                got[b_side.name] = self._collect(b, b_side, bench, outs[b_side.name])
            while a_hello and b_hello:  # one paced measurement per configuration the processes run
                turns += self._lockstep(a, b)
                a_hello, b_hello = a.recv() is not None, b.recv() is not None
            for child, hello in ((a, a_hello), (b, b_hello)):
                while hello:  # the other side has ended: this one measures what it has left on its own
                    child.send("solo")
                    hello = child.recv() is not None
            for child, side in ((a, a_side), (b, b_side)):
                if side.name not in got:
                    got[side.name] = self._collect(child, side, bench, outs[side.name])
        finally:
            for child in (a, b):
                if child is not None:
                    child.kill()
                    child.close()
            self._children = [c for c in self._children if c not in (a, b)]
        self.both_pace[i] = turns > 0
        self.paced_rounds += turns > 0
        entry = {"benchmark": bench.ref, "first": a_side.name, "paced": turns > 0, "turns": turns,
                 "wall_s": {a_side.name: a.wall_s, b_side.name: b.wall_s if b is not None else None}}
        return got, entry

    def _lockstep(self, a: _Child, b: _Child) -> int:
        """Conduct one paced measurement: both pinned to one CPU, a warm turn each, then turns in ABBA order
        until both timers are satisfied. Returns the number of measured turns of each side."""
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu = str(self.cpu_rng.choice(cpus)) if cpus else "-"
        for child in (a, b):
            child.send(f"pace {cpu} {self.cfg.turn_s:g}")
            child.expect("ready")
        for child in (a, b):
            child.send("warm")
            child.expect("done")
        pair = (a, b)
        want = [False, False]
        k = 0
        while not all(want):
            for j in ((0, 1) if k % 2 == 0 else (1, 0)):
                pair[j].send("turn")
                want[j] = pair[j].expect("done").split()[-1] == "1"
            k += 1
        for child in pair:
            child.send("stop")
        return k

    def _look(self) -> bool:
        """Decide every metric not decided yet at the corrected confidence; True when all are decided."""
        conf = self.look_confs[self.looks_taken]
        self.looks_taken += 1
        for key, obs in self.obs.items():
            if key in self.decided:
                continue
            k = self.keys[key]
            d = decide.decide_rounds([o.candidate / o.baseline for o in obs], k.direction,
                                     decide.threshold_for(k.metric, self.cfg.threshold, self.cfg.thresholds),
                                     conf, self.cfg.seed, self.cfg.method, self.cfg.trim)
            if d.verdict != "inconclusive":
                self.decided[key] = (d, conf)
        return bool(self.obs) and all(key in self.decided for key in self.obs)

    def run(self) -> None:
        """Rounds up to each look of the schedule, until every metric is decided, the schedule ends or the
        budget would be exceeded; stops at the first failure (recorded in ``errors``) or on Ctrl-C/SIGTERM."""
        work_ctx = (contextlib.nullcontext(self.cfg.out_dir) if self.cfg.out_dir is not None
                    else tempfile.TemporaryDirectory(prefix="aibench-gate-"))
        # SIGTERM arrives as KeyboardInterrupt too (aibench.lifetime, installed by the CLI's entry point).
        with work_ctx as work:
            work = Path(work)
            try:
                self.preflight()
                t_rounds = time.monotonic()
                r = 0
                for li, target in enumerate(self.looks):
                    orders = self._orders(target - r)
                    for j, rr in enumerate(range(r, target)):
                        entry: dict[str, Any] = {"index": rr, "benchmarks": []}
                        self.schedule.append(entry)
                        for i, bench in enumerate(self.cfg.benches):
                            got, bench_entry = self._pair_sides(rr, i, bench, orders[i][j], work)
                            entry["benchmarks"].append(bench_entry)
                            self._pair_round(rr, bench, got, bench_entry["first"])
                        self.rounds_done = rr + 1
                        self.progress("round", self._round_line(rr))
                    r = target
                    if self._look():
                        self.stopped = "decided"
                        break
                    if li + 1 == len(self.looks):
                        self.stopped = "max rounds"
                        break
                    per_round = (time.monotonic() - t_rounds) / r
                    elapsed = time.monotonic() - self.t0
                    nxt = self.looks[li + 1]
                    if self.cfg.budget_s is not None and elapsed + per_round * (nxt - r) > self.cfg.budget_s:
                        self.stopped = "budget"
                        self.warnings.append(
                            f"stopped after {r} rounds: {nxt - r} more (about {per_round * (nxt - r):.0f} s) would "
                            f"end past the {self.cfg.budget_s:g} s budget (--budget-s)")
                        break
                    self.progress("extend", f"undecided after {r} rounds: {nxt - r} more (look {li + 2} of "
                                  f"{len(self.looks)}, at most {self.cfg.rounds_max} rounds)")
            except ProcessFailed as exc:
                self.errors.append(str(exc))
                self.stopped = "error"
            except KeyboardInterrupt:
                self.interrupted = True
                self.stopped = "interrupted"
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
        target = next((n for n in self.looks if n > r), self.looks[-1])
        return f"round {r + 1}/{target} done: " + ", ".join(parts)

    # -- decision -------------------------------------------------------------------------------------
    def pairs(self) -> list[Pair]:
        """One pair per metric: the verdict of the first look that decided it, or, undecided, the verdict on
        every round gathered (at the same corrected confidence)."""
        out = []
        for key, obs in self.obs.items():
            k = self.keys[key]
            ratios = [o.candidate / o.baseline for o in obs]
            thr = decide.threshold_for(k.metric, self.cfg.threshold, self.cfg.thresholds, k.statistic)
            if key in self.decided:
                d, conf = self.decided[key]
            else:  # undecided: on every round gathered, at the level of the last look taken
                conf = self.look_confs[max(0, self.looks_taken - 1)]
                d = decide.decide_rounds(ratios, k.direction, thr, conf, self.cfg.seed, self.cfg.method,
                                         self.cfg.trim)
            used = obs[:d.rounds] if d.rounds else obs
            out.append(Pair(
                benchmark=k.benchmark, config_hash=k.config_hash, metric=k.metric, unit=k.unit,
                direction=k.direction, baseline=stats.geomean([o.baseline for o in used]),
                candidate=stats.geomean([o.candidate for o in used]), ratio=d.ratio, ci=d.ci,
                verdict=d.verdict, reason=d.reason, threshold=thr, confidence=conf,
                params=k.params,
                extra={"rounds_used": d.rounds, "rounds": ratios, "baseline_rounds": [o.baseline for o in obs],
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
            rounds=self.rounds_done, rounds_requested=self.cfg.rounds, max_rounds=self.cfg.rounds_max,
            budget_s=self.cfg.budget_s, looks=self.looks, looks_taken=self.looks_taken,
            look_confidence=self.look_confs, stopped=self.stopped,
            paced={"enabled": self.paced, "rounds": self.paced_rounds, "turn_s": self.cfg.turn_s,
                   "protocol": PROTOCOL},
            interrupted=self.interrupted,
            errors=list(self.errors), seed=self.cfg.seed, confidence=self.cfg.confidence,
            threshold=self.cfg.threshold, thresholds=dict(self.cfg.thresholds), tail_factor=decide.TAIL_FACTOR,
            inconclusive_policy=inconclusive, improved_policy=improved,
            method=(f"per-round ratio candidate/baseline; geometric mean of the ratios with {self.cfg.trim:g} of "
                    f"the rounds trimmed at each end and its CI ({self.cfg.method}) at "
                    f"{', '.join(f'{c * 100:.4g}%' for c in self.look_confs)} for the looks after "
                    f"{', '.join(map(str, self.looks))} rounds ({self.cfg.confidence * 100:g}% over all); "
                    "regression: worse than the threshold and the CI excludes 1; pass: the CI lies within "
                    "±threshold; a metric keeps the verdict of the first look that decides it"),
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
    if cfg.rounds_max < cfg.rounds:
        raise UsageError(f"--max-rounds {cfg.rounds_max} must be at least --rounds {cfg.rounds}")
    if not cfg.benches:
        raise UsageError("name at least one benchmark (positional, or -b 'KIND/NAME --param value')")
    gate = Gate(cfg, progress)
    gate.run()
    return gate.document(inconclusive, improved)
