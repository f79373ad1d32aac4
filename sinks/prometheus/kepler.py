"""Kepler compatible families: the one mapping from our zone names onto Kepler's.

docs/architecture.md, 'Kepler compatibility'. Two generations of Kepler are served side by
side, both from this one mapping, so a node measured by RAPL or hwmon and a node estimated
by a model (zones without a socket index: ``package``, ``core``, ``uncore``, ``dram``,
``platform``) land in the same families:

  our zone            Kepler 0.7 component (``package`` label)   Kepler >= 0.10 ``zone``
  package[-N]         package (N, or "package")                  package
  core[-N]            core    (N, or "core")                     core
  uncore[-N]          uncore  (N, or "uncore")                   uncore
  dram[-N]            dram    (N, or "dram")                     dram
  psys                platform ("psys"), if no platform zone     psys
  platform[-N]        platform (the zone's name)                 platform
  gpu[-N]             gpu     (N, or "gpu")                      none: kepler_*_gpu_* families

Any other zone name has no Kepler counterpart (``map_zone`` is None) and stays in the
joulestream families only.

Kepler 0.7 (pkg/metrics/consts, pkg/model/types, pkg/utils; tests/fixtures/kepler):
other = platform - package - dram per window and mode (host energy less package and DRAM),
clipped at 0 and only where a platform (or psys) zone exists. Containers sum over sockets;
node families keep one series per socket in ``package``. ``kepler_container_joules_total``
is package + dram + other + gpu. Workloads outside containers share the
``system_processes`` bucket, the kernel's own is ``kernel_processes``.

Kepler >= 0.10 (docs/user/metrics.md, internal/exporter/prometheus/collector): zones carry
the zone's base name; a node's zones of one name (several sockets) are summed into one
series with ``path="aggregated-<zone>"``, as Kepler's AggregatedZone does; a single zone's
``path`` is our zone name (Kepler puts the sysfs path there, which NodeEnergy does not
carry). Only containers and pods have families there (Kepler exports other processes as
``kepler_process_*``, which needs per-process records we do not have), ``state`` is always
``running`` (a gone container leaves with the series TTL), and ``*_watts`` is a window's
energy over its length, for the node's latest window. ``kepler_platform_watts`` (Kepler
>= 0.11, the BMC over Redfish) is the platform zone's watts of the node's latest window when
that zone came from the agent's Redfish reader (``bmc_joules``); its BMC, chassis and reading
id labels are empty: NodeEnergy does not carry them.

Kepler runs one exporter per node; one sink serves many nodes, so every family also carries
``cluster``, the 0.7 container families ``node`` and the >= 0.10 families ``node_name`` (a
constant label in Kepler). Extra labels leave Kepler's queries unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# --- the mapping ---------------------------------------------------------------------------

_ZONE = re.compile(r"^(?P<base>[a-z]+)(?:-(?P<index>\d+))?$")
_V07_COMPONENT = {
    "package": "package",
    "core": "core",
    "uncore": "uncore",
    "dram": "dram",
    "gpu": "gpu",
    "psys": "platform",
    "platform": "platform",
}


@dataclass(frozen=True)
class ZoneMap:
    """Where one of our zones goes in both Kepler generations."""

    zone: str
    component: str  # Kepler 0.7 component
    package: str  # Kepler 0.7 ``package`` label: the socket index, else the zone's name
    cpu_zone: str | None  # Kepler >= 0.10 ``zone``; None for a GPU
    gpu: str | None  # Kepler >= 0.10 ``gpu`` index for a GPU zone


@functools.cache
def map_zone(zone: str) -> ZoneMap | None:
    """The zone's Kepler counterparts, or None for a zone Kepler has not."""
    match = _ZONE.match(zone)
    if match is None or match["base"] not in _V07_COMPONENT:
        return None
    base, index = match["base"], match["index"]
    if base == "psys" and index is not None:
        return None
    component = _V07_COMPONENT[base]
    package = index if index is not None and component != "platform" else zone
    if base == "gpu":
        return ZoneMap(zone, component, package, None, index or "0")
    return ZoneMap(zone, component, package, base, None)


