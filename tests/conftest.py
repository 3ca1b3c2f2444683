"""Shared fixtures: tiny timer settings and a way to call the real CLI entry point in-process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aibench.cli import main
from aibench.measure.timer import TimerSettings

# Enough to produce a real distribution, small enough that the whole registry runs in seconds.
TINY_TIMER = TimerSettings(warmup_s=0.0, warmup_iters=1, min_block_s=1e-4, min_time_s=0.0, max_time_s=0.02,
                           min_rounds=3, target_rel_ci=0.5)
TINY_FLAGS = ["--max-time", "0.02", "--warmup", "0", "--min-rounds", "3", "--target-ci", "0.5"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``aibench ARGS`` through the console-script entry point; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 1
        return code, out, err

    return run
