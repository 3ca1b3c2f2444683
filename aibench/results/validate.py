"""What makes a JSON document usable: the read limits every aibench file obeys, and the result schema.

Two checks, both pure functions that return a problem (a short text with where it is) or None:

* :func:`limits_problem` — the *read limits* of any aibench JSON file (results, sweep records,
  comparisons): nested at most :data:`MAX_DEPTH` levels, every number finite and within a float's range.
  ``json.loads`` accepts ``NaN``, ``Infinity`` and ``1e999`` (which becomes infinity); aibench never writes
  them (``allow_nan=False``), so a file holding one was not written by aibench as it is, and later code that
  does arithmetic or writes ``--json`` would trip on it.
* :func:`result_problem` — a result document against ``result.schema.json`` (schema version 2; version 1
  files are checked against the frozen ``result-v1.schema.json`` before :mod:`aibench.results.convert`
  turns them into version 2). The schema files are the single source: this module interprets the subset of
  JSON Schema (draft 2020-12) they use, with the same semantics as the ``jsonschema`` package
  (``tests/test_results_io.py`` checks that the two agree on hundreds of mutated documents). It is
  hand-written for speed: a raw-sample list of ten million numbers is checked in C-speed passes (the set of
  element types, then one sum), not one schema call per element.

Nothing here imports numpy, torch or click, and nothing raises on a hostile document (deep nesting is cut
off by the limits check before the schema walk recurses).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from aibench.errors import ResultIOError

# Deeper than this is not an aibench file: a result is at most ~6 levels deep, and recursive code that
# reads or writes one (json.dumps, dataclasses.asdict, the HTML page) must never meet a RecursionError.
MAX_DEPTH = 64
_FLOAT_MAX = sys.float_info.max
# A number list longer than this is checked with the fast passes (the element-by-element walk is exact
# for short lists and gives a precise location).
_FAST_LIST = 64


class ResultFileError(ResultIOError):
    """A file that cannot be used as what a command needs; one line, exit 4 when it was named directly.

    ``kind`` says which way, so a folder scan can count and name the files it skipped:
    ``missing`` · ``not-regular`` (FIFO, device, socket, folder, dangling link) · ``too-large`` ·
    ``unreadable`` (permissions, I/O) · ``not-json`` · ``foreign`` (JSON, but not an aibench file) ·
    ``damaged`` (an aibench file cut short, edited or hostile) · ``other-version`` (an aibench file of a
    schema version this aibench does not read). ``detail`` carries what is known of the file (for
    ``other-version``: benchmark id, config hash and version).
    """

    def __init__(self, path: Any, why: str, kind: str, detail: dict[str, Any] | None = None) -> None:
        self.path = str(path)
        self.why = why
        self.kind = kind
        self.detail = detail or {}
        super().__init__(f"{shown(path)}: {why}")


def shown(text: Any) -> str:
    """A path or text from outside, safe on one line of a terminal: control characters become '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


# ------------------------------------------------------------------------------------------ read limits
def _number_problem(x: Any) -> str | None:
    if type(x) is float:
        return None if math.isfinite(x) else "a number that is not finite (NaN or infinity)"
    if type(x) is int and not -_FLOAT_MAX <= x <= _FLOAT_MAX:
        return "an integer beyond the range of a float"
    return None


def _fast_numbers(values: list[Any]) -> bool | None:
    """For a list of numbers: True when every one is finite (and within a float's range), False when one is
    not; None when the list holds something other than numbers (booleans included). Two C-speed passes."""
    if not {type(v) for v in values} <= {int, float}:
        return None
    try:
        total = sum(values)  # NaN or ±infinity anywhere makes the sum so; a huge int fails float()
        if math.isfinite(float(total)):
            return True
    except OverflowError:
        pass
    # Not finite: an element is, or finite elements summed past a float's range (only absurd data).
    return all(_number_problem(v) is None for v in values)


def limits_problem(doc: Any, number_lists: set[int] | None = None) -> str | None:
    """The first violation of the read limits in ``doc`` (a parsed JSON value), or None. Iterative: any
    nesting depth is examined without recursion. ``number_lists``, when given, collects the ``id`` of each
    long list found to hold only numbers, so that the schema check need not look at its elements again."""
    stack: list[tuple[Any, int, str]] = [(doc, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep (at {where or 'the top'})"
            for k, v in node.items():
                if isinstance(v, dict | list):
                    stack.append((v, depth + 1, f"{where}.{k}" if where else str(k)))
                elif (why := _number_problem(v)) is not None:
                    return f"{why} at {where + '.' if where else ''}{k}"
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep (at {where or 'the top'})"
            if len(node) > _FAST_LIST:
                ok = _fast_numbers(node)
                if ok is True:
                    if number_lists is not None:
                        number_lists.add(id(node))
                    continue
                if ok is False:
                    return f"a number that is not finite (NaN, infinity or too large) in {where or 'the top list'}"
            for i, v in enumerate(node):
                if isinstance(v, dict | list):
                    stack.append((v, depth + 1, f"{where}[{i}]"))
                elif (why := _number_problem(v)) is not None:
                    return f"{why} at {where}[{i}]"
        elif (why := _number_problem(node)) is not None:
            return why
    return None


# ---------------------------------------------------------------------------------- the result schema
# The result schema of each version this aibench reads, shipped beside this module.
SCHEMA_FILES = {2: "result.schema.json", 1: "result-v1.schema.json"}
CURRENT_VERSION = 2


@cache
def result_schema(version: int = CURRENT_VERSION) -> dict[str, Any]:
    """The JSON Schema of result files of ``version`` (read once)."""
    text = resources.files("aibench.results").joinpath(SCHEMA_FILES[version]).read_text(encoding="utf-8")
    return json.loads(text)


# The JSON Schema keywords this interpreter implements (annotations are ignored); the schema file may use no
# other (a test checks), so nothing in it is silently skipped.
KEYWORDS = frozenset({"type", "required", "properties", "additionalProperties", "const", "enum", "pattern",
                      "items", "minItems", "maxItems", "minimum", "oneOf", "allOf", "$ref", "if", "then", "else"})
ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "$defs"})

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    # JSON has no booleans among its numbers; and, as in jsonschema, 1.0 is an integer.
    "number": lambda x: type(x) is int or type(x) is float,
    "integer": lambda x: type(x) is int or (type(x) is float and x.is_integer()),
    "boolean": lambda x: type(x) is bool,
    "null": lambda x: x is None,
}