def component_of(zone: str) -> tuple[str, str] | None:
    """(Kepler 0.7 component, ``package`` label), or None."""
    mapped = map_zone(zone)
    return None if mapped is None else (mapped.component, mapped.package)


# --- Kepler 0.7 ------------------------------------------------------------------------------

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

ContainerKey = tuple[str, str, str, str]  # container_id, pod_name, container_name, namespace
Parts = dict[str, list[float]]  # component -> [dynamic J, idle J]
NodeParts = dict[tuple[str, str], list[float]]  # (component, package) -> [dynamic, idle]


def source_of(component: str) -> str:
    return _SOURCES.get(component, COMPONENT_SOURCE)


def container_key(workload: Mapping[str, Any]) -> ContainerKey:
    """Kepler 0.7's identity of a workload; every non-container workload of a node shares the
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


def platform_zones(zones: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The zones of a node window that stand for the whole host: every platform zone, else
    psys."""
    names = [zone["zone"] for zone in zones]
    platforms = [n for n in names if (m := map_zone(n)) and m.cpu_zone == "platform"]
    return frozenset(platforms or [n for n in names if n == "psys"])


def container_parts(zones: list[Mapping[str, Any]], chosen: frozenset[str] | None = None) -> Parts:
    """One workload's window in Kepler 0.7 components, summed over sockets; ``chosen`` is
    the node window's ``platform_zones`` (computed from ``zones`` when not given)."""
    parts: Parts = {}
    if chosen is None:
        chosen = platform_zones(zones)
    for zone in zones:
        mapped = map_zone(zone["zone"])
        if mapped is None or (mapped.component == "platform" and zone["zone"] not in chosen):
            continue
        acc = parts.setdefault(mapped.component, [0.0, 0.0])
        acc[0] += zone["dynamic_j"]
        acc[1] += zone["idle_j"]
    platform = parts.get("platform")
    if platform is not None:
        package = parts.get("package", [0.0, 0.0])
        dram = parts.get("dram", [0.0, 0.0])
        parts["other"] = [max(0.0, platform[m] - package[m] - dram[m]) for m in (0, 1)]
    return parts


def node_parts(zones: list[Mapping[str, Any]]) -> NodeParts:
    """One node window in Kepler 0.7 components, one entry per socket (``package`` label);
    ``other`` is filed under the (first) platform zone's name."""
    parts: NodeParts = {}
    chosen = platform_zones(zones)
    sums = {"package": [0.0, 0.0], "dram": [0.0, 0.0], "platform": [0.0, 0.0]}
    for zone in zones:
        mapped = map_zone(zone["zone"])
        if mapped is None or (mapped.component == "platform" and zone["zone"] not in chosen):
            continue
        energy = [zone["dynamic_j"], zone["idle_j"]]
        acc = parts.setdefault((mapped.component, mapped.package), [0.0, 0.0])
        acc[0] += energy[0]
        acc[1] += energy[1]
        if mapped.component in sums:
            total = sums[mapped.component]
            total[0] += energy[0]
            total[1] += energy[1]
    if chosen:
        platform, package, dram = sums["platform"], sums["package"], sums["dram"]
        parts[("other", min(chosen))] = [
            max(0.0, platform[m] - package[m] - dram[m]) for m in (0, 1)
        ]
    return parts


def container_total(parts: Mapping[tuple[str, str], float], mode: str) -> float:
    """kepler_container_joules_total: package + dram + other + gpu (Kepler's sum)."""
    return sum(parts.get((component, mode), 0.0) for component in TOTAL_COMPONENTS)


# --- Kepler >= 0.10 --------------------------------------------------------------------------

