"""Meters: arithmetic with injected fake NVML and RAPL backends, the unavailable paths, the window around
the timed rounds, and a real run on this machine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aibench import meters
from aibench.measure.timer import KernelTimer, TimerSettings
from aibench.meters import rapl
from aibench.meters.core import Sampler, Window
from aibench.meters.fake import FakeGpu, FakeNvml
from aibench.meters.nvml import integrate_power
from aibench.results.schema import Result

NO_POWERCAP = "/nonexistent/powercap"


class FakeCuda:
    """The torch.cuda memory functions CudaMemoryMeter calls."""

    def __init__(self) -> None:
        self.resets: list[int] = []
        self.allocated = 1000

    def reset_peak_memory_stats(self, i: int) -> None:
        self.resets.append(i)

    def memory_allocated(self, i: int) -> int:
        return self.allocated

    def max_memory_allocated(self, i: int) -> int:
        return 5000 + i

    def max_memory_reserved(self, i: int) -> int:
        return 8000 + i


def make_zone(path: Path, name: str, energy: int, max_range: int = 1_000_000_000) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def set_energy(path: Path, energy: int) -> None:
    (path / "energy_uj").write_text(f"{energy}\n")


def new_result() -> Result:
    return Result(benchmark={"id": "micro/x", "kind": "micro", "name": "x", "source": "t"}, params={},
                  config_hash="0" * 16)


# ---- RAPL ---------------------------------------------------------------------------------------------------

def test_energy_delta_handles_one_wrap() -> None:
    assert rapl.energy_delta_uj(100, 350, 1000) == (250, 0)
    assert rapl.energy_delta_uj(900, 50, 1000) == (150, 1)
    with pytest.raises(ValueError):
        rapl.energy_delta_uj(900, 50, None)


def test_rapl_packages_and_dram_in_microjoules_with_wrap(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    p0 = make_zone(root / "intel-rapl:0", "package-0", 10_000_000)
    core = make_zone(root / "intel-rapl:0" / "intel-rapl:0:0", "core", 5)  # part of the package: not added
    dram = make_zone(root / "intel-rapl:0" / "intel-rapl:0:1", "dram", 2_000_000)
    p1 = make_zone(root / "intel-rapl:1", "package-1", 999_000_000, max_range=1_000_000_000)
    make_zone(root / "intel-rapl-mmio:0", "package-0", 0)  # MMIO duplicate of package 0: not read
    with meters.window("cpu", powercap_root=root) as w:
        set_energy(p0, 13_000_000)  # +3 J
        set_energy(core, 10_000_000)
        set_energy(dram, 2_500_000)  # +0.5 J
        set_energy(p1, 1_000_000)  # wrapped: +1 J + 1 J
    data = w.readings()
    by_scope = {r["scope"]: r for r in data["energy"]["readings"]}
    assert set(by_scope) == {"package-0", "package-0/dram", "package-1"}
    assert by_scope["package-0"]["energy_j"] == pytest.approx(3.0)
    assert by_scope["package-0/dram"]["energy_j"] == pytest.approx(0.5)
    assert by_scope["package-1"]["energy_j"] == pytest.approx(2.0)
    assert by_scope["package-1"]["counter"]["wraps"] == 1
    assert all(r["provenance"] == "measured" and r["counter"]["unit"] == "uJ" for r in by_scope.values())
    total = data["energy"]["total"]
    assert total["provenance"] == "measured"
    assert total["energy_j"] == pytest.approx(5.5)
    assert total["avg_power_w"] == pytest.approx(5.5 / total["duration_s"])
    for r in by_scope.values():
        win = r["window"]
        assert win["duration_s"] >= 0 and win["start"] <= win["end"]


def test_rapl_unavailable_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with meters.window("cpu", powercap_root=tmp_path / "missing") as w:
        pass
    total = w.readings()["energy"]["total"]
    assert (total["provenance"], total["reason"]) == ("unavailable", "no_powercap")
    assert "energy_j" not in total

    (tmp_path / "empty").mkdir()
    with meters.window("cpu", powercap_root=tmp_path / "empty") as w:
        pass
    assert w.readings()["energy"]["total"]["reason"] == "no_rapl_zones"

    make_zone(tmp_path / "locked" / "intel-rapl:0", "package-0", 1)
    real = rapl._read_int

    def deny(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(rapl, "_read_int", deny)
    with meters.window("cpu", powercap_root=tmp_path / "locked") as w:
        pass
    reading = w.readings()["energy"]["readings"][0]
    assert (reading["provenance"], reading["reason"], reading["scope"]) == (
        "unavailable", "permission_denied", "package-0")


def test_partial_cpu_energy_lists_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pc"
    p0 = make_zone(root / "intel-rapl:0", "package-0", 0)
    make_zone(root / "intel-rapl:0" / "intel-rapl:0:0", "dram", 0)
    real = rapl._read_int
    monkeypatch.setattr(rapl, "_read_int", lambda p: (_ for _ in ()).throw(PermissionError(13, "denied"))
                        if "intel-rapl:0:0" in str(p) and p.name == "energy_uj" else real(p))
    with meters.window("cpu", powercap_root=root) as w:
        set_energy(p0, 4_000_000)
    total = w.readings()["energy"]["total"]
    assert total["energy_j"] == pytest.approx(4.0)
    assert total["parts"] == ["package-0"] and total["missing"] == ["package-0/dram"]


# ---- NVML ---------------------------------------------------------------------------------------------------

def test_integrate_power_trapezoid_in_milliwatts() -> None:
    # 1 s from 1 W to 3 W (2 J) then 2 s at 3 W (6 J); order of samples does not matter.
    assert integrate_power([(1.0, 3000.0), (0.0, 1000.0), (3.0, 3000.0)]) == pytest.approx(8.0)
    assert integrate_power([(0.0, 5000.0)]) == 0.0


def test_nvml_energy_counter_in_millijoules_summed_over_devices() -> None:
    nv = FakeNvml([FakeGpu("A", energy_mj=[1_000, 6_000], power_mw=[200_000.0]),
                   FakeGpu("B", energy_mj=[50_000, 52_500], power_mw=[100_000.0])])
    cuda = FakeCuda()
    with meters.window(["cuda:0", "cuda:1"], nvml=nv, cuda=cuda, powercap_root=NO_POWERCAP) as w:
        pass
    data = w.readings()
    gpu = [r for r in data["energy"]["readings"] if r["domain"] == "gpu"]
    assert [(r["scope"], r["device_name"], r["provenance"]) for r in gpu] == [
        ("cuda:0", "A", "measured"), ("cuda:1", "B", "measured")]
    assert [r["energy_j"] for r in gpu] == pytest.approx([5.0, 2.5])
    assert gpu[0]["counter"] == {"source": "nvmlDeviceGetTotalEnergyConsumption", "unit": "mJ",
                                 "start": 1_000, "end": 6_000}
    total = data["energy"]["total"]
    assert total["scope"] == "cuda:0+cuda:1" and total["provenance"] == "measured"
    assert total["energy_j"] == pytest.approx(7.5) and total["parts"] == ["cuda:0", "cuda:1"]
    assert nv.inits == 1 and nv.shutdowns == 1
    # The host's CPU energy is still reported, but not added to a GPU run's total.
    assert any(r["meter"] == "rapl" and r["reason"] == "no_powercap" for r in data["energy"]["readings"])
    assert cuda.resets == [0, 1]
    assert data["memory"]["cuda"]["peak_allocated_bytes"] == 5001  # last device merged under "cuda"
    util = data["utilisation"]["gpu"]
    assert [u["scope"] for u in util] == ["cuda:0", "cuda:1"]
    assert util[0]["gpu_util_pct"]["mean"] == 50 and util[0]["sm_clock_mhz"]["max"] == 1500
    assert util[0]["power_w"]["mean"] == pytest.approx(200.0)


def test_nvml_power_sampled_and_integrated_without_a_counter() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=None, power_mw=[100_000.0])])  # 100 W, no energy counter
    with meters.window("cuda:0", nvml=nv, cuda=FakeCuda(), interval_s=0.02, powercap_root=NO_POWERCAP) as w:
        time.sleep(0.15)
    data = w.readings()
    r = data["energy"]["readings"][1]
    assert r["provenance"] == "sampled" and r["power_samples"]["unit"] == "mW"
    assert r["power_samples"]["n"] >= 3  # start, end and at least one tick of the sampler thread
    assert r["avg_power_w"] == pytest.approx(100.0)
    assert r["energy_j"] == pytest.approx(100.0 * r["window"]["duration_s"])
    assert "nvmlDeviceGetTotalEnergyConsumption" in r["why_not_measured"]
    assert data["energy"]["total"]["provenance"] == "sampled"
    assert data["sampler"]["running"] and data["sampler"]["ticks"] >= 1
    assert data["sampler"]["thread"] == "aibench-meter-sampler"


def test_nvml_counter_going_backwards_falls_back_or_says_so() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=[9_000, 1_000], power_mw=None)])
    with meters.window("cuda", nvml=nv, cuda=FakeCuda(), powercap_root=NO_POWERCAP) as w:
        pass
    assert w.readings()["energy"]["total"]["reason"] == "counter_reset"
    nv = FakeNvml([FakeGpu(energy_mj=[9_000, 1_000], power_mw=[50_000.0])])
    with meters.window("cuda", nvml=nv, cuda=FakeCuda(), powercap_root=NO_POWERCAP) as w:
        pass
    r = w.readings()["energy"]["total"]
    assert r["provenance"] == "sampled" and r["avg_power_w"] == pytest.approx(50.0)


@pytest.mark.parametrize(("nv", "reason"), [
    (FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND), "no_nvml"),
    (FakeNvml(init_error=FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED), "no_nvml"),
    (FakeNvml([]), "no_gpu"),
    (FakeNvml([FakeGpu(energy_mj=None, power_mw=None)]), "not_supported"),
])
def test_nvml_unavailable_reasons(nv: FakeNvml, reason: str) -> None:
    with meters.window("cuda:0", nvml=nv, cuda=FakeCuda(), powercap_root=NO_POWERCAP) as w:
        pass
    data = w.readings()
    total = data["energy"]["total"]
    assert (total["provenance"], total["reason"], total["scope"]) == ("unavailable", reason, "cuda:0")
    assert data["utilisation"]["gpu"][0]["provenance"] in ("unavailable", "sampled")
    result = new_result()
    meters.fold_into(result, data, count=10, per="call")
    for name in ("energy_per_call", "calls_per_joule", "avg_power"):
        assert result.metrics[name]["value"] is None
        assert reason in result.metrics[name]["unavailable"]


def test_missing_pynvml_is_no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    from aibench.meters import nvml

    def boom() -> Any:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml, "load_nvml", boom)
    with meters.window("cuda:0", cuda=FakeCuda(), powercap_root=NO_POWERCAP) as w:
        pass
    assert w.readings()["energy"]["total"]["reason"] == "no_nvml"


def test_utilisation_field_not_supported_is_left_empty() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=[0, 10], power_mw=[1.0], util_error=FakeNvml.NVML_ERROR_NOT_SUPPORTED)])
    with meters.window("cuda:0", nvml=nv, cuda=FakeCuda(), powercap_root=NO_POWERCAP) as w:
        pass
    u = w.readings()["utilisation"]["gpu"][0]
    assert u["gpu_util_pct"] is None and u["sm_clock_mhz"]["n"] >= 2


# ---- derived metrics, windows, robustness ---------------------------------------------------------------------

def test_derived_metrics_arithmetic() -> None:
    total = {"scope": "cpu", "provenance": "measured", "energy_j": 2.0, "avg_power_w": 4.0, "duration_s": 0.5}
    m = meters.derived_metrics(total, count=1000, per="sample")
    assert m["energy_per_sample"]["value"] == pytest.approx(0.002) and m["energy_per_sample"]["unit"] == "J"
    assert m["samples_per_joule"]["value"] == pytest.approx(500.0)
    assert m["avg_power"]["value"] == 4.0 and m["avg_power"]["provenance"] == "measured"
    unknown = meters.derived_metrics(total, count=None, per="query")
    assert unknown["energy_per_query"]["value"] is None and "unknown" in unknown["energy_per_query"]["unavailable"]
    assert unknown["avg_power"]["value"] == 4.0


def test_a_failing_meter_is_recorded_not_raised(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def start(self, sampler: Sampler) -> None:
            raise OSError("no such thing")

        def stop(self) -> None: ...

        def readings(self) -> dict[str, Any]:
            return {}

    with meters.window("cpu", powercap_root=NO_POWERCAP, extra=[Broken()]) as w:
        pass
    errs = w.readings()["meter_errors"]
    assert errs[0]["meter"] == "broken" and errs[0]["reason"] == "meter_error" and "no such thing" in errs[0]["detail"]


def test_sampler_does_not_start_without_work_and_never_on_the_caller() -> None:
    s = Sampler(0.01)
    s.start()
    s.stop()
    assert s.to_json()["running"] is False
    seen: list[str] = []
    import threading

    s = Sampler(0.01)
    s.register(lambda: seen.append(threading.current_thread().name))
    s.start()
    time.sleep(0.05)
    s.stop()
    assert seen and set(seen) == {"aibench-meter-sampler"}


def test_memory_and_cpu_utilisation_are_measured_over_the_window() -> None:
    with meters.window("cpu", powercap_root=NO_POWERCAP) as w:
        block = bytearray(32 << 20)  # touch 32 MiB inside the window
        block[:: 4096] = b"x" * len(block[:: 4096])
        t0 = time.process_time()
        while time.process_time() - t0 < 0.03:
            pass
    data = w.readings()
    proc = data["memory"]["process"]
    assert proc["provenance"] == "measured" and proc["peak_rss_bytes"] >= proc["rss_start_bytes"]
    # Growth is not guaranteed (the allocator may reuse pages already resident from earlier tests), but the
    # peak can never be below what was resident at either end of the window.
    assert proc["peak_rss_bytes"] >= max(proc["rss_start_bytes"], proc["rss_end_bytes"])
    cpu = data["utilisation"]["cpu"]
    assert cpu["process_cpu_s"] >= 0 and cpu["loadavg_start"] is not None
    assert cpu["system_busy_fraction"] is None or 0.0 <= cpu["system_busy_fraction"] <= 1.0
    assert data["window"]["duration_s"] >= 0.03
    del block


def test_timer_opens_the_window_around_exactly_the_timed_rounds() -> None:
    calls = {"n": 0}
    at_enter: dict[str, int] = {}

    def fn() -> None:
        calls["n"] += 1

    class Recorder:
        def __enter__(self) -> Recorder:
            at_enter["n"] = calls["n"]
            return self

        def __exit__(self, *exc: object) -> None:
            at_enter["exit"] = calls["n"]

    settings = TimerSettings(warmup_s=0.0, warmup_iters=3, min_block_s=1e-4, min_time_s=0.0, max_time_s=0.01,
                             min_rounds=3, target_rel_ci=0.5)
    m = KernelTimer(fn, settings).measure(window=Recorder())
    assert at_enter["n"] > 0  # warm-up and calibration happened before the window opened
    assert at_enter["exit"] - at_enter["n"] == m.rounds * m.number  # exactly the timed calls inside it


def test_window_is_used_once() -> None:
    w = Window([], device="cpu")
    with w:
        pass
    with pytest.raises(RuntimeError), w:
        pass


def test_meters_records_match_the_json_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from aibench.results.schema import json_schema

    schema = json_schema()
    enum = schema["$defs"]["provenanced"]["properties"]["reason"]["enum"]
    assert set(enum) == set(meters.REASONS)
    sub = {"$defs": schema["$defs"], "$ref": "#/$defs/meters"}
    nv = FakeNvml([FakeGpu(energy_mj=[0, 10]), FakeGpu(energy_mj=None, power_mw=[10.0]), FakeGpu(power_mw=None)])
    with meters.window(["cuda:0", "cuda:1", "cuda:2", "cuda:3"], nvml=nv, cuda=FakeCuda(),
                       powercap_root=tmp_path) as w:
        pass
    result = new_result()
    data = meters.fold_into(result, w, count=3, per="step", busy_s=0.0)
    jsonschema.validate(data, sub)
    assert [r.get("provenance") for r in data["energy"]["readings"][1:]] == [
        "measured", "sampled", "unavailable", "unavailable"]
    assert data["energy"]["total"]["missing"] == ["cuda:2", "cuda:3"]
    assert set(result.metrics) == {"energy_per_step", "steps_per_joule", "avg_power"}


# ---- a real run on this machine -----------------------------------------------------------------------------

def test_real_micro_run_reports_energy_unavailable_and_memory(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from aibench.cli import main
    from aibench.results.schema import json_schema

    args = ["run", "micro", "relu", "--batch", "2", "--channels", "3", "--height", "4", "--width", "5",
            "--max-time", "0.02", "--warmup", "0", "--min-rounds", "3", "--target-ci", "0.5",
            "--out", str(tmp_path), "--json"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    doc = json.loads(out)
    m = doc["meters"]
    total = m["energy"]["total"]
    if not Path("/sys/class/powercap").exists():
        assert (total["provenance"], total["reason"]) == ("unavailable", "no_powercap")
        assert doc["metrics"]["energy_per_call"]["value"] is None
        assert "no_powercap" in doc["metrics"]["energy_per_call"]["unavailable"]
        assert "unavailable" in err and "no_powercap" in err  # the table on stderr says so
    else:  # a machine with RAPL: measured, or unavailable for a stated reason
        assert total["provenance"] in ("measured", "unavailable")
    assert m["memory"]["process"]["peak_rss_bytes"] > 0
    assert "RSS" in err
    assert m["work"] == {"count": doc["method"]["rounds"] * doc["method"]["calls_per_block"], "per": "call"}
    assert m["window"]["what"].startswith("timed rounds")
    try:
        import jsonschema
    except ImportError:
        pytest.skip("jsonschema not installed")
    jsonschema.validate(doc, json_schema())
