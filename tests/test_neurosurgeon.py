"""scenario/neurosurgeon: the split network run for real over a shaped loopback link (issue 16 item 4).

On the POS tagger (3 layers, a few milliseconds), the fastest Tonic network; one server process per test.
No wall-clock speed is asserted: the link's rate check is recorded, not required."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aibench.results.schema import json_schema
from aibench.sut.transport import HEADER_SIZE
from tests.processes import gone, wait_for_children

TINY = ["--net", "pos", "--num-samples", "2", "--server-threads", "1", "--link-check-s", "0.05"]


def _params(**given: Any) -> tuple[dict[str, Any], Any]:
    from aibench.registry import get
    from aibench.results.schema import Result

    bench = get("scenario/neurosurgeon")
    params = bench.resolve({**bench.tiny, **given})
    return params, Result(benchmark={"id": bench.id}, params=params, config_hash="x")


def test_split_output_equals_the_unsplit_network_at_every_kind_of_cut() -> None:
    """Cut 0 (the input crosses), interior cuts and N (nothing crosses): bit-equal to the whole network
    (one thread on each side, so the same arithmetic in the same order)."""
    import torch

    from aibench.networks import run_layers
    from aibench.partition.split import split_run

    params, result = _params(cut="fc1", network="1000")
    with split_run(params, result) as (sut, batch):
        assert batch == 1 and sut.n == 3
        t = sut.built.task
        x = t.collate([t.load_sample(0)])
        with torch.inference_mode():
            whole = run_layers(sut.built.network, x)
        for j in (0, 1, 2, 3):  # the server runs the layers after the frame's cut, whichever it is
            sut.j = j
            y, parts = sut.compute(x)
            assert torch.equal(y, whole), j
            crossing = x if j == 0 else run_layers(sut.built.network, x, 0, j)
            assert parts["bytes_up"] == (0 if j == 3 else HEADER_SIZE + 8 * crossing.dim() + crossing.numel() * 4)
            assert (parts["upload"] > 0) == (j < 3) and (parts["server_compute"] > 0) == (j < 3)
        pid = sut.server.pid
    assert gone(pid)
    assert result.method["neurosurgeon"]["server_exit"]["alive_after_stop"] is False


def test_single_stream_records_parts_bytes_cut_and_the_link(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--network", "wifi",
                         "--scenario", "single-stream", "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "ok" and doc["benchmark"]["id"] == "scenario/neurosurgeon"
    jsonschema.validate(doc, json_schema())
    parts = doc["parts"]["stage"]
    assert list(parts) == ["device_compute", "upload", "server_compute", "download"]
    assert all(p["seen"] > 0 and p["per"] == "query" and p["summary"]["min"] > 0 for p in parts.values())
    assert doc["samples"]["latency"]["values"]
    m = doc["metrics"]
    assert m["bytes_up_per_query"]["value"] == HEADER_SIZE + 16 + 28 * 300 * 4  # the fc1 activation of 28 words, framed
    assert m["bytes_down_per_query"]["value"] > 28 * 45 * 4
    assert m["transfer_median_s"]["value"] > 0
    ns = doc["method"]["neurosurgeon"]
    assert ns["cut"] == {"j": 1, "layer": "fc1", "layers": 3, "names": ["fc1", "htanh", "fc3"], "chosen_by": "given"}
    check = ns["link_check"]
    assert check["configured_bit_s"] == pytest.approx(12.8e6, rel=0.01)
    assert m["link_rate_measured_bit_s"]["value"] == check["up_bit_s"] > 0
    assert m["link_rate_error"]["value"] == pytest.approx(check["up_bit_s"] / check["configured_bit_s"] - 1)
    assert isinstance(check["within_5pct"], bool)
    assert m["link_rate_in_run_bit_s"]["value"] > 0  # 33.6 KB at 12.8 Mbit/s: 21 ms, long enough to measure
    assert m["predicted_latency_s"]["unavailable"]  # no platform profiles here
    assert ns["server"]["counters"]["queries"] >= parts["upload"]["seen"]
    assert ns["server_exit"]["alive_after_stop"] is False and gone(ns["server"]["pid"])


def test_offline_at_cut_0_with_a_loaded_server(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "input", "--network", "100",
                         "--rtt-ms", "2", "--server-load", "1", "--batch", "2", "--scenario", "offline",
                         "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    ns = doc["method"]["neurosurgeon"]
    assert ns["cut"]["j"] == 0 and ns["cut"]["layer"] == "input"
    assert ns["link"]["rtt_ms"] == 2 and ns["link"]["up_mbit"] == 100
    assert doc["parts"]["stage"]["upload"]["summary"]["min"] >= 0.001  # half the round trip, at least
    load = ns["server"]["counters"]["background"]
    assert load["jobs"] == 1 and load["passes"] > 0
    assert gone(ns["server"]["pid"])


def test_the_server_is_stopped_when_the_run_fails_and_a_dead_server_fails_the_query() -> None:
    import torch

    from aibench.partition.split import SplitServerError, split_run

    params, result = _params(network="1000")
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), split_run(params, result) as (sut, _batch):
        seen.append(sut.server.pid)
        raise RuntimeError("boom")
    assert seen and gone(seen[0])

    params, result = _params(network="1000")
    with split_run(params, result) as (sut, _batch):
        os.kill(sut.server.pid, signal.SIGKILL)
        x = sut.built.task.collate([sut.built.task.load_sample(0)])
        with pytest.raises(SplitServerError, match="killed by signal 9"), torch.inference_mode():
            for _ in range(3):  # the first send may still fit in the socket's buffer
                sut.compute(x)
        pid = sut.server.pid
    assert gone(pid) and result.method["neurosurgeon"]["server_exit"]["code"] == -signal.SIGKILL


def test_a_failed_server_under_loadgen_is_a_failed_result(cli: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dies during the run: exit 1 and a failed result naming why (not a traceback)."""
    from aibench.partition import split

    real = split.SplitSystem.compute

    def dying(self: Any, x: Any, t0: Any = None) -> Any:
        if self.report().batches >= 3:
            os.kill(self.server.pid, signal.SIGKILL)
            self.server.proc.wait()
        return real(self, x, t0)

    monkeypatch.setattr(split.SplitSystem, "compute", dying)
    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--network", "1000",
                         "--scenario", "single-stream", "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["status"] == "failed" and "split's server is gone" in doc["error"]["message"]
    assert gone(doc["method"]["neurosurgeon"]["server"]["pid"])


