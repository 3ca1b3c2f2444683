"""``aibench partition``: per-layer profiles, per-layer-type prediction models, and the split decision
(Neurosurgeon). Thin: parse, call :mod:`aibench.partition`, print. docs/partition.md has the method."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from aibench.partition.sides import DTYPES, SIDES


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def side_options(fn: Any) -> Any:
    """The options that constrain a side (shared by profile and fit)."""
    fn = click.option("--cpu-quota", type=float, default=None,
                      help="cap the side at this many cores of CPU time (cgroup v2 cpu.max or v1 cfs quota; "
                           "root only; refused with exit 3 where the machine does not allow it)")(fn)
    fn = click.option("--dtype", type=click.Choice(DTYPES), default=None, help="element type (default float32)")(fn)
    fn = click.option("--threads", type=int, default=None,
                      help="torch threads (default: device 1, server every usable core)")(fn)
    fn = click.option("--device", "device", default=None,
                      help="cpu, cuda or cuda:N (default: device cpu; server cuda when present, else cpu)")(fn)
    fn = click.option("--side", type=click.Choice(SIDES), default="device", show_default=True,
                      help="which side of the split this configuration plays")(fn)
    return fn


@click.group("partition")
def partition() -> None:
    """Neurosurgeon: where to cut a network between a weak device and a strong server.

    \b
    aibench partition profile component/imc --side device     time every layer (a result file)
    aibench partition fit --side device                       fit per-layer-type models (a JSON profile)
    aibench partition choose component/imc --network lte      the predicted time of every cut, and the choice

    See docs/partition.md for the method and what is measured and what is derived.
    """


@partition.command("profile")
@click.argument("ref")
@side_options
@click.option("--batch", type=int, default=1, show_default=True, help="requests in the input")
@click.option("--min-reps", type=click.IntRange(1, 100_000), default=5, show_default=True,
              help="timed calls per layer, at least")
@click.option("--max-reps", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="timed calls per layer, at most")
@click.option("--min-time", "min_time_s", type=click.FloatRange(0, 3600), default=0.2, show_default=True,
              help="seconds of timed calls per layer, at least")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="folder for the result file")
@click.option("--json", "as_json", is_flag=True, help="print the per-layer table as JSON")
def profile_cmd(ref: str, side: str, device: str | None, threads: int | None, dtype: str | None,
                cpu_quota: float | None, batch: int, min_reps: int, max_reps: int, min_time_s: float,
                out_dir: str, as_json: bool) -> None:
    """Time every layer of the network of REF (e.g. component/imc) on one side; writes a result file whose
    parts.layer holds each layer's distribution (aibench report shows it)."""
    from aibench.errors import UsageError
    from aibench.partition.profile import layer_statistic, profile
    from aibench.partition.sides import side_for
    from aibench.results.store import ensure_writable_dir, write_result

    if batch < 1:
        raise UsageError(f"--batch must be at least 1, not {batch}")
    if max_reps < min_reps:
        raise UsageError(f"--max-reps ({max_reps}) is below --min-reps ({min_reps})")
    s = side_for(side, device, threads, dtype, cpu_quota)
    directory = ensure_writable_dir(out_dir)
    result = profile(ref, s, batch, min_reps, max_reps, min_time_s)
    path = write_result(result, directory)
    rows = profile_rows(result)
    if as_json:
        click.echo(json.dumps({"result": str(path), "side": result.method["partition"]["side"],
                               "input_bytes": result.method["partition"]["input_bytes"], "layers": rows}, indent=2))
        return
    from rich.table import Table

    info = result.method["partition"]["side"]
    quota = f", quota {info['quota']['cores']:g} cores (cgroup {info['quota']['cgroup']})" if info.get("quota") else ""
    table = Table(title=f"{result.id} on the {s.name} side: {s.device}, {info['threads_effective']} thread(s), "
                        f"{s.dtype}{quota}", title_justify="left")
    stat = layer_statistic(result)
    for col in ("j", "layer", "type", "median ms", "IQR ms", "mean ms", "n", "out KB"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for i, row in enumerate(rows, start=1):
        table.add_row(str(i), row["name"], row["type"], f"{row['median_s'] * 1e3:.3f}", f"{row['iqr_s'] * 1e3:.3f}",
                      f"{row['mean_s'] * 1e3:.3f}", str(row["n"]), f"{row['out_bytes'] / 1e3:.1f}")
    con = _console()
    con.print(table)
    whole = result.metrics[f"time_{stat}"]["value"]
    summed = result.metrics[f"layers_sum_{stat}"]["value"]
    why = (f" (the side is under a CPU quota: each layer's {stat} over at least "
           f"{result.method['partition']['layer_statistic']['span_s'] * 1e3:g} ms of calls, the throttling "
           "included)" if stat != "median" else "")
    con.print(f"input {result.method['partition']['input_bytes'] / 1e3:.1f} KB · whole network {stat} "
              f"{whole * 1e3:.2f} ms · sum of layer {stat}s {summed * 1e3:.2f} ms{why} · {path}")


def profile_rows(result: Any) -> list[dict[str, Any]]:
    """One row per layer of a profile result: name, type, its figure (``time_s``, the result's
    ``statistic``: see :func:`aibench.partition.profile.layer_figures`), median, IQR and mean seconds, calls,
    output bytes."""
    from aibench.partition.profile import layer_figures

    stat, figures = layer_figures(result)
    rows = []
    for layer in result.method["partition"]["layers"]:
        summary = result.parts["layer"][layer["name"]]["summary"]
        rows.append({"name": layer["name"], "type": layer["type"], "time_s": figures[layer["name"]],
                     "statistic": stat, "median_s": summary["median"], "iqr_s": summary["iqr"],
                     "mean_s": summary["mean"], "n": summary["n"], "out_bytes": layer["out_bytes"],
                     "work": layer["work"]})
    return rows


ALL_NETWORKS = ("imc", "dig", "face", "asr", "pos", "chk", "ner", "vgg")


def _profile_layers(result: Any) -> list[dict[str, Any]]:
    """The described layers of a `partition profile` result, each with its measured figure (``measured_s``:
    the median, or the mean on a side under a CPU quota: :func:`aibench.partition.profile.layer_figures`)."""
    from aibench.errors import ResultIOError
    from aibench.partition.profile import layer_figures

    part = result.method.get("partition") if isinstance(result.method, dict) else None
    if not isinstance(part, dict) or not isinstance(part.get("layers"), list) or "layer" not in result.parts:
        raise ResultIOError(f"{result.id} run {result.run_id[:8]}: not a `partition profile` result (no per-layer "
                            "description)")
    stat, figures = layer_figures(result)  # a layer without its figure: exit 4
    undescribed = [la["name"] for la in part["layers"] if not isinstance(la.get("type"), str) or "work" not in la]
    if undescribed:
        raise ResultIOError(f"{result.id} run {result.run_id[:8]}: damaged `partition profile` result (layer "
                            f"{undescribed[0]!r} has no type or work in method.partition.layers)")
    return [{**layer, "measured_s": figures[layer["name"]], "statistic": stat} for layer in part["layers"]]


def _side_key(info: dict[str, Any]) -> tuple[Any, ...]:
    quota = (info.get("quota") or {}).get("cores")
    return info.get("device"), info.get("threads_effective"), info.get("dtype"), quota


@partition.command("fit")
@side_options
@click.option("--quick", is_flag=True, help="a small sweep of small layers (seconds; for tests and a first look)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the sweep and the held-out split")
@click.option("--exclude", default=",".join(ALL_NETWORKS), show_default=True,
              help="networks whose layer configurations the sweep must not contain (comma-separated)")
@click.option("--check", "checks", multiple=True, type=click.Path(),
              help="a `partition profile` result (file or folder) measured on this side: report the prediction "
                   "error on its layers (repeatable)")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="platform profile file to write [default: partition-<side>.json]")
