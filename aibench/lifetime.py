"""How aibench ends, and that nothing it started outlives it.

**Signals.** :func:`handling_signals` (entered once, by :func:`aibench.cli.main`) makes SIGTERM take the
very path Ctrl-C takes: the handler raises :class:`Terminated`, a :class:`KeyboardInterrupt`, in the main
thread, so every ``except KeyboardInterrupt`` (records written as ``interrupted``, children stopped,
temporary folders removed) covers both. Which signal it was is remembered, so the message says so and the
exit code is 143 (128 + SIGTERM) instead of 130 (128 + SIGINT). Code that takes over SIGINT for a while
(a LoadGen test, which must abort its system under test rather than be torn down) takes over SIGTERM the
same way through :func:`on_interrupt`.

**Children.** Every process aibench starts dies with it, even when aibench itself is killed with SIGKILL
and can run no cleanup: on Linux a child asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``). A Python child started by aibench calls :func:`die_with_parent` first thing;
another program (torchrun, a gate's benchmark process) is started through :func:`bound_command`, a tiny
``python -c`` that sets the same before it execs the program (the setting survives ``exec``). The kernel
sends the signal when the *thread* that started the child exits, so children are started from the main
thread (all of aibench's are). torchrun's own workers are bound to torchrun the same way
(``AIBENCH_PARENT_PID`` tells a child which parent it must have: if that parent is already gone when the
child starts, it exits at once). multiprocessing's resource tracker needs nothing: it exits when the last
process holding its pipe (the parent and its children) is gone.

**Threads that cannot be stopped.** A LoadGen test cannot be cancelled: a Server test issues its queries on
its own schedule. After Ctrl-C, aibench waits a short grace for it, then records the run as interrupted and
leaves without it (:func:`abandon`); the console entry point then ends the process with ``os._exit`` so that
no interpreter or C++ teardown runs under the still-running thread (:func:`leave`), and a program using
aibench as a library waits for the thread at exit instead.

**Stale temporary folders.** A folder made by :func:`private_tempdir` carries the owner's pid in its name and
is removed on any exit Python sees; after a SIGKILL the next aibench that makes one of the same kind removes
those whose owner is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aibench.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

PARENT_ENV = "AIBENCH_PARENT_PID"
PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises KeyboardInterrupt."""


_last_signal: int | None = None  # the last interrupting signal seen (SIGINT or SIGTERM)


def note(signum: int) -> None:
    """Remember which signal interrupted the run (for the message, the record and the exit code)."""
    global _last_signal
    _last_signal = signum


def _on_sigint(signum: int, _frame: Any) -> None:
    note(signum)
    raise KeyboardInterrupt


def _on_sigterm(signum: int, _frame: Any) -> None:
    note(signum)
    raise Terminated


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (Terminated) in the main thread while this is entered;
    the previous handlers come back after. Outside the main thread it does nothing."""
    global _last_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _last_signal = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def on_interrupt(callback: Callable[[], None]) -> Iterator[None]:
    """While entered, Ctrl-C and SIGTERM call ``callback`` (after :func:`note`) instead of raising at an
    arbitrary point. Only the main thread can own handlers; elsewhere the signals do not reach this code."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        note(signum)
        callback()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def terminated() -> bool:
    """Whether the interruption being handled is SIGTERM (not Ctrl-C)."""
    return _last_signal == signal.SIGTERM


def interruption(record: Path | None = None) -> KeyboardInterrupt:
    """The exception to raise for the interruption being handled: Terminated for SIGTERM, else
    KeyboardInterrupt. ``record``: the ``interrupted`` result file written for it (``exc.record``)."""
    exc: KeyboardInterrupt = Terminated() if terminated() else KeyboardInterrupt()
    exc.record = record  # type: ignore[attr-defined]
    return exc


def describe(exc: BaseException | None = None) -> str:
    """``SIGTERM`` or ``Ctrl-C``: what interrupted the run, for messages and records."""
    return "SIGTERM" if isinstance(exc, Terminated) or terminated() else "Ctrl-C"


