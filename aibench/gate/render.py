"""Showing a comparison or gate document: a rich table for people, markdown for a PR comment, JUnit XML for
CI test reports. Every function takes the JSON document (``pairs.document``), so what is shown is exactly
what was written."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from aibench.display import FitOrStack, fmt_value

_STYLE = {"better": "green", "worse": "bold red", "same": "", "inconclusive": "yellow", "refused": "red"}
_OUTCOME_STYLE = {"pass": "green", "improved": "green", "regression": "bold red", "inconclusive": "yellow",
                  "error": "bold red"}
_MD_MARK = {"better": "✅ better", "worse": "❌ **worse**", "same": "same", "inconclusive": "⚠️ inconclusive",
            "refused": "⛔ refused"}
_MD_OUTCOME = {"pass": "✅ pass", "improved": "✅ improved", "regression": "❌ regression",
               "inconclusive": "⚠️ inconclusive", "error": "⛔ error"}


# What a lower or higher figure of a unit means, for the wording of a ratio ("54% less time").
_QUANTITY = {"s": "time", "J": "energy", "W": "power", "B": "memory", "bytes": "memory"}


def ratio_words(ratio: float, direction: str = "lower", unit: str = "") -> str:
    """A ratio candidate/baseline worded as what it is: ``0.457×, 54% less time``, ``1.25×, 25% more
    samples/s`` — never "118.6% better", which reads as more than double. Whether that is better or worse is
    the verdict's job (``direction`` only picks the words for a unit without a quantity name)."""
    change = ratio - 1.0
    pct = round(abs(change) * 100.0, 1)
    amount = f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%"
    if amount in ("0.0%", "0%"):
        return f"{ratio:.3f}×, no change"
    quantity = _QUANTITY.get(unit, unit)
    if quantity:
        return f"{ratio:.3f}×, {amount} {'more' if change > 0 else 'less'} {quantity}"
    return f"{ratio:.3f}×, {amount} {'higher' if change > 0 else 'lower'}"


def _label(pair: dict[str, Any]) -> str:
    """benchmark [hash8] with the parameters that tell configurations apart kept short."""
    return f"{pair['benchmark']} [{str(pair.get('config_hash', ''))[:8]}]"


def _ratio(pair: dict[str, Any]) -> str:
    r = pair.get("ratio")
    return "–" if r is None else f"{r:.3f}×"


def _ci(pair: dict[str, Any]) -> str:
    ci = pair.get("ci")
    return "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _better(pair: dict[str, Any]) -> str:
    return "↓" if pair.get("direction") == "lower" else "↑"


def _thr(pair: dict[str, Any]) -> str:
    t = pair.get("threshold")
    return "–" if t is None else f"±{t * 100:g}%"