@click.option("--force", is_flag=True, help="replace an existing platform profile at --out")
@click.option("--json", "as_json", is_flag=True, help="print the models and errors as JSON")
def fit_cmd(side: str, device: str | None, threads: int | None, dtype: str | None, cpu_quota: float | None,
            quick: bool, seed: int, exclude: str, checks: tuple[str, ...], out_file: str | None, force: bool,
            as_json: bool) -> None:
    """Fit one prediction model per layer type on this side from a sweep of layer configurations (none equal
    to a layer of the excluded networks); write a JSON platform profile; report the held-out error per type
    and, with --check, the error on real networks' layers."""
    from aibench.errors import UsageError
    from aibench.partition.models import check_against, run_fit
    from aibench.partition.sides import side_for
    from aibench.results.store import check_outputs, load_results, write_text_atomic

    nets = [n.strip() for n in exclude.split(",") if n.strip()]
    unknown = [n for n in nets if n not in ALL_NETWORKS]
    if unknown:
        raise UsageError(f"--exclude: unknown network {unknown[0]!r}; known: {', '.join(ALL_NETWORKS)}")
    out = Path(out_file or f"partition-{side}.json")
    if out.exists() and not force:
        raise UsageError(f"{out} exists: choose another --out, or --force to replace it")
    out = check_outputs({"--out": out}, checks)["--out"] or out  # never an input or a result, folder writable
    checked = load_results(checks, skip_foreign=True) if checks else []  # before minutes of sweeping
    check_layers = {f"{r.benchmark['name']} ({r.run_id[:8]})": _profile_layers(r) for r in checked}
    s = side_for(side, device, threads, dtype, cpu_quota)
    profile = run_fit(s, quick=quick, seed=seed, exclude_networks=nets)
    notes = []
    if check_layers:
        profile["check"] = check_against(profile, check_layers)
        differ = [f"{r.benchmark['name']} ({r.run_id[:8]})" for r in checked
                  if _side_key(r.method["partition"]["side"]) != _side_key(profile["side"])]
        if differ:
            notes.append(f"note: profiled on another side configuration than this fit: {', '.join(differ)}")
        point = profile["sweep"]["point"]["statistic"]
        other = [net for net, layers in check_layers.items() if layers and layers[0]["statistic"] != point]
        if other:
            notes.append(f"note: these profiles' layer figures are not the {point}s the sweep's points are: "
                         f"{', '.join(other)}")
        profile["check"]["notes"] = notes
    write_text_atomic(out, json.dumps(profile, indent=1, allow_nan=False) + "\n", exclusive=not force,
                      describe=f"platform profile {str(out)!r}")
    if as_json:
        click.echo(json.dumps({"profile": str(out), "side": profile["side"], "models": profile["models"],
                               "check": profile.get("check")}, indent=2))
        return
    from rich.table import Table

    con = _console()
    table = Table(title=f"{side} side: {s.device}, {profile['side']['threads_effective']} thread(s), {s.dtype}: "
                        f"{len(profile['points'])} sweep points in {profile['sweep']['duration_s']:.0f} s, "
                        f"{profile['sweep']['excluded_configs']} dropped as equal to a real layer",
                  title_justify="left")
    for col in ("type", "points", "form", "held-out MAPE", "median APE", "linear MAPE", "log MAPE", "loglog MAPE"):
        table.add_column(col, justify="left" if col in ("type", "form") else "right")

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}%"

    for kind, m in profile["models"].items():
        h = m["heldout"]
        table.add_row(kind, str(m["n"]), m["form"], pct(h["chosen"]["mape"]), pct(h["chosen"]["median_ape"]),
                      *(pct(h["by_form"][f]["mape"]) for f in ("linear", "log", "loglog")))
    con.print(table)
    if check_layers:
        t2 = Table(title="on the real networks' layers (layers under 20 µs left out of the percentages)",
                   title_justify="left")
        for col in ("type", "layers", "MAPE", "median APE"):
            t2.add_column(col, justify="left" if col == "type" else "right")
        for kind, st in profile["check"]["by_type"].items():
            t2.add_row(kind, str(st["n"]), pct(st["mape"]), pct(st["median_ape"]))
        con.print(t2)
        for net, v in profile["check"]["by_network"].items():
            con.print(f"  {net}: predicted {v['predicted_s'] * 1e3:.2f} ms, measured (sum of layer {v['statistic']}s) "
                      f"{v['measured_s'] * 1e3:.2f} ms, error {pct(v['error'])}")
        for note in notes:
            con.print(note)
    con.print(f"wrote {out}")


