"""The harness builds every record in one place (issue 13, item 4): a runner fills a Measurement, and
``build_result`` hashes exactly what enters the config, once, and stamps the record once; interrupted records
have one writer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from aibench import registry
from aibench.harness import PlannedRun, RunOptions, build_result, execute
from aibench.registry import Benchmark, MetricSpec, ParamSet, RunnerSpec
from aibench.results.measurement import Measurement
from aibench.spec import Param, config_hash

AIBENCH = Path(__file__).resolve().parents[1] / "aibench"


def fill(bench: Any, params: dict[str, Any], m: Measurement, opts: RunOptions) -> Measurement:
    """A runner: adds a setting of its own to the config and one figure."""
    m.config["probe"] = {"setting": params["n"] * 2}
    m.metrics["x"] = {"value": 1.0, "unit": "s", "direction": "lower"}
    m.context["seen"] = opts.seed
    return m


def interrupt(bench: Any, params: dict[str, Any], m: Measurement, opts: RunOptions) -> Measurement:
    m.config["probe"] = {"setting": 1}
    m.metrics["x"] = {"value": 1.0, "unit": "s", "direction": "lower"}
    raise KeyboardInterrupt


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Benchmark:
    for name in ("fill", "interrupt"):
        monkeypatch.setitem(registry._RUNNERS, f"probe-{name}",
                            RunnerSpec(f"probe-{name}", "builtins:object", f"tests.test_harness:{name}"))
    return Benchmark(kind="component", name="harness-probe", description="d", source="tests",
                     params=ParamSet((Param("n", int, 3, "n"),)), metrics=(MetricSpec("x", "s", "lower", "x"),),
                     primary_metric="x", runner="probe-fill", factory=lambda *_a, **_k: None)


def test_config_hash_is_computed_once_from_exactly_what_enters_it(probe: Benchmark) -> None:
    run = PlannedRun(probe, {"n": 3}, {"set": None}, config={"distributed": {"world_size": 2}})
    r = execute(run, RunOptions(threads=1, seed=7))
    assert r.config == {"threads": 1, "distributed": {"world_size": 2}, "probe": {"setting": 6}}
    assert r.config_hash == config_hash(probe.id, {"n": 3}, r.config)
    assert r.context == {"set": None, "seen": 7} and r.method["seed"] == 7 and r.metrics["x"]["statistic"]
    assert r.machine["machine"] and r.finished_at and r.duration_s is not None
    # The same measurement built again is the same record (nothing is re-derived elsewhere).
    m = Measurement(benchmark_id=probe.id, config={"probe": {"setting": 6}}, run_id=r.run_id, started_at=r.started_at)
    again = build_result(run, m, threads=1)
    assert again.config_hash == r.config_hash and again.stem() == r.stem()


def test_an_interrupted_run_is_written_once_by_the_harness(probe: Benchmark, tmp_path: Path) -> None:
    from dataclasses import replace

    bench = replace(probe, runner="probe-interrupt")
    with pytest.raises(KeyboardInterrupt) as exc:
        execute(PlannedRun(bench, {"n": 3}, {}), RunOptions(threads=1, interrupted_dir=tmp_path))
    (f,) = tmp_path.glob("*.json")
    assert exc.value.record == f  # type: ignore[attr-defined]
    doc = json.loads(f.read_text())
    assert doc["status"] == "interrupted" and doc["metrics"] == {} and "no figures were kept" in doc["error"]["message"]
    assert doc["config"] == {"threads": 1, "probe": {"setting": 1}}


def test_only_the_harness_hashes_configs_and_stamps_records() -> None:
    """The 4 copies of stamping and hashing that runners and sweeps had are gone: a new one fails here."""
    hashing, stamping = [], []
    for path in AIBENCH.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(AIBENCH).as_posix()
        if re.search(r"(?<!def )\bconfig_hash\(", text) and rel not in ("harness.py", "spec.py"):
            hashing.append(rel)
        if re.search(r"\.fingerprint\(\)|\.code_version\(\)", text) and rel != "harness.py":
            stamping.append(rel)
    assert not hashing and not stamping, (hashing, stamping)
