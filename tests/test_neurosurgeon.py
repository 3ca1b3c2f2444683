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
    (one thread on each side, so the same arithmetic in the same order). The run then fails (an exception
    in the body): the server is stopped all the same. (One server for both checks: each start imports torch.)"""
    import torch

    from aibench.networks import run_layers
    from aibench.partition.split import split_run

    params, result = _params(cut="fc1", network="1000")
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), split_run(params, result) as (sut, batch):
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
        seen.append(sut.server.pid)
        raise RuntimeError("boom")
    assert seen and gone(seen[0])
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
    assert doc["method"]["summary"] == "split: cut after fc1 (j=1 of 3, given); link wifi at 12.8 Mbit/s up"
    assert ns["server"]["counters"]["queries"] >= parts["upload"]["seen"]
    assert ns["server_exit"]["alive_after_stop"] is False and gone(ns["server"]["pid"])


def test_offline_at_cut_0_with_a_loaded_server(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "input", "--network", "100",
                         "--rtt-ms", "2", "--server-load", "1", "--batch", "2", "--scenario", "offline",
                         "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    ns = doc["method"]["neurosurgeon"]
    assert ns["cut"]["j"] == 0 and ns["cut"]["layer"] == "input"
    assert ns["link"]["rtt_ms"] == 2 and ns["link"]["up_mbit"] == 100
    # the run's output says which cut ran (with --json the table and this line go to stderr)
    assert "scenario/neurosurgeon: split: cut after input (j=0 of 3, given); link 100 Mbit/s, 2 ms at 100 Mbit/s" in err
    assert doc["parts"]["stage"]["upload"]["summary"]["min"] >= 0.001  # half the round trip, at least
    load = ns["server"]["counters"]["background"]
    assert load["jobs"] == 1 and load["passes"] > 0
    assert gone(ns["server"]["pid"])


def test_a_dead_server_fails_the_query() -> None:
    """(The server stopped when the run fails: test_split_output_equals_the_unsplit_network_at_every_kind_of_cut.)"""
    import torch

    from aibench.partition.split import SplitServerError, split_run

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
    (["--device-cpu-quota", "0.001"], 2, "--device-cpu-quota"),
    (["--cut", "auto", "--device-profile", "MISSING"], 4, "missing): run `aibench partition fit --side device` and "
     "`aibench partition fit --side server` first"),
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
    assert ns["link"]["name"] == f"trace {trace}" and ns["link"]["up_mbit"] == 40  # the trace is the link
    assert doc["method"]["summary"].startswith("split: queries by cut: ")
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
    ("0,5,1\n", 2, "line 1 is not 'time_s,rate_mbit'"),
    ("0;5\n", 2, "line 1 is not 'time_s,rate_mbit'"),
    (None, 4, "no such file"),
])
def test_bad_traces(cli: Any, tmp_path: Path, text: str | None, code: int, what: str) -> None:
    trace = tmp_path / "t.csv"
    if text is not None:
        trace.write_text(text)
    got, _out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--trace", str(trace),
                         "--out", str(tmp_path))
    assert got == code and what in err and len(err.strip().splitlines()) == 1, err


def test_a_trace_and_another_network_are_refused(cli: Any, tmp_path: Path) -> None:
    got, _out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--network", "wifi", "--trace",
                         "lte-synthetic", "--out", str(tmp_path))
    assert got == 2 and "give --network or --trace, not both" in err and len(err.strip().splitlines()) == 1, err


def test_profiles_of_another_side_or_configuration_are_warned_of(tmp_path: Path) -> None:
    """Priced profiles measured for the other role, or with other threads, quota or dtype than the run's: a
    warning line each (recorded in method.neurosurgeon.profile_warnings), not an error."""
    from aibench.partition.models import side_mismatch
    from aibench.partition.split import profile_warnings

    dev = {"name": "device", "threads_effective": 1, "dtype": "float32", "quota": None}
    assert side_mismatch("p", dev, "device", 1, None, "float32") == []
    assert side_mismatch("p", dev, "device") == []  # a role-only check (partition choose)
    assert side_mismatch("p", dev, "server") == ["p was measured for the device side, and is used here for the "
                                                 "server side"]
    notes = side_mismatch("p", dev, "device", 2, 0.25, "bfloat16")
    assert notes == ["p was measured with 1 thread(s); the device here runs 2",
                     "p was measured without a CPU quota; the device here runs under 0.25 cores",
                     "p was measured in float32; the device here runs bfloat16"]
    capped = {**dev, "quota": {"cores": 0.25, "cgroup": "x"}}
    assert side_mismatch("p", capped, "device", 1, None) == ["p was measured under a CPU quota of 0.25 cores; the "
                                                             "device here runs without one"]
    params, _ = _params(device_threads=1, device_profile="d.json", server_profile="s.json")
    decision = {"sides": {"device": capped, "server": {**dev, "name": "server", "threads_effective": 2}}}
    assert profile_warnings(decision, params, None, 2) == [
        "--device-profile d.json was measured under a CPU quota of 0.25 cores; the device here runs without one"]
    assert profile_warnings(None, params, None, 2) == []


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


# -- the server's load: learned by pinging, stepped by a sweep (the paper's Fig. 15) ------------------------

def _profiles(tmp_path: Path, device_per_work: float, server_per_work: float) -> tuple[str, str]:
    """Synthetic platform profiles: every layer type linear, 1 µs plus ``per_work`` seconds per unit of work."""
    from aibench.partition.layers import LAYER_TYPES
    from aibench.partition.models import PROFILE_SCHEMA, PROFILE_VERSION

    paths = []
    for name, per_work in (("device", device_per_work), ("server", server_per_work)):
        doc = {"schema": PROFILE_SCHEMA, "schema_version": PROFILE_VERSION, "side": {"name": name, "dtype": "float32"},
               "models": {t: {"form": "linear", "coef": [1e-6, per_work]} for t in LAYER_TYPES}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        paths.append(str(path))
    return paths[0], paths[1]


def test_the_choice_moves_from_server_to_split_to_device_as_the_load_rises() -> None:
    """Fig. 15's shape from the decision alone: a cheap input and a cheap interior cut; as K rises the server's
    share costs more and the cut moves inward, then onto the device."""
    from aibench.partition.decide import choose, custom_link, price_cuts

    names = ["a", "b", "c"]
    device, server = [0.05, 0.001, 0.05], [0.005, 0.0001, 0.005]
    sizes = [40_000, 5_000_000, 1_000, 8]  # the input 40 ms at 8 Mbit/s; after a, 5 s; after b, 1 ms
    link = custom_link(8.0)
    chosen = [choose(price_cuts(names, device, server, sizes, link, k)).j for k in (0, 2, 10)]
    assert chosen == [0, 2, 3]


def test_server_load_sweep_records_the_pinged_load_and_the_choice_for_it(cli: Any, tmp_path: Path) -> None:
    """`aibench sweep server_load scenario neurosurgeon --cut auto`: each point's server runs K background jobs,
    the device pings the server for its load (reference computation against idle) and the cut is the
    decision's for that load; `aibench report` draws the runs as latency against load, labelled by cut."""
    from aibench.partition import decide

    device, server = _profiles(tmp_path, 2e-8, 1e-10)
    code, out, err = cli("-q", "sweep", "server_load", "scenario", "neurosurgeon", *TINY, "--cut", "auto",
                         "--network", "20", "--device-profile", device, "--server-profile", server,
                         "--values", "0,2", "--scenario", "single-stream", "--duration-s", "0.3",
                         "--out", str(tmp_path / "runs"), "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["params"]["server_load"] for r in results] == [0, 2]
    for r in results:
        ns = r["method"]["neurosurgeon"]
        load = ns["server"]["load"]
        assert load["jobs"] == r["params"]["server_load"]
        measured = load["measured"]
        assert measured["factor"] > 0 and measured["k"] == max(0.0, measured["factor"] - 1)
        assert measured["made_of"] == "ping" and measured["ping"]["runs"] >= 1  # before the run: no query yet
        assert r["metrics"]["server_load_factor"]["value"] == measured["factor"]
        decision = ns["decision"]
        assert decision["server_load"] == measured["k"] and decision["chosen_by"] == "auto"
        per = decision["per_layer"]
        cuts = decide.price_cuts(ns["cut"]["names"], per["device_s"], per["server_s"], per["bytes"],
                                 decide.custom_link(20.0), measured["k"])
        assert ns["cut"]["j"] == decide.choose(cuts).j  # the cut priced at the pinged load
        background = ns["server"]["counters"]["background"]
        assert (background is None) == (r["params"]["server_load"] == 0)
        if background is not None:
            assert background["jobs"] == 2 and background["passes"] > 0
        assert gone(ns["server"]["pid"])
    code, _out, err = cli("report", str(tmp_path / "runs"), "--html", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    section = page[page.index('<section id="neurosurgeon">'):]
    section = section[:section.index("</section>")]
    assert 'data-plot="neurosurgeon-load"' in section and "<svg" in section
    assert "Neurosurgeon (--cut auto)" in section and "load factor (pinged)" in section


def test_the_device_side_under_a_cpu_quota(cli: Any, tmp_path: Path) -> None:
    """--device-cpu-quota caps this process (the device), not the server; --server-priority gives the server the
    largest weight; where no cgroup quota can be set the run is refused in one line (exit 3)."""
    from aibench.partition.sides import quota_interface

    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", "--network", "100",
                         "--device-cpu-quota", "0.5", "--server-priority", "true", "--scenario", "single-stream",
                         "--duration-s", "0.3", "--out", str(tmp_path), "--json")
    found = quota_interface()
    if isinstance(found, str):
        assert code == 3 and "--device-cpu-quota" in err and len(err.strip().splitlines()) == 1, err
        return
    assert code == 0, err
    ns = json.loads(out)["method"]["neurosurgeon"]
    quota = ns["device"]["quota"]
    assert quota["cores"] == 0.5 and quota["cgroup"] == found[0] and quota["weight"] in (262144, 10000)
    assert not Path(quota["group"]).exists()  # the group is removed afterwards
    prio = ns["server"]["priority"]  # the server at the largest weight, its own group, gone with it
    assert prio["pid"] == ns["server"]["pid"] and prio["weight"] in (262144, 10000)
    assert not Path(prio["group"]).exists() and gone(ns["server"]["pid"])


def test_branch_and_bound_finds_the_brute_force_optimum() -> None:
    """With valid lower bounds the optimum is never pruned (synthetic costs: the bound is the cost times a
    random factor up to 1)."""
    import random

    from aibench.partition.evaluate import branch_and_bound

    rng = random.Random(0)
    pruned = 0
    for _ in range(300):
        n = rng.randint(1, 40)
        cost = [rng.lognormvariate(0, 1.5) for _ in range(n + 1)]
        bound = [c * rng.uniform(0.3, 1.0) for c in cost]
        first = (0, rng.randint(0, n))
        got = branch_and_bound(bound, first, lambda j, c=cost: {"median_s": c[j]})
        assert min(got, key=lambda j: got[j]["median_s"]) == min(range(n + 1), key=lambda j: cost[j])
        assert set(first) <= set(got)
        pruned += n + 1 - len(got)
    assert pruned > 0


def test_the_final_round_names_the_optimum_side_by_side_under_drift() -> None:
    """The machine slows down while cuts are measured one after another: the first round ranks the truly
    faster cut last; the final round, one query of each finalist in turn, ranks them right, and the cuts
    that only differ by layers without arithmetic are the same split."""
    from aibench.partition.evaluate import ALPHA, confirm, measure_cut, same_split, slower_p

    true = {0: 1.0, 1: 0.50, 2: 0.49, 3: 0.80}

    class Drifting:
        j, calls = 0, 0

        def compute(self, _x: Any) -> tuple[None, dict[str, float]]:
            self.calls += 1
            t = true[self.j] + 0.002 * self.calls  # 2 ms more per query: a load rising
            return None, {"device_compute": t, "upload": 0.0, "server_compute": 0.0, "download": 0.0}

    sut = Drifting()
    measured = {j: measure_cut(sut, None, j, 0.5, n=5) for j in (0, 1, 3, 2)}
    assert min(measured, key=lambda j: measured[j]["median_s"]) == 1  # the drift, not the cut
    confirm(sut, None, measured, chosen=1)
    assert min(measured, key=lambda j: measured[j]["median_s"]) == 2
    assert measured[2]["final_round"] and measured[1]["final_round"] and "final_round" not in measured[0]
    assert len(measured[2]["latencies_s"]) == len(measured[1]["latencies_s"]) >= 4
    assert measured[2]["first_round"]["median_s"] > measured[1]["first_round"]["median_s"]
    kinds = ["conv", "act", "pool", "reshape", "fc", "act", "reshape", "fc", "softmax"]
    assert same_split(kinds, 3, 4) and same_split(kinds, 6, 7) and same_split(kinds, 4, 3)
    assert not same_split(kinds, 2, 4) and not same_split(kinds, 8, 9) and same_split(kinds, 5, 5)
    # a tie is told from a miss by the queries themselves
    a, b = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02], [1.01, 0.92, 1.08, 0.97, 1.04, 0.99]
    assert slower_p(a, b) >= ALPHA and slower_p([x * 1.3 for x in a], b) < ALPHA


