"""Per-layer-type prediction models (Neurosurgeon §5.1), fitted once per platform from a sweep of layer
configurations that excludes the layers of the networks being predicted.

**Sweep.** For each layer type (:data:`aibench.partition.layers.LAYER_TYPES`) seeded random configurations
are drawn log-uniformly over ranges that cover the Tonic networks and VGG (convolutions up to
``max_work`` multiply-accumulates); any configuration whose type and variables equal a layer of those
networks is dropped (``excluded`` in the profile counts them). Each is timed alone on the side, like a
profiled layer (:class:`aibench.partition.profile.Timing`): the median call is the point, or on a side under
a CPU quota the mean call over at least four CFS periods.

**Models.** Three forms per type, over the type's ``work`` figure ``w``:

* ``linear``: ``t = a + b·w``, least squares on relative error (each row divided by its time);
* ``log``: the throughput grows with the logarithm of the size and then saturates: ``w/t = c + d·ln w``,
  clipped to the throughputs seen in the sweep (the plateau), ``t = w / (w/t)``;
* ``loglog``: a straight line on logarithmic axes, ``ln t = c + d·ln w`` (a power law: also a
  "logarithmic" fit in the paper's sense, and the one that suits layers whose time is mostly overhead).

Every fourth point (after a seeded shuffle) is held out; the form with the lower mean absolute percentage
error on the held-out points is chosen and refitted on all points. The platform profile records both
forms' held-out errors, the chosen form, its coefficients and every sweep point (so the fit can be redone).

**Power.** Where the side's device has an energy counter (RAPL for the CPU, NVML for a GPU) each sweep
point's average power is measured too, and each type's model carries the median (``power``): the device
power per layer that the energy target needs. Where there is none, ``power`` says why.

Predicting from a profile is plain Python (:func:`predict`); fitting uses numpy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aibench.errors import ResultIOError, UsageError
from aibench.partition.layers import LAYER_TYPES, describe, signature
from aibench.partition.profile import Timing

PROFILE_SCHEMA = "aibench-partition-profile"
PROFILE_VERSION = 1
FORMS = ("linear", "log", "loglog")
HOLDOUT_EVERY = 4

# Configurations per layer type: the default sweep (a few minutes on 2 cores at one thread) and --quick.
SWEEP_COUNTS = {"conv": 48, "fc": 36, "pool": 20, "lc": 12, "act": 16, "norm": 12, "softmax": 12, "reshape": 8}
QUICK_COUNTS = {t: 5 for t in LAYER_TYPES}
MAX_WORK = 2.5e9  # the largest layer of VGG-16 is conv1_2, 1.85e9 MACs
QUICK_MAX_WORK = 2e7


def _logu(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _logi(rng: random.Random, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(_logu(rng, lo, hi))))


def draw_config(kind: str, rng: random.Random) -> dict[str, Any]:
    """One random configuration of a layer of type ``kind`` (plain data: see :func:`build_layer`)."""
    if kind == "conv":
        k = rng.choice((1, 3, 3, 5, 7, 11))
        s = rng.choice([v for v in (1, 1, 2, 4) if v <= k])
        groups = rng.choice((1, 1, 1, 2))
        cin = _logi(rng, 1, 512) if groups == 1 else 2 * _logi(rng, 1, 256)
        cout = _logi(rng, 8, 512) // groups * groups or groups
        return {"cin": cin, "cout": cout, "hw": _logi(rng, max(k, 5), 227), "k": k, "s": s,
                "pad": rng.choice((0, k // 2)), "groups": groups}
    if kind == "fc":
        # Half of them with many rows (a batch, an utterance's frames): one row is a matrix-vector product, bound
        # by reading the weights, many rows a matrix product, bound by arithmetic; the model's two variables
        # (work, work2) are told apart only by the many-row points (with a quarter of them, ASR's 548-frame
        # layers were predicted 1.3-1.8x too slow on the capped devices).
        return {"rows": rng.choice((1, _logi(rng, 2, 700))), "inputs": _logi(rng, 16, 25_088),
                "outputs": _logi(rng, 8, 4096)}
    if kind == "pool":
        return {"c": _logi(rng, 1, 512), "hw": _logi(rng, 4, 112), "k": rng.choice((2, 3)), "s": 2}
    if kind == "lc":
        return {"cin": _logi(rng, 1, 32), "cout": _logi(rng, 4, 32), "hw": _logi(rng, 10, 64),
                "k": rng.choice((3, 5, 7, 9)), "s": rng.choice((1, 2))}
    if kind == "act":
        return {"fn": rng.choice(("relu", "sigmoid", "tanh", "hardtanh")), "neurons": _logi(rng, 100, 4_000_000)}
    if kind == "norm":
        return {"c": _logi(rng, 8, 256), "hw": _logi(rng, 6, 56)}
    if kind == "softmax":
        return {"fn": rng.choice(("softmax", "argmax")), "rows": rng.choice((1, 1, _logi(rng, 2, 600))),
                "n": _logi(rng, 10, 10_000)}
    if kind == "reshape":
        return {"fn": rng.choice(("flatten", "dropout")), "neurons": _logi(rng, 100, 1_000_000)}
    raise ValueError(f"no sweep for layer type {kind!r}")


def build_layer(kind: str, cfg: Mapping[str, Any]) -> tuple[Any, tuple[int, ...]]:
    """The module and the input shape (batch included) of a sweep configuration."""
    from torch import nn

    from aibench.networks.tonic import ArgMax, LocallyConnected2d

    if kind == "conv":
        return (nn.Conv2d(cfg["cin"], cfg["cout"], cfg["k"], stride=cfg["s"], padding=cfg["pad"],
                          groups=cfg["groups"]), (1, cfg["cin"], cfg["hw"], cfg["hw"]))
    if kind == "fc":
        return nn.Linear(cfg["inputs"], cfg["outputs"]), (cfg["rows"], cfg["inputs"])
    if kind == "pool":
        return nn.MaxPool2d(cfg["k"], cfg["s"], ceil_mode=True), (1, cfg["c"], cfg["hw"], cfg["hw"])
    if kind == "lc":
        return (LocallyConnected2d(cfg["cin"], cfg["cout"], (cfg["hw"], cfg["hw"]), cfg["k"], cfg["s"]),
                (1, cfg["cin"], cfg["hw"], cfg["hw"]))
    if kind == "act":
        fn = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardtanh": nn.Hardtanh}[cfg["fn"]]()
        return fn, (1, cfg["neurons"])
    if kind == "norm":
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0), (1, cfg["c"], cfg["hw"], cfg["hw"])
    if kind == "softmax":
        return (nn.Softmax(dim=-1) if cfg["fn"] == "softmax" else ArgMax()), (cfg["rows"], cfg["n"])
    if kind == "reshape":
        return (nn.Flatten() if cfg["fn"] == "flatten" else nn.Dropout(0.5)), (1, 4, cfg["neurons"] // 4 or 1)
    raise ValueError(f"no sweep for layer type {kind!r}")


def _shape_desc(module: Any, in_shape: tuple[int, ...]) -> dict[str, Any]:
    import torch

    module = module.to("meta").eval()
    with torch.inference_mode():
        y = module(torch.empty(in_shape, device="meta"))
    return describe(module, in_shape, tuple(y.shape))


def real_layer_signatures(names: Iterable[str]) -> set[tuple[Any, ...]]:
    """The signatures of every layer of the named Tonic networks as the component benchmarks run them by
    default (one request: DIG's 100 digits, ASR's frames, an NLP sentence's words), shapes only."""
    import torch

    from aibench import registry
    from aibench.networks import layers_of, tonic

    sigs: set[tuple[Any, ...]] = set()
    for name in names:
        params = registry.get(f"component/{name}").resolve({})
        rows = params.get("images_per_request") or params.get("frames") or params.get("words") or 1
        net = tonic.build(name, device="meta")
        a = torch.empty((rows, *tonic.INPUT_SHAPES[name]), device="meta")
        with torch.inference_mode():
            for _, layer in layers_of(net):
                y = layer(a)
                sigs.add(signature(describe(layer, tuple(a.shape), tuple(y.shape))))
                a = y
    return sigs


def sweep_timing(quota_period_s: float | None = None, min_reps: int = 3, min_time_s: float = 0.03) -> Timing:
    """How a sweep point is timed and summarised: as ``partition profile`` times a layer
    (:class:`aibench.partition.profile.Timing`), with fewer calls: the median call, except on a side under a
    CPU quota (``quota_period_s``, its CFS period), where the calls span at least four periods and the point
    is their mean."""
    return Timing(min_reps=min_reps, max_reps=50, min_time_s=min_time_s, warmup=1, period_s=quota_period_s)


def sweep(counts: Mapping[str, int], max_work: float, exclude: set[tuple[Any, ...]], seed: int = 0,
          timing: Timing | None = None, device: str = "cpu", dtype: Any = None,
          progress: Callable[[str, int, int], None] | None = None, meter: Callable[[str], Any] | None = None
          ) -> tuple[list[dict[str, Any]], int]:
    """Time ``counts[type]`` configurations of each type (and their power, with ``meter``: see
    :func:`aibench.partition.profile.metered`), each by ``timing`` (default :func:`sweep_timing`); the points
    and how many drawn configurations were dropped as equal to a real network's layer."""
    import torch

    from aibench.partition.profile import _sync, metered

    timing = timing if timing is not None else sweep_timing()
    rng = random.Random(seed)
    points: list[dict[str, Any]] = []
    excluded = 0
    sync = _sync(torch.device(device))
    for kind, count in counts.items():
        made, tries = 0, 0
        while made < count and tries < count * 50:
            tries += 1
            cfg = draw_config(kind, rng)
            module, in_shape = build_layer(kind, cfg)
            try:
                desc = _shape_desc(module, in_shape)
            except (RuntimeError, ValueError):  # an output of size zero: not a layer anyone runs
                continue
            if desc["work"] > (max_work if kind in ("conv", "fc", "lc") else max_work / 4) or desc["work"] < 1:
                continue
            if signature(desc) in exclude:
                excluded += 1
                continue
            module, in_shape = build_layer(kind, cfg)
            module = module.to(device=device, dtype=dtype).eval()
            x = torch.randn(in_shape, device=device, dtype=dtype)
            if progress is not None:
                progress(kind, made + 1, count)
            with torch.inference_mode():
                times, power = metered(meter, f"{kind} {cfg}",
                                       lambda m=module, x=x: timing.times(lambda: m(x), sync))
            points.append({"type": kind, "config": cfg, "vars": desc["vars"], "work": desc["work"],
                           "work2": desc.get("work2"), "time_s": timing.figure(times), "n": len(times),
                           "power": power})
            made += 1
    return points, excluded


# ------------------------------------------------------------------------------------------------ fitting

def _fit_linear(w: Any, t: Any, w2: Any | None) -> list[float]:
    """``t = a + b·w (+ c·w2)`` on relative error, no coefficient negative (a negative one is dropped and
    the rest refitted: more work never takes less time)."""
    import numpy as np

    cols = [np.ones_like(w), w] + ([w2] if w2 is not None else [])
    active = list(range(len(cols)))
    while True:
        coef = np.zeros(len(cols))
        if active and len(w) >= len(active):
            design = np.stack([cols[k] / t for k in active], axis=1)
            sol = np.linalg.lstsq(design, np.ones_like(t), rcond=None)[0]
            coef[active] = sol
        else:
            coef[0] = float(np.median(t))
        negative = [k for k in active if coef[k] < 0]
        if not negative:
            return [float(c) for c in coef]
        active.remove(min(negative, key=lambda k: coef[k]))


def _fit_form(form: str, ws: Sequence[float], ts: Sequence[float],
              w2s: Sequence[float] | None = None) -> dict[str, Any]:
    import numpy as np

    w, t = np.asarray(ws, float), np.asarray(ts, float)
    if form == "linear":
        w2 = np.asarray(w2s, float) if w2s is not None else None
        return {"form": "linear", "coef": _fit_linear(w, t, w2)}
    if form == "loglog":
        lw, lt = np.log(np.maximum(w, 1.0)), np.log(t)
        if len(w) >= 2 and np.ptp(lw) > 0:
            c, d = np.linalg.lstsq(np.stack([np.ones_like(lw), lw], axis=1), lt, rcond=None)[0]
        else:
            c, d = float(np.median(lt)), 0.0
        return {"form": "loglog", "coef": [float(c), float(d)]}
    r = w / t
    lw = np.log(np.maximum(w, 1.0))
    if len(w) >= 2 and np.ptp(lw) > 0:
        c, d = np.linalg.lstsq(np.stack([np.ones_like(lw), lw], axis=1), r, rcond=None)[0]
    else:
        c, d = float(np.median(r)), 0.0
    return {"form": "log", "coef": [float(c), float(d)], "r_range": [float(r.min()), float(r.max())]}


def predict_one(model: Mapping[str, Any], work: float, work2: float | None = None) -> float:
    """Seconds a layer of ``work`` (and ``work2``, where its type has one) takes under ``model`` (one entry
    of a profile's ``models``)."""
    if model["form"] == "linear":
        a, b, *c = model["coef"]
        return max(0.0, a + b * work + (c[0] * (work2 or 0.0) if c else 0.0))
    a, b = model["coef"]
    if model["form"] == "loglog":
        return math.exp(a + b * math.log(max(work, 1.0)))
    lo, hi = model["r_range"]
    r = min(max(a + b * math.log(max(work, 1.0)), lo), hi)
    return work / r if r > 0 else 0.0


def _ape(model: Mapping[str, Any], pts: Sequence[Mapping[str, Any]]) -> list[float]:
    return [abs(predict_one(model, p["work"], p.get("work2")) - p["time_s"]) / p["time_s"] for p in pts
            if p["time_s"] > 0]


def _fit_points(form: str, pts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    w2 = [p["work2"] for p in pts] if pts and all(p.get("work2") is not None for p in pts) else None
    return _fit_form(form, [p["work"] for p in pts], [p["time_s"] for p in pts], w2)


def _stats(apes: Sequence[float]) -> dict[str, Any]:
    xs = sorted(apes)
    if not xs:
        return {"n": 0, "mape": None, "median_ape": None}
    return {"n": len(xs), "mape": sum(xs) / len(xs), "median_ape": xs[len(xs) // 2]}


def fit(points: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, dict[str, Any]]:
    """One model per layer type present in ``points``: the form with the lower held-out error, refitted
    on every point; with both forms' held-out errors."""
    models: dict[str, dict[str, Any]] = {}
    for kind in LAYER_TYPES:
        pts = [p for p in points if p["type"] == kind and p["time_s"] > 0]
        if not pts:
            continue
        order = list(range(len(pts)))
        random.Random(seed).shuffle(order)
        held = {i for k, i in enumerate(order) if k % HOLDOUT_EVERY == HOLDOUT_EVERY - 1}
        if len(pts) >= 3 and not held:
            held = {order[-1]}
        train = [pts[i] for i in range(len(pts)) if i not in held] or pts
        test = [pts[i] for i in sorted(held)]
        errors: dict[str, dict[str, Any]] = {}
        for form in FORMS:
            errors[form] = _stats(_ape(_fit_points(form, train), test))
        scored = [f for f in FORMS if errors[f]["mape"] is not None]
        chosen = min(scored, key=lambda f: errors[f]["mape"]) if scored else "linear"
        model = _fit_points(chosen, pts)
        model.update({"n": len(pts), "work_range": [min(p["work"] for p in pts), max(p["work"] for p in pts)],
                      "heldout": {"n": len(test), "chosen": errors[chosen], "by_form": errors}})
        model["power"] = power_of(pts)
        models[kind] = model
    return models


def power_of(pts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A type's device power while its layers run: the median of the sweep points' measured average power
    (the paper's power model, g, at its simplest), or why there is none."""
    watts = sorted(p["power"]["avg_power_w"] for p in pts if isinstance(p.get("power"), Mapping)
                   and p["power"].get("provenance") in ("measured", "sampled")
                   and isinstance(p["power"].get("avg_power_w"), int | float))
    if watts:
        return {"provenance": "measured", "median_w": watts[len(watts) // 2], "n": len(watts),
                "note": "whole-device power (RAPL package + DRAM, or NVML) over each sweep point's timed calls"}
    first = next((p["power"] for p in pts if isinstance(p.get("power"), Mapping)), None)
    return {"provenance": "unavailable", "reason": (first or {}).get("reason", "not_metered"),
            "detail": (first or {}).get("detail", "the sweep ran without a meter")}


def device_power(profile: Mapping[str, Any], layer: Mapping[str, Any]) -> float | None:
    """The measured power of ``layer``'s type on a platform profile, or None when it was not measured."""
    power = (profile["models"].get(layer["type"]) or {}).get("power")
    if isinstance(power, Mapping) and power.get("provenance") == "measured":
        value = power.get("median_w")
        return float(value) if isinstance(value, int | float) else None
    return None


def predict(profile: Mapping[str, Any], layer: Mapping[str, Any]) -> float:
    """Predicted seconds of one described layer (``{"type", "work"}``) on a platform profile; UsageError
    (exit 2) for a layer type no fit models, ResultIOError (exit 4) for a profile that lacks one it should."""
    model = profile["models"].get(layer["type"])
    if model is None:
        if layer["type"] not in LAYER_TYPES:  # the network's fault: no fit models this kind of layer
            raise UsageError(f"layer {layer.get('name', '?')} is of type {layer['type']!r}, which no platform "
                             f"profile models (fits model {', '.join(LAYER_TYPES)})")
        where = profile.get("_path", "the platform profile")  # the file's fault: a fit writes every type
        raise ResultIOError(f"{where}: no model for layer type {layer['type']!r} (layer {layer.get('name', '?')}); "
                            f"it models {', '.join(profile['models']) or 'nothing'}: fit it again with "
                            "`aibench partition fit`")
    return predict_one(model, layer["work"], layer.get("work2"))


def check_against(profile: Mapping[str, Any], network_layers: Mapping[str, Sequence[Mapping[str, Any]]]
                  ) -> dict[str, Any]:
    """Prediction error on real networks' layers: ``network_layers`` maps a network to its layers, each with
    ``type``, ``work``, the measured ``measured_s`` and the ``statistic`` it is (median, or mean under a CPU
    quota). Per type (layers measured under 20 µs left out of the percentages: they are clock noise) and per
    network (the sum of the layers)."""
    by_type: dict[str, list[float]] = {}
    nets: dict[str, Any] = {}
    for net, layers in network_layers.items():
        pred_sum = meas_sum = 0.0
        for layer in layers:
            if layer["type"] not in profile["models"]:
                continue
            p = predict(profile, layer)
            pred_sum += p
            meas_sum += layer["measured_s"]
            if layer["measured_s"] >= 20e-6:
                by_type.setdefault(layer["type"], []).append(abs(p - layer["measured_s"]) / layer["measured_s"])
        nets[net] = {"predicted_s": pred_sum, "measured_s": meas_sum,
                     "statistic": "/".join(sorted({la.get("statistic", "median") for la in layers})) or "median",
                     "error": (pred_sum - meas_sum) / meas_sum if meas_sum > 0 else None}
    return {"by_type": {k: _stats(v) for k, v in by_type.items()}, "by_network": nets}


# ------------------------------------------------------------------------------------------ profile files

def make_profile(side_info: Mapping[str, Any], points: Sequence[Mapping[str, Any]], models: Mapping[str, Any],
                 sweep_info: Mapping[str, Any]) -> dict[str, Any]:
    from aibench import machine
    from aibench.results.schema import now_iso

    return {"schema": PROFILE_SCHEMA, "schema_version": PROFILE_VERSION, "created_at": now_iso(),
            "side": dict(side_info), "machine": machine.machine(), "load": {"loadavg": machine.load_average()},
            "sweep": dict(sweep_info), "models": dict(models), "points": list(points)}


def read_profile(path: str) -> dict[str, Any]:
    """A platform profile written by ``aibench partition fit``; ResultIOError (exit 4) for a missing,
    unreadable or foreign file."""
    from aibench.results.files import read_json
    from aibench.results.validate import ResultFileError

    try:
        doc = read_json(path, limits=True)
    except ResultFileError as exc:
        raise ResultIOError(f"platform profile {exc.format_message()} (write one with `aibench partition fit "
                            "--side device` or `--side server`, or name it with --device-profile/--server-profile)"
                            ) from None
    if not isinstance(doc, dict) or doc.get("schema") != PROFILE_SCHEMA:
        raise ResultIOError(f"{path}: not an aibench platform profile (no \"schema\": \"{PROFILE_SCHEMA}\"; "
                            "write one with `aibench partition fit`)")
    if doc.get("schema_version") != PROFILE_VERSION:
        raise ResultIOError(f"{path}: platform profile version {doc.get('schema_version')!r} is not supported "
                            f"(this aibench reads version {PROFILE_VERSION})")
    models = doc.get("models")
    ok = isinstance(models, dict) and all(
        isinstance(m, dict) and m.get("form") in FORMS and isinstance(m.get("coef"), list)
        and len(m["coef"]) in ((2, 3) if m["form"] == "linear" else (2,))
        and all(isinstance(c, int | float) and math.isfinite(c) for c in m["coef"])
        and (m["form"] != "log" or (isinstance(m.get("r_range"), list) and len(m["r_range"]) == 2
                                       and all(isinstance(c, int | float) for c in m["r_range"])))
        for m in models.values())
    if not ok or not isinstance(doc.get("side"), dict):
        raise ResultIOError(f"{path}: damaged platform profile (its models are not what `partition fit` writes)")
    if not models:
        raise ResultIOError(f"{path}: damaged platform profile (it has no models; fit it again with `aibench "
                            "partition fit`)")
    return {**doc, "_path": str(path)}


def side_mismatch(what: str, side: Any, role: str, threads: int | None = None, quota: float | None = None,
                  dtype: str | None = None) -> list[str]:
    """Warnings (one line each) where the side a profile or profile result records (``side``: its ``side``
    object) is not the ``role`` it is used for, or not the configuration that will run (what is given of
    threads, CPU quota in cores (None: none) and dtype; with no threads, only the role is checked). Not
    errors: a user may mean it; never silent."""
    if not isinstance(side, dict):
        return []
    notes = []
    if side.get("name") not in (None, role):
        notes.append(f"{what} was measured for the {side['name']} side, and is used here for the {role} side")
    if threads is None:  # a role-only check (partition choose): nothing is known of the configuration run
        return notes
    if side.get("threads_effective") not in (None, threads):
        notes.append(f"{what} was measured with {side['threads_effective']} thread(s); the {role} here runs {threads}")
    had = (side.get("quota") or {}).get("cores") if isinstance(side.get("quota"), dict) else None
    if had != quota:
        then = f"under a CPU quota of {had:g} cores" if had else "without a CPU quota"
        now = f"under {quota:g} cores" if quota else "without one"
        notes.append(f"{what} was measured {then}; the {role} here runs {now}")
    if dtype is not None and side.get("dtype") not in (None, dtype):
        notes.append(f"{what} was measured in {side['dtype']}; the {role} here runs {dtype}")
    return notes


def run_fit(side: Any, quick: bool = False, seed: int = 0, exclude_networks: Sequence[str] = (),
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Sweep, fit and return the platform profile of ``side`` (:class:`aibench.partition.sides.Side`)."""
    from aibench.partition.profile import quota_period_s, side_meter
    from aibench.partition.sides import applied, torch_dtype

    counts = QUICK_COUNTS if quick else SWEEP_COUNTS
    max_work = QUICK_MAX_WORK if quick else MAX_WORK
    t0 = time.perf_counter()
    exclude = real_layer_signatures(exclude_networks)
    with applied(side) as info:
        timing = sweep_timing(quota_period_s(info))
        points, excluded = sweep(counts, max_work, exclude, seed, timing, device=side.device,
                                 dtype=torch_dtype(side.dtype), progress=progress, meter=side_meter(side))
    models = fit(points, seed)
    return make_profile(info, points, models, {
        "point": timing.describe(),
        "quick": quick, "seed": seed, "counts": dict(counts), "max_work": max_work,
        "excluded_networks": list(exclude_networks), "excluded_configs": excluded,
        "holdout": f"every {HOLDOUT_EVERY}th point after a seeded shuffle", "duration_s": time.perf_counter() - t0})