def _measured_times(path: str, ref_id: str, names: list[str]) -> tuple[list[float], Any]:
    """Per-layer measured figures from a `partition profile` result of the same network, and the side it
    records."""
    from aibench.errors import UsageError
    from aibench.results.store import load_result

    result = load_result(path)
    layers = _profile_layers(result)
    if result.id != ref_id or [la["name"] for la in layers] != names:
        raise UsageError(f"{path}: a profile of {result.id} with other layers, not of {ref_id}")
    return [la["measured_s"] for la in layers], result.method["partition"].get("side")


@partition.command("choose")
@click.argument("ref")
@click.option("--network", "network", default=None,
              help="a named link derived from the paper's upload times: 3g, lte, wifi")
@click.option("--bandwidth-mbit", type=float, default=None, help="uplink rate in Mbit/s (instead of --network)")
@click.option("--download-mbit", type=float, default=None, help="downlink rate in Mbit/s [default: the uplink's]")
@click.option("--rtt-ms", type=float, default=0.0, show_default=True,
              help="round-trip time added to the link (a named one's is inside its derived rate: 0)")
@click.option("--target", type=click.Choice(["latency", "energy"]), default="latency", show_default=True)
@click.option("--server-load", type=float, default=0.0, show_default=True,
              help="K: jobs as heavy as this one sharing the server (its compute time × (1 + K))")