def test_the_evaluation_measures_every_cut_that_could_be_optimal(tmp_path: Path) -> None:
    """One tiny split session (the POS tagger, a fast link): the predicted choice, cut 0 and the optimum are
    measured end to end, the figures are consistent, and every cut left out is bounded above the optimum."""
    from aibench.partition.decide import custom_link
    from aibench.partition.evaluate import BOUND_DEVICE, evaluate_network

    device, server = _profiles(tmp_path, 2e-8, 1e-10)
    session = evaluate_network("pos", None, [custom_link(1000.0), custom_link(0.5)], device, server,
                               say=lambda _text: None)
    assert len(session["rows"]) == 2 and len(session["prefix_s"]) == 4 and session["prefix_s"][0] == 0
    for row in session["rows"]:
        measured = {int(j): m for j, m in row["cuts_measured"].items()}
        assert 0 in measured and row["chosen"]["j"] in measured and row["optimum"]["j"] in measured
        best = min(m["median_s"] for m in measured.values())
        assert row["optimum"]["measured_s"] == best and 0 < row["pct_of_optimum"] <= 1
        # the bounds prune against the first round (the final round re-measures the finalists later, when
        # the machine's load may have changed)
        best = min(m.get("first_round", m)["median_s"] for m in measured.values())
        assert row["speedup_over_server"] == measured[0]["median_s"] / row["chosen"]["measured_s"]
        rate = row["rate_bit_s"]
        for j in set(range(4)) - set(measured):
            assert BOUND_DEVICE * session["prefix_s"][j] + (0.98 * 8 * session["bytes"][j] / rate if j < 3 else 0) \
                >= best
    assert gone(session["server_pid"])


