"""Signals and process lifetime (aibench.lifetime): SIGTERM ends a run as Ctrl-C does (a record, a message,
exit 143); nothing aibench starts outlives it, even when it is killed with SIGKILL; a one-machine launch
listens on loopback only; Ctrl-C ends a LoadGen Server run promptly.

The process tests start the real command in a subprocess, find every process it started by walking /proc
(descendants of its pid, each identified by pid and start time so a reused pid is not mistaken for a
survivor), signal it, and check that none is left within a few seconds. Each imports torch, so each costs
seconds; they wait for conditions, never for fixed times, and their time limits are generous.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aibench import lifetime

REPO = Path(__file__).resolve().parents[1]
FAKE = str(Path(__file__).with_name("gate_fake_run.py"))
POS_TINY = ["--batch", "1", "--num-samples", "3", "--words", "7", "--data", "synthetic"]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="walks /proc; PR_SET_PDEATHSIG")


# -- helpers -----------------------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live process below ``root``."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                parents.setdefault(st[0], []).append(int(entry.name))
                starts[int(entry.name)] = st[1]
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for kid in parents.get(todo.pop(), []):
            if kid not in out:
                out[kid] = starts[kid]
                todo.append(kid)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _has_torch(pid: int) -> bool:
    """The process has loaded torch (so it runs the code that binds it to its parent, which comes first)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class Command:
    """A command run in a subprocess with its output in files, not pipes: a child that outlives it (the bug
    these tests look for) must not keep the test waiting for the pipe's end."""

    def __init__(self, argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.out_path = tmp_path / f"cmd-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        self.pid = self.proc.pid

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:]

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Its exit code and stderr once it ends (it must end within ``timeout`` of being signalled)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the command did not end within {timeout:g} s of the signal: {self.err()}")
        return self.proc.returncode, self.err()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_for(what: str, cond: Callable[[], Any], cmd: Command, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if cmd.poll() is not None:
            pytest.fail(f"the command ended (code {cmd.poll()}) before {what}: {cmd.err()}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _survivors(procs: dict[int, int], within: float = 10.0) -> dict[int, str]:
    """Those of ``procs`` still alive (the same process: same start time) after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = {pid: _cmdline(pid) for pid, start in procs.items() if (_stat(pid) or (0, -1))[1] == start}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _start(args: list[str], tmp_path: Path) -> Command:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(tmp_path)}
    return Command([sys.executable, "-m", "aibench", *args], tmp_path, env)


def _cleanup(*cmds: Command, trees: tuple[dict[int, int], ...] = ()) -> None:
    """Kill what is left: the commands, and (so that a failing test leaves nothing behind) their children."""
    for c in cmds:
        c.kill()
    for tree in trees:
        for pid, start in tree.items():
            if (_stat(pid) or (0, -1))[1] == start:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _listeners(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 and IPv6) owned by ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc/net stores each 32-bit word in host order (little-endian here).
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            found.append((socket.inet_ntop(family, words), int(hexport, 16)))
    return found


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or addr.startswith("::ffff:127.")


# -- SIGTERM is Ctrl-C ---------------------------------------------------------------------------------------------

def test_sigterm_raises_terminated_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with lifetime.handling_signals():
        with pytest.raises(lifetime.Terminated) as exc:
            signal.raise_signal(signal.SIGTERM)
        assert isinstance(exc.value, KeyboardInterrupt)  # every Ctrl-C path covers it
        assert lifetime.exit_code(exc.value) == 143 and lifetime.describe() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt) as ctrl_c:
            signal.raise_signal(signal.SIGINT)
        assert lifetime.exit_code(ctrl_c.value) == 130 and lifetime.describe() == "Ctrl-C"
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_in_a_run_writes_the_interrupted_record_and_exits_143(cli, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import TINY_FLAGS

    def sigterm(*_a: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr("aibench.measure.kernel.run_kernel", sigterm)
    code, _, err = cli("run", "micro/relu", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 143, err
    assert "terminated (SIGTERM)" in err and "plus 1 interrupted (partial) result" in err
    (f,) = tmp_path.glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "interrupted" and doc["metrics"] == {}
    assert doc["error"]["type"] == "Terminated" and "SIGTERM" in doc["error"]["message"]
    assert signal.getsignal(signal.SIGTERM) is not lifetime._on_sigterm  # main put the previous handler back


def test_interrupted_message_counts_only_this_runs_record(cli, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Files another run writes into the same --out meanwhile are not this run's interrupted results."""
    from tests.conftest import TINY_FLAGS

    def concurrent_run_then_ctrl_c(*_a: object) -> None:
        for i in range(13):
            (tmp_path / f"other-run-{i}.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("aibench.measure.kernel.run_kernel", concurrent_run_then_ctrl_c)
    code, _, err = cli("run", "micro/relu", *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 130
    assert "0 of 1 result(s) were finished" in err and "plus 1 interrupted (partial) result (micro-relu-" in err
    assert "plus 14" not in err and "plus 13" not in err


# -- INVALID exits 5 in run, 0 in a sweep ----------------------------------------------------------------------------

@pytest.mark.usefixtures("tiny_bench")
def test_invalid_loadgen_run_exits_5_and_a_sweep_keeps_0(cli, tmp_path: Path) -> None:
    impossible = ["--scenario", "server", "--latency-bound-ms", "0.001", "--duration-s", "0.1", "--min-queries", "20"]
    code, _, err = cli("run", "component/tiny-lg", *impossible, "--target-qps", "200", "--out", str(tmp_path / "r"))
    assert code == 5, err
    assert "INVALID" in err
    (f,) = (tmp_path / "r").glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "ok" and doc["validity"]["valid"] is False  # written and marked
    code, _, err = cli("sweep", "target_qps", "component/tiny-lg", *impossible, "--values", "100,200",
                       "--out", str(tmp_path / "s"))
    assert code == 0, err
    (rec,) = (tmp_path / "s").glob("sweep-*.json")
    points = json.loads(rec.read_text())["points"]
    assert [p["valid"] for p in points] == [False, False] and all(p["status"] == "ok" for p in points)


# -- --find-peak ends, visibly -------------------------------------------------------------------------------------

@pytest.mark.usefixtures("tiny_bench")
def test_find_peak_refuses_a_bound_below_the_measured_latency(cli, tmp_path: Path) -> None:
    code, _, err = cli("run", "component/tiny-lg", "--sleep-us", "3000", "--scenario", "server", "--find-peak",
                       "--latency-bound-ms", "1", "--duration-s", "0.2", "--out", str(tmp_path))
    assert code == 3, err
    assert "--latency-bound-ms 1 is below this system's shortest measured latency" in err and " ms" in err
    assert not list(tmp_path.glob("*.json"))  # refused, nothing measured under LoadGen


@pytest.mark.usefixtures("tiny_bench")
def test_find_peak_shows_each_probe_and_keeps_to_its_budget(cli, tmp_path: Path) -> None:
    # 100 queries at 50 QPS take 2 s: past the 1 s budget after the first probe, so no second one starts
    # (p50: 100 queries are enough for LoadGen's early stopping, so the probe's verdict is the bound's).
    code, _, err = cli("run", "component/tiny-lg", "--scenario", "server", "--find-peak", "--target-qps", "50",
                       "--latency-bound-ms", "50", "--latency-percentile", "50", "--duration-s", "0.2",
                       "--min-queries", "100", "--find-peak-budget-s", "1", "--out", str(tmp_path))
    (f,) = tmp_path.glob("*.json")
    doc = json.loads(f.read_text())
    fp = doc["method"]["find_peak"]
    assert len(fp["probes"]) == 1 and fp["stopped"].startswith("time budget"), fp["stopped"]
    assert fp["budget_s"] == 1.0 and doc["method"]["find_peak_budget_s"] == 1.0
    assert "find-peak probe 1: target 50 QPS: " in err and err.count("find-peak probe") == 1
    assert code in (0, 5)


def test_find_peak_budget_is_checked_up_front() -> None:
    from aibench.errors import UsageError
    from aibench.loadgen.settings import LoadgenOptions

    with pytest.raises(UsageError, match="shorter than one probe"):
        LoadgenOptions(scenario="server", find_peak=True, find_peak_budget_s=5, duration_s=10).resolve()
    with pytest.raises(UsageError, match="only with --find-peak"):
        LoadgenOptions(scenario="server", target_qps=5, find_peak_budget_s=50).resolve()
    s = LoadgenOptions(scenario="server", find_peak=True, profile="official").resolve()
    assert s.find_peak_budget_s == 6000  # 10 probes of 600 s


# -- Ctrl-C / SIGTERM during a LoadGen Server run end it promptly --------------------------------------------------

@linux_only
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_ends_a_server_run_promptly(tmp_path: Path, sig: int, code: int) -> None:
    """At 2 QPS LoadGen ends a Server test only after 64 queries are outstanding: 30 s and more once the
    system is aborted. aibench leaves it behind and exits in a second or two."""
    out = tmp_path / "res"
    cmd = _start(["run", "component", "pos", *POS_TINY, "--scenario", "server", "--target-qps", "2",
                  "--duration-s", "120", "--out", str(out)], tmp_path)
    try:
        _wait_for("LoadGen to start", lambda: list(out.glob("*.loadgen/mlperf_log_detail.txt")), cmd)
        time.sleep(0.5)
        t0 = time.monotonic()
        cmd.send_signal(sig)
        rc, err = cmd.finish()
        elapsed = time.monotonic() - t0
    finally:
        _cleanup(cmd)
    assert rc == code, err
    assert elapsed < 10, f"took {elapsed:.1f} s to exit"  # it took 20-40 s before
    (f,) = out.glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "interrupted" and doc["validity"]["valid"] is False
    assert ("SIGTERM" if sig == signal.SIGTERM else "Ctrl-C") in doc["error"]["message"]


LIBRARY_RUN = """
import _thread, sys, time
import torch
from aibench import registry
from aibench.loadgen.metrics import LOADGEN_METRICS
from aibench.loadgen.settings import LoadgenOptions
from aibench.sut.task import InferenceTask
from aibench.harness import PlannedRun, RunOptions, execute
from aibench.spec import Param

calls = [0]


def factory(params, device, dtype):
    model = torch.nn.Linear(8, 4)
    data = torch.randn(16, 8)

    def forward(x):
        calls[0] += 1
        if calls[0] == 80:  # inside the LoadGen test (calibration makes fewer calls)
            _thread.interrupt_main()
        return model(x)

    return InferenceTask(model=forward, device=device, num_samples=16, load_sample=lambda i: data[i])


bench = registry.Benchmark(kind="component", name="lib-lg", description="d", source="s", runner="loadgen",
                           factory=factory, params=registry.ParamSet((Param("batch", int, 1, "b"),)),
                           metrics=LOADGEN_METRICS, primary_metric="samples_per_s")
lg = LoadgenOptions(scenario="server", target_qps=20.0, duration_s=60.0, out_dir=sys.argv[1])
try:
    execute(PlannedRun(bench, bench.resolve({}), {}), RunOptions().with_options(loadgen=lg))
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@linux_only
def test_a_library_caller_exits_cleanly_after_an_interrupted_server_run(tmp_path: Path) -> None:
    """Used as a library (no os._exit), a LoadGen test left running after Ctrl-C is waited for at exit:
    C++ teardown under it would abort the process ('terminate called without an active exception')."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = Command([sys.executable, "-c", LIBRARY_RUN, str(tmp_path)], tmp_path, env)
    rc, err = cmd.finish(timeout=240)
    assert rc == 0, err
    assert cmd.out_path.read_text().strip() == "interrupted"


# -- nothing outlives aibench ------------------------------------------------------------------------------------

@linux_only
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_allreduce_ranks_die_with_aibench(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "res"
    cmd = _start(["run", "micro", "allreduce", "--ranks", "2", "--count", "100000", "--max-time", "600",
                  "--min-rounds", "100000", "--target-ci", "0.0001", "--out", str(out)], tmp_path)
    tree: dict[int, int] = {}
    try:
        def ranks_running() -> dict[int, int] | None:
            found = _descendants(cmd.pid)
            ranks = [p for p in found if "spawn_main" in _cmdline(p) and _has_torch(p)]
            return found if len(ranks) == 2 else None

        tree = _wait_for("both ranks to run", ranks_running, cmd)
        assert any("resource_tracker" in _cmdline(p) for p in tree)  # it must go too
        cmd.send_signal(sig)
        rc, err = cmd.finish()
        left = _survivors(tree)
    finally:
        _cleanup(cmd, trees=(tree,))
    assert not left, f"still running after aibench ended: {left}"
    if sig == signal.SIGTERM:
        assert rc == 143, err
        (f,) = out.glob("*.json")
        assert json.loads(f.read_text())["status"] == "interrupted"


@linux_only
def test_one_machine_launch_listens_on_loopback_only_and_dies_with_aibench(tmp_path: Path) -> None:
    """sweep gpus of a distributed benchmark: the store and the ranks' sockets on 127.0.0.1 only; SIGKILL of
    aibench takes the ranks along; the job folder it could not remove goes with the next launch."""
    out = tmp_path / "res"
    cmd = _start(["sweep", "gpus", "micro", "allreduce", "--devices", "cpu:2", "--values", "2", "--count", "100000",
                  "--max-time", "600", "--min-rounds", "100000", "--target-ci", "0.0001", "--out", str(out)],
                 tmp_path)
    tree: dict[int, int] = {}
    try:
        def ranks_running() -> dict[int, int] | None:
            found = _descendants(cmd.pid)
            ranks = [p for p in found if "aibench.sweep.worker" in _cmdline(p) and _has_torch(p)]
            return found if len(ranks) == 2 and _listeners({cmd.pid, *found}) else None

        tree = _wait_for("both ranks to run", ranks_running, cmd)
        time.sleep(1.0)  # the ranks meet and open their own sockets
        listening = _listeners({cmd.pid, *_descendants(cmd.pid)})
        wide = [(a, p) for a, p in listening if not _loopback(a)]
        assert not wide, f"listening beyond loopback: {wide}"
        (folder,) = tmp_path.glob(f"aibench-dist-{cmd.pid}-*")
        cmd.send_signal(signal.SIGKILL)
        cmd.finish()
        left = _survivors(tree)
    finally:
        _cleanup(cmd, trees=(tree,))
    assert not left, f"still running after aibench was killed: {left}"
    assert folder.is_dir()  # SIGKILL: nothing could remove it ...
    assert lifetime.remove_stale(tmp_path, "dist") == [folder] and not folder.exists()  # ... the next launch does


@linux_only
def test_torchrun_and_its_workers_die_with_aibench(tmp_path: Path) -> None:
    """Two 'nodes' on loopback through torchrun: killing node 0's aibench takes torchrun and its worker
    (a grandchild) along; then node 1's the same."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["sweep", "gpus", "micro/allreduce", "--devices", "cpu:1", "--nnodes", "2", "--rdzv-endpoint",
              f"127.0.0.1:{port}", "--count", "1000", "--max-time", "600", "--min-rounds", "100000",
              "--target-ci", "0.0001", "--warmup", "0"]
    nodes = [_start([*common, "--node-rank", str(r), "--out", str(tmp_path / f"n{r}")], tmp_path) for r in (0, 1)]
    trees: list[dict[int, int]] = []
    try:
        for node in nodes:
            def worker_running(node: Command = node) -> dict[int, int] | None:
                found = _descendants(node.pid)
                cmds = {p: _cmdline(p) for p in found}
                ok = any("torch.distributed.run" in c for c in cmds.values()) and \
                    any("aibench.sweep.worker" in c and "torch.distributed.run" not in c and _has_torch(p)
                        for p, c in cmds.items())
                return found if ok else None

            trees.append(_wait_for("torchrun's worker to run", worker_running, node))
        for node, tree in zip(nodes, trees, strict=True):
            node.send_signal(signal.SIGKILL)
            node.finish()
            left = _survivors(tree)
            assert not left, f"still running after aibench was killed: {left}"
    finally:
        _cleanup(*nodes, trees=tuple(trees))


STUCK_BENCH = """
import time
from aibench import registry
from aibench.loadgen.metrics import LOADGEN_METRICS


def factory(params, device, dtype):
    time.sleep(3600)  # a worker busy for a long time (a huge batch, a slow compile)


registry.register(registry.Benchmark(kind="component", name="stuck-lg", description="never finishes building",
                                     source="aibench tests", runner="loadgen", factory=factory,
                                     params=registry.ParamSet(()), metrics=LOADGEN_METRICS,
                                     primary_metric="samples_per_s"))
"""
POOL_PARENT = """
from aibench.sut.pool import WorkerConfig, WorkerPool
WorkerPool([WorkerConfig(i, "cpu", 1, "component/stuck-lg", {}, modules=("stuckbench",)) for i in range(2)]).start()
"""


@linux_only
def test_pool_workers_die_with_aibench_even_mid_work(tmp_path: Path) -> None:
    """A worker busy in its model (here: building it) used to notice its parent's death only when it next
    read its pipe; now it dies with the parent."""
    (tmp_path / "stuckbench.py").write_text(STUCK_BENCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = Command([sys.executable, "-c", POOL_PARENT], tmp_path, env)
    tree: dict[int, int] = {}
    try:
        def workers_building() -> dict[int, int] | None:
            found = _descendants(cmd.pid)
            workers = [p for p in found if "spawn_main" in _cmdline(p) and _has_torch(p)]
            return found if len(workers) == 2 else None

        tree = _wait_for("the workers to start building", workers_building, cmd)
        time.sleep(0.5)
        cmd.send_signal(signal.SIGKILL)
        cmd.finish()
        left = _survivors(tree)
    finally:
        _cleanup(cmd, trees=(tree,))
    assert not left, f"still running after their parent was killed: {left}"


@linux_only
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -9), (signal.SIGTERM, 143)])
def test_gate_children_die_with_the_gate(tmp_path: Path, sig: int, code: int) -> None:
    pids = tmp_path / "pids"
    slow = " ".join([sys.executable, FAKE, "--sleep", "60", "--pidfile", str(pids)])
    cmd = _start(["gate", "--baseline", slow, "--candidate", slow, "--seed", "1", "--json",
                  str(tmp_path / "gate.json"), "micro/fake"], tmp_path)
    tree: dict[int, int] = {}
    try:
        tree = _wait_for("a benchmark process to start",
                         lambda: pids.exists() and pids.read_text().strip() and _descendants(cmd.pid), cmd)
        cmd.send_signal(sig)
        rc, err = cmd.finish()
        left = _survivors(tree)
    finally:
        _cleanup(cmd, trees=(tree,))
    assert rc == code, err
    assert not left, f"still running after the gate ended: {left}"


def test_bound_command_refuses_a_missing_program_like_popen() -> None:
    with pytest.raises(FileNotFoundError):
        lifetime.bound_command(["surely-not-a-program-here"])
    cmd = lifetime.bound_command([sys.executable, "-c", "import os; print(os.environ['AIBENCH_PARENT_PID'])"])
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert int(got.stdout) > 0  # the program learns its own pid as the parent its children must have


def test_remove_stale_keeps_live_owners(tmp_path: Path) -> None:
    mine = tmp_path / f"aibench-dist-{os.getpid()}-abc"
    dead = tmp_path / "aibench-dist-999999999-abc"
    other_kind = tmp_path / "aibench-gate-999999999-abc"
    for d in (mine, dead, other_kind):
        d.mkdir()
    assert lifetime.remove_stale(tmp_path, "dist") == [dead]
    assert mine.is_dir() and other_kind.is_dir() and not dead.exists()
