"""scenario/djinn's moving parts (imported when it runs, so that listing benchmarks stays light): the
server it starts, the app as its client, and what it records of the server's side."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

from aibench.sut.remote import RemoteSystem
from aibench.workloads.scenario.djinn import APP_PARAMS, LINKS


def app_params(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The Tonic component benchmark and its resolved parameters (the scenario's 0s: the app's defaults)."""
    from aibench.registry import get

    bench = get(f"component/{params['app']}")
    names = {p.name for p in bench.params.params}
    given = {k: params[k] for k in APP_PARAMS if k in names and params.get(k) not in (0, None)}
    return bench, bench.resolve(given)


def server_args(params: dict[str, Any], networks: tuple[str, ...]) -> list[str]:
    args = ["--instances", str(params["instances"]), "--devices", params["devices"]]
    if params["server_max_batch"]:
        args += ["--max-batch", str(params["server_max_batch"])]
    if params["max_queue_delay_us"]:
        args += ["--max-queue-delay-us", f"{params['max_queue_delay_us']:g}"]
    if params["server_threads"]:
        args += ["--threads", str(params["server_threads"])]
    if params.get("resident_inputs"):
        args += ["--resident-inputs", str(params["resident_inputs"])]
    return args


def inputs_context(params: dict[str, Any]) -> dict[str, Any]:
    """How the inputs reached the network (``context.inputs``; the sweep table and the report read it): the
    paper's Fig. 11 (transferred) or Fig. 12 (resident), and what resident removes on this run's devices."""
    rows = int(params.get("resident_inputs") or 0)
    if not rows:
        return {"mode": "transferred", "text": "inputs transferred: every request carries its tensor"}
    on_gpu = any(d.startswith("cuda") for d in str(params["devices"]).split(","))
    removed = ("the request payload, the server's gathering of rows into a batch, its hand-off to the instance "
               "and the host-to-device copy" if on_gpu else
               "the request payload, the server's gathering of rows into a batch and its hand-off to the instance; "
               "the device is the host here, so there was no host-to-device copy to remove")
    return {"mode": "resident", "rows": rows,
            "text": f"inputs resident: {rows} rows per network on each instance's device",
            "note": f"resident inputs remove {removed}; the instance still gathers the named rows into one batch "
                    "on its device, and the client side still runs (its tensors are made, not sent); the "
                    "answers are the resident rows' outputs, not the samples'"}


@contextlib.contextmanager
def served_app(params: dict[str, Any], result: Any) -> Iterator[tuple[Any, int]]:
    import torch

    from aibench.service.launch import start_server
    from aibench.sut.remote import remote_forward

    bench, ap = app_params(params)
    task = bench.factory(ap, device=torch.device("cpu"), dtype=torch.float32)
    _, networks = remote_forward(task, params["app"])
    server = start_server(list(networks), args=server_args(params, networks), timeout_s=600.0)
    try:
        if params["protocol"] == "http":
            url, stats_url = server.http_url, None
        else:
            assert server.djinn_address is not None
            url, stats_url = "djinn://{}:{}".format(*server.djinn_address), server.http_url
        system = ServedSystem(task, url, params["app"], server, name=f"scenario/djinn:{params['app']}",
                              in_flight=params["in_flight"], stats_url=stats_url,
                              resident=bool(params.get("resident_inputs")))
        result.context["app"] = {"benchmark": bench.id, "params": ap}
        result.context["inputs"] = inputs_context(params)
        record_sharing(params, server, result)
        # the driver has the system record its figures (ServedSystem.record) before any result is written,
        # also an interrupted one, while the server still runs
        yield system, int(ap.get("batch", 1) or 1)
    finally:
        code = server.stop()
        result.method.setdefault("djinn", {})["server_exit"] = {"code": code, "alive_after_stop": server.alive()}


def instance_sharing(instances: int, devices: list[str], threads: int | None, cores: int | None,
                     mps_active: bool) -> dict[str, Any]:
    """How the server's instances share each device (the paper's Figs. 8/9 used NVIDIA MPS on GPUs):
    ``mode`` is ``cpu-split-cores`` (CPU instances split the usable cores between them), ``gpu-mps`` (MPS's
    daemon is active: kernels of the instances may run concurrently) or ``gpu-time-shared`` (plain processes
    time-sharing the GPU, no MPS); ``text`` says it in words (the sweep table and the report show it)."""
    cpu = [d for d in devices if d == "cpu"]
    if cpu and len(cpu) == len(devices):
        mode = "cpu-split-cores"
        text = (f"{instances} CPU instance{'s' if instances != 1 else ''} split {cores or '?'} core(s): "
                f"{threads or '?'} thread(s) each")
    elif instances == 1:
        mode, text = "gpu-one-instance", f"one instance per GPU ({', '.join(devices)})"
    elif mps_active:
        mode, text = "gpu-mps", f"{instances} instances per GPU under NVIDIA MPS (kernels may run concurrently)"
    else:
        mode, text = "gpu-time-shared", (f"{instances} instances per GPU as plain processes, without MPS "
                                         "(they time-share the GPU)")
    return {"mode": mode, "text": text, "instances_per_device": instances, "devices": list(devices),
            "threads_per_instance": threads, "cores": cores, "mps_daemon_detected": mps_active}