def test_load_stepped_during_the_run_is_learned_by_pinging_and_the_cut_follows(cli: Any, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--server-load-steps 0,3: the server steps its background jobs on its own clock from the measured run's
    start; the device pings it (every 2 s; every 0.5 s here, to keep the run short) and, with --cut auto, each
    query runs at the decision's cut for the load factor of the last ping (checked query by query); per step:
    jobs, pinged factor, cuts, p50."""
    from aibench.partition import decide, split

    monkeypatch.setattr(split, "LOAD_PING_EVERY_S", 0.5)
    device, server = _profiles(tmp_path, 2e-8, 1e-10)
    code, out, err = cli("-q", "run", "scenario", "neurosurgeon", *TINY, "--cut", "auto", "--network", "20",
                         "--device-profile", device, "--server-profile", server, "--server-load-steps", "0,3",
                         "--load-step-s", "0.6", "--scenario", "single-stream", "--duration-s", "1.6",
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    ns = doc["method"]["neurosurgeon"]
    steps = ns["load_steps"]
    assert steps["steps"] == [0, 3] and steps["adapting"]
    assert [s["jobs"] for s in steps["per_step"]] == [0, 3]
    assert 3 in steps["per_step"][1]["jobs_pinged"]  # the second step's load was learned by a ping (at 1 s)
    per = ns["decision"]["per_layer"]
    for _t, _jobs, factor, j, latency in steps["queries"]:
        cuts = decide.price_cuts(ns["cut"]["names"], per["device_s"], per["server_s"], per["bytes"],
                                 decide.custom_link(20.0), max(0.0, factor - 1))
        assert j == decide.choose(cuts).j and latency > 0
    assert "load_ping" in doc["parts"]["stage"]
    pings = steps["pings"]  # each ping: what its factor was made of (the recent queries, or a slice timed)
    assert pings and all(p["made_of"] in ("queries", "ping") and p["seconds"] >= 0 for p in pings)
    assert sum(sum(s["pings_made_of"].values()) for s in steps["per_step"]) <= len(pings)
    assert ns["server"]["counters"]["background"]["max_jobs"] == 3
    for st in steps["per_step"]:  # each step's p90 and the decision's prediction for its cut at its factor
        cuts = decide.price_cuts(ns["cut"]["names"], per["device_s"], per["server_s"], per["bytes"],
                                 decide.custom_link(20.0), max(0.0, st["factor_pinged"] - 1))
        assert st["predicted_s"] == pytest.approx(cuts[st["j"]].total_s)
        assert st["latency_p90_s"] >= st["latency_p50_s"] > 0
    assert doc["method"]["summary"].startswith("split: by server load step: K=0 mostly ")
    assert gone(ns["server"]["pid"])


@pytest.mark.parametrize("args, text", [
    (["--server-load-steps", "0,x"], "job counts"),
    (["--server-load-steps", "0,65"], "0 to 64"),
    (["--server-load-steps", "0,2", "--server-load", "1"], "not both"),
    (["--load-step-s", "2"], "give the steps too"),
])
def test_bad_load_steps(cli: Any, tmp_path: Path, args: list[str], text: str) -> None:
    got, _out, err = cli("run", "scenario", "neurosurgeon", *TINY, "--cut", "fc1", *args, "--out", str(tmp_path))
    assert got == 2 and text in err and len(err.strip().splitlines()) == 1, err


# -- the load factor: the network's own layers, from the recent queries or a ping ----------------------------

def test_the_ping_slice() -> None:
    from aibench.partition.server import ping_slice

    assert ping_slice([0.001, 0.002, 0.003], 0.010) == (0, 3)  # the whole network fits the budget
    assert ping_slice([0.003, 0.004, 0.005, 0.002, 0.009], 0.010) == (1, 3)  # the heaviest stretch within it
    assert ping_slice([0.02, 0.03, 0.015], 0.010) == (2, 3)  # none fits: the lightest layer alone


def _gauge_on_pos() -> tuple[Any, Any, Any]:
    import torch

    from aibench.partition import wire
    from aibench.partition.server import LoadGauge

    torch.set_num_threads(1)
    built = wire.build("pos", {"batch": 1, "num_samples": 2, "data": "synthetic"}, "float32")
    x = built.task.collate([built.task.load_sample(0)])
    return built, x, LoadGauge(built.layers, x)


def test_the_load_factor_is_about_1_idle_and_grows_with_background_jobs() -> None:
    """The active ping (a slice of the network's own layers, its mean time against idle) with 0 and 3
    background jobs (threads running the whole network, as the server's --server-load): about 1 idle, larger
    under load (medians of 5 pings; a sane range, no speed asserted)."""
    import statistics

    import torch

    from aibench.partition.server import Background

    before = torch.get_num_threads()
    try:
        built, x, gauge = _gauge_on_pos()
        idle = statistics.median(gauge.ping()["factor"] for _ in range(5))
        background = Background(3, built.network, x)
        try:
            loaded = statistics.median(gauge.ping()["factor"] for _ in range(5))
        finally:
            background.stop()
    finally:
        torch.set_num_threads(before)
    assert 0.2 < idle < 5 and loaded > idle, (idle, loaded)
    d = gauge.describe()
    assert d["ping_slice"] == [0, 3] and d["active_pings"] == 10 and d["idle_network_s"] == sum(d["idle_layer_s"])


def test_the_recent_queries_make_the_factor_and_a_ping_stands_in_when_none_ran() -> None:
    """The last 5 queries answered in the last 2 s give the factor (their layers' seconds over the same layers'
    idle seconds) without a ping; older ones, or too little work among them, leave it to a ping."""
    from aibench.partition.server import QUERY_RECENT

    _built, _x, gauge = _gauge_on_pos()
    now = 100.0
    assert gauge.estimate(now)["made_of"] == "ping" and gauge.pings == 1
    gauge.observe(0, 9.0 * gauge.suffix[0], now - 1.9)  # pushed out by the last 5 below
    for i in range(QUERY_RECENT - 1):
        gauge.observe(0, 3.0 * gauge.suffix[0], now - 0.5 + i / 100)  # the whole network, 3x its idle time
    gauge.observe(2, 3.0 * gauge.suffix[2], now - 0.1)  # the last layer alone, 3x too
    gauge.observe(3, 1.0, now)  # cut N runs nothing here: not a query of the server's layers
    got = gauge.estimate(now)
    assert got["made_of"] == "queries" and got["ping"] is None and gauge.pings == 1
    assert got["factor"] == pytest.approx(3.0) and got["queries"]["queries"] == QUERY_RECENT
    later = gauge.estimate(now + 2.5)  # nothing in the last 2 s: a ping again
    assert later["made_of"] == "ping" and later["queries"] is None and gauge.pings == 2
    assert later["ping"]["runs"] >= 1 and later["ping"]["layers"] == ["fc1", "fc3"]


def test_the_server_learns_its_load_from_the_queries_it_answered() -> None:
    """In the split server: before any query a ping times the slice; after queries at cut 0 the next ping
    answers from them (made_of queries), and the server's counters describe the gauge."""
    import torch

    from aibench.partition.split import split_run

    params, result = _params(cut="input", network="1000")
    with split_run(params, result) as (sut, _batch):
        first = result.method["neurosurgeon"]["server"]["load"]["measured"]
        assert first["made_of"] == "ping" and first["ping"]["layers"] == ["fc1", "fc3"]
        x = sut.built.task.collate([sut.built.task.load_sample(0)])
        with torch.inference_mode():
            for _ in range(3):
                sut.compute(x)
        load = sut.ping_load()
        assert load["made_of"] == "queries" and load["queries"]["queries"] == 3 and load["factor"] > 0
        assert load["k"] == max(0.0, load["factor"] - 1)
    assert result.metrics["server_load_factor"]["value"] == first["factor"]
    gauge = result.method["neurosurgeon"]["server"]["counters"]["gauge"]
    assert gauge["active_pings"] == 1 and len(gauge["idle_layer_s"]) == 3
