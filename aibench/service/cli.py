"""``aibench serve``: the command line of the DNN service (imported only when the command runs)."""

from __future__ import annotations

import os
import re

import click

from aibench.errors import UsageError
from aibench.service.models import SPECS, TONIC_MODELS
from aibench.spec import FiniteFloat

EPILOG = """\b
Exit codes: 0 stopped by SIGTERM or Ctrl-C after in-flight requests finished · 2 bad usage ·
3 device or dtype not available · 4 a --model-dir folder that cannot be used (missing, untrained) ·
6 a port is in use (or the address cannot be listened on) · 70 internal error ·
130 a second SIGTERM/Ctrl-C stopped it at once."""


def _port(value: str, option: str) -> int | None:
    if value.lower() == "off":
        return None
    if not value.isdigit() or int(value) > 65535:
        raise UsageError(f"{option} must be a port number (0 = any free port) or 'off'; got {value!r}")
    return int(value)


def _per_model(value: str | None, option: str, models: tuple[str, ...], cast: type) -> dict[str, float]:
    """``N`` (every model) or ``name=N,name=N`` (those models; the rest keep their default)."""
    if value is None:
        return {}
    out: dict[str, float] = {}
    try:
        if "=" not in value:
            n = cast(value)
            return {m: n for m in models}
        for part in value.split(","):
            name, _, num = part.partition("=")
            name = name.strip()
            if name not in models:
                raise UsageError(f"{option}: {name!r} is not a served model ({', '.join(models)})")
            out[name] = cast(num)
    except ValueError:
        raise UsageError(f"{option} must be N or MODEL=N[,MODEL=N...]; got {value!r}") from None
    return out


def _devices(value: str) -> tuple[str, ...]:
    """``cpu``, ``cuda`` (= cuda:0), ``cuda:N`` or ``cuda:0,1`` (one set of instances per listed GPU)."""
    m = re.fullmatch(r"cpu|cuda(?::(\d+(?:,\d+)*))?", value.strip())
    if m is None:
        raise UsageError(f"--devices must be cpu, cuda, cuda:N or cuda:N,M,...; got {value!r}")
    if value.strip() == "cpu":
        return ("cpu",)
    ids = (m.group(1) or "0").split(",")
    if len(set(ids)) != len(ids):
        raise UsageError(f"--devices names a GPU twice: {value!r}")
    return tuple(f"cuda:{i}" for i in ids)


@click.command("serve", epilog=EPILOG, context_settings={"max_content_width": 110})
@click.option("--models", default=None, metavar="M,M,...",
              help=f"Models to serve: {', '.join(SPECS)} (null does no work: it measures the server), and "
                   "those of --model-dir [default: the --model-dir models if any, else "
                   f"{','.join(TONIC_MODELS)}].")
@click.option("--model-dir", "model_dirs", multiple=True, metavar="FAMILY=DIR",
              help="Also serve the trained models of a folder: ecommerce=DIR adds ecommerce-classifier, "
                   "ecommerce-preference and ecommerce-ranker from an e-commerce store (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 listens on every interface: anyone who can reach the "
                   "machine can use the server).")
@click.option("--port", default="8000", show_default=True, metavar="PORT|0|off",
              help="Open Inference Protocol (HTTP) port; 0 = any free port (printed), off = none.")
@click.option("--djinn-port", default="9000", show_default=True, metavar="PORT|0|off",
              help="DjiNN binary protocol port; 0 = any free port (printed), off = none.")
@click.option("--instances", type=click.IntRange(1, 256), default=1, show_default=True, metavar="N",
              help="Worker processes per device, each with every model (DjiNN's instances per GPU).")
@click.option("--devices", default="cpu", show_default=True, metavar="cpu|cuda|cuda:0,1",
              help="Where instances run: cpu, or one set of --instances per listed GPU (cuda = cuda:0).")
@click.option("--threads", type=click.IntRange(1, 1024), metavar="T",
              help="Intra-op threads per instance [default: on CPU the usable cores split between the "
                   "instances; on a GPU 1].")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Compute type of the networks (requests and replies stay float32).")
@click.option("--max-batch", metavar="N|M=N,...",
              help="Rows per executed batch, for every model or per model [default: the paper's batch "
                   "in rows: " + ", ".join(f"{m} {s.default_max_batch}" for m, s in SPECS.items()) + "].")
@click.option("--max-queue-delay-us", metavar="U|M=U,...",
              help="How long the oldest queued request may wait for a fuller batch (Triton's "
                   "max_queue_delay_microseconds) [default: 0: batch what is queued when an instance is free].")
@click.option("--max-request-mb", type=FiniteFloat(0.001, 4096), default=64.0, show_default=True,
              metavar="MB", help="Largest request body (HTTP) or DjiNN request; larger ones get 413 / a close.")
@click.option("--max-json-mb", type=FiniteFloat(0.001, 1024), default=16.0, show_default=True, metavar="MB",
              help="Largest JSON part of an HTTP request (JSON costs far more memory than its bytes).")
