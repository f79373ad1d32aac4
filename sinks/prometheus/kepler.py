"""Kepler 0.7 compatible families: their names and labels, and how our zones map onto them.

Names, label names, the constant ``source`` values and the system/kernel bucket names are
Kepler 0.7's (pkg/metrics/consts, pkg/model/types, pkg/utils; see tests/fixtures/kepler),
so Kepler's Grafana dashboards and recording rules keep working over this sink.

Zone mapping (our zone -> Kepler component):
  package-N -> package, core-N -> core, uncore-N -> uncore, dram-N -> dram, gpu-N -> gpu,
  platform (or, failing that, psys) -> platform.
  other = platform - package - dram per window and mode (Kepler's definition: host energy
  less package and DRAM), clipped at 0 and only where a platform zone exists; without one,
  other is not exported rather than made up.
Containers sum over sockets; node families keep one series per socket in ``package``
(= N; the platform zone's name for platform and other). ``kepler_container_joules_total``
is package + dram + other + gpu, as in Kepler.

Kepler runs one exporter per node and tells nodes apart by the scrape target; one sink
serves many nodes, so the container families also carry ``cluster`` and ``node`` and the node
families ``cluster`` (``instance`` is the node's name, as Kepler sets it). Extra labels leave
Kepler's queries, which select and aggregate by Kepler's labels, unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

CONTAINER_COMPONENTS: tuple[str, ...] = (
    "package",
    "core",
    "uncore",
    "dram",
    "other",
    "gpu",
    "platform",
)
NODE_COMPONENTS: tuple[str, ...] = CONTAINER_COMPONENTS
MODES: tuple[str, str] = ("dynamic", "idle")
TOTAL_COMPONENTS: tuple[str, ...] = ("package", "dram", "other", "gpu")

# Kepler 0.7 label names (consts.ContainerEnergyLabels / NodeEnergyLabels), then ours.
CONTAINER_LABELS: tuple[str, ...] = (
    "container_id",
    "pod_name",
    "container_name",
    "container_namespace",
    "mode",
    "cluster",
    "node",
)
NODE_LABELS: tuple[str, ...] = ("package", "instance", "mode", "cluster")

# Kepler's constant ``source`` label per family (model/types: component, platform, GPU).
_SOURCES = {"platform": "acpi", "gpu": "nvidia"}
COMPONENT_SOURCE = "intel_rapl"

SYSTEM_PROCESSES = "system_processes"
SYSTEM_NAMESPACE = "system"
KERNEL_PROCESSES = "kernel_processes"
KERNEL_NAMESPACE = "kernel"

_SOCKET_COMPONENTS = frozenset({"package", "core", "uncore", "dram", "gpu"})
_PLATFORM_ZONES = ("platform", "psys")  # in order of preference

ContainerKey = tuple[str, str, str, str]  # container_id, pod_name, container_name, namespace
Parts = dict[str, list[float]]  # component -> [dynamic J, idle J]
NodeParts = dict[tuple[str, str], list[float]]  # (component, package) -> [dynamic, idle]


def source_of(component: str) -> str:
    return _SOURCES.get(component, COMPONENT_SOURCE)


@functools.cache
def component_of(zone: str) -> tuple[str, str] | None:
    """(Kepler component, socket index or zone name), or None for a zone Kepler has not."""
    if zone in _PLATFORM_ZONES:
        return ("platform", zone)
    base, dash, index = zone.rpartition("-")
    if dash and index.isdigit() and base in _SOCKET_COMPONENTS:
        return (base, index)
    return None


def container_key(workload: Mapping[str, Any]) -> ContainerKey:
    """Kepler's identity of a workload; every non-container workload of a node shares the
    ``system_processes`` bucket, as in Kepler (the kernel's own: ``kernel_processes``)."""
    kind = workload["kind"]
    if kind == "kernel":
        return (KERNEL_PROCESSES, KERNEL_PROCESSES, KERNEL_PROCESSES, KERNEL_NAMESPACE)
    if kind != "container":
        return (SYSTEM_PROCESSES, SYSTEM_PROCESSES, SYSTEM_PROCESSES, SYSTEM_NAMESPACE)
    return (
        workload.get("container_id") or workload["workload_id"],
        workload.get("pod") or "",
        workload.get("container") or "",
        workload.get("namespace") or "",
    )


def _with_other(parts: Parts, platform: list[float] | None) -> Parts:
    if platform is not None:
        package = parts.get("package", [0.0, 0.0])
        dram = parts.get("dram", [0.0, 0.0])
        parts["platform"] = platform
        parts["other"] = [max(0.0, platform[m] - package[m] - dram[m]) for m in (0, 1)]
    return parts


def _platform_choice(zones: Iterable[Mapping[str, Any]]) -> str | None:
    names = {zone["zone"] for zone in zones}
    return next((name for name in _PLATFORM_ZONES if name in names), None)


def container_parts(zones: list[Mapping[str, Any]]) -> Parts:
    """One workload's window in Kepler components, summed over sockets."""
    parts: Parts = {}
    platform: list[float] | None = None
    chosen = _platform_choice(zones)
    for zone in zones:
        mapped = component_of(zone["zone"])
        if mapped is None:
            continue
        if mapped[0] == "platform":
            if zone["zone"] == chosen:
                platform = [zone["dynamic_j"], zone["idle_j"]]
            continue
        acc = parts.setdefault(mapped[0], [0.0, 0.0])
        acc[0] += zone["dynamic_j"]
        acc[1] += zone["idle_j"]
    return _with_other(parts, platform)


def node_parts(zones: list[Mapping[str, Any]]) -> NodeParts:
    """One node window in Kepler components, one entry per socket (``package`` label)."""
    parts: NodeParts = {}
    package = [0.0, 0.0]
    dram = [0.0, 0.0]
    platform: list[float] | None = None
    chosen = _platform_choice(zones)
    for zone in zones:
        mapped = component_of(zone["zone"])
        if mapped is None:
            continue
        energy = [zone["dynamic_j"], zone["idle_j"]]
        if mapped[0] == "platform":
            if zone["zone"] != chosen:
                continue
            platform = energy
        elif mapped[0] == "package":
            package = [package[0] + energy[0], package[1] + energy[1]]
        elif mapped[0] == "dram":
            dram = [dram[0] + energy[0], dram[1] + energy[1]]
        parts[mapped] = energy
    if platform is not None and chosen is not None:
        parts[("other", chosen)] = [max(0.0, platform[m] - package[m] - dram[m]) for m in (0, 1)]
    return parts


def container_total(parts: Mapping[tuple[str, str], float], mode: str) -> float:
    """kepler_container_joules_total: package + dram + other + gpu (Kepler's sum)."""
    return sum(parts.get((component, mode), 0.0) for component in TOTAL_COMPONENTS)
