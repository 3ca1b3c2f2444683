"""``scenario/djinn``: the paper's setting in one command (DjiNN & Tonic, ISCA 2015).

``aibench run scenario djinn --app imc`` starts ``aibench serve`` for the app's network(s) in a subprocess
on free loopback ports (:func:`aibench.service.launch.start_server`), runs the Tonic application as its
client (:class:`~aibench.sut.remote.RemoteSystem`: samples and pre/post-processing here, the network in the
server) under LoadGen's scenario (or closed-loop users), and stops the server afterwards: also when the run
fails or is interrupted (the server also dies with aibench, even on SIGKILL: ``aibench.lifetime``).

Recorded per run, besides LoadGen's figures over the end-to-end latency:

- the parts of each request as distributions (one value per request): client pre-processing, network and
  queue (round trip minus the server's compute), server compute (the server's own figure per request),
  client post-processing. Over ``--protocol djinn`` the wire carries no timing, so the round trip stays
  whole and the server's compute is its statistics' mean;
- bytes per query up and down and the bandwidth the achieved rate needs (the paper's Fig. 13; the link
  lines it draws are in ``method.djinn.links``);
- the batch sizes the server executed (average and histogram, from its statistics extension);
- how the inputs reached the network (``context.inputs``): transferred with every request, or resident on
  the server's devices (``--resident-inputs N``, the paper's Fig. 12);
- the server's processes (event loop and instances): CPU time and peak memory over the measured window,
  read from /proc; energy as the run's meters give it (package-wide RAPL covers both processes; otherwise
  unavailable with the reason).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aibench.loadgen.metrics import SYSTEM_METRICS
from aibench.registry import MetricSpec, benchmark
from aibench.spec import Param

APPS = ("imc", "dig", "face", "asr", "pos", "chk", "ner")
# The app's parameters that the scenario passes through to the component benchmark (0: the app's default).
APP_PARAMS = ("batch", "num_samples", "stage", "data", "words", "frames", "images_per_request")
# The paper's Fig. 13 reference lines (its footnote: at 80% efficiency), bytes/s.
LINKS = {"PCIe v3 x16": 15.875e9 * 0.8, "10GbE": 1.25e9 * 0.8}

DJINN_METRICS = (
    *SYSTEM_METRICS,  # its stages: client pre, network and queue, server compute, client post
    # per application query: one sample (an image, a sentence, an utterance), as the paper counts; a LoadGen
    # query may hold many samples (Offline, MultiStream)
    MetricSpec("bytes_up_per_query", "B", "lower", "request bytes per application query (one sample), client "
               "to server"),
    MetricSpec("bytes_down_per_query", "B", "lower", "response bytes per application query (one sample), "
               "server to client"),
    MetricSpec("bandwidth_bytes_per_s", "B/s", "lower", "bytes per application query (both ways) x achieved "
               "samples/s: the link the achieved rate needs (the paper's Fig. 13)", "rate"),
    MetricSpec("server_mean_batch_rows", "rows", "higher", "mean rows per batch the server executed"),
    MetricSpec("server_cpu_s_per_query", "s", "lower", "CPU time of the server's processes per application "
               "query (one sample), measured window"),
    MetricSpec("server_peak_rss_bytes", "B", "lower", "peak resident memory of the server's processes "
               "(sum of each process's peak)"),
    MetricSpec("server_compute_mean_s", "s", "lower", "mean server compute per request (its statistics: "
               "compute input + infer + output)"),
)


@benchmark(
    kind="scenario", name="djinn",
    description="DjiNN & Tonic: aibench serve started for the app's network, the Tonic app as its client under "
                "LoadGen; latency parts, bytes per query, executed batches, server CPU and memory",
    source="DjiNN and Tonic (Hauswald et al., ISCA 2015)",
    params=[
        Param("app", str, "imc", "the Tonic application (client) and its network (served)", choices=APPS),
        Param("stage", str, "app", "app: the whole application as the client (raw input, pre- and "
              "post-processing here); dnn: pre-processed tensors only", choices=("app", "dnn")),
        Param("protocol", str, "http", "http: Open Inference Protocol with binary tensors (per-request server "
              "timing); djinn: DjiNN's binary protocol (the paper's wire)", choices=("http", "djinn")),
        Param("batch", int, 0, "samples per request at most (Offline slices); 0: the app's Table 3 batch",
              minimum=0, maximum=1 << 16),
        Param("num_samples", int, 0, "distinct samples; 0: the app's default", minimum=0, maximum=1 << 20),
        Param("data", str, "auto", "auto | synthetic | real (as the component benchmark)",
              choices=("auto", "synthetic", "real")),
        Param("words", int, 28, "NLP apps: words per synthetic sentence", minimum=1, maximum=100_000),
        Param("frames", int, 548, "ASR: frames per synthetic utterance", minimum=11, maximum=1_000_000),
        Param("images_per_request", int, 100, "DIG: digit images per request", minimum=1, maximum=100_000),
        Param("instances", int, 1, "server worker instances per device (aibench serve --instances)",
              minimum=1, maximum=256),
        Param("devices", str, "cpu", "the server's devices (aibench serve --devices)",
              pattern=r"cpu|cuda(:\d+(,\d+)*)?"),
        Param("server_max_batch", int, 0, "rows per executed batch at most; 0: the server's default (Table 3)",
              minimum=0, maximum=1 << 20),
        Param("max_queue_delay_us", float, 0.0, "the server's dynamic batcher delay", minimum=0.0,
              maximum=60e6),
        Param("server_threads", int, 0, "threads per server instance; 0: the server's default (cores split)",
              minimum=0, maximum=1024),
        Param("in_flight", int, 16, "requests in flight at most from the client", minimum=1, maximum=4096),
        Param("resident_inputs", int, 0, "0: every request carries its input tensor (the paper's Fig. 11); N: the "
              "server keeps N input rows per network on each instance's device and requests name rows of them "
              "instead (Fig. 12: no request payload, no host-to-device copy; the answers are those rows' outputs, "
              "not the samples'); N >= the server's max batch keeps a batch's rows distinct",
              minimum=0, maximum=1 << 24),
    ],
    metrics=DJINN_METRICS,
    primary_metric="samples_per_s",
    runner="loadgen",
    capabilities=frozenset({"owns-system"}),
    tiny={"app": "pos", "batch": 3, "num_samples": 3, "words": 7, "data": "synthetic"},
)
def djinn(params: dict[str, Any], result: Any) -> contextlib.AbstractContextManager[tuple[Any, int]]:
    """A context manager yielding (the client system, its batch); on leaving, the server's side is recorded
    into ``result`` and the server is stopped."""
    from aibench.workloads.scenario._served import served_app  # the client and server: only when it runs

    return served_app(params, result)
