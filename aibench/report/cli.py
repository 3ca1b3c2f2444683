"""``aibench report``: CSV, HTML and github-action-benchmark files from result files and folders."""

from __future__ import annotations

from pathlib import Path

import click

from aibench.errors import ResultIOError, UsageError

EPILOG = """\b
Outputs: never an input file, an existing result or sweep record, a folder, FIFO or device (exit 2);
an earlier report file is replaced atomically.
\b
Exit codes: 0 ok · 2 bad usage (an output refused as above, nothing to export) ·
4 a named file is not a readable result, sweep record or comparison (or not a regular file, or over
256 MiB); nothing found; cannot write."""


def _plain(text: str) -> str:
    """Text from result files, safe for a terminal: control characters (ANSI escapes) become '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


@click.command("report", epilog=EPILOG)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write a CSV: one row per result and metric, with param.<name> columns.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write one self-contained HTML page with plots (no network needed to open it).")
@click.option("--github-benchmark", "gh_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Write JSON for github-action-benchmark's customSmallerIsBetter / customBiggerIsBetter tool.")
@click.option("--github-benchmark-direction", "gh_direction", type=click.Choice(["smaller", "bigger"]),
              help="Which metrics go in the github-benchmark file [default: the one direction they share].")
@click.option("--github-benchmark-metric", "gh_metrics", multiple=True, metavar="NAME",
              help="Export this metric (repeatable) [default: each result's primary metric].")
@click.option("--links", "links_path", type=click.Path(path_type=Path), metavar="FILE.json",
              help="Reference link rates for the DjiNN bandwidth study [default: PCIe v3/v4/v5 x16, 10/40/400GbE "
                   "at 80%, aibench/data/djinn/links.json].")
@click.option("--title", default="aibench report", show_default=True, help="Title of the HTML page.")
@click.pass_context
def report(ctx: click.Context, paths: tuple[Path, ...], csv_path: Path | None, html_path: Path | None,
           gh_path: Path | None, gh_direction: str | None, gh_metrics: tuple[str, ...], title: str,
           links_path: Path | None) -> None:
    """Report on result files: a CSV, an HTML page with plots, a github-action-benchmark file.

    PATHS are result files or folders (searched recursively; default: results). Inside folders, JSON files
    that are not results, sweep records or comparison files are skipped with a one-line note; a file named
    directly must be one of those. Only the files named with --csv, --html and --github-benchmark are
    written (atomically); with none of them, a short summary is printed.

    \b
    Examples:
      aibench report                                        summary of ./results
      aibench report results --html results/report.html --csv results/report.csv
      aibench report results/ cmp.json --html report.html   results plus a comparison
      aibench report results --github-benchmark bench.json --github-benchmark-direction smaller
      aibench report djinn-results --html djinn.html --links links.json   DjiNN studies, own link rates
    """
    from aibench.report.load import load_inputs
    from aibench.results.store import check_outputs

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    roots = list(paths) or [Path("results")]
    if (gh_direction or gh_metrics) and gh_path is None:
        raise UsageError("--github-benchmark-direction and --github-benchmark-metric need --github-benchmark FILE")
    # Before reading anything: an output never replaces an input, a result or anything but a regular file.
    targets = check_outputs({"--csv": csv_path, "--html": html_path, "--github-benchmark": gh_path}, roots)
    from aibench.report.djinn_studies import load_links

    links = load_links(links_path)  # a bad table: one line, exit 2, before anything is read
    inputs = load_inputs(roots)
    note = inputs.note()
    if inputs.empty:
        raise ResultIOError(f"no aibench result files, sweep records or comparison files under "
                            f"{', '.join(str(p) for p in roots)}" + (f"; {note}" if note else ""))
    if note and not quiet:
        click.echo(_plain(f"aibench: note: {note}"), err=True)

    # Render everything before writing anything, so an error leaves no half-written set of files.
    rendered: list[tuple[Path | None, str, str]] = []
    if gh_path is not None:
        import json

        from aibench.report.github import TOOLS, github_entries

        direction, entries, gh_notes = github_entries(inputs, gh_direction, gh_metrics)
        for line in gh_notes:
            if not quiet:
                click.echo(_plain(f"aibench: note: github-benchmark: {line}"), err=True)
        rendered.append((targets["--github-benchmark"], json.dumps(entries, indent=2, ensure_ascii=False) + "\n",
                         f"{len(entries)} entries for the {TOOLS[direction]} tool"))
    if csv_path is not None:
        from aibench.report.csv_export import results_frame

        frame = results_frame(inputs, links)
        rendered.append((targets["--csv"], frame.to_csv(index=False, lineterminator="\n"), f"{len(frame)} rows"))
    if html_path is not None:
        from aibench.report.html_report import render_html

        page = render_html(inputs, title, links, str(links_path) if links_path else None)
        rendered.append((targets["--html"], page, f"{len(page.encode('utf-8')) / 1024:.0f} KiB"))

    from aibench.report.view import write_atomic

    for path, text, what in rendered:
        assert path is not None  # no report output goes to stdout
        write_atomic(path, text)
        if not quiet:
            click.echo(f"wrote {path} ({what})")
    if not rendered and not quiet:
        _summary(inputs)


def _summary(inputs: object) -> None:
    from collections import Counter

    from aibench.report.load import ReportInputs
    from aibench.report.view import fmt_metric, is_invalid

    assert isinstance(inputs, ReportInputs)
    results = inputs.results
    click.echo(_plain(f"{len(results)} result(s), {len(inputs.sweeps)} sweep record(s), {len(inputs.comparisons)} "
                      f"comparison file(s) under {', '.join(str(p) for p in inputs.paths)}"))
    per_bench = Counter(r.id for r in results)
    latest = {r.id: r for r in results}  # sorted by start time: the last one wins
    for bench, n in per_bench.items():
        r = latest[bench]
        status = "failed" if r.status != "ok" else "INVALID" if is_invalid(r) else "ok"
        click.echo(_plain(f"  {bench}: {n} run(s); latest {r.primary_metric} = {fmt_metric(r, r.primary_metric)} "
                          f"({status})"))
    click.echo("write files with --html FILE (page with plots), --csv FILE, --github-benchmark FILE")
