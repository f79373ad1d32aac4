"""Kepler's Grafana dashboards (tests/fixtures/kepler) as PromQL: every panel expression,
every template-variable query, and the variables' constant values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kepler"
V07 = FIXTURES / "kepler-0.7.12-Kepler-Exporter.json"
LATEST = FIXTURES / "kepler-latest-dashboard.json"
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>[a-zA-Z_]+)\s*\)$", re.S)
_QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.*)\)$", re.S)


@dataclass(frozen=True)
class Dashboard:
    exprs: list[str]  # panel expressions, in panel order
    variable_queries: dict[str, str]  # variable -> its query as Grafana writes it
    constants: dict[str, str]  # constant and textbox variables -> value


def _panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def load(path: Path) -> Dashboard:
    board = json.loads(path.read_text())
    exprs = [
        target["expr"]
        for panel in _panels(board["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    queries: dict[str, str] = {}
    constants: dict[str, str] = {}
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query["query"]
        if variable["type"] == "query":
            queries[variable["name"]] = str(query)
        elif variable["type"] in ("constant", "textbox"):
            constants[variable["name"]] = str(query)
    return Dashboard(exprs, queries, constants)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}``, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return text


def as_promql(variable_query: str) -> str:
    """The PromQL behind a variable query: ``label_values(sel, label)`` asks for ``sel``,
    ``query_result(expr)`` for ``expr``."""
    query = variable_query.strip()
    for pattern, group in ((_LABEL_VALUES, "selector"), (_QUERY_RESULT, "expr")):
        match = pattern.match(query)
        if match:
            return match[group].strip()
    if query.startswith("label_values("):  # label_values(metric_name, label) without selector
        return query[len("label_values(") :].split(",")[0]
    return query
