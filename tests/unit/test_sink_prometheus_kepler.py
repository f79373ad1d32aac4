"""Kepler compatible families: names and labels against Kepler's own dashboards and
constants (tests/fixtures/kepler, taken from Kepler's repository), and the zone mapping."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import kepler_dashboards
import pytest
from prometheus_client import generate_latest
from test_sink_prometheus_collector import exposition, promtool_check, samples
from test_sink_prometheus_consumer import parse
from test_sink_prometheus_state import window, workload, zone

from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState

CONSTANTS = json.loads(
    (kepler_dashboards.FIXTURES / "kepler-0.7-metric-constants.json").read_text()
)
V07 = kepler_dashboards.load(kepler_dashboards.V07)
LATEST = kepler_dashboards.load(kepler_dashboards.LATEST)
# Families of the >= 0.10 dashboard that have no data here: per-process and per-VM energy
# need process and VM records (NodeEnergy has workloads), cpu_info a CPU inventory.
NOT_EXPORTED = {"kepler_process_cpu_watts", "kepler_vm_cpu_watts", "kepler_node_cpu_info"}

METRIC = re.compile(r"\b(kepler_[a-z_]+)\b")
SELECTOR = re.compile(r"\b(kepler_[a-z_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*(kepler_[a-z_]+)[^,]*,\s*([a-zA-Z_]+)\s*\)")


def rich_window(start_s: int = 100) -> dict[str, Any]:
    """Two sockets, core/uncore, dram, a GPU and psys; a pod, a system and a kernel workload."""
    zones = [
        zone("package-0", 2, 8),
        zone("package-1", 1, 4),
        zone("core-0", 1, 5),
        zone("uncore-0", 0.5, 1),
        zone("dram-0", 1, 2),
        zone("gpu-0", 3, 10),
        zone("psys", 10, 20),
    ]
    web = workload(
        "cid-web",
        {
            "package-0": (4, 1),
            "package-1": (2, 0.5),
            "core-0": (3, 0.5),
            "uncore-0": (0.5, 0.25),
            "dram-0": (1, 0.5),
            "gpu-0": (6, 1),
            "psys": (10, 4),
        },
    )
    system = workload(
        "/system.slice/sshd.service",
        {"package-0": (1, 0), "psys": (2, 0)},
        kind="system",
        namespace=None,
        pod=None,
        container=None,
    )
    logger = workload(
        "/system.slice/rsyslog.service",
        {"package-0": (0.5, 0), "psys": (1, 0)},
        kind="system",
        namespace=None,
        pod=None,
        container=None,
    )
    kernel = workload(
        "kernel", {"package-0": (0.25, 0)}, kind="kernel", namespace=None, pod=None, container=None
    )
    return window(start_s, zones=zones, workloads=[web, system, logger, kernel])


def kepler_samples() -> dict[str, list[dict[str, str]]]:
    state = EnergyState()
    state.apply(rich_window(100))
    state.apply(rich_window(102))
    return kepler_samples_of(state)


def dashboard_usage(board: kepler_dashboards.Dashboard = V07) -> dict[str, set[str]]:
    """kepler_* metric -> label names the dashboard selects, groups or lists it by."""
    usage: dict[str, set[str]] = {}
    for expr in board.exprs + [
        kepler_dashboards.as_promql(q) for q in board.variable_queries.values()
    ]:
        grouping = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        for name in METRIC.findall(expr):
            usage.setdefault(name, set()).update(grouping)
        for name, matchers in SELECTOR.findall(expr):
            usage[name].update(MATCHER_LABEL.findall(matchers))
    for query in board.variable_queries.values():
        for name, label in LABEL_VALUES.findall(query):
            usage.setdefault(name, set()).add(label)
    # job and instance are the scrape's, not the exporter's
    return {name: labels - {"job", "instance"} for name, labels in usage.items()}


def test_the_dashboards_are_parsed_into_metrics_and_labels() -> None:
    """Guards the tests below: the parser must really find what the dashboards use."""
    assert dashboard_usage(LATEST) == {
        "kepler_node_cpu_watts": {"zone", "node_name"},
        "kepler_node_cpu_active_watts": {"zone"},
        "kepler_node_cpu_idle_watts": {"zone"},
        "kepler_node_cpu_info": {"model_name"},
        "kepler_process_cpu_watts": {"comm", "zone", "pid"},
        "kepler_container_cpu_watts": {"container_name", "zone"},
        "kepler_pod_cpu_watts": {"pod_namespace", "zone", "pod_name"},
        "kepler_vm_cpu_watts": {"vm_name", "zone"},
    }
    usage = dashboard_usage()
    assert usage == {
        "kepler_container_joules_total": {"container_namespace", "pod_name"},
        "kepler_container_package_joules_total": {"container_namespace", "pod_name"},
        "kepler_container_dram_joules_total": {"container_namespace", "pod_name"},
        "kepler_container_other_joules_total": {"container_namespace", "pod_name"},
        "kepler_container_gpu_joules_total": {"container_namespace", "pod_name"},
    }


@pytest.mark.parametrize("board", [V07, LATEST], ids=["0.7", "latest"])
def test_every_metric_and_label_the_kepler_dashboards_query_is_exported(
    board: kepler_dashboards.Dashboard,
) -> None:
    exported = kepler_samples()
    assert NOT_EXPORTED.isdisjoint(exported)
    for name, labels in dashboard_usage(board).items():
        if name in NOT_EXPORTED:
            continue
        assert exported.get(name), f"{name} (queried by Kepler's dashboard) is not exported"
        for sample in exported[name]:
            assert labels <= set(sample), (name, labels - set(sample))


def test_families_names_labels_and_sources_are_kepler_0_7s() -> None:
    exported = kepler_samples()
    suffix = CONSTANTS["energy_metric_name_suffix"]
    container_labels = set(CONSTANTS["container_energy_labels"])
    node_labels = set(CONSTANTS["node_energy_labels"])
    sources = CONSTANTS["sources"]
    documented = set(CONSTANTS["documented_container_families"]) | set(
        CONSTANTS["documented_node_families"]
    )
    assert documented <= set(exported)
    for component in CONSTANTS["energy_metric_names"]:
        source = sources.get(component, sources["component"])
        for context, labels in (("container", container_labels), ("node", node_labels)):
            name = f"{CONSTANTS['metrics_namespace']}_{context}_{component}{suffix}"
            for sample in exported[name]:
                assert labels | {"source"} <= set(sample), (name, sample)
                assert sample["source"] == source, (name, sample)
                assert sample["mode"] in CONSTANTS["modes"]
    for sample in exported["kepler_container_joules_total"]:
        assert container_labels <= set(sample) and "source" not in sample
        assert "pid" not in sample


def test_processes_outside_pods_are_kepler_system_and_kernel_buckets() -> None:
    exported = kepler_samples()
    identities = {
        (s["container_id"], s["pod_name"], s["container_name"], s["container_namespace"])
        for s in exported["kepler_container_joules_total"]
    }
    system = CONSTANTS["system_process"]
    kernel = CONSTANTS["kernel_process"]
    assert identities == {
        ("cid-web", "web-0", "nginx", "shop"),
        (system["name"], system["name"], system["name"], system["namespace"]),
        (kernel["name"], kernel["name"], kernel["name"], kernel["namespace"]),
    }


def value(name: str, **labels: str) -> float:
    state = EnergyState()
    state.apply(rich_window(100))
    _, values = samples(exposition(state))
    matches = [v for (n, lbls), v in values.items() if n == name and set(labels.items()) <= lbls]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_container_components_sum_sockets_and_other_is_platform_less_package_and_dram() -> None:
    web = {"container_id": "cid-web"}
    assert value("kepler_container_package_joules_total", **web, mode="dynamic") == 6.0
    assert value("kepler_container_package_joules_total", **web, mode="idle") == 1.5
    assert value("kepler_container_core_joules_total", **web, mode="dynamic") == 3.0
    assert value("kepler_container_uncore_joules_total", **web, mode="dynamic") == 0.5
    assert value("kepler_container_dram_joules_total", **web, mode="dynamic") == 1.0
    assert value("kepler_container_gpu_joules_total", **web, mode="dynamic") == 6.0
    assert value("kepler_container_platform_joules_total", **web, mode="dynamic") == 10.0
    # other = psys 10 - package 6 - dram 1; idle: 4 - 1.5 - 0.5
    assert value("kepler_container_other_joules_total", **web, mode="dynamic") == 3.0
    assert value("kepler_container_other_joules_total", **web, mode="idle") == 2.0
    # total = package + dram + other + gpu (core, uncore and platform are inside those)
    assert value("kepler_container_joules_total", **web, mode="dynamic") == 6 + 1 + 3 + 6
    system = {"container_id": "system_processes"}  # two system workloads in one bucket
    assert value("kepler_container_package_joules_total", **system, mode="dynamic") == 1.5
    assert value("kepler_container_other_joules_total", **system, mode="dynamic") == 1.5


def test_node_families_keep_sockets_apart_in_the_package_label() -> None:
    node = {"instance": "n1", "cluster": "c1", "mode": "dynamic"}
    assert value("kepler_node_package_joules_total", **node, package="0") == 8.0
    assert value("kepler_node_package_joules_total", **node, package="1") == 4.0
    assert value("kepler_node_core_joules_total", **node, package="0") == 5.0
    assert value("kepler_node_uncore_joules_total", **node, package="0") == 1.0
    assert value("kepler_node_dram_joules_total", **node, package="0") == 2.0
    assert value("kepler_node_gpu_joules_total", **node, package="0") == 10.0
    assert value("kepler_node_platform_joules_total", **node, package="psys") == 20.0
    assert value("kepler_node_other_joules_total", **node, package="psys") == 20 - 12 - 2
    idle = {**node, "mode": "idle"}
    assert value("kepler_node_other_joules_total", **idle, package="psys") == 10 - 3 - 1


def test_zone_mapping() -> None:
    assert kepler.component_of("package-0") == ("package", "0")
    assert kepler.component_of("core-12") == ("core", "12")
    assert kepler.component_of("uncore-1") == ("uncore", "1")
    assert kepler.component_of("dram-0") == ("dram", "0")
    assert kepler.component_of("gpu-3") == ("gpu", "3")
    assert kepler.component_of("psys") == ("platform", "psys")
    assert kepler.component_of("platform") == ("platform", "platform")
    assert kepler.component_of("fan-0") is None


def test_platform_is_preferred_to_psys_and_other_is_never_negative() -> None:
    zones = [
        zone("psys", 0, 50),
        zone("platform", 0, 30),
        zone("package-0", 0, 25),
        zone("dram-0", 0, 10),
    ]
    parts = kepler.node_parts(zones)
    assert parts[("platform", "platform")] == [30, 0]
    assert ("platform", "psys") not in parts
    assert parts[("other", "platform")] == [0.0, 0.0]  # 30 - 25 - 10 < 0: clipped
    container = kepler.container_parts(zones)
    assert container["platform"] == [30, 0] and container["other"] == [0.0, 0.0]


def test_without_a_platform_zone_there_is_no_other() -> None:
    parts = kepler.container_parts([zone("package-0", 1, 2), zone("dram-0", 0, 1)])
    assert parts == {"package": [2, 1], "dram": [1, 0]}
    joules = {("package", "dynamic"): 2.0, ("dram", "dynamic"): 1.0}
    assert math.isclose(kepler.container_total(joules, "dynamic"), 3.0)


def test_promtool_finds_nothing_in_the_kepler_families() -> None:
    state = EnergyState()
    state.apply(rich_window(100))
    result = promtool_check(generate_latest(build_registry(state)).decode())
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_kepler_generation_option_picks_the_families_served() -> None:
    assert parse(["prometheus"]).kepler_generation == "both"
    assert parse(["prometheus", "--kepler-generation", "0.10"]).kepler_generation == "0.10"
    with pytest.raises(SystemExit):
        parse(["prometheus", "--kepler-generation", "0.9"])
    served = {}
    for generation in kepler.GENERATIONS:
        state = EnergyState(kepler_generation=generation)
        state.apply(rich_window(100))
        served[generation] = set(kepler_samples_of(state))
    assert "kepler_container_package_joules_total" in served["0.7"] - served["0.10"]
    assert "kepler_pod_cpu_joules_total" in served["0.10"] - served["0.7"]
    assert served["both"] == served["0.7"] | served["0.10"]
    gpu = "kepler_container_gpu_joules_total"  # both generations' name: 0.7's labels in both
    assert gpu in served["both"] and gpu in served["0.10"]
    with pytest.raises(ValueError, match="kepler_generation"):
        EnergyState(kepler_generation="0.9")


def kepler_samples_of(state: EnergyState) -> dict[str, list[dict[str, str]]]:
    _, values = samples(exposition(state))
    found: dict[str, list[dict[str, str]]] = {}
    for name, labels in values:
        if name.startswith("kepler_"):
            found.setdefault(name, []).append(dict(labels))
    return found