def _type_name(x: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if name != "integer" and _TYPES[name](x):
            return name
    return type(x).__name__


def _equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: ``true`` is not ``1``; ``1.0`` is ``1``."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _at(where: str) -> str:
    return where or "the document"


def _check(x: Any, schema: dict[str, Any], where: str, number_lists: set[int], root: dict[str, Any]) -> str | None:
    """The first way ``x`` fails ``schema`` (a text naming where), or None. Lists whose ``id`` is in
    ``number_lists`` are known to hold only numbers."""
    if "$ref" in schema and (why := _check(x, _resolve(schema["$ref"], root), where, number_lists, root)):
        return why
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](x) for t in allowed):
            return f"{_at(where)} must be {' or '.join(allowed)}, not {_type_name(x)}"
    if "const" in schema and not _equal(x, schema["const"]):
        return f"{_at(where)} must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(_equal(x, e) for e in schema["enum"]):
        return f"{_at(where)} must be one of {', '.join(json.dumps(e) for e in schema['enum'])}"
    if "pattern" in schema and isinstance(x, str) and not _pattern(schema["pattern"]).search(x):
        return f"{_at(where)} does not match {schema['pattern']}"
    if "minimum" in schema and _TYPES["number"](x) and x < schema["minimum"]:
        return f"{_at(where)} must be at least {schema['minimum']}"
    if isinstance(x, dict):
        for key in schema.get("required", ()):
            if key not in x:
                return f"{where + '.' if where else ''}{key} is missing"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in x.items():
            sub = props[key] if key in props else extra
            if sub is False:
                return f"{where + '.' if where else ''}{key} is not allowed"
            if isinstance(sub, dict) and (why := _check(value, sub, f"{where}.{key}" if where else key,
                                                        number_lists, root)):
                return why
    if isinstance(x, list):
        if "minItems" in schema and len(x) < schema["minItems"]:
            return f"{_at(where)} must have at least {schema['minItems']} item(s)"
        if "maxItems" in schema and len(x) > schema["maxItems"]:
            return f"{_at(where)} must have at most {schema['maxItems']} item(s)"
        items = schema.get("items")
        if isinstance(items, dict):
            if items == {"type": "number"} and len(x) > _FAST_LIST:
                if id(x) not in number_lists and not {type(v) for v in x} <= {int, float}:
                    bad = next(i for i, v in enumerate(x) if type(v) is not int and type(v) is not float)
                    return f"{where}[{bad}] must be number, not {_type_name(x[bad])}"
            else:
                for i, v in enumerate(x):
                    if why := _check(v, items, f"{where}[{i}]", number_lists, root):
                        return why
    for sub in schema.get("allOf", ()):
        if why := _check(x, sub, where, number_lists, root):
            return why
    if "oneOf" in schema:
        fits = [sub for sub in schema["oneOf"] if _check(x, sub, where, number_lists, root) is None]
        if len(fits) != 1:
            return f"{_at(where)} has the wrong form" if not fits else f"{_at(where)} is ambiguous"
    if "if" in schema:
        fits = _check(x, schema["if"], where, number_lists, root) is None
        branch = schema.get("then") if fits else schema.get("else")
        if isinstance(branch, dict) and (why := _check(x, branch, where, number_lists, root)):
            return why
    return None


def result_problem(doc: Any, version: int = CURRENT_VERSION, checked: set[int] | None = None) -> str | None:
    """How ``doc`` fails the result schema of ``version`` (one short text naming the field), or None when
    it is valid.

    The read limits are checked first, so the schema walk never meets a document nested too deeply; a
    caller that checked them already passes the set they filled (``checked``: the ids of the long number
    lists found, see :func:`limits_problem`) and they are not checked again.
    """
    root = result_schema(version)
    if checked is None:
        checked = set()
        if problem := limits_problem(doc, checked):
            return problem
    return _check(doc, root, "", checked, root)
