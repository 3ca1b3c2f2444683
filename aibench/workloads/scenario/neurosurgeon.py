"""``scenario/neurosurgeon``: a network split between a device and a server, run for real (Neurosurgeon,
Kang et al., ASPLOS 2017).

``aibench run scenario neurosurgeon --net imc --cut pool5 --network lte`` runs layers 1..j in this process
(the device), sends the activation over TCP on loopback through a shaped link (a token bucket in each
sender plus the round-trip delay) to a server process this scenario starts, which runs the rest and returns
the result; LoadGen measures the end-to-end latency. ``--cut auto`` takes the cut ``aibench partition
choose`` would (from the platform profiles). The moving parts are :mod:`aibench.partition.split` and
:mod:`aibench.partition.server`, imported when it runs (listing stays light). docs/partition.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aibench.loadgen.metrics import SYSTEM_METRICS
from aibench.registry import MetricSpec, benchmark
from aibench.spec import Param

# Defaults the split checks against: a value other than these is one the user gave (aibench.partition.split)
DEFAULT_NETWORK = "lte"
DEFAULT_LOAD_STEP_S = 5.0

NEUROSURGEON_METRICS = (
    *SYSTEM_METRICS,  # its stages: device compute, upload, server compute, download
    MetricSpec("bytes_up_per_query", "B", "lower", "bytes on the link per query, device to server (the activation "
               "at the cut with its frame header; 0 at cut N)"),
    MetricSpec("bytes_down_per_query", "B", "lower", "bytes on the link per query, server to device (stamps and "
               "the result)"),
    MetricSpec("transfer_median_s", "s", "lower", "median of upload + download per query (parts.stage)"),
    MetricSpec("link_rate_measured_bit_s", "bit/s", "higher", "the shaped link's upload rate measured before the "
               "run: a --link-check-s transfer timed to the server's receipt of its last byte"),
    MetricSpec("link_rate_error", "fraction", "lower", "measured / configured - 1 of that check (within 5% is "
               "the shaper's promise)"),
    MetricSpec("link_rate_in_run_bit_s", "bit/s", "higher", "the upload rate over the run's own transfers long "
               "enough to measure (20 ms or more at the configured rate)"),
    MetricSpec("predicted_latency_s", "s", "lower", "the decision's predicted latency of this cut, from the "
               "platform profiles (partition choose), beside the measured one"),
    MetricSpec("server_load_factor", "x", "lower", "the server's load learned by pinging it before the run: how "
               "many times longer than idle the network's own layers take there now (1: idle; what it is made of: "
               "method.neurosurgeon.server.load.measured); the decision prices the server at this factor"),
)


@benchmark(
    kind="scenario", name="neurosurgeon",
    description="Neurosurgeon: a network cut after layer j, layers 1..j here and the rest in a server process "
                "over a shaped loopback link, under LoadGen; latency parts, bytes per query, the link's "
                "measured rate",
    source="Neurosurgeon (Kang et al., ASPLOS 2017)",
    params=[
        Param("net", str, "imc", "the component network to cut (a chain of named layers: a Tonic net or vgg)"),
        Param("cut", str, "auto", "the last layer on the device (a layer name, 'input' or j = 0..N); auto: the "
              "decision's choice from the platform profiles"),
        Param("network", str, DEFAULT_NETWORK, "the link: 3g, lte, wifi (derived from the paper's upload times) or "
              "a rate in Mbit/s (--trace replaces it)"),
        Param("rtt_ms", float, 0.0, "round-trip time added on the link (half before each transfer each way)",
              unit="ms", minimum=0.0, maximum=60_000.0),
        Param("server_load", int, 0, "K background jobs in the server process (each the whole network in a loop)",
              minimum=0, maximum=64),
        Param("server_load_steps", str, "", "the server's background jobs stepped during the run, e.g. 0,2,4,8 "
              "(--load-step-s each, from the measured run's start; the last stays); the device learns the load "
              "by pinging and, with --cut auto, re-chooses the cut"),
        Param("load_step_s", float, DEFAULT_LOAD_STEP_S, "seconds of each --server-load-steps step", unit="s",
              minimum=0.1, maximum=3600.0),
        Param("device_threads", int, 1, "torch threads of the device side (this process)", minimum=1,
              maximum=1024),
        Param("device_cpu_quota", float, 0.0, "cap the device side (this process, not the server) at this many "
              "cores of CPU time through a cgroup, so that it is many times slower than the server; 0: no cap",
              unit="cores", minimum=0.0, maximum=1024.0),
        Param("server_priority", bool, False, "give the server process the largest CPU weight (a cgroup, no cap): "
              "a dedicated server on a shared machine, whose cores others' work does not take while it computes"),
        Param("server_threads", int, 0, "torch threads of the server process; 0: every usable core", minimum=0,
              maximum=1024),
        Param("dtype", str, "float32", "element type of both sides", choices=("float32", "bfloat16", "float16")),
        Param("batch", int, 1, "requests per query's input at most (the component's batch)", minimum=1,
              maximum=4096),
        Param("num_samples", int, 8, "distinct samples", minimum=1, maximum=1 << 16),
        Param("data", str, "synthetic", "auto | synthetic | real (as the component benchmark)",
              choices=("auto", "synthetic", "real")),
        Param("device_profile", str, "partition-device.json", "platform profile of the device side (--cut auto, "
              "and the prediction beside the measurement)"),
        Param("server_profile", str, "partition-server.json", "platform profile of the server side"),
        Param("trace", str, "", "a bandwidth trace replayed during the run (time_s,rate_mbit CSV), or "
              "lte-synthetic (shipped, synthetic): the link's rate instead of --network's; with --cut auto the cut "
              "follows the measured rate"),
        Param("link_check_s", float, 0.3, "seconds of data each way that verify the link's rate before the run",
              unit="s", minimum=0.01, maximum=60.0),
    ],
    metrics=NEUROSURGEON_METRICS,
    primary_metric="samples_per_s",
    runner="loadgen",
    capabilities=frozenset({"owns-system"}),
    tiny={"net": "pos", "cut": "fc1", "network": "wifi", "num_samples": 2, "server_threads": 1,
          "link_check_s": 0.05},
)
def neurosurgeon(params: dict[str, Any], result: Any) -> contextlib.AbstractContextManager[tuple[Any, int]]:
    """A context manager yielding (the device side, its batch); on leaving, the run's figures are recorded
    and the server process is stopped."""
    from aibench.partition.split import split_run  # the two processes: only when it runs

    return split_run(params, result)
