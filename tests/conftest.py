"""Shared fixtures: tiny timer settings, the real CLI entry point in-process, and a tiny load-generated
component benchmark registered for one test and removed after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aibench import registry
from aibench.cli import main
from aibench.measure.timer import TimerSettings
from aibench.spec import Param

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


TINY_ID = "component/tiny-lg"


def _tiny_factory(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch

    from aibench.sut.task import InferenceTask

    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(8, 4).to(device).eval()
    data = torch.randn(64, 8, generator=g)
    fail_after = params["fail_after"]
    interrupt_after = params["interrupt_after"]
    calls = [0]

    def forward(x: Any) -> Any:
        calls[0] += 1
        if fail_after >= 0 and calls[0] > fail_after:
            raise RuntimeError("tiny model exploded on purpose")
        if interrupt_after >= 0 and calls[0] == interrupt_after:
            import _thread

            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        if params["sleep_us"]:
            import time

            time.sleep(params["sleep_us"] / 1e6)
        return model(x)

    return InferenceTask(model=forward, device=device, num_samples=64, load_sample=lambda i: data[i],
                         postprocess=lambda y: list(y.argmax(dim=1)), data={"source": "synthetic"})


@pytest.fixture
def tiny_bench() -> Iterator[registry.Benchmark]:
    from aibench.loadgen.metrics import LOADGEN_METRICS

    registry.discover()
    bench = registry.Benchmark(
        kind="component", name="tiny-lg", description="a tiny linear layer for load-generator tests",
        source="aibench tests", runner="loadgen", factory=_tiny_factory,
        params=registry.ParamSet((
            Param("batch", int, 4, "largest batch", minimum=1),
            Param("device", str, "cpu", "device"),
            Param("fail_after", int, -1, "raise after this many model calls (-1: never)"),
            Param("interrupt_after", int, -1, "send Ctrl-C to the main thread at this model call (-1: never)"),
            Param("sleep_us", int, 0, "sleep per model call", minimum=0),
        )),
        metrics=LOADGEN_METRICS, primary_metric="samples_per_s")
    registry.register(bench)
    try:
        yield bench
    finally:
        registry._REGISTRY.pop(bench.id, None)