def table(doc: dict[str, Any], title: str | None = None) -> FitOrStack:
    """The pairs as a rich table (all text escaped); the reason of each verdict other than *same* and the
    notes go below it, so the figures stay on one line. Where the width cannot hold the table whole (a CI
    log, a pipe, long benchmark ids), each pair is a block of lines instead (:class:`FitOrStack`), with its
    reason: no cell is ever cut to "…"."""
    gate = doc.get("schema") == "aibench-gate"
    if title is None and gate:
        outcome = doc.get("outcome", "?")
        title = f"aibench gate: [{_OUTCOME_STYLE.get(outcome, '')}]{escape(outcome)}[/] ({escape(rounds_text(doc))})"
    t = Table(title=title, header_style="bold", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("benchmark · metric", min_width=16)
    conf = f"{doc_conf(doc)} CI".strip()
    cols: list[tuple[str, dict[str, Any]]] = [("baseline", {"justify": "right"}), ("candidate", {"justify": "right"}),
                                             ("ratio", {"justify": "right"}), (conf, {})]
    if gate:
        cols.append(("rounds", {"justify": "right"}))
    for col, kw in (*cols, ("verdict", {})):
        t.add_column(col, no_wrap=True, **kw)
    notes = []
    records: list[tuple[str, list[tuple[str, str]]]] = []
    for p in doc["pairs"]:
        style = _STYLE.get(p["verdict"], "")
        verdict = f"[{style}]{escape(p['verdict'])}[/]" if style else escape(p["verdict"])
        if p.get("threshold") is not None:
            verdict += f" (±{p['threshold'] * 100:g}%)"
        head = escape(f"{_label(p)} {p['metric']} {_better(p)}")
        base = escape(fmt_value(p.get("baseline"), p.get("unit", "")))
        cand = escape(fmt_value(p.get("candidate"), p.get("unit", "")))
        cells = [head, base, cand, _ratio(p), _ci(p)]
        if gate:
            cells.append(_rounds_used(p))
        t.add_row(*cells, verdict)
        ratio = p.get("ratio")
        ratio_text = "–" if ratio is None else ratio_words(ratio, p.get("direction", "lower"), p.get("unit", ""))
        fields = [("baseline", base), ("candidate", cand), ("ratio", escape(ratio_text)), (conf, _ci(p))]
        if gate:
            fields.append(("rounds", _rounds_used(p)))
        fields.append(("verdict", verdict))
        if p.get("reason"):
            fields.append(("reason", escape(p["reason"])))
        records.append((head, fields))
        if p["verdict"] != "same" and p.get("reason"):
            notes.append(f"{escape(_label(p))} {escape(p['metric'])}: {escape(p['reason'])}")
    warnings = ["note: " + escape(w) for w in doc.get("warnings", [])]
    if notes or warnings:
        t.caption = "\n".join(notes + warnings)
        t.caption_justify = "left"
    return FitOrStack(t, records, title=title, notes="\n".join(warnings) or None)


def _rounds_used(pair: dict[str, Any]) -> str:
    used = pair.get("rounds_used")
    if used is None:
        used = len(pair.get("rounds") or [])
    return str(used)


def rounds_text(doc: dict[str, Any]) -> str:
    """How many rounds the gate ran and why it stopped: "15 rounds, decided at look 2 of 5 (max 30)"."""
    n = doc.get("rounds", 0)
    text = f"{n} round{'s' if n != 1 else ''}"
    looks, taken, stopped = doc.get("looks"), doc.get("looks_taken"), doc.get("stopped")
    if looks and taken:
        why = {"decided": "decided", "max rounds": "undecided at the last", "budget": "stopped by the budget at"}
        text += f", {why.get(stopped, 'stopped at')} look {taken} of {len(looks)} (max {looks[-1]})"
    return text


def doc_conf(doc: dict[str, Any]) -> str:
    """The confidence level of the intervals shown ("95%"); "" when the pairs' levels differ (a gate's
    metrics decided at different looks): each reason then names its level."""
    confs = {p.get("confidence") for p in doc.get("pairs", []) if p.get("confidence")}
    if not confs:
        return "95%"
    return f"{confs.pop() * 100:.4g}%" if len(confs) == 1 else ""


def _md_cell(text: Any) -> str:
    """A markdown table cell: pipes escaped, no line breaks, HTML-significant characters neutralised."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return s.replace("<", "&lt;").replace(">", "&gt;")


def _md_code(text: Any) -> str:
    """Inline code in markdown: no backticks or line breaks inside (HTML is not interpreted there)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def markdown(doc: dict[str, Any]) -> str:
    """A markdown summary for a PR comment."""
    gate = doc.get("schema") == "aibench-gate"
    lines: list[str] = []
    if gate:
        outcome = doc.get("outcome", "?")
        lines.append(f"### aibench gate: {_MD_OUTCOME.get(outcome, _md_cell(outcome))}")
        lines.append("")
        trim = doc.get("trim")
        how = {"trimmed-t": "Yuen's trimmed-t", "BCa": "BCa bootstrap", "percentile": "percentile bootstrap"}.get(
            doc.get("ci_method", ""), str(doc.get("ci_method", "")))
        paced = (doc.get("paced") or {}).get("rounds")
        lines.append(f"{_md_cell(rounds_text(doc))}: interleaved rounds of baseline {_md_code(doc['baseline'])} "
                     f"and candidate {_md_code(doc['candidate'])} (fresh processes, order randomised per "
                     f"round, seed {doc.get('seed')}"
                     + (f"; {paced} in lockstep" if paced else "")
                     + "); verdicts from the geometric mean of the per-round ratios"
                     + (f" ({trim * 100:g}% trimmed at each end)" if trim else "")
                     + f" and its {(doc_conf(doc) + ' CI').strip()} ({_md_cell(how)}).")
    else:
        lines.append("### aibench compare")
        lines.append("")
        lines.append(f"baseline {_md_code(doc['baseline'])} vs candidate {_md_code(doc['candidate'])}")
    lines.append("")
    rounds_col = " rounds |" if gate else ""
    ci_head = (doc_conf(doc) + " CI").strip()
    lines.append(f"| benchmark | metric | baseline | candidate | ratio | {ci_head} | threshold |{rounds_col} verdict |")
    lines.append("|---|---|--:|--:|--:|---|--:|" + ("--:|" if gate else "") + "---|")
    for p in doc["pairs"]:
        cells = [_label(p), f"{p['metric']} {_better(p)}", fmt_value(p.get("baseline"), p.get("unit", "")),
                 fmt_value(p.get("candidate"), p.get("unit", "")), _ratio(p), _ci(p), _thr(p)]
        if gate:
            cells.append(_rounds_used(p))
        lines.append("| " + " | ".join(_md_cell(x) for x in cells) +
                     f" | {_MD_MARK.get(p['verdict'], _md_cell(p['verdict']))} |")
    reasons = [p for p in doc["pairs"] if p["verdict"] != "same" and p.get("reason")]
    if reasons:
        lines.append("")
        for p in reasons:
            lines.append(f"- **{_md_cell(_label(p))} {_md_cell(p['metric'])}**: {_md_cell(p['reason'])}")
    if doc.get("errors"):
        lines.append("")
        for e in doc["errors"]:
            lines.append(f"- ⛔ {_md_cell(e)}")
    if doc.get("warnings"):
        lines.append("")
        for w in doc["warnings"]:
            lines.append(f"> {_md_cell(w)}")
    return "\n".join(lines) + "\n"


def junit(doc: dict[str, Any], inconclusive: str = "fail") -> str:
    """JUnit XML: one test case per pair (regression → failure, refused → error, inconclusive → failure or
    skipped as ``--inconclusive`` says), plus one error case per process that failed."""
    suite = ET.Element("testsuite", name="aibench gate")
    props = ET.SubElement(suite, "properties")
    for name in ("outcome", "rounds", "max_rounds", "looks_taken", "stopped", "seed"):
        if doc.get(name) is not None:
            ET.SubElement(props, "property", name=name, value=str(doc[name]))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for p in doc["pairs"]:
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=str(p["benchmark"]),
                             name=f"{p['metric']} [{str(p.get('config_hash', ''))[:8]}]")
        msg = f"{p['verdict']} after {_rounds_used(p)} rounds: {p.get('reason') or ''}"
        if p["verdict"] == "worse":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=msg, type="regression").text = msg
        elif p["verdict"] == "refused":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=msg, type="refused").text = msg
        elif p["verdict"] == "inconclusive":
            if inconclusive == "pass":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=msg)
            else:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=msg, type="inconclusive").text = msg
        else:
            ET.SubElement(case, "system-out").text = msg
    for e in doc.get("errors", []):
        counts["tests"] += 1
        counts["errors"] += 1
        case = ET.SubElement(suite, "testcase", classname="aibench.gate", name="run")
        ET.SubElement(case, "error", message=str(e)[:500], type="error").text = str(e)
    for k, v in counts.items():
        suite.set(k, str(v))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