@click.option("--device-profile", default="partition-device.json", show_default=True,
              help="platform profile of the device side (`partition fit --side device`)")
@click.option("--server-profile", default="partition-server.json", show_default=True,
              help="platform profile of the server side (`partition fit --side server`)")
@click.option("--device-power-w", type=float, default=None,
              help="energy: the device's power while computing, in W (a model input you give: labelled so) "
                   "[default: the power per layer type measured by the device fit, where it had a meter]")
@click.option("--radio-power-w", type=float, default=None,
              help="energy: the radio's power while sending or receiving, in W (a model input you give)")
@click.option("--measured-device", default=None, type=click.Path(),
              help="a `partition profile --side device` result of this network: show measured costs beside")
@click.option("--measured-server", default=None, type=click.Path(),
              help="a `partition profile --side server` result of this network")
@click.option("--cut", default=None, help="also show this cut (a layer name, 'input' or j) against the choice")
@click.option("--batch", type=int, default=1, show_default=True, help="requests in the input")
@click.option("--json", "as_json", is_flag=True, help="every cut's predicted parts and the choice, as JSON")
def choose_cmd(ref: str, network: str | None, bandwidth_mbit: float | None, download_mbit: float | None,
               rtt_ms: float, target: str, server_load: float, device_profile: str, server_profile: str,
               device_power_w: float | None, radio_power_w: float | None, measured_device: str | None,
               measured_server: str | None, cut: str | None, batch: int, as_json: bool) -> None:
    """Price every cut j = 0..N of REF's network from the platform profiles' predictions (0: all on the
    server, N: all on the device) for a link and server load, and choose the best for --target."""
    from aibench.errors import ResultIOError, UsageError
    from aibench.partition import decide
    from aibench.partition.models import device_power, predict, read_profile
    from aibench.partition.profile import describe_network, load_network
    from aibench.partition.sides import Side

    link = decide.link_from(network, bandwidth_mbit, rtt_ms, download_mbit)
    if not (server_load >= 0 and server_load < float("inf")):
        raise UsageError(f"--server-load must be 0 or more, not {server_load}")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, not {batch}")
    for what, v in (("--device-power-w", device_power_w), ("--radio-power-w", radio_power_w)):
        if v is not None and not (0 < v < float("inf")):
            raise UsageError(f"{what} must be a power above 0, not {v}")
    if target == "energy" and radio_power_w is None:
        raise UsageError("--target energy needs --radio-power-w (the radio's power while sending or receiving: "
                         "a model input, labelled so; no radio is metered here)")
    if (measured_device is None) != (measured_server is None):
        raise UsageError("give both --measured-device and --measured-server, or neither")
    # Bad usage (an unknown network, one that cannot be cut, a cut it does not have) is told before a missing
    # profile: the profile's error would send the user off to fit one for a command that cannot run anyway.
    try:
        dev, srv = read_profile(device_profile), read_profile(server_profile)
        profile_error = None
    except ResultIOError as exc:
        dev = srv = {"side": {}}
        profile_error = exc
    net = load_network(ref, Side("device", "cpu", 1, dev["side"].get("dtype", "float32")), batch)
    shape = describe_network(net)
    layers = shape["layers"]
    names = [la["name"] for la in layers]
    asked_j = decide.cut_index(names, cut) if cut is not None else None
    if profile_error is not None:
        raise profile_error
    warnings = _sides_warnings(("--device-profile", device_profile, dev["side"]),
                               ("--server-profile", server_profile, srv["side"]))
    sizes = [shape["input_bytes"], *[la["out_bytes"] for la in layers]]
    tm = [predict(dev, la) for la in layers]
    tc = [predict(srv, la) for la in layers]
    powers: list[float] | None = None
    energy_label = None
    if device_power_w is not None:
        powers = [device_power_w] * len(layers)
        energy_label = (f"model inputs given by the user (not measured): device {device_power_w} W per layer, "
                        f"radio {radio_power_w} W")
    elif radio_power_w is not None:
        metered = [device_power(dev, la) for la in layers]
        if any(w is None for w in metered):
            missing = sorted({la["type"] for la, w in zip(layers, metered, strict=True) if w is None})
            why = next(((dev["models"].get(t) or {}).get("power", {}).get("detail") for t in missing), None)
            raise UsageError(f"--target energy: the device profile has no measured power for {', '.join(missing)} "
                             f"({why or 'not metered'}); give --device-power-w (a model input)")
        powers = [w for w in metered if w is not None]
        energy_label = (f"device power per layer type measured during the device sweep (median of each type's "
                        f"points: {dev['models'][layers[0]['type']]['power']['note']}); radio {radio_power_w} W "
                        "given by the user (a model input, not measured)")
    cuts = decide.price_cuts(names, tm, tc, sizes, link, server_load, powers, radio_power_w)
    chosen = decide.choose(cuts, target)
    asked = cuts[asked_j] if asked_j is not None else None
    measured = None
    if measured_device is not None:
        mm, dside = _measured_times(measured_device, net.bench.id, names)
        mc, sside = _measured_times(measured_server, net.bench.id, names)  # type: ignore[arg-type]
        warnings += _sides_warnings(("--measured-device", measured_device, dside),
                                    ("--measured-server", measured_server, sside))  # type: ignore[arg-type]
        measured = decide.price_cuts(names, mm, mc, sizes, link, server_load, powers, radio_power_w)
    for line in warnings:
        click.echo(f"aibench: warning: {line}", err=True)
    if as_json:
        out = decide.as_json(cuts, chosen, {
            "network": net.bench.id, "target": target, "link": link.as_dict(), "server_load": server_load,
            "profiles": {"device": device_profile, "server": server_profile}, "energy_inputs": energy_label,
            "layers": len(layers)})
        if asked is not None:
            out["cut"] = asked.as_dict()
        if measured is not None:
            best = decide.choose(measured, target)
            out["measured"] = {"cuts": [c.as_dict() for c in measured], "optimum": {"j": best.j, "layer": best.layer},
                               "chosen_vs_optimum": _ratio(measured, chosen, best, target)}
        click.echo(json.dumps(out, indent=2))
        return
    from rich.table import Table

    title = (f"{net.bench.id}: {len(layers)} layers, link {link.name} (up {link.up_mbit:.2f} Mbit/s, "
             f"{link.source}), server load K={server_load:g}, target {target}")
    table = Table(title=title, title_justify="left")
    cols = ["j", "cut after", "device ms", "upload ms", "server ms", "download ms", "total ms"]
    if powers is not None:
        cols.append("energy mJ")
    if measured is not None:
        cols.append("measured total ms" if target == "latency" else "measured energy mJ")
    for col in cols:
        table.add_column(col, justify="left" if col == "cut after" else "right")
    for c in cuts:
        mark = " ◀" if c.j == chosen.j else ""
        row = [str(c.j), c.layer + mark, f"{c.device_s * 1e3:.2f}", f"{c.upload_s * 1e3:.2f}",
               f"{c.server_s * 1e3:.2f}", f"{c.download_s * 1e3:.2f}", f"{c.total_s * 1e3:.2f}"]
        if powers is not None:
            row.append(f"{c.energy_j * 1e3:.1f}")  # type: ignore[operator]
        if measured is not None:
            m = measured[c.j]
            row.append(f"{m.total_s * 1e3:.2f}" if target == "latency" else f"{m.energy_j * 1e3:.1f}")  # type: ignore[operator]
        table.add_row(*row)
    con = _console()
    con.print(table)
    where = ("all on the server" if chosen.j == 0 else "all on the device" if chosen.j == len(layers)
             else f"after {chosen.layer}")
    energy = f", {chosen.energy_j * 1e3:.1f} mJ" if chosen.energy_j is not None else ""
    con.print(f"chosen: j={chosen.j} ({where}), predicted {chosen.total_s * 1e3:.2f} ms{energy}")
    if asked is not None:
        con.print(f"cut {asked.j} ({asked.layer}): predicted {asked.total_s * 1e3:.2f} ms")
    if energy_label:
        con.print(f"energy: {energy_label}")
    if measured is not None:
        best = decide.choose(measured, target)
        con.print(f"measured (profiled layer figures priced the same way): optimum j={best.j} ({best.layer}); the "
                  f"predicted choice is {100 * _ratio(measured, chosen, best, target):.1f}% of the optimum's "
                  f"{'latency' if target == 'latency' else 'energy'} (100% = optimal)")


def _sides_warnings(device: tuple[str, str, Any], server: tuple[str, str, Any]) -> list[str]:
    """For a (flag, path, recorded side) of each role: files measured for the other role, or one file for
    both (priced as asked, but said)."""
    from aibench.partition.models import side_mismatch

    lines = [*side_mismatch(f"{device[0]} {device[1]}", device[2], "device"),
             *side_mismatch(f"{server[0]} {server[1]}", server[2], "server")]
    if Path(device[1]).resolve() == Path(server[1]).resolve():
        lines.append(f"{device[0]} and {server[0]} are the same file ({device[1]})")
    return lines


def _ratio(measured: list[Any], chosen: Any, best: Any, target: str) -> float:
    """The optimum's cost over the chosen cut's, both measured (1.0: the choice is optimal)."""
    pick = measured[chosen.j]
    if target == "energy":
        return best.energy_j / pick.energy_j if pick.energy_j else 1.0
    return best.total_s / pick.total_s if pick.total_s else 1.0