def record_sharing(params: dict[str, Any], server: Any, result: Any) -> None:
    """The server's own account of its instances (``/v2/aibench``) into ``method.djinn.instances`` and
    ``context.device_sharing`` (the key a sweep table reads, whatever the benchmark)."""
    from aibench.sweep.scaleout import mps_note

    try:
        desc = server.describe()
    except Exception as exc:  # the run goes on; the sharing is then what was asked
        desc = {"unavailable": f"the server's description could not be read: {exc}"}
    devices = [str(params["devices"])]  # as asked, unless the server says which it uses
    if isinstance(desc.get("config"), dict) and isinstance(desc["config"].get("devices"), list):
        devices = [str(d) for d in desc["config"]["devices"]]
    gpu = any(d.startswith("cuda") for d in devices)
    sharing = instance_sharing(int(params["instances"]), devices, desc.get("threads_per_instance"),
                               desc.get("cores"), bool(gpu and mps_note()["daemon_detected"]))
    if "unavailable" in desc:
        sharing["note"] = desc["unavailable"]
    result.method.setdefault("djinn", {})["instances"] = sharing
    text = sharing["text"]
    if params.get("resident_inputs"):  # the sweep table shows this text: say which of Figs. 11/12 a point is
        text += f"; inputs resident ({int(params['resident_inputs'])} rows)"
    result.context["device_sharing"] = {"mode": sharing["mode"], "text": text}


def _proc(pid: int) -> dict[str, Any] | None:
    """CPU seconds (user + system) and memory (now and peak) of one process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = {k: v.strip() for k, _, v in (ln.partition(":") for ln in f)}
    except OSError:
        return None
    tck = os.sysconf("SC_CLK_TCK")

    def kb(key: str) -> int | None:
        v = status.get(key)
        return int(v.split()[0]) * 1024 if v else None

    return {"cpu_s": (int(fields[11]) + int(fields[12])) / tck, "rss_bytes": kb("VmRSS"),
            "peak_rss_bytes": kb("VmHWM")}


class ServedSystem(RemoteSystem):
    """The app's client against the server this scenario started: the measured window (from the driver's
    reset after the calibration to :meth:`record`) also reads the server's processes from /proc."""

    def __init__(self, task: Any, url: str, network: str, server: Any, **kw: Any) -> None:
        self.server_process = server
        self._cpu_before: dict[int, float] = {}
        super().__init__(task, url, network, **kw)

    def pids(self) -> list[tuple[str, int]]:
        """The server's processes: its event loop and its instances (as it describes them now)."""
        out = [("server", self.server_process.pid)]
        try:
            procs = [p for p in self.server_process.describe().get("processes", []) if p.get("role") == "instance"]
            out += [(f"instance-{p.get('index', i)}", int(p["pid"])) for i, p in enumerate(procs)]
        except Exception:  # the server is gone: its announced instances
            out += [(f"instance-{i}", pid) for i, pid in enumerate(self.server_process.worker_pids)]
        return out

    def reset_report(self) -> None:
        super().reset_report()
        if hasattr(self, "server_process"):
            self._cpu_before = {pid: p["cpu_s"] for _, pid in self.pids() if (p := _proc(pid)) is not None}

    def record(self, result: Any, partial: str | None = None) -> None:
        super().record(result, partial)
        record_server(self, result, partial)


PART_NOTES = {
    "client_pre": "collation and the application's pre-processing, in the client",
    "network_queue": "round trip minus the server's compute: network, HTTP, the server's queue and hand-offs",
    "round_trip": "the whole request as the client saw it (DjiNN's protocol carries no server timing)",
    "server_compute": "the server's compute per request (its compute input + infer + output, from the response)",
    "client_post": "the application's post-processing, in the client",
}