def exit_code(exc: BaseException | None = None) -> int:
    """143 for SIGTERM, 130 for Ctrl-C (the shell's convention: 128 + the signal's number)."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) or terminated() else EXIT_INTERRUPTED


def verb(exc: BaseException | None = None) -> str:
    """How the CLI says it: ``interrupted`` (Ctrl-C) or ``terminated (SIGTERM)``."""
    return "terminated (SIGTERM)" if describe(exc) == "SIGTERM" else "interrupted"


# -- children ---------------------------------------------------------------------------------------------

def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None


def die_with_parent(parent_pid: int | None = None) -> bool:
    """In a child process, first thing: be killed (SIGKILL) when the parent dies, however it dies.

    ``parent_pid`` (else ``$AIBENCH_PARENT_PID``) is the parent the child must have: if it is already gone
    (the child was orphaned before it got here), the child exits at once. Linux only: elsewhere it does
    nothing and returns False, and the child relies on its pipe to the parent closing (every aibench child
    also exits at EOF on it)."""
    prctl = _prctl()
    if prctl is None or prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return False
    if parent_pid is None:
        text = os.environ.get(PARENT_ENV, "")
        parent_pid = int(text) if text.isdigit() else None
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(128 + signal.SIGKILL)
    return True


# Run by ``python -I -S -c``: bind to the parent, name ourselves the parent of what we exec, then exec it.
_BOUND = """\
import ctypes, os, sys
parent = int(sys.argv[1])
if sys.platform.startswith('linux'):
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)
os.environ['AIBENCH_PARENT_PID'] = str(os.getpid())
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write('aibench: cannot start %s: %s\\n' % (sys.argv[2], exc.strerror or exc))
    os._exit(127)
"""


def bound_command(cmd: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``cmd``, run so that it dies with this process (see the module's text). The wrapper execs the
    program, which keeps the child's pid, its arguments, environment and exit status. A program that cannot
    be found or run raises here, as ``subprocess.Popen`` would."""
    path = (env if env is not None else os.environ).get("PATH")
    if os.sep not in cmd[0] and shutil.which(cmd[0], path=path) is None:
        raise FileNotFoundError(2, "No such file or directory", cmd[0])
    if os.sep in cmd[0] and not os.access(cmd[0], os.X_OK):
        raise (FileNotFoundError(2, "No such file or directory", cmd[0]) if not os.path.exists(cmd[0])
               else PermissionError(13, "Permission denied", cmd[0]))
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-I", "-S", "-c", _BOUND, str(os.getpid()), *cmd]


# -- threads that cannot be stopped ---------------------------------------------------------------------------

_abandoned: list[tuple[threading.Thread, str]] = []


def abandon(thread: threading.Thread, what: str) -> None:
    """``thread`` could not be stopped in time after an interruption; the process will leave without it.
    The console command ends with ``os._exit`` (:func:`leave`); any other program (aibench used as a library)
    waits for it at exit instead, since C++ teardown under a running LoadGen test aborts the process."""
    if not _abandoned:
        atexit.register(wait_abandoned)
    _abandoned.append((thread, what))


def abandoned() -> list[str]:
    """What is still running that was abandoned (and forgets what has ended since)."""
    _abandoned[:] = [(t, w) for t, w in _abandoned if t.is_alive()]
    return [w for _t, w in _abandoned]


def wait_abandoned(timeout_s: float | None = None) -> None:
    """Before starting what an abandoned thread also uses (LoadGen is one per process): let it end."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for t, _w in list(_abandoned):
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    abandoned()


def leave(code: int, hard: bool) -> None:
    """At the end of the console command: if an abandoned thread is still running and this is the process's
    own entry point (``hard``), end now with ``os._exit`` (after flushing), so that neither the interpreter's
    nor a C++ library's teardown runs under it. Otherwise return (the caller exits normally)."""
    if not hard or not abandoned():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def quick_exit(code: int = 0) -> None:
    """End a child process that has nothing left to write: flush, then ``os._exit`` (an interpreter with
    torch loaded takes seconds to tear down, and a parent stopping its children waits for that)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# -- temporary folders ----------------------------------------------------------------------------------------

def private_tempdir(kind: str) -> Path:
    """A new folder ``aibench-KIND-<pid>-XXXX`` in the temporary directory, after removing the folders of that
    kind whose owner process is gone (left by an aibench killed with SIGKILL). Its owner removes it when done."""
    base = Path(tempfile.gettempdir())
    remove_stale(base, kind)
    return Path(tempfile.mkdtemp(prefix=f"aibench-{kind}-{os.getpid()}-", dir=base))


def remove_stale(base: Path, kind: str) -> list[Path]:
    """Remove ``aibench-KIND-<pid>-*`` folders in ``base`` owned by this user whose process no longer exists."""
    pattern = re.compile(rf"aibench-{re.escape(kind)}-(\d+)-")
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if not entry.is_dir() or entry.is_symlink() or st.st_uid != os.getuid() or _alive(int(m.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