V07 = "0.7"
V10 = "0.10"
STATE_RUNNING = "running"  # Kepler's state label; ours never says terminated (see above)
GPU_VENDOR = "nvidia"
NODE_CPU_LABELS: tuple[str, ...] = ("zone", "path", "node_name", "cluster")
NODE_GPU_LABELS: tuple[str, ...] = ("gpu", "gpu_uuid", "gpu_name", "vendor", "node_name", "cluster")
CONTAINER_CPU_LABELS: tuple[str, ...] = (
    "container_id",
    "container_name",
    "runtime",
    "state",
    "zone",
    "pod_id",
    "node_name",
    "cluster",
)
CONTAINER_GPU_LABELS: tuple[str, ...] = tuple(x for x in CONTAINER_CPU_LABELS if x != "zone")
POD_CPU_LABELS: tuple[str, ...] = (
    "pod_id",
    "pod_name",
    "pod_namespace",
    "state",
    "zone",
    "node_name",
    "cluster",
)
POD_GPU_LABELS: tuple[str, ...] = tuple(x for x in POD_CPU_LABELS if x != "zone")

# Kepler >= 0.11's kepler_platform_watts (internal/exporter/prometheus/collector/
# platform_collector.go): the BMC's power over Redfish, one series per PowerSupply or
# PowerControl reading. Ours is the agent's Redfish reader (PowerReading ``source`` part
# ``redfish``, zone ``platform``): one whole-server reading per node. NodeEnergy carries no BMC,
# chassis or reading ids, so those labels are empty (``source`` is the constant ``redfish``).
BMC_SOURCE = "redfish"
BMC_ZONE = "platform"
PLATFORM_LABELS: tuple[str, ...] = (
    "node_name",
    "bmc_id",
    "chassis_id",
    "source_id",
    "source_name",
    "source_type",
    "cluster",
)

# Kepler's ContainerRuntime values (internal/resource/types.go), told apart by cgroup path.
_RUNTIMES = (
    ("cri-containerd-", "containerd"),
    ("crio-", "crio"),
    ("docker-", "docker"),
    ("/docker/", "docker"),
    ("libpod-", "podman"),
)


@functools.lru_cache(maxsize=65536)  # the same containers come back every window
def runtime_of(path: str) -> str:
    """Kepler's ``runtime`` of a container workload, from its cgroup path (workload_id)."""
    for marker, runtime in _RUNTIMES:
        if marker in path:
            return runtime
    return "kubernetes" if "kubepods" in path else "unknown"


def bmc_joules(record: Mapping[str, Any]) -> float | None:
    """The BMC's platform energy in a window: a measured window whose power readings came (in
    part) from Redfish and that has the platform zone; None otherwise (another source, an
    estimated platform zone, a BMC gap), so no zero is ever exported for it."""
    if record["source"] != "measured" or BMC_SOURCE not in record["source_detail"].split("+"):
        return None
    for zone in record["zones"]:
        if zone["zone"] == BMC_ZONE:
            joules: float = zone["dynamic_j"] + zone["idle_j"]
            return joules
    return None


