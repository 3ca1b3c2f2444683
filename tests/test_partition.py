"""aibench partition (Neurosurgeon): per-layer profiles, per-type models, the split decision, bad input.

Everything runs on a tiny layered network registered for the test (milliseconds per layer) and on --quick
sweeps; no wall-clock speed is asserted."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aibench import registry
from aibench.spec import Param

TINY_SPLIT = "component/tiny-split"


def _tiny_net() -> Any:
    import torch
    from torch import nn

    from aibench.networks.tonic import ArgMax

    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
        ("norm1", nn.LocalResponseNorm(3)), ("flatten", nn.Flatten()), ("fc1", nn.Linear(8 * 8 * 8, 16)),
        ("relu2", nn.ReLU()), ("fc2", nn.Linear(16, 5)), ("prob", nn.Softmax(dim=-1)), ("argmax", ArgMax()),
    ])).eval()


def _tiny_factory(params: dict[str, Any], device: Any, dtype: Any) -> Any:
    import torch

    from aibench.sut.task import InferenceTask

    net = _tiny_net().to(device=device, dtype=dtype)
    data = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return InferenceTask(model=net, device=device, num_samples=4, load_sample=lambda i: data[i], network=net)


@pytest.fixture
def tiny_split() -> Iterator[registry.Benchmark]:
    from aibench.loadgen.metrics import LOADGEN_METRICS

    registry.discover()
    bench = registry.Benchmark(
        kind="component", name="tiny-split", description="a tiny layered CNN for partition tests",
        source="aibench tests", runner="loadgen", factory=_tiny_factory,
        params=registry.ParamSet((Param("batch", int, 1, "batch", minimum=1), Param("device", str, "cpu", "device"),
                                  Param("dtype", str, "float32", "dtype"))),
        metrics=LOADGEN_METRICS, primary_metric="samples_per_s")
    registry.register(bench)
    try:
        yield bench
    finally:
        registry._REGISTRY.pop(bench.id, None)


FAST = ["--min-reps", "2", "--max-reps", "3", "--min-time", "0"]


# ------------------------------------------------------------------------------------------------ profile

def test_profile_writes_per_layer_parts(cli: Any, tiny_split: Any, tmp_path: Path) -> None:
    from aibench.results.store import load_results

    code, out, err = cli("partition", "profile", TINY_SPLIT, "--side", "device", "--out", str(tmp_path), *FAST,
                         "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert [r["name"] for r in shown["layers"]] == ["conv1", "relu1", "pool1", "norm1", "flatten", "fc1", "relu2",
                                                    "fc2", "prob", "argmax"]
    assert shown["input_bytes"] == 3 * 16 * 16 * 4
    assert shown["side"]["threads_effective"] == 1 and shown["side"]["name"] == "device"
    (result,) = load_results([tmp_path])
    assert list(result.parts["layer"]) == [r["name"] for r in shown["layers"]]
    conv = result.parts["layer"]["conv1"]
    assert conv["unit"] == "s" and conv["seen"] >= 2 and conv["summary"]["median"] > 0
    layers = result.method["partition"]["layers"]
    assert layers[0]["type"] == "conv" and layers[0]["out_bytes"] == 8 * 16 * 16 * 4
    assert layers[-1]["type"] == "softmax" and layers[-1]["out_bytes"] == 8  # one int64 class id
    assert result.metrics["layer_fc1_median"]["of"] == "parts.layer.fc1"
    code, out, err = cli("report", str(tmp_path))
    assert code == 0 and "tiny-split" in out


def test_server_side_defaults_to_every_core(tiny_split: Any) -> None:
    import torch

    from aibench.partition.sides import side_for, usable_cpus

    s = side_for("server")
    assert s.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert s.threads == usable_cpus()
    assert side_for("device").threads == 1


def test_cut_composition_equals_the_network(tiny_split: Any) -> None:
    import torch

    from aibench.networks import run_layers
    from aibench.partition.profile import load_network
    from aibench.partition.sides import side_for

    net = load_network(TINY_SPLIT, side_for("device"))
    with torch.inference_mode():
        whole = net.module(net.x)
        for j in range(len(net.layers) + 1):
            head = run_layers(net.module, net.x, 0, j)
            assert torch.equal(run_layers(net.module, head, j), whole)


# ---------------------------------------------------------------------------------------------------- fit

def test_fit_recovers_a_linear_and_a_log_law() -> None:
    from aibench.partition.models import fit, predict_one

    rng = random.Random(0)
    pts = []
    for _ in range(40):
        w = 10 ** rng.uniform(3, 9)
        pts.append({"type": "conv", "work": w, "time_s": (2e-5 + 3e-11 * w) * rng.uniform(0.98, 1.02)})
        r = 1e9 + 2e8 * math.log(w)  # throughput growing with the log of the size
        pts.append({"type": "pool", "work": w, "time_s": w / r * rng.uniform(0.98, 1.02)})
    models = fit(pts)
    assert models["conv"]["form"] == "linear" and models["conv"]["heldout"]["chosen"]["mape"] < 0.05
    assert models["pool"]["form"] == "log" and models["pool"]["heldout"]["chosen"]["mape"] < 0.05
    assert predict_one(models["conv"], 1e8) == pytest.approx(2e-5 + 3e-3, rel=0.05)


def test_sweep_excludes_real_layers() -> None:
    from aibench.partition.layers import signature
    from aibench.partition.models import QUICK_COUNTS, real_layer_signatures, sweep, sweep_timing

    real = real_layer_signatures(["dig"])
    assert ("conv", ("filter_stride_sq_x_filters", 500.0), ("groups", 1.0), ("input_maps", 78400.0)) in real
    quick = sweep_timing(min_reps=1, min_time_s=0)
    points, _ = sweep({"conv": 2, "fc": 2}, 1e6, real, timing=quick)
    assert len(points) == 4 and all(signature({"type": p["type"], "vars": p["vars"]}) not in real for p in points)
    # the same seed draws the same configurations first: declared "real", they are dropped and others drawn
    everything = {signature({"type": p["type"], "vars": p["vars"]}) for p in points}
    again, excluded = sweep({"conv": 2, "fc": 2}, 1e6, everything, timing=quick)
    assert excluded >= 2 and len(again) == 4 and all(signature({"type": p["type"], "vars": p["vars"]}) not in everything
                                 for p in again)
    assert set(QUICK_COUNTS) >= {"conv", "fc", "pool", "lc", "act", "norm", "softmax"}


def test_fit_command_writes_a_profile_and_checks_real_layers(cli: Any, tiny_split: Any, tmp_path: Path) -> None:
    from aibench.results.store import load_results

    code, _, err = cli("partition", "profile", TINY_SPLIT, "--out", str(tmp_path / "r"), *FAST)
    assert code == 0, err
    prof = tmp_path / "device.json"
    code, out, err = cli("partition", "fit", "--side", "device", "--quick", "--out", str(prof),
                         "--check", str(tmp_path / "r"), "--json")
    assert code == 0, err
    shown = json.loads(out)
    doc = json.loads(prof.read_text())
    assert doc["schema"] == "aibench-partition-profile" and doc["side"]["threads_effective"] == 1
    for kind in ("conv", "fc", "pool", "act", "norm", "softmax"):
        m = doc["models"][kind]
        assert m["form"] in ("linear", "log", "loglog") and m["heldout"]["n"] >= 1
        assert set(m["heldout"]["by_form"]) == {"linear", "log", "loglog"}
    # the layers measured at 20 µs or more, and only they, make each type's error (which depends on the CPU)
    (result,) = load_results([tmp_path / "r"])
    timed = {la["type"] for la in result.method["partition"]["layers"]
             if result.parts["layer"][la["name"]]["summary"]["median"] >= 20e-6}
    assert set(shown["check"]["by_type"]) == timed and timed
    (net,) = shown["check"]["by_network"].values()
    assert net["measured_s"] > 0 and net["predicted_s"] > 0
    # an existing profile is not replaced without --force
    code, _, err = cli("partition", "fit", "--quick", "--out", str(prof))
    assert code == 2 and "exists" in err
    # and --force never replaces a result file (here the very input it checks against), before any sweep
    (result,) = (tmp_path / "r").glob("*.json")
    before = result.read_bytes()
    code, _, err = cli("partition", "fit", "--quick", "--force", "--check", str(result), "--out", str(result))
    assert code == 2 and "input" in err and result.read_bytes() == before


# ------------------------------------------------------------------------------------------------- decide

def _brute(names: list[str], tm: list[float], tc: list[float], d: list[int], up: float, down: float, rtt: float,
           k: float) -> tuple[int, list[float]]:
    totals = []
    n = len(names)
    for j in range(n + 1):
        t = sum(tm[:j]) + (1 + k) * sum(tc[j:])
        if j < n:
            t += 8 * d[j] / (up * 1e6) + 8 * d[n] / (down * 1e6) + rtt / 1e3
        totals.append(t)
    best = min(range(n + 1), key=lambda j: (totals[j], j))
    return best, totals


def test_decision_equals_brute_force_on_synthetic_costs() -> None:
    from aibench.partition.decide import choose, custom_link, price_cuts

    rng = random.Random(7)
    seen = set()
    for _ in range(300):
        n = rng.randint(1, 12)
        names = [f"l{i}" for i in range(n)]
        tm = [rng.uniform(0, 0.05) for _ in range(n)]
        tc = [x / rng.uniform(1, 20) for x in tm]
        d = [rng.randint(1, 2_000_000) for _ in range(n + 1)]
        up, rtt, k = rng.uniform(0.5, 100), rng.uniform(0, 100), rng.choice([0, 0, 1, 4])
        link = custom_link(up, rtt, up / 2)
        cuts = price_cuts(names, tm, tc, d, link, k)
        best, totals = _brute(names, tm, tc, d, up, up / 2, rtt, k)
        assert choose(cuts).j == best
        assert [c.total_s for c in cuts] == pytest.approx(totals)
        seen.add("server" if best == 0 else "device" if best == n else "interior")
    assert seen == {"server", "device", "interior"}  # the synthetic cases exercise every kind of answer


def test_energy_decision_equals_brute_force() -> None:
    from aibench.partition.decide import choose, custom_link, price_cuts

    rng = random.Random(3)
    for _ in range(100):
        n = rng.randint(1, 8)
        tm = [rng.uniform(0, 0.05) for _ in range(n)]
        pm = [rng.uniform(1, 5) for _ in range(n)]
        d = [rng.randint(1, 500_000) for _ in range(n + 1)]
        link, pu = custom_link(rng.uniform(1, 20), 0.0), rng.uniform(0.5, 3)
        cuts = price_cuts([str(i) for i in range(n)], tm, [0.0] * n, d, link, 0.0, pm, pu)
        energies = [sum(t * p for t, p in zip(tm[:j], pm[:j], strict=True))
                    + (pu * (8 * d[j] + 8 * d[n]) / (link.up_mbit * 1e6) if j < n else 0.0) for j in range(n + 1)]
        assert choose(cuts, "energy").j == min(range(n + 1), key=lambda j: (energies[j], j))


def test_named_links_are_derived_from_the_papers_upload_times() -> None:
    from aibench.partition.decide import named_link

    for name, ms in (("3g", 870), ("lte", 180), ("wifi", 95)):
        link = named_link(name)
        assert 152_000 * 8 / (link.up_mbit * 1e6) == pytest.approx(ms / 1e3)
        assert link.source.startswith("derived") and link.rtt_ms == 0
    # a round trip and a downlink given with a named link are applied and said
    link = named_link("lte", 40.0, 2.0)
    assert (link.rtt_ms, link.down_mbit) == (40.0, 2.0) and link.up_mbit == named_link("lte").up_mbit
    assert "round trip 40 ms given" in link.source and "download 2 Mbit/s given" in link.source


@pytest.fixture
def profiles(tmp_path: Path) -> tuple[Path, Path]:
    """Two synthetic platform profiles: a slow device and a server 10x faster."""
    from aibench.partition.layers import LAYER_TYPES
    from aibench.partition.models import PROFILE_SCHEMA, PROFILE_VERSION

    def write(name: str, per_work: float) -> Path:
        doc = {"schema": PROFILE_SCHEMA, "schema_version": PROFILE_VERSION, "side": {"name": name, "dtype": "float32"},
               "models": {t: {"form": "linear", "coef": [1e-6, per_work]} for t in LAYER_TYPES}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    return write("device", 1e-9), write("server", 1e-10)


def test_choose_prints_every_cut_and_the_choice(cli: Any, tiny_split: Any, profiles: tuple[Path, Path]) -> None:
    dev, srv = profiles
    base = ["partition", "choose", TINY_SPLIT, "--device-profile", str(dev), "--server-profile", str(srv)]
    code, out, err = cli(*base, "--network", "lte", "--json", "--cut", "pool1")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["j"] for c in doc["cuts"]] == list(range(11)) and doc["layers"] == 10
    assert doc["cuts"][0]["layer"] == "input" and doc["cuts"][0]["device_s"] == 0
    assert doc["cuts"][10]["upload_s"] == 0 and doc["cuts"][10]["server_s"] == 0
    assert doc["cut"]["j"] == 3 and doc["link"]["source"].startswith("derived")
    best = min(doc["cuts"], key=lambda c: (c["total_s"], c["j"]))
    assert doc["chosen"] == {"j": best["j"], "layer": best["layer"]}
    # a fast link and a loaded server move the choice; a slow link keeps everything on the device
    _, out, _ = cli(*base, "--bandwidth-mbit", "10000", "--rtt-ms", "0", "--json")
    assert json.loads(out)["chosen"]["j"] == 0
    _, out, _ = cli(*base, "--bandwidth-mbit", "10000", "--server-load", "100", "--json")
    assert json.loads(out)["chosen"]["j"] == 10
    # --rtt-ms with a named link is priced (half each way), as `run scenario neurosurgeon` runs it
    _, out, _ = cli(*base, "--network", "lte", "--json")
    _, out40, _ = cli(*base, "--network", "lte", "--rtt-ms", "40", "--json")
    plain, rtt = json.loads(out)["cuts"][0], json.loads(out40)["cuts"][0]
    assert rtt["total_s"] - plain["total_s"] == pytest.approx(0.040)
    code, out, err = cli(*base, "--network", "3g", "--target", "energy", "--device-power-w", "2",
                         "--radio-power-w", "1")
    assert code == 0, err
    assert "model inputs given by the user (not measured)" in out and "chosen: j=" in out


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args, code, text", [
    (["partition", "profile", "component/imx"], 2, "unknown benchmark"),
    (["partition", "profile", "component/tiny-lg"], 2, "not a sequence of named layers"),
    (["partition", "profile", "micro/gemm"], 2, "only component benchmarks"),
    (["partition", "profile", TINY_SPLIT, "--threads", "0"], 2, "--threads"),
    (["partition", "choose", TINY_SPLIT, "--bandwidth-mbit", "0"], 2, "above 0"),
    (["partition", "choose", TINY_SPLIT, "--bandwidth-mbit", "-3"], 2, "above 0"),
    (["partition", "choose", TINY_SPLIT, "--network", "5g"], 2, "3g, lte, wifi"),
    (["partition", "choose", TINY_SPLIT], 2, "give a link"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--bandwidth-mbit", "10"], 2, "not both"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--rtt-ms", "-1"], 2, "--rtt-ms"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--download-mbit", "0"], 2, "--download-mbit"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--server-load", "-1"], 2, "--server-load"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--target", "energy"], 2, "--radio-power-w"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--target", "energy", "--radio-power-w", "1"], 2,
     "no measured power"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--cut", "pool9"], 2, "no layer 'pool9'"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--cut", "99"], 2, "no cut 99"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--device-profile", "MISSING"], 4, "no such file"),
    # bad usage is told before a missing profile (which would send the user off to fit one)
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--cut", "pool9", "--device-profile", "MISSING"], 2,
     "no layer 'pool9'"),
    (["partition", "choose", "component/imx", "--network", "lte", "--device-profile", "MISSING"], 2,
     "unknown benchmark"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--device-profile", "FOREIGN"], 4,
     "not an aibench platform profile"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--device-profile", "EMPTY"], 4, "it has no models"),
    (["partition", "choose", TINY_SPLIT, "--network", "lte", "--device-profile", "NOFC"], 4,
     "no model for layer type 'fc' (layer fc1); it models conv"),
    (["partition", "fit", "--quick", "--check", "DEVICE"], 4, "a platform profile (`aibench partition fit`), not a "
     "result file"),
])
def test_bad_input_is_one_line_and_a_code(cli: Any, tiny_bench: Any, tiny_split: Any, profiles: tuple[Path, Path],
                                          tmp_path: Path, args: list[str], code: int, text: str) -> None:
    dev, srv = profiles
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"schema": "something-else"}')
    damaged = {}
    for name, keep in (("EMPTY", ()), ("NOFC", tuple(t for t in json.loads(dev.read_text())["models"] if t != "fc"))):
        doc = json.loads(dev.read_text())
        doc["models"] = {t: m for t, m in doc["models"].items() if t in keep}
        damaged[name] = tmp_path / f"{name}.json"
        damaged[name].write_text(json.dumps(doc))
    args = [{"MISSING": str(tmp_path / "nope.json"), "FOREIGN": str(foreign), "DEVICE": str(dev),
             **{k: str(v) for k, v in damaged.items()}}.get(a, a) for a in args]
    if args[1] == "choose" and "--device-profile" not in args:
        args += ["--device-profile", str(dev)]
    if args[1] == "choose":
        args += ["--server-profile", str(srv)]
    if args[1] == "profile":
        args += ["--out", str(tmp_path / "r"), *FAST]
    if args[1] == "fit":
        args += ["--out", str(tmp_path / "fit.json")]
    got, out, err = cli(*args)
    assert got == code, (out, err)
    assert text in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cpu_quota_is_applied_or_refused_with_the_reason(cli: Any, tiny_split: Any, tmp_path: Path) -> None:
    from aibench.partition.sides import quota_interface
    from aibench.results.store import load_results

    found = quota_interface()
    code, out, err = cli("partition", "profile", TINY_SPLIT, "--cpu-quota", "0.5", "--out", str(tmp_path), *FAST,
                         "--json")
    if isinstance(found, str):
        assert code == 3 and "--cpu-quota" in err
    else:
        assert code == 0, err
        shown = json.loads(out)
        quota = shown["side"]["quota"]
        assert quota["cores"] == 0.5 and quota["cgroup"] == found[0]
        assert not Path(quota["group"]).exists()  # the group is removed afterwards
        # under a quota each layer's figure is its mean call over at least four CFS periods, not the median
        assert all(r["statistic"] == "mean" and r["time_s"] == r["mean_s"] for r in shown["layers"])
        (result,) = load_results([tmp_path])
        rule = result.method["partition"]["layer_statistic"]
        assert rule["statistic"] == "mean" and rule["span_s"] >= 4 * quota["period_us"] / 1e6
        assert result.metrics["layer_conv1_mean"]["statistic"] == "mean" and "layers_sum_mean" in result.metrics
        assert min(r["n"] for r in shown["layers"]) > 3  # --max-reps 3 does not cut the periods short


def test_timing_under_a_quota_spans_four_periods_and_takes_the_mean() -> None:
    """One rule for the profile's layers and the fit's sweep points (models.sweep_timing is a Timing)."""
    import time

    from aibench.partition.models import sweep_timing
    from aibench.partition.profile import QUOTA_PERIODS, Timing

    plain = Timing(min_reps=1, max_reps=3, min_time_s=0.01)
    capped = Timing(min_reps=1, max_reps=3, min_time_s=0.01, period_s=0.005)
    calls = [0.001] * 9 + [0.031]  # throttled on one call in ten: the median misses it, the mean does not
    assert plain.figure(calls) == 0.001 and capped.figure(calls) == pytest.approx(0.004)
    assert (plain.statistic, capped.statistic) == ("median", "mean")
    assert len(plain.times(lambda: time.sleep(0.001), lambda: None)) == 3
    spanned = capped.times(lambda: time.sleep(0.001), lambda: None)
    assert math.fsum(spanned) >= QUOTA_PERIODS * 0.005 and len(spanned) > 3
    assert sweep_timing(0.005).statistic == "mean" and sweep_timing(0.005).span_s == 0.03  # its min_time_s
    assert sweep_timing().describe()["statistic"] == "median"


def _cgroups_or_skip() -> Path:
    from aibench.partition.sides import quota_interface

    found = quota_interface()
    if isinstance(found, str):
        pytest.skip(f"cannot make cgroups on this machine: {found}")
    return found[1]


def _child(code: str, *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


HOLD_A_GROUP = """
import sys, time
from aibench.partition.sides import cpu_quota
with cpu_quota(0.5) as q:
    print(q["group"], flush=True)
    time.sleep(60)