def record_server(sut: Any, result: Any, partial: str | None = None) -> None:
    """The scenario's own figures into ``result`` (see the module docstring). ``partial``: the run was
    interrupted; the figures (and ``method.djinn.partial``) say they cover the run up to then."""
    from aibench.results.parts import part_entry
    from aibench.results.schema import metric as plain_metric

    def metric(*args: Any, **kw: Any) -> dict[str, Any]:
        return plain_metric(*args, **kw, **({"partial": partial} if partial else {}))

    rep = sut.report()
    # the driver kept each stage per batch; here a batch is one request: say so, and what each part holds
    parts = {name: p for name, values in rep.stages.items()
             if (p := part_entry(values, "s", "request", PART_NOTES.get(name))) is not None}
    result.parts.setdefault("stage", {}).update(parts)
    info: dict[str, Any] = result.method.setdefault("djinn", {})
    if partial:
        info["partial"] = partial
    queries = rep.samples
    rate = (result.metrics.get("samples_per_s") or {}).get("value")
    if queries:
        up, down = rep.bytes_in / queries, rep.bytes_out / queries
        result.metrics["bytes_up_per_query"] = metric(up, "B", "lower")
        result.metrics["bytes_down_per_query"] = metric(down, "B", "lower")
        if rate:
            bw = (up + down) * rate
            result.metrics["bandwidth_bytes_per_s"] = metric(bw, "B/s", "lower")
            info["links"] = {name: {"bytes_per_s": cap, "share_used": bw / cap} for name, cap in LINKS.items()}
        else:
            result.metrics["bandwidth_bytes_per_s"] = metric(None, "B/s", "lower", unavailable="no rate measured")
    else:
        for name, unit in (("bytes_up_per_query", "B"), ("bytes_down_per_query", "B"),
                           ("bandwidth_bytes_per_s", "B/s")):
            result.metrics[name] = metric(None, unit, "lower", unavailable="no query was answered")
    stats = rep.extra.get("server_stats") or {}
    mine = stats.get(sut.network) if isinstance(stats, dict) else None
    if mine and mine.get("mean_batch_rows") is not None:
        result.metrics["server_mean_batch_rows"] = metric(mine["mean_batch_rows"], "rows", "higher")
        info["batches"] = {"histogram_rows": mine["batch_histogram"], "executed": mine["executed_batches"],
                           "mean_rows": mine["mean_batch_rows"], "per_network": stats}
        m = mine["mean_request_s"]
        parts_s = [m.get(k) for k in ("compute_input", "compute_infer", "compute_output")]
        if all(v is not None for v in parts_s):
            result.metrics["server_compute_mean_s"] = metric(sum(parts_s), "s", "lower")
    else:
        why = stats.get("unavailable") if isinstance(stats, dict) and stats.get("unavailable") else \
            "the server's statistics recorded no executed batch"
        result.metrics["server_mean_batch_rows"] = metric(None, "rows", "higher", unavailable=why)
    if "server_compute_mean_s" not in result.metrics:
        result.metrics["server_compute_mean_s"] = metric(None, "s", "lower",
                                                         unavailable="no server statistics over the run")
    procs = []
    for role, pid in sut.pids():
        p = _proc(pid)
        if p is None:
            continue
        before = sut._cpu_before.get(pid)
        procs.append({"role": role, "pid": pid, **p,
                      "cpu_s_window": p["cpu_s"] - before if before is not None else None})
    cpu = [p["cpu_s_window"] for p in procs if p["cpu_s_window"] is not None]
    info["server_processes"] = procs
    info["server_processes_note"] = ("read from /proc: cpu_s since each process started, cpu_s_window over the "
                                     "measured window (after the calibration); peak_rss_bytes is VmHWM since "
                                     "start (the models are loaded before the window)")
    if cpu and queries:
        result.metrics["server_cpu_s_per_query"] = metric(math.fsum(cpu) / queries, "s", "lower",
                                                          cpu_s=math.fsum(cpu))
    else:
        result.metrics["server_cpu_s_per_query"] = metric(None, "s", "lower",
                                                          unavailable="the server's /proc was not readable")
    peaks = [p["peak_rss_bytes"] for p in procs if p.get("peak_rss_bytes")]
    if peaks:
        result.metrics["server_peak_rss_bytes"] = metric(float(sum(peaks)), "B", "lower")
    else:
        result.metrics["server_peak_rss_bytes"] = metric(None, "B", "lower", unavailable="no /proc status read")
    energy = (result.meters or {}).get("energy")
    total = energy.get("total") if isinstance(energy, dict) else None
    if isinstance(total, dict) and total.get("provenance") not in (None, "unavailable"):
        info["server_energy"] = ("in the run's meters (meters.energy): package-wide RAPL covers the whole machine, "
                                 "the server's processes included")
    else:
        why = (total or {}).get("detail") or (total or {}).get("reason") or "no energy meter on this machine"
        info["server_energy"] = f"unavailable: {why}"