def node_cpu_paths(zones: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Our zone -> (Kepler zone, path) for a node's window: several zones of one Kepler zone
    (sockets) share the ``aggregated-<zone>`` path, as in Kepler; GPUs are left out."""
    groups: dict[str, list[str]] = {}
    for zone in zones:
        mapped = map_zone(zone["zone"])
        if mapped is not None and mapped.cpu_zone is not None:
            groups.setdefault(mapped.cpu_zone, []).append(zone["zone"])
    paths: dict[str, tuple[str, str]] = {}
    for cpu_zone, members in groups.items():
        path = members[0] if len(members) == 1 else f"aggregated-{cpu_zone}"
        for member in members:
            paths[member] = (cpu_zone, path)
    return paths


# --- the families ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One exported family: ``name`` without ``_total``; ``source`` a constant label;
    ``key`` names its series in a snapshot (two generations share some names)."""

    name: str
    counter: bool
    documentation: str
    labels: tuple[str, ...]
    source: str | None = None
    generation: str = V07

    @property
    def key(self) -> str:
        return self.name if self.generation == V07 else f"{self.name}@{self.generation}"


def _v07_families() -> list[Family]:
    families = [
        Family(
            "kepler_container_joules",
            True,
            "Kepler 0.7 compatible: package + dram + other + gpu energy of a container.",
            CONTAINER_LABELS,
        )
    ]
    families += [
        Family(
            f"kepler_container_{c}_joules",
            True,
            f"Kepler 0.7 compatible: {c} energy of a container, summed over sockets.",
            CONTAINER_LABELS,
            source_of(c),
        )
        for c in CONTAINER_COMPONENTS
    ]
    families += [
        Family(
            f"kepler_node_{c}_joules",
            True,
            f"Kepler 0.7 compatible: {c} energy of a node, per socket (package).",
            NODE_LABELS,
            source_of(c),
        )
        for c in NODE_COMPONENTS
    ]
    return families


def _v10_families() -> list[Family]:
    """Names, help texts and labels as Kepler's power collector builds them."""
    families: list[Family] = []
    for level, device, labels in (
        ("node", "cpu", NODE_CPU_LABELS),
        ("node", "gpu", NODE_GPU_LABELS),
    ):
        for state in ("", "active_", "idle_"):
            what = f"{device} in {state[:-1]} state" if state else device
            families.append(
                Family(
                    f"kepler_{level}_{device}_{state}joules",
                    True,
                    f"Energy consumption of {what} at {level} level in joules",
                    labels,
                    generation=V10,
                )
            )
            families.append(
                Family(
                    f"kepler_{level}_{device}_{state}watts",
                    False,
                    f"Power consumption of {what} at {level} level in watts",
                    labels,
                    generation=V10,
                )
            )
    for level, device, labels in (
        ("container", "cpu", CONTAINER_CPU_LABELS),
        ("container", "gpu", CONTAINER_GPU_LABELS),
        ("pod", "cpu", POD_CPU_LABELS),
        ("pod", "gpu", POD_GPU_LABELS),
    ):
        families.append(
            Family(
                f"kepler_{level}_{device}_joules",
                True,
                f"Energy consumption of {device} at {level} level in joules",
                labels,
                generation=V10,
            )
        )
        families.append(
            Family(
                f"kepler_{level}_{device}_watts",
                False,
                f"Power consumption of {device} at {level} level in watts",
                labels,
                generation=V10,
            )
        )
    families.append(
        Family(
            "kepler_platform_watts",
            False,
            "Current platform power in watts from BMC (PowerSubsystem or deprecated Power API)",
            PLATFORM_LABELS,
            BMC_SOURCE,
            V10,
        )
    )
    return families


FAMILIES_V07: tuple[Family, ...] = tuple(_v07_families())
FAMILIES_V10: tuple[Family, ...] = tuple(_v10_families())
FAMILIES: tuple[Family, ...] = FAMILIES_V07 + FAMILIES_V10
GENERATIONS: tuple[str, ...] = ("both", V07, V10)


def families(generation: str) -> tuple[Family, ...]:
    """The families served for ``--kepler-generation``. Both generations name GPU energy
    ``kepler_{node,container}_gpu_joules_total``, with other labels: one exposition can hold
    only one of each, so ``both`` serves those two as 0.7 does (the >= 0.10 dashboard does
    not query them) and every other family of both."""
    if generation == V07:
        return FAMILIES_V07
    if generation == V10:
        return FAMILIES_V10
    if generation != "both":
        raise ValueError(f"Kepler generation must be one of {GENERATIONS}, got {generation!r}")
    taken = {family.name for family in FAMILIES_V07}
    return FAMILIES_V07 + tuple(f for f in FAMILIES_V10 if f.name not in taken)