@pytest.mark.parametrize("args, code, text", [
    (["--cut", "pool9"], 2, "no layer 'pool9'"),
    (["--cut", "99"], 2, "no cut 99"),
    (["--net", "fathom-lenet"], 2, "not an inference network"),
    (["--net", "imx"], 2, "unknown benchmark"),
    (["--network", "0"], 2, "above 0"),
    (["--network", "-3"], 2, "above 0"),
    (["--network", "5g"], 2, "3g, lte, wifi or a rate"),
    (["--server-load", "-1"], 2, "--server-load"),
    (["--cut", "auto", "--device-profile", "MISSING"], 4, "aibench partition fit --side device"),
])
def test_bad_input_is_one_line_and_a_code(cli: Any, tmp_path: Path, args: list[str], code: int, text: str) -> None:
    given = dict(zip(TINY[::2], TINY[1::2], strict=True)) | {"--cut": "fc1"} | dict(zip(args[::2], args[1::2],
                                                                                          strict=True))
    got, _out, err = cli("run", "scenario", "neurosurgeon", *(x for kv in given.items() for x in kv), "--out",
                         str(tmp_path))
    assert got == code, err
    assert text in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.json"))  # refused before anything is measured or written


def test_a_server_that_cannot_start_is_exit_3(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aibench.partition import split

    monkeypatch.setattr(split, "SERVER_MODULE", "aibench.partition.no_such_server")
    got, _out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--out", str(tmp_path))
    assert got == 3, err
    assert "could not start" in err and "no_such_server" in err and len(err.strip().splitlines()) == 1


def test_cut_auto_takes_the_decisions_choice(tmp_path: Path) -> None:
    """--cut auto: partition choose's cut from the platform profiles (synthetic here: a device 10x slower than
    the server). A slow link keeps everything on the device; a fast one sends the input."""
    from aibench.partition import split, wire
    from aibench.partition.layers import LAYER_TYPES
    from aibench.partition.models import PROFILE_SCHEMA, PROFILE_VERSION

    def write(name: str, per_work: float) -> str:
        doc = {"schema": PROFILE_SCHEMA, "schema_version": PROFILE_VERSION, "side": {"name": name, "dtype": "float32"},
               "models": {t: {"form": "linear", "coef": [1e-6, per_work]} for t in LAYER_TYPES}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return str(path)

    params, _ = _params(cut="auto", device_profile=write("device", 1e-9), server_profile=write("server", 1e-10))
    built = wire.build("pos", {"num_samples": 2, "batch": 1, "data": "synthetic"}, "float32")
    x = built.task.collate([built.task.load_sample(0)])
    j, decision = split._decide(built, x, split.link_of("3g", 0.0), params)
    assert j == 3 and decision is not None and decision["chosen"] == {"j": 3, "layer": "fc3"}
    assert decision["chosen_by"] == "auto" and len(decision["cuts"]) == 4
    j, decision = split._decide(built, x, split.link_of("1000", 0.0), params)
    assert j == 0 and decision["chosen"]["layer"] == "input"
    j, decision = split._decide(built, x, split.link_of("1000", 0.0), {**params, "cut": "htanh"})
    assert j == 2 and decision["chosen_by"] == "given" and decision["chosen"]["j"] == 0  # the prediction beside


def test_ctrl_c_stops_the_server(tmp_path: Path) -> None:
    """SIGINT while queries run: exit 130, the run recorded as interrupted, the server process gone."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "aibench", "run", "scenario", "neurosurgeon", *TINY, "--cut",
                             "fc1", "--network", "wifi", "--scenario", "single-stream", "--duration-s", "60",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    servers = wait_for_children(proc, b"aibench.partition.server")
    assert servers, proc.communicate()[1].decode()[-2000:]
    time.sleep(4)  # the queries are running (the server was ready before the link check)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    doc = json.loads(next(tmp_path.glob("scenario-neurosurgeon-*.json")).read_text())
    assert doc["status"] == "interrupted"
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in servers)


def test_a_trace_replayed_moves_the_cut_with_the_measured_rate(cli: Any, tmp_path: Path) -> None:
    """A trace alternating 40 and 0.5 Mbit/s every 1.5 s, --cut auto with profiles that make the device's
    whole network about 60 ms: the input goes to the server on the fast link, everything stays on the device
    on the slow one (the choice follows the rate measured by the queries' uploads and the probes)."""
    from aibench.partition.layers import LAYER_TYPES
    from aibench.partition.models import PROFILE_SCHEMA, PROFILE_VERSION

    for name, per_work in (("device", 2e-8), ("server", 1e-10)):
        doc = {"schema": PROFILE_SCHEMA, "schema_version": PROFILE_VERSION, "side": {"name": name, "dtype": "float32"},
               "models": {t: {"form": "linear", "coef": [1e-6, per_work]} for t in LAYER_TYPES}}
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    trace = tmp_path / "trace.csv"
    trace.write_text("# test trace\ntime_s,rate_mbit\n0,40\n1.5,0.5\n")
    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "auto", "--trace", str(trace),
                         "--device-profile", str(tmp_path / "device.json"), "--server-profile",
                         str(tmp_path / "server.json"), "--scenario", "single-stream", "--duration-s", "4",
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    ns = doc["method"]["neurosurgeon"]
    assert ns["trace"]["adapting"] and ns["trace"]["period_s"] == 3.0 and ns["trace"]["source"] == "file given"
    by_cut = ns["adaptation"]["queries_by_cut"]
    assert by_cut.get("input", 0) > 0 and by_cut.get("fc3", 0) > 0, by_cut
    rows = ns["adaptation"]["queries"]
    assert {r[1] for r in rows} == {40e6, 0.5e6}  # the trace's rates were applied
    assert "link_probe" in doc["parts"]["stage"]
    assert gone(ns["server"]["pid"])


@pytest.mark.parametrize("text, code, what", [
    ("time_s,rate_mbit\n0,5\n1,0\n", 2, "above 0"),
    ("0,5\n2,3\n1,4\n", 2, "increase"),
    ("0,five\n", 2, "line 1"),
    (None, 4, "no such file"),
])
def test_bad_traces(cli: Any, tmp_path: Path, text: str | None, code: int, what: str) -> None:
    trace = tmp_path / "t.csv"
    if text is not None:
        trace.write_text(text)
    got, _out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--trace", str(trace),
                         "--out", str(tmp_path))
    assert got == code and what in err and len(err.strip().splitlines()) == 1, err


def test_the_shipped_trace_is_synthetic_and_lte_like() -> None:
    from aibench.partition.trace import read_trace

    t = read_trace("lte-synthetic")
    d = t.describe()
    assert "synthetic" in str(d["source"]) and d["points"] > 100 and 1e6 <= d["median_bit_s"] <= 20e6
    assert t.rate_at(0.0) == t.rate_at(t.period_s)  # it loops


def test_an_exchange_cut_short_is_not_followed_by_another_on_the_stream() -> None:
    """Ctrl-C in the middle of an upload (a SingleStream query runs on the main thread) leaves half a frame on
    the stream: the counters are not asked for afterwards (the server would read the request as payload and
    the device would wait for ever), and the run still ends with the server stopped."""
    from aibench.partition.split import split_run
    from aibench.sut.transport import encode_header

    params, result = _params(network="1000")
    with split_run(params, result) as (sut, _batch):
        def half(frame: Any) -> int:
            sut.sock.sendall(encode_header(frame))  # the header, not the payload
            raise KeyboardInterrupt

        sut.sender.send = half
        x = sut.built.task.collate([sut.built.task.load_sample(0)])
        with pytest.raises(KeyboardInterrupt):
            sut.compute(x)
        assert sut.server_stats() is None
        pid = sut.server.pid
    assert "unavailable" in result.method["neurosurgeon"]["server"]["counters"]
    assert gone(pid)