@click.option("--max-pending-mb", type=FiniteFloat(1, 1 << 20), default=1024.0, show_default=True,
              metavar="MB", help="Bytes all requests in the server may hold at once; past it, 503 / a close.")
@click.option("--idle-timeout", type=FiniteFloat(0.1, 86400), default=15.0, show_default=True, metavar="S",
              help="Close a connection that sends nothing for S seconds (HTTP keep-alive; DjiNN between requests).")
@click.option("--body-timeout", type=FiniteFloat(0.1, 86400), default=30.0, show_default=True, metavar="S",
              help="A request body (or DjiNN header/request) must arrive within S seconds once started.")
@click.option("--shutdown-timeout", type=FiniteFloat(0, 86400), default=30.0, show_default=True,
              metavar="S", help="On SIGTERM/Ctrl-C, how long in-flight requests may take to finish.")
@click.option("--null-delay-us", type=FiniteFloat(0, 60e6), default=0.0, show_default=True, metavar="U",
              help="The null model sleeps U microseconds per batch (a stand-in network of known compute time).")
@click.option("--resident-inputs", metavar="N|M=N,...",
              help="Rows of input each instance keeps on its device, per model or for every model (seeded, the "
                   "same everywhere); a request may then name rows of them instead of carrying its tensor "
                   "(no request payload, no host-to-device copy: the device's compute ceiling, the paper's "
                   "Fig. 12) [default: 0, none].")
@click.option("--json", "json_lines", is_flag=True,
              help="Announce as JSON lines on stdout (listening, model_ready, ready, stopping, stopped).")
def serve(models: str | None, model_dirs: tuple[str, ...], host: str, port: str, djinn_port: str, instances: int,
          devices: str, threads: int | None,
          dtype: str, max_batch: str | None, max_queue_delay_us: str | None, max_request_mb: float,
          max_json_mb: float, max_pending_mb: float, idle_timeout: float, body_timeout: float,
          shutdown_timeout: float, null_delay_us: float, resident_inputs: str | None, json_lines: bool) -> None:
    """Serve the Tonic networks as a DNN service (DjiNN & Tonic, ISCA 2015): DjiNN's own binary protocol
    and the Open Inference Protocol (KServe v2, as Triton, TorchServe and MLServer speak it), with dynamic
    batching and several worker processes per device.

    Each model is the network stage of its component benchmark (the pre-processed tensor in, the
    network's output out; seeded weights, as `aibench run component`). Requests are batched by rows (one
    image, one speech frame, one word window). Stop with SIGTERM or Ctrl-C: in-flight requests finish,
    then it exits 0.

    \b
    Examples:
      aibench serve --models imc,pos                      HTTP :8000, DjiNN :9000
      aibench serve --models imc --instances 2 --max-queue-delay-us 2000
      aibench serve --models imc --devices cuda:0,1 --instances 4
      aibench serve --models null --port 0 --djinn-port off    any free port (printed)
      aibench serve --models pos --resident-inputs 1792       requests may name resident rows
      curl -s localhost:8000/v2/models/imc                  the model's metadata
      curl -s localhost:8000/v2/models/imc/stats            Triton's statistics
    """
    from aibench.lifetime import die_with_parent
    from aibench.service.server import MiB, ServeConfig
    from aibench.service.server import serve as run_server

    parent = os.environ.get("AIBENCH_PARENT_PID", "")
    if parent.isdigit():  # started by an aibench process (aibench.service.launch): die with it
        die_with_parent(int(parent))

    from aibench.service.models import add_model_dirs

    dirs: dict[str, str] = {}
    for item in model_dirs:
        family, eq, folder = item.partition("=")
        if not eq or not family.strip() or not folder:
            raise UsageError(f"--model-dir must be FAMILY=DIR; got {item!r}")
        dirs[family.strip()] = folder
    added = add_model_dirs(dirs)  # checks each folder now, before any port is taken
    names = tuple(m.strip() for m in models.split(",") if m.strip()) if models is not None else \
        (added or TONIC_MODELS)
    cfg = ServeConfig(
        models=names, host=host, port=_port(port, "--port"), djinn_port=_port(djinn_port, "--djinn-port"),
        devices=_devices(devices), instances=instances, threads=threads, dtype=dtype,
        max_batch={k: int(v) for k, v in _per_model(max_batch, "--max-batch", names, int).items()},
        max_queue_delay_us=_per_model(max_queue_delay_us, "--max-queue-delay-us", names, float),
        max_request_bytes=int(max_request_mb * MiB), max_json_bytes=int(max_json_mb * MiB),
        max_pending_bytes=int(max_pending_mb * MiB), idle_timeout_s=idle_timeout, body_timeout_s=body_timeout,
        shutdown_timeout_s=shutdown_timeout, null_delay_us=null_delay_us, json_lines=json_lines,
        model_dirs=dirs,
        resident_rows={k: int(v) for k, v in _per_model(resident_inputs, "--resident-inputs", names, int).items()})
    code = run_server(cfg)
    raise click.exceptions.Exit(code)
