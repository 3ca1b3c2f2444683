"""From the words of ``aibench sweep`` to a :class:`~aibench.sweep.engine.SweepPlan`, every point validated
before anything is measured (bad input is exit 2 with nothing written).

The form is the first word:

- ``threads`` — the harness's ``--threads`` (torch intra-op threads) from 1 to N: speedup and efficiency.
- ``gpus`` — devices 1..N (or instances per device) with worker processes: speedup and efficiency.
- anything else names what is swept: a benchmark parameter (``batch``, ``frames``, ...) or, for a
  load-generated benchmark, a numeric LoadGen option (``target_qps``, ``samples_per_query``, ...).
  ``param:NAME`` always means the benchmark's own parameter, so a benchmark parameter literally named
  ``threads`` or ``gpus`` is swept as ``param:threads``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from aibench.errors import UnavailableError, UsageError
from aibench.harness import PlannedRun, RunOptions, plan
from aibench.registry import Benchmark
from aibench.sweep.analysis import LATENCY_CHOICES, latency_metric_name
from aibench.sweep.engine import KneeRequest, PointPlan, SweepPlan
from aibench.sweep.values import default_counts, parse_values

SCALING_WORDS = ("threads", "gpus")
MAX_WORKERS = 256


def resolve_form(word: str, bench: Benchmark) -> tuple[str, str, str]:
    """(kind, param, target) for the sweep's first word. ``target`` says where a point's value goes:
    ``bench`` (a benchmark parameter), ``options`` (an option of its runner, e.g. LoadGen's), ``threads`` or
    ``gpus``."""
    if word.startswith("param:"):
        name = word[len("param:"):].lstrip("-").replace("-", "_")
        return "param", bench.params.lookup(name).name, "bench"
    if word in SCALING_WORDS:
        return word, word, word
    name = word.lstrip("-").replace("-", "_")
    if name in bench.params:
        return "param", name, "bench"
    sweepable = bench.runner_spec.sweepable
    if name in sweepable:
        return "param", name, "options"
    options = [p.name for p in bench.params] + list(sweepable)
    close = difflib.get_close_matches(name, options + list(SCALING_WORDS), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"cannot sweep {word!r}: it is not threads, gpus, a parameter of {bench.id}"
                     f"{f' or an option of its {bench.runner} runner' if sweepable else ''}{hint}")


def parse_devices(text: str | None, cuda_count: int) -> list[str]:
    """``cpu:N`` (N CPU worker slots), ``cuda``, ``cuda:0,1`` / ``cuda:0,cuda:1``, or ``N`` (GPUs 0..N-1);
    nothing: every GPU. Raises UsageError on bad syntax, UnavailableError for GPUs this machine lacks."""
    if text is None or not text.strip():
        if cuda_count <= 0:
            raise UnavailableError("no CUDA GPU on this machine: use --devices cpu:N to scale over N CPU worker "
                                   "processes")
        return [f"cuda:{i}" for i in range(cuda_count)]
    t = text.strip().lower()
    if t == "cpu" or t.startswith("cpu:"):
        n = _int(t.partition(":")[2] or "1", "--devices cpu:N")
        if not 1 <= n <= MAX_WORKERS:
            raise UsageError(f"--devices cpu:N needs 1 <= N <= {MAX_WORKERS}, got {n}")
        return ["cpu"] * n
    if t.isdigit():
        n = int(t)
        if n < 1:
            raise UsageError("--devices N needs N >= 1")
        indices = list(range(n))
    elif t == "cuda":
        indices = list(range(cuda_count)) or [0]
    elif t.startswith("cuda:"):
        indices = [_int(part.strip().removeprefix("cuda:"), "--devices cuda:I,J") for part in t[5:].split(",")]
        if len(set(indices)) != len(indices):
            raise UsageError(f"--devices {text}: a device is named twice")
    else:
        raise UsageError(f"--devices must be cpu:N, cuda, cuda:I,J,... or N; got {text!r}")
    if cuda_count <= 0:
        raise UnavailableError(f"--devices {text}: no CUDA GPU is available on this machine (use cpu:N)")
    missing = [i for i in indices if i >= cuda_count]
    if missing:
        raise UnavailableError(f"--devices {text}: this machine has {cuda_count} CUDA device(s) "
                               f"(0..{cuda_count - 1})")
    return [f"cuda:{i}" for i in indices]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an integer") from None


def scaling_basis(bench: Benchmark, opts: RunOptions, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metric speedup is computed on (the run's primary metric) and which way is better."""
    from aibench.harness import primary_metric

    name = primary_metric(bench, params, opts)
    try:
        direction = bench.metric(name).direction
    except KeyError:
        direction = "higher" if name.endswith("_per_s") else "lower"
    return {"metric": name, "direction": direction}


def plan_sweep(form: str, bench: Benchmark, given: Mapping[str, Any], opts: RunOptions, *,
               values_text: str | None = None, max_threads: int | None = None, usable_cpus: int = 1,
               devices: list[str] | None = None, instances_text: str | None = None,
               latency_bound_ms: float | None = None, latency_metric: str | None = None,
               threads_given: bool = False) -> SweepPlan:
    """Every point of the sweep, validated. ``given`` are the fixed benchmark parameters; ``opts`` the run
    options (with the runner's own, e.g. LoadGen's, in ``opts.runner_options``); ``devices`` the device slots
    of a ``gpus`` sweep (from :func:`parse_devices`)."""
    kind, param, target = resolve_form(form, bench)
    given = dict(given)
    fixed = {k.replace("-", "_") for k in given}
    notes: list[str] = []
    if target == "bench" and param in fixed:
        raise UsageError(f"--{param.replace('_', '-')} is what this sweep varies: give its values with --values")
    key = bench.runner_spec.options
    ropts = opts.options_of(bench)
    if target == "options" and ropts is not None and param in ropts.explicit:
        raise UsageError(f"--{param.replace('_', '-')} is what this sweep varies: give its values with --values")
    if kind == "threads" and threads_given:
        raise UsageError("a thread sweep sets --threads itself: use --max N or --values")
    if kind != "threads" and max_threads is not None:
        raise UsageError("--max applies to 'aibench sweep threads'")
    if kind != "gpus" and (devices is not None or instances_text is not None):
        raise UsageError("--devices and --instances-per-device apply to 'aibench sweep gpus'")
    if kind == "threads" and "threads" in bench.params:
        notes.append(f"this sweeps the harness's --threads; {bench.id}'s own --threads parameter is swept with "
                     "'aibench sweep param:threads'")

    # The values.
    extra: list[dict[str, Any]] = []
    if kind == "param":
        integer = (bench.params.by_name[param].type is int) if target == "bench" else \
            bench.runner_spec.sweepable[param] is int
        if target == "bench" and bench.params.by_name[param].type not in (int, float):
            raise UsageError(f"--{param.replace('_', '-')} is a {bench.params.by_name[param].type_name} parameter: "
                             "a sweep varies a number")
        if values_text is None:
            raise UsageError(f"give the values of --{param.replace('_', '-')} with --values (e.g. 1,2,4,8 or "
                             "1:64:x2)")
        values = parse_values(values_text, integer=integer)
    elif kind == "threads":
        if values_text and max_threads is not None:
            raise UsageError("give the thread counts with --values or --max N (1..N), not both")
        values = parse_values(values_text, integer=True) if values_text else \
            default_counts(max_threads or usable_cpus)
        if any(v < 1 or v > 1024 for v in values):
            raise UsageError("thread counts must be between 1 and 1024")
        if max(values) > usable_cpus:
            notes.append(f"{max(values)} threads on {usable_cpus} usable CPU(s): points beyond {usable_cpus} "
                         "oversubscribe the cores (their speedup shows it)")
    else:
        param, values, extra = _gpus_values(bench, fixed, devices, instances_text, values_text)
        if bench.can("owns-system") and param == "devices" and len(values) == 1:
            notes.append(f"one device: a sweep of 1 point ({bench.id}'s device scaling needs two or more GPUs)")

    # Fixed parameters, validated once (the swept value is validated per point below).
    runs: list[tuple[PlannedRun, RunOptions, dict[str, Any]]] = []
    for i, v in enumerate(values):
        point_given = dict(given)
        point_opts = opts
        if target == "bench":
            point_given[param] = v
        elif target == "options":
            assert key is not None and ropts is not None
            point_opts = opts.with_options(**{key: replace(ropts, **{param: v}, explicit=(*ropts.explicit, param))})
            point_opts.options_for(key).resolve()
        elif target == "threads":
            point_opts = replace(opts, threads=int(v))
        elif bench.can("owns-system"):  # its own server places the instances: its devices/instances params
            point_given["devices"] = "cuda:" + ",".join(d.removeprefix("cuda:") for d in extra[i]["devices"])
            point_given["instances"] = extra[i]["instances_per_device"]
        else:
            if "device" in bench.params:
                point_given["device"] = "cpu" if devices and devices[0] == "cpu" else "cuda"
            point_opts = replace(opts, threads=opts.threads or 1)
        try:
            (run,) = plan(bench, point_given)
        except UsageError as exc:
            raise UsageError(f"{param}={v}: {exc.message}") from None
        info = extra[i] if extra else {}
        if info and not bench.can("owns-system"):
            info = {**info, "scale": {"devices": info["devices"], "instances_per_device": info["instances_per_device"],
                                      "workers": len(info["workers"]), "worker_threads": point_opts.threads}}
        runs.append((run, point_opts, info))

    knee, batch_latency = _knee(bench, param, runs[0][1], latency_bound_ms, latency_metric)

    scaling = None
    if kind in ("threads", "gpus"):
        basis = scaling_basis(bench, runs[0][1], runs[0][0].params)
        unit = {"threads": "threads", "devices": "devices", "instances_per_device": "instances"}[param]
        scaling = {**basis, "unit": unit}
        if kind == "gpus" and bench.can("collective"):
            scaling["unavailable"] = ("an all-reduce does not speed up with more ranks (its cost grows with them): "
                                      "compare busbw across points, nccl-tests' figure that does not depend on "
                                      "the rank count")

    points = [PointPlan(index=i, value=v, run=run, opts=o, extra=info)
              for i, (v, (run, o, info)) in enumerate(zip(values, runs, strict=True))]
    swept_out = {param} if target == "bench" else set()
    first = points[0].run.params
    definition = {
        "kind": kind, "benchmark": bench.id, "param": param, "values": list(values),
        "params": {k: first[k] for k in sorted(first) if k not in swept_out},
        "threads": None if kind == "threads" else points[0].opts.threads,
        "loadgen": None,  # kept (a sweep's definition hash decides --resume): the runner's options go under its key
        "devices": points[0].extra.get("slots") if kind == "gpus" else None,
        "knee": asdict(knee) if knee else None,
    }
    if key is not None:
        defined = _options_definition(points[0].opts.options_for(key), target == "options" and param)
        if defined:
            definition[key] = defined
    return SweepPlan(kind=kind, bench=bench, param=param, values=list(values), points=points,
                     definition=definition, knee=knee, scaling=scaling, batch_latency=batch_latency, notes=notes)


def _gpus_values(bench: Benchmark, fixed: set[str], devices: list[str] | None, instances_text: str | None,
                 values_text: str | None) -> tuple[str, list[Any], list[dict[str, Any]]]:
    """A gpus sweep's swept setting (``devices`` or ``instances_per_device``), its values and each point's
    workers, devices and worker slots."""
    extra: list[dict[str, Any]] = []
    if devices is None:
        raise UsageError("a gpus sweep needs its devices (--devices)")
    instances = parse_values(instances_text, integer=True) if instances_text else [1]
    if any(k < 1 for k in instances):
        raise UsageError("--instances-per-device must be >= 1")
    per_slot = "cpu" if devices[0] == "cpu" else "cuda"
    if bench.can("owns-system"):
        owned_system_devices(bench, fixed, per_slot)
    if len(instances) > 1:
        if values_text is not None:
            raise UsageError("with several --instances-per-device values the sweep varies instances over "
                             "all --devices; drop --values")
        param = "instances_per_device"
        values = list(instances)
        kmax = max(instances)
        slots = [d for d in devices for _ in range(kmax)]
        for k in values:
            workers = [di * kmax + j for di in range(len(devices)) for j in range(k)]
            extra.append({"workers": workers, "devices": list(devices), "instances_per_device": k})
    else:
        param = "devices"
        k = instances[0]
        values = parse_values(values_text, integer=True) if values_text else default_counts(len(devices))
        bad = [v for v in values if not 1 <= v <= len(devices)]
        if bad:
            raise UsageError(f"--values {bad[0]}: a device count between 1 and {len(devices)} (the --devices "
                             "given)")
        slots = [d for d in devices[:max(values)] for _ in range(k)]
        for d in values:
            extra.append({"workers": list(range(d * k)), "devices": list(devices[:d]),
                          "instances_per_device": k})
    if len(slots) > MAX_WORKERS:
        raise UsageError(f"{len(slots)} worker processes is more than {MAX_WORKERS}")
    if per_slot == "cuda" and "device" not in bench.params and not bench.can("owns-system"):
        raise UsageError(f"{bench.id} has no --device parameter: it cannot be placed on GPUs")
    if "device" in fixed:
        raise UsageError("a gpus sweep places each worker on its device: use --devices instead of --device")
    if bench.can("collective") and "ranks" in fixed:
        raise UsageError("in a gpus sweep the ranks are the launch's processes (one per device): drop --ranks")
    for e in extra:
        e["slots"] = slots
    return param, values, extra


def owned_system_devices(bench: Benchmark, fixed: set[str], per_slot: str) -> None:
    """A benchmark that starts its own system (scenario/djinn's server) is swept over devices and instances
    through its own ``devices`` and ``instances`` parameters, one system per point, not a pool of workers."""
    if not {"devices", "instances"} <= set(bench.params.by_name):
        raise UsageError(f"{bench.id} starts its own system without --devices/--instances parameters: it cannot "
                         "be swept over devices")
    if per_slot == "cpu":
        raise UsageError(f"{bench.id}'s server counts the CPU as one device (its instances split the cores): "
                         f"sweep CPU instances with 'aibench sweep instances {bench.kind} {bench.name} --values "
                         "1,2,4'; a device sweep needs GPUs (--devices cuda:0,1,...)")
    taken = fixed & {"devices", "instances"}
    if taken:
        raise UsageError(f"a gpus sweep sets --{sorted(taken)[0]} itself: use --devices and "
                         "--instances-per-device")


def _knee(bench: Benchmark, param: str, first_opts: RunOptions, latency_bound_ms: float | None,
          latency_metric: str | None) -> tuple[KneeRequest | None, bool]:
    """The knee asked for (--latency-bound-ms, --latency-metric), and whether a point's latency is its batch
    latency (batch / samples/s)."""
    knee = None
    inference = bench.can("inference")
    batch_latency = inference and "batch" in bench.params and param == "batch"
    if latency_bound_ms is not None:
        if not inference:
            raise UsageError("--latency-bound-ms names a knee for load-generated (inference) benchmarks; "
                             f"{bench.id} is not one")
        if not latency_bound_ms > 0:
            raise UsageError(f"--latency-bound-ms must be positive, got {latency_bound_ms}")
        scenario = first_opts.options_of(bench).resolve().scenario
        choice = latency_metric or ("batch" if scenario == "offline" else "p99")
        if choice not in LATENCY_CHOICES:
            raise UsageError(f"--latency-metric must be one of {', '.join(LATENCY_CHOICES)}; got {choice!r}")
        if scenario == "offline" and choice != "batch":
            raise UsageError("in Offline every sample is issued at once, so LoadGen's latency percentiles measure "
                             "the whole run, not a query: use --latency-metric batch (the default for Offline) "
                             "or a --scenario with per-query latency (server, single-stream, multi-stream)")
        if choice == "batch":
            if "batch" not in bench.params:
                raise UsageError(f"--latency-metric batch needs a --batch parameter; {bench.id} has none")
            batch_latency = True
        knee = KneeRequest(latency_bound_ms=latency_bound_ms, latency_metric=latency_metric_name(choice))
    elif latency_metric is not None:
        raise UsageError("--latency-metric goes with --latency-bound-ms (the knee's bound)")
    return knee, batch_latency


def _options_definition(options: Any, swept: str | bool) -> dict[str, Any] | None:
    """What the runner's options contribute to the sweep's definition (the swept option left out)."""
    if options is None:
        return None
    out: dict[str, Any] = options.resolve().config()
    out.pop(swept, None) if isinstance(swept, str) else None
    return out
