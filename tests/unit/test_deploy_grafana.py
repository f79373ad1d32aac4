"""The Grafana dashboards query only what the Prometheus sink exports, with its labels.

Exported names come from the sink itself: its registry (joulestream and Kepler-compatible
families plus process metrics) rendered to the exposition format, as /metrics serves it;
labels from the collector's family specs. Every query also has to parse as PromQL (promtool,
after Grafana's variables are substituted), so a query the extractor misreads cannot pass.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from joulestream.sinks.prometheus.collector import FAMILIES, KEPLER_FAMILIES
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
# Added by Prometheus to every scraped series (job from the scrape config or ServiceMonitor).
TARGET_LABELS = frozenset({"job", "instance"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def exported_names() -> set[str]:
    """Sample names on /metrics, from the TYPE lines of the text exposition (which name a
    counter with its ``_total``), so families with no series yet count too."""
    text = generate_latest(build_registry(EnergyState(kepler_compat=True))).decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def exported_labels() -> dict[str, frozenset[str]]:
    labels = {}
    for spec in (*FAMILIES, *KEPLER_FAMILIES):
        name = f"{spec.name}_total" if spec.kind.__name__.startswith("Counter") else spec.name
        labels[name] = frozenset(spec.labels) | ({"source"} if spec.source else set())
    return labels


def dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARDS:
        yield path.name, json.loads(path.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: dict[str, Any]) -> Iterator[str]:
    """PromQL of every panel target and every query variable (label_values(selector, l))."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            yield f"count by ({match[2]}) ({match[1]})"


def _strip(expr: str) -> str:
    """Strings, ranges, Grafana variables and numbers out: only names and syntax left."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "1", expr)
    return re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "1", expr)


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric name, labels its matchers use) for each selector, and the grouping labels."""
    rest = _strip(expr)
    found: list[tuple[str, set[str]]] = []
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", rest):
        found.append((match[1], set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match[2]))))
    rest = re.sub(r"([A-Za-z_:][\w:]*)\s*\{[^}]*\}", " ", rest)
    grouping: set[str] = set()
    clause = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    for labels in re.findall(clause, rest):
        grouping.update(label.strip() for label in labels.split(",") if label.strip())
    rest = re.sub(clause, " ", rest)
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", rest):
        if match[2] is None and match[1].lower() not in _KEYWORDS:
            found.append((match[1], set()))
    return found, grouping


def test_selector_extraction_finds_names_labels_and_grouping() -> None:
    found, grouping = selectors(
        'sum by (namespace, pod) (rate(foo_joules_total{cluster=~"$cluster", zone!=""}'
        "[$__rate_interval])) / 3.6e6 * $pue + on (node) bar_watts - 1e3"
    )
    assert found == [("foo_joules_total", {"cluster", "zone"}), ("bar_watts", set())]
    assert grouping == {"namespace", "pod", "node"}


def test_the_four_dashboards_are_there_with_unique_uids() -> None:
    uids = {board["uid"] for _, board in dashboards()}
    assert uids == {
        "joulestream-fleet",
        "joulestream-carbon",
        "joulestream-nodes",
        "joulestream-pipeline",
    }


def test_every_queried_metric_is_exported_by_the_sink() -> None:
    names = exported_names()
    assert "joulestream_workload_joules_total" in names  # the derivation itself works
    missing = {
        (file, name)
        for file, board in dashboards()
        for expr in queries(board)
        for name, _ in selectors(expr)[0]
        if name not in names
    }
    assert not missing, f"queried but not exported: {sorted(missing)}"


def test_every_matcher_and_grouping_label_exists_on_the_metrics_queried() -> None:
    labels = exported_labels()
    problems = []
    for file, board in dashboards():
        for expr in queries(board):
            found, grouping = selectors(expr)
            available = set(TARGET_LABELS)
            for name, used in found:
                known = labels.get(name, frozenset()) | TARGET_LABELS
                available |= known
                if not used <= known:
                    problems.append((file, name, sorted(used - known)))
            if not grouping <= available:
                problems.append((file, expr, sorted(grouping - available)))
    assert not problems


def promtool() -> str:
    beside_python = Path(sys.executable).parent / "promtool"
    found = str(beside_python) if beside_python.exists() else shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (Debian)")
    return found


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by values of the same kind: regexes, durations, numbers."""
    expr = re.sub(r'"\$\{?\w+\}?"', '".*"', expr)
    expr = re.sub(r"\$\{?__\w+\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "1", expr)


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(expr for _, board in dashboards() for expr in queries(board))
    ]
    assert len(rules) > 40
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_panels_use_the_dashboard_datasource_variable() -> None:
    for file, board in dashboards():
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[0] == "datasource", file
        for panel in panels(board):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", (file, panel["title"])


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    for file, board in dashboards():
        ids = [panel["id"] for panel in panels(board)]
        assert len(ids) == len(set(ids)), file
        cells: set[tuple[int, int]] = set()
        for panel in panels(board):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (file, panel["title"])
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & area, (file, panel["title"])
            cells |= area


def test_carbon_dashboard_multiplies_energy_by_pue_and_grid_intensity() -> None:
    board = json.loads((ROOT / "deploy/grafana/dashboards/joulestream-carbon.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["pue"]["query"] == "1.0"
    assert variables["grid_intensity"]["query"] == "475"
    what_if = [e for e in queries(board) if "$pue * $grid_intensity" in e]
    assert any("kepler_container_joules_total" in e and "container_namespace" in e for e in what_if)
    assert any("joulestream_workload_joules_total" in e for e in what_if)
    assert all("/ 3.6e6" in e for e in what_if)