"""

START_A_GROUP = """
from aibench.partition.sides import cpu_priority
with cpu_priority():
    pass
"""


def test_groups_left_by_sigkill_are_swept_at_the_next_start(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the group stays, empty; the next process that makes a group removes it, but
    never a group whose owner lives or that holds a task."""
    import signal
    import subprocess

    parent = _cgroups_or_skip()
    child = _child(HOLD_A_GROUP)
    line = child.stdout.readline().strip()  # type: ignore[union-attr]
    if not line:
        child.wait(10)
        pytest.fail(f"the child made no group: {child.stderr.read()}")  # type: ignore[union-attr]
    group = Path(line)
    assert group.parent == parent and group.name == f"aibench-partition-{child.pid}-quota"
    assert str(child.pid) in (group / "cgroup.procs").read_text().split()
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert group.is_dir() and not (group / "cgroup.procs").read_text().strip()  # left behind, empty
    sleeper = subprocess.Popen(["sleep", "60"])
    busy = parent / f"aibench-partition-{child.pid}-prio-{sleeper.pid}"  # its owner is dead, but it has a task
    owned = parent / f"aibench-partition-{sleeper.pid}-quota"  # empty, but its owner lives
    try:
        busy.mkdir()
        owned.mkdir()
        (busy / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        nxt = _child(START_A_GROUP)
        assert nxt.wait(30) == 0, nxt.stderr.read()  # type: ignore[union-attr]
        assert not group.exists()
        assert busy.is_dir() and owned.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
        for g in (busy, owned, group):
            if g.exists():
                g.rmdir()


def test_sigterm_of_the_evaluation_removes_its_groups(tmp_path: Path) -> None:
    """scripts/partition_eval.py, terminated while a group of its own is in place (the server's priority for
    its fit, or a device quota): the group is gone and it exits 143."""
    import signal
    import subprocess
    import sys
    import time

    parent = _cgroups_or_skip()
    script = Path(__file__).resolve().parents[1] / "scripts" / "partition_eval.py"
    child = subprocess.Popen([sys.executable, str(script), "--out", str(tmp_path), "--nets", "pos", "--quotas", "0.5",
                              "--quick"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        mine: list[Path] = []
        while not mine and child.poll() is None and time.monotonic() < deadline:
            mine = list(parent.glob(f"aibench-partition-{child.pid}-*"))
            time.sleep(0.02)
        assert mine, f"no group appeared: {child.poll()}"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not list(parent.glob(f"aibench-partition-{child.pid}-*"))


def test_batch_is_priced_per_layer(tiny_split: Any) -> None:
    """Cut j's upload is the output of layer j: the same bytes a real split would send."""
    import torch

    from aibench.networks import run_layers
    from aibench.partition.profile import describe_network, load_network
    from aibench.partition.sides import side_for

    net = load_network(TINY_SPLIT, side_for("device"), batch=2)
    shape = describe_network(net)
    for j, layer in itertools.islice(enumerate(shape["layers"], start=1), None):
        y = run_layers(net.module, net.x, 0, j)
        assert layer["out_bytes"] == y.numel() * y.element_size()
        assert layer["out_shape"] == list(y.shape) and y.shape[0] == 2
    assert shape["input_bytes"] == net.x.numel() * net.x.element_size() and isinstance(net.x, torch.Tensor)


# ---------------------------------------------------------------------------------------------------- link

def test_token_bucket_paces_to_the_rate_on_a_fake_clock() -> None:
    from aibench.partition.link import TokenBucket

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s * 1.3 + 0.001  # every wake-up late: the credit makes it up

    bucket = TokenBucket(8e6, clock=lambda: now[0], sleep=sleep)  # 1 MB/s
    sent = 0
    while sent < 2_000_000:
        bucket.take(bucket.chunk)
        sent += bucket.chunk
    assert now[0] == pytest.approx(sent / 1e6, rel=0.01)


def test_shaped_link_rate_within_5_percent() -> None:
    """Measured against the receiver's acknowledgement; from 1 Mbit/s up to what loopback carries here (at
    most 1 Gbit/s). A rate is retried once: a loaded machine can stall one transfer."""
    from aibench.partition.link import measure_rate, raw_rate

    ceiling = raw_rate(16 * 1024 * 1024) / 4
    rates = [r for r in (1e6, 10e6, 100e6, 1e9) if r <= ceiling] or [1e6]
    for rate in rates:
        checks = [measure_rate(rate, seconds=0.15)]
        if abs(checks[0].error) > 0.05:
            checks.append(measure_rate(rate, seconds=0.15))
        assert min(abs(c.error) for c in checks) < 0.05, (rate, [c.error for c in checks])


def test_link_round_trip_delay_is_added() -> None:
    from aibench.partition.link import _timed_transfer
    from aibench.sut.transport import HEADER_SIZE

    wire, dt = _timed_transfer(100e6, 10_000, rtt_s=0.06)
    assert dt >= 0.06 and wire == 10_000 + HEADER_SIZE


def test_link_bad_input() -> None:
    import socket

    from aibench.errors import UnavailableError, UsageError
    from aibench.partition.link import TAG_DATA, TokenBucket, ack_server, connect
    from aibench.sut.transport import HEADER, MAGIC, Frame, encode_header

    for rate in (0, -1, float("nan")):
        with pytest.raises(UsageError):
            TokenBucket(rate)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(UnavailableError, match="cannot reach the peer"):
        connect("127.0.0.1", port, timeout_s=1)
    # an oversized frame is refused from its header; a truncated one when the stream ends inside it
    with ack_server(max_bytes=1000) as (host, p, errors):
        with connect(host, p) as sock:
            sock.sendall(HEADER.pack(MAGIC, TAG_DATA, 0, 0, 0, 1, 10_000))
            sock.recv(1)
    assert "over the limit" in str(errors[0])
    with ack_server() as (host, p, errors):
        with connect(host, p) as sock:
            sock.sendall(encode_header(Frame(TAG_DATA, b"x" * 100, id=1)) + b"x" * 10)
    assert "ended inside" in str(errors[0])


# --------------------------------------------------------------------------------------------------- energy

def test_layer_power_is_metered_where_a_counter_exists(tiny_split: Any, tmp_path: Path) -> None:
    """A fake powercap tree stands in for RAPL: every layer's power is a measured reading (this VM has none:
    there the reading says unavailable, with the reason)."""
    from aibench.partition.profile import profile, side_meter
    from aibench.partition.sides import side_for

    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    side = side_for("device")
    result = profile(TINY_SPLIT, side, min_reps=1, max_reps=2, min_time_s=0,
                     meter=side_meter(side, powercap_root=tmp_path / "powercap"))
    powers = [la["power"] for la in result.method["partition"]["layers"]]
    assert all(p["provenance"] == "measured" and p["avg_power_w"] == 0.0 for p in powers)
    result = profile(TINY_SPLIT, side, min_reps=1, max_reps=2, min_time_s=0,
                     meter=side_meter(side, powercap_root=tmp_path / "nowhere"))
    assert all(la["power"]["provenance"] == "unavailable" and la["power"]["reason"] == "no_powercap"
               for la in result.method["partition"]["layers"])


def test_energy_uses_the_measured_power_of_the_device_fit(cli: Any, tiny_split: Any, profiles: tuple[Path, Path]
                                                          ) -> None:
    dev, srv = profiles
    doc = json.loads(dev.read_text())
    for m in doc["models"].values():
        m["power"] = {"provenance": "measured", "median_w": 3.0, "n": 4, "note": "RAPL package + DRAM"}
    dev.write_text(json.dumps(doc))
    code, out, err = cli("partition", "choose", TINY_SPLIT, "--device-profile", str(dev), "--server-profile",
                         str(srv), "--network", "wifi", "--target", "energy", "--radio-power-w", "1.5", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert "measured during the device sweep" in shown["energy_inputs"]
    assert "radio 1.5 W given by the user" in shown["energy_inputs"]
    last = shown["cuts"][-1]
    assert last["energy_j"] == pytest.approx(3.0 * last["device_s"])


def test_choose_shows_measured_costs_beside(cli: Any, tiny_split: Any, tiny_bench: Any, profiles: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    from aibench.results.store import load_results

    dev, srv = profiles
    for side in ("device", "server"):
        code, _, err = cli("partition", "profile", TINY_SPLIT, "--side", side, "--device", "cpu",
                           "--out", str(tmp_path / side), *FAST)
        assert code == 0, err
    (d,) = (tmp_path / "device").glob("*.json")
    (s,) = (tmp_path / "server").glob("*.json")
    base = ["partition", "choose", TINY_SPLIT, "--device-profile", str(dev), "--server-profile", str(srv),
            "--network", "wifi"]
    code, out, err = cli(*base, "--measured-device", str(d), "--measured-server", str(s), "--json")
    assert code == 0, err
    doc = json.loads(out)
    medians = [e["summary"]["median"] for e in load_results([d])[0].parts["layer"].values()]
    assert doc["measured"]["cuts"][-1]["device_s"] == pytest.approx(sum(medians))
    best = min(doc["measured"]["cuts"], key=lambda c: (c["total_s"], c["j"]))
    assert doc["measured"]["optimum"]["j"] == best["j"] and 0 < doc["measured"]["chosen_vs_optimum"] <= 1
    # a profile of another network is refused
    other = tmp_path / "other.json"
    foreign = json.loads(d.read_text())
    foreign["benchmark"].update({"id": "component/dig", "name": "dig"})
    other.write_text(json.dumps(foreign))
    code, _, err = cli(*base, "--measured-device", str(other), "--measured-server", str(s))
    assert code == 2 and "not of component/tiny-split" in err
    code, _, err = cli(*base, "--measured-device", str(d))
    assert code == 2 and "both" in err
    # swapped sides, or one file for both, are run but said (a user may mean it; never silently)
    code, out, err = cli(*base, "--measured-device", str(s), "--measured-server", str(s))
    assert code == 0 and "chosen: j=" in out
    assert f"warning: --measured-device {s} was measured for the server side" in err
    assert "--measured-device and --measured-server are the same file" in err
    code, _, err = cli(*base[:3], "--device-profile", str(srv), "--server-profile", str(srv), "--network", "wifi")
    assert code == 0 and "--device-profile" in err and "for the server side" in err and "same file" in err
    # a profile result whose parts lack a layer is a damaged file: exit 4, not a crash
    broken = json.loads(d.read_text())
    broken["parts"]["layer"].pop("conv1")
    other.write_text(json.dumps(broken))
    code, _, err = cli(*base, "--measured-device", str(other), "--measured-server", str(s))
    assert code == 4 and "damaged `partition profile` result" in err and "'conv1'" in err, err
    assert len(err.strip().splitlines()) == 1
