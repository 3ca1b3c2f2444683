"""The errors aibench raises on bad input or an unfit machine, and the exit codes they map to.

Every error a user can cause is one of these: the CLI prints its message on one line and exits with its
code, never a traceback. The codes are part of the interface (README, "Exit codes").
"""

from __future__ import annotations

import click

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


class AibenchError(click.ClickException):
    """Base of every expected error; ``exit_code`` says which kind."""

    exit_code = EXIT_INTERNAL

    def show(self, file=None) -> None:  # one line, no "Error:" boilerplate beyond a prefix
        click.echo(f"aibench: error: {self.format_message()}", err=True, file=file)


class UsageError(AibenchError):
    exit_code = EXIT_USAGE


class UnavailableError(AibenchError):
    exit_code = EXIT_UNAVAILABLE


class ResultIOError(AibenchError):
    exit_code = EXIT_IO


class ListenError(AibenchError):
    """A server cannot listen where it was told: the port is in use, or the address is not this machine's."""

    exit_code = EXIT_LISTEN
