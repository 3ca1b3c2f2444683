"""The errors aibench raises on bad input or an unfit machine, and the exit codes they map to.

Every error a user can cause is one of these: the CLI (``aibench.cli.main``) prints its message on one line
and exits with its code, never a traceback. The codes are part of the interface (README, "Exit codes").
Plain exceptions, not ``click.ClickException``: the library (results/, report/, gate/, measure/) raises
them without depending on the command-line toolkit; only the CLI maps them to output and an exit code.
"""

from __future__ import annotations

import sys
from typing import IO

EXIT_OK = 0
EXIT_FAILED = 1  # the run happened but a benchmark failed; its result file records the error
EXIT_USAGE = 2  # bad command line: unknown benchmark, unknown/ill-typed/out-of-range parameter
EXIT_UNAVAILABLE = 3  # asked for something this machine cannot do: no such device, dtype unsupported there
EXIT_IO = 4  # cannot write results, or cannot read/understand a result file
EXIT_INVALID = 5  # `run` only: a LoadGen result is INVALID (written and marked; its figures break LoadGen's rules)
EXIT_LISTEN = 6  # `serve` only: a port is in use, or the address cannot be listened on
EXIT_INTERNAL = 70  # a bug in aibench (EX_SOFTWARE); -v shows the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); finished results are kept, the cut-short run is recorded
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): handled exactly as Ctrl-C (aibench.lifetime)


class AibenchError(Exception):
    """Base of every expected error; ``exit_code`` says which kind, ``message`` what went wrong."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def format_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message

    def show(self, file: IO[str] | None = None) -> None:
        """The one line the CLI prints for this error."""
        stream = file if file is not None else sys.stderr
        stream.write(f"aibench: error: {self.message}\n")
        stream.flush()


class UsageError(AibenchError):
    exit_code = EXIT_USAGE


class UnavailableError(AibenchError):
    exit_code = EXIT_UNAVAILABLE


class ResultIOError(AibenchError):
    exit_code = EXIT_IO


class ListenError(AibenchError):
    """A server cannot listen where it was told: the port is in use, or the address is not this machine's."""

    exit_code = EXIT_LISTEN
