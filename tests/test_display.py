"""Tables written to a non-terminal (CI logs, pipes) stay readable (issue 12, item 9): no cell cut to "…"
(INVALID once showed as "I…"), LoadGen's stage shares appear, booleans read yes/no. Rendered as the CLI
renders for a pipe (``aibench.cli._console``: a fixed width, no terminal) at 80 and 200 columns and a range
of widths between, with long benchmark ids."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from aibench.display import fmt_value, results_table
from aibench.gate.render import table
from aibench.results.schema import Result, metric
from tests.report_fixtures import loadgen, micro

LONG_ID = "component/an-unusually-long-benchmark-name-that-no-column-can-hold-on-one-line"


def render(renderable: Any, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def flat(text: str) -> str:
    """Whitespace collapsed: a value wrapped at a space still reads as the same words."""
    return " ".join(text.split())


def _results() -> list[Result]:
    def share(value: float, stage: str, direction: str = "lower") -> dict[str, Any]:
        return metric(value, "fraction", direction, statistic="ratio", of=f"parts.stage.{stage}")

    lg = loadgen(4, "2026-01-01T00:00:00.000Z", invalid=True, bench_id=LONG_ID, extra={
        "share_preprocess": share(0.12, "preprocess"), "share_dnn": share(0.8, "dnn", "higher"),
        "share_postprocess": share(0.08, "postprocess")})
    lg.params.update(compile=False, channels_last=True)
    lg.validity["summary"] = "INVALID: min duration not met; run longer with --duration-s 60"
    m = micro(2, "2026-01-01T00:00:01.000Z")
    m.params["transpose"] = True
    return [lg, m]


@pytest.mark.parametrize("width", [80, 200])
def test_run_table_keeps_every_cell_whole(width: int) -> None:
    results = _results()
    out = render(results_table(results), width)
    text = flat(out)
    assert "…" not in out
    assert LONG_ID in text and "micro/" in text
    for r in results:
        for name, entry in r.metrics.items():
            if name.startswith("share_") or entry.get("unit") == "J":
                continue
            shown = fmt_value(entry["value"], entry["unit"]) if entry["value"] is not None else "n/a"
            assert shown in text, (name, shown)
    assert "INVALID" in text and "min duration not met; run longer with --duration-s 60" in text
    assert "preprocess 12% · dnn 80% · postprocess 8%" in text  # the breakdown shares
    assert "compile=no" in text and "channels_last=yes" in text and "transpose=yes" in text
    assert "True" not in out and "False" not in out


def test_run_table_is_a_table_where_it_fits() -> None:
    r = micro(2, "2026-01-01T00:00:01.000Z")
    out = render(results_table([r]), 200)
    assert "┃ benchmark" in out and "median" in out and "…" not in out


@pytest.mark.parametrize("width", range(40, 260, 20))
def test_no_width_cuts_a_cell(width: int) -> None:
    assert "…" not in render(results_table(_results()), width)
    assert "…" not in render(table(_doc()), width)


def _doc() -> dict[str, Any]:
    pairs = [
        {"benchmark": LONG_ID, "config_hash": "0123456789abcdef", "metric": "latency_p99", "unit": "s",
         "direction": "lower", "baseline": 0.0123, "candidate": 0.0145, "ratio": 1.179, "ci": [1.1, 1.26],
         "confidence": 0.95, "verdict": "worse", "threshold": 0.1,
         "reason": "1.179×, 18% more time: worse by more than the ±10% threshold"},
        {"benchmark": "micro/gemm", "config_hash": "fedcba9876543210", "metric": "gflops", "unit": "GFLOP/s",
         "direction": "higher", "baseline": 10.0, "candidate": 12.5, "ratio": 1.25, "ci": None,
         "confidence": 0.95, "verdict": "better", "threshold": 0.05, "reason": "1.250×, 25% more GFLOP/s"},
        {"benchmark": LONG_ID, "config_hash": "0123456789abcdef", "metric": "samples_per_s", "unit": "samples/s",
         "direction": "higher", "baseline": None, "candidate": None, "ratio": None, "ci": None,
         "confidence": 0.95, "verdict": "refused", "threshold": None,
         "reason": "LoadGen profile differs (baseline quick, candidate official)"},
    ]
    return {"schema": "aibench-comparison", "schema_version": 1, "baseline": "main", "candidate": "pr",
            "pairs": pairs, "warnings": ["runs taken at different times on a shared machine are noisy"]}


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("schema", ["aibench-comparison", "aibench-gate"])
def test_compare_and_gate_tables_keep_every_cell_whole(width: int, schema: str) -> None:
    doc = _doc() | {"schema": schema, "outcome": "regression", "rounds": 10}
    out = render(table(doc, title="aibench compare" if schema == "aibench-comparison" else None), width)
    text = flat(out)
    assert "…" not in out
    for p in doc["pairs"]:
        assert p["benchmark"] in text and p["metric"] in text and p["verdict"] in text and p["reason"] in text
    for cell in ("12.3 ms", "14.5 ms", "10 GFLOP/s", "12.5 GFLOP/s", "[1.100, 1.260]", "worse (±10%)"):
        assert cell in text, cell
    assert "1.179×" in text and "shared machine are noisy" in text
    if schema == "aibench-gate":
        assert "regression" in text and "10 rounds" in text


def test_booleans_read_yes_no() -> None:
    assert fmt_value(True) == "yes" and fmt_value(False) == "no" and fmt_value(0.5, "fraction") == "50%"


def test_breakdown_reads_declared_shares_and_the_stage_distributions() -> None:
    from aibench.display import fmt_breakdown

    r = loadgen(4, "2026-01-01T00:00:00.000Z", stages=True)
    text = fmt_breakdown(r)
    for name, part in r.parts["stage"].items():
        share = r.metrics[f"share_{name}"]["value"]
        assert f"{name} {fmt_value(share, 'fraction')} ({fmt_value(part['summary']['median'], 's')})" in text
    # A metric named like a share but not declared one is an ordinary column, not part of the breakdown.
    r.metrics = {"share_of_voice": metric(0.5, "fraction", "higher", statistic="value", of=None)}
    assert fmt_breakdown(r) == "–"
    assert "share_of_voice" in flat(render(results_table([r]), 200))
