"""One Kepler mapping for every zone name the agent's power readers and the models produce:
a simulated fleet of measured (RAPL, hwmon) and estimated (Kepler-model and default-model)
nodes, folded by the sink; on /metrics the Kepler 0.7 and >= 0.10 families carry, per node,
exactly the energy of joulestream's own families over the same zones."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from builders import node_energy, workload_energy, zone_energy
from test_sink_prometheus_collector import exposition, samples

from joulestream.agents.power import hwmon, rapl
from joulestream.models import kepler as kepler_models
from joulestream.models.default import default_model_record
from joulestream.schemas.codec import Codec
from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.state import EnergyState

S = 1_000_000_000
GPU_ZONES = ["gpu-0", "gpu-1"]  # the NVML reader's zone names


def rapl_zone_names(root: Path) -> list[str]:
    """A two-socket server with core, uncore, DRAM and psys, through the real discovery."""
    layout = {
        "intel-rapl:0": "package-0",
        "intel-rapl:0:0": "core",
        "intel-rapl:0:1": "uncore",
        "intel-rapl:0:2": "dram",
        "intel-rapl:1": "package-1",
        "intel-rapl:1:0": "core",
        "intel-rapl:1:1": "dram",
        "intel-rapl:2": "psys",
    }
    for dirname, name in layout.items():
        (root / dirname).mkdir(parents=True)
        (root / dirname / "name").write_text(name + "\n")
        (root / dirname / "energy_uj").write_text("1000\n")
        (root / dirname / "max_energy_range_uj").write_text("262143328850\n")
    zones, _notes = rapl.discover(root)
    return [z.name for z in zones]


def hwmon_zone_names(root: Path) -> list[str]:
    """amd_energy per socket, per-core sensors (skipped), an ACPI meter and a PSU."""
    devices = {
        "hwmon0": ("amd_energy", {"energy1_label": "Ecore000", "energy1_input": "1",
                                  "energy2_label": "Esocket0", "energy2_input": "1"}),
        "hwmon1": ("power_meter", {"power1_input": "200000000"}),
        "hwmon2": ("psu", {"power1_label": "pin", "power1_input": "150000000"}),
    }  # fmt: skip
    for device, (name, files) in devices.items():
        (root / device).mkdir(parents=True)
        (root / device / "name").write_text(name + "\n")
        for file, value in files.items():
            (root / device / file).write_text(value + "\n")
    return [sensor.zone for sensor in hwmon.discover(root)]


def estimated_zone_names() -> list[str]:
    return [*kepler_models.COMPONENTS, default_model_record()["selector"]["zone"]]


def test_every_zone_name_produced_anywhere_has_a_kepler_counterpart(tmp_path: Path) -> None:
    names = [
        *rapl_zone_names(tmp_path / "powercap"),
        *hwmon_zone_names(tmp_path / "hwmon"),
        *estimated_zone_names(),
        *GPU_ZONES,
    ]
    assert set(names) >= {
        "package-0",
        "core-1",
        "uncore-0",
        "dram-1",
        "psys",
        "platform",
        "platform-1",
        "package",
        "core",
        "uncore",
        "dram",
    }
    for name in names:
        mapped = kepler.map_zone(name)
        assert mapped is not None, name
        assert (mapped.cpu_zone is None) == name.startswith("gpu"), name
    assert kepler.map_zone("fan-0") is None and kepler.map_zone("psys-1") is None


# --- a simulated fleet -------------------------------------------------------------------------

WORKLOADS = [  # kind, workload_id (cgroup path), container_id, pod_uid, namespace, pod, container
    ("container", "/kubepods.slice/cri-containerd-aa.scope", "aa", "uid-web", "shop", "web", "app"),
    ("container", "/kubepods.slice/cri-containerd-bb.scope", "bb", "uid-web", "shop", "web", "tls"),
    ("container", "/kubepods.slice/crio-cc.scope", "cc", "uid-db", "data", "db", "postgres"),
    ("container", "/system.slice/docker-dd.scope", "dd", None, None, None, None),
    ("system", "/system.slice/sshd.service", None, None, None, None, None),
    ("kernel", "/", None, None, None, None, None),
]  # fmt: skip


def fleet(tmp_path: Path) -> dict[str, list[str]]:
    """Node -> zone names: measured RAPL and hwmon nodes, estimated nodes of both models."""
    return {
        "rapl-2s": [*rapl_zone_names(tmp_path / "powercap"), *GPU_ZONES],
        "hwmon": hwmon_zone_names(tmp_path / "hwmon"),
        "est-kepler": list(kepler_models.COMPONENTS),
        "est-default": [default_model_record()["selector"]["zone"]],
    }


def window(node: str, zones: list[str], seq: int, rng: random.Random) -> dict[str, Any]:
    """A conserving NodeEnergy: dynamic energy split by random weights, idle either kept
    (policy none) or split too (proportional); some energy left unattributed."""
    proportional = seq % 2 == 1
    zone_records, shares = [], defaultdict(list)
    for name in zones:
        idle, dynamic = rng.uniform(1, 20), rng.uniform(0, 40)
        unattributed = dynamic * 0.05
        weights = [rng.random() for _ in WORKLOADS]
        for index, weight in enumerate(weights):
            part = weight / sum(weights)
            shares[index].append(
                {
                    "zone": name,
                    "dynamic_j": (dynamic - unattributed) * part,
                    "idle_j": idle * part if proportional else 0.0,
                    "lower_j": 0.0,
                    "upper_j": dynamic + idle,
                }
            )
        zone_records.append(
            zone_energy(
                name,
                total_j=idle + dynamic,
                idle_j=idle,
                dynamic_j=dynamic,
                idle_unassigned_j=0.0 if proportional else idle,
                unattributed_j=unattributed,
            )
        )
    estimated = node.startswith("est")
    record = node_energy(
        node=node,
        seq=seq,
        start_ns=(1000 + 2 * seq) * S,
        source="estimated" if estimated else "measured",
        zones=zone_records,
        workloads=[
            workload_energy(
                workload_id,
                kind=kind,
                zones=shares[index],
                container_id=container_id,
                pod_uid=pod_uid,
                namespace=namespace,
                pod=pod,
                container=container,
            )
            for index, (
                kind,
                workload_id,
                container_id,
                pod_uid,
                namespace,
                pod,
                container,
            ) in enumerate(WORKLOADS)
        ],
        agent_instance=f"agent-{node}",
        source_detail="model" if estimated else "rapl-powercap",
        model_id="m" if estimated else None,
        idle_policy="proportional" if proportional else "none",
    )
    Codec().encode("NodeEnergy", record)
    return record


Samples = list[tuple[str, dict[str, str], float]]


def scraped(state: EnergyState) -> Samples:
    _, values = samples(exposition(state))
    return [(name, dict(labels), value) for (name, labels), value in values.items()]


def total(samples: Samples, name: str, **match: Any) -> float:
    """Sum of a family's samples whose labels match (a callable tests a label's value)."""
    found = 0.0
    for sample_name, labels, value in samples:
        if sample_name != name:
            continue
        if all(
            m(labels.get(k, "")) if callable(m) else labels.get(k) == m for k, m in match.items()
        ):
            found += value
    return found


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture
def folded(tmp_path: Path) -> tuple[Samples, dict[str, list[str]], dict[str, dict[str, Any]]]:
    rng = random.Random(7)
    nodes = fleet(tmp_path)
    state = EnergyState(kepler_generation="both")
    last: dict[str, dict[str, Any]] = {}
    for seq in range(6):
        for node, zones in nodes.items():
            last[node] = window(node, zones, seq, rng)
            state.apply(last[node])
    return scraped(state), nodes, last


def zones_of(names: list[str], component: str) -> set[str]:
    """Our zones that a Kepler 0.7 component counts (platform: platform zones, else psys)."""
    hosts = {n for n in names if n.startswith("platform")} or {n for n in names if n == "psys"}
    return {
        n
        for n in names
        if (m := kepler.map_zone(n))
        and m.component == component
        and (component != "platform" or n in hosts)
    }


def test_kepler_0_7_families_equal_ours_per_node_and_component(folded: Any) -> None:
    samples, nodes, _ = folded
    for node, names in nodes.items():
        for component in ("package", "core", "uncore", "dram", "gpu", "platform"):
            zones = zones_of(names, component)
            for mode in kepler.MODES:
                ours = total(
                    samples,
                    "joulestream_workload_joules_total",
                    node=node,
                    mode=mode,
                    zone=zones.__contains__,
                )
                theirs = total(
                    samples, f"kepler_container_{component}_joules_total", node=node, mode=mode
                )
                assert same(ours, theirs), (node, component, mode, ours, theirs)
                ours_node = total(
                    samples,
                    "joulestream_node_joules_total",
                    node=node,
                    mode=mode,
                    zone=zones.__contains__,
                )
                theirs_node = total(
                    samples, f"kepler_node_{component}_joules_total", instance=node, mode=mode
                )
                assert same(ours_node, theirs_node), (node, component, mode)
                if zones:
                    assert ours > 0 and ours_node > 0, (node, component)  # never a silent zero
        # kepler_container_joules_total = package + dram + other + gpu
        for mode in kepler.MODES:
            parts = sum(
                total(samples, f"kepler_container_{c}_joules_total", node=node, mode=mode)
                for c in kepler.TOTAL_COMPONENTS
            )
            assert same(
                parts, total(samples, "kepler_container_joules_total", node=node, mode=mode)
            )


def test_kepler_0_10_families_equal_ours_per_node_and_zone(folded: Any) -> None:
    samples, nodes, last = folded
    for node, names in nodes.items():
        by_zone: dict[str, set[str]] = defaultdict(set)
        for name in names:
            mapped = kepler.map_zone(name)
            assert mapped is not None
            if mapped.cpu_zone is not None:
                by_zone[mapped.cpu_zone].add(name)
        exported_zones = {
            labels["zone"]
            for name, labels, _ in samples
            if name == "kepler_node_cpu_joules_total" and labels["node_name"] == node
        }
        assert exported_zones == set(by_zone), node
        for cpu_zone, zones in by_zone.items():
            ours = {
                mode: total(
                    samples,
                    "joulestream_node_joules_total",
                    node=node,
                    mode=mode,
                    zone=zones.__contains__,
                )
                for mode in kepler.MODES
            }
            node_labels = {"node_name": node, "zone": cpu_zone}
            active = total(samples, "kepler_node_cpu_active_joules_total", **node_labels)
            idle = total(samples, "kepler_node_cpu_idle_joules_total", **node_labels)
            assert same(active, ours["dynamic"]) and same(idle, ours["idle"]), (node, cpu_zone)
            assert same(
                total(samples, "kepler_node_cpu_joules_total", **node_labels),
                ours["dynamic"] + ours["idle"],
            )
            paths = {
                labels["path"]
                for name, labels, _ in samples
                if name == "kepler_node_cpu_joules_total" and labels.items() >= node_labels.items()
            }
            assert paths == ({next(iter(zones))} if len(zones) == 1 else {f"aggregated-{cpu_zone}"})
            # watts: the node's latest window over its length
            latest = [z for z in last[node]["zones"] if z["zone"] in zones]
            assert same(
                total(samples, "kepler_node_cpu_watts", **node_labels),
                sum(z["total_j"] for z in latest) / 2,
            )
            assert same(
                total(samples, "kepler_node_cpu_idle_watts", **node_labels),
                sum(z["idle_j"] for z in latest) / 2,
            )
            # workloads: containers and pods
            containers = total(
                samples,
                "joulestream_workload_joules_total",
                node=node,
                kind="container",
                zone=zones.__contains__,
            )
            in_pods = total(
                samples,
                "joulestream_workload_joules_total",
                node=node,
                kind="container",
                pod=bool,
                zone=zones.__contains__,
            )
            assert containers > in_pods > 0
            assert same(
                total(samples, "kepler_container_cpu_joules_total", node_name=node, zone=cpu_zone),
                containers,
            )
            assert same(
                total(samples, "kepler_pod_cpu_joules_total", node_name=node, zone=cpu_zone),
                in_pods,
            )
            latest_pods = sum(
                share["dynamic_j"] + share["idle_j"]
                for workload in last[node]["workloads"]
                if workload["pod_uid"]
                for share in workload["zones"]
                if share["zone"] in zones
            )
            assert same(
                total(samples, "kepler_pod_cpu_watts", node_name=node, zone=cpu_zone),
                latest_pods / 2,
            )


def test_container_and_pod_labels_are_keplers(folded: Any) -> None:
    samples, _, _ = folded
    runtimes = {
        labels["container_id"]: labels["runtime"]
        for name, labels, _ in samples
        if name == "kepler_container_cpu_joules_total"
    }
    assert runtimes == {"aa": "containerd", "bb": "containerd", "cc": "crio", "dd": "docker"}
    pods = {
        (labels["pod_id"], labels["pod_name"], labels["pod_namespace"], labels["state"])
        for name, labels, _ in samples
        if name == "kepler_pod_cpu_joules_total"
    }
    assert pods == {("uid-web", "web", "shop", "running"), ("uid-db", "db", "data", "running")}


def test_gpu_families_of_kepler_0_10(tmp_path: Path) -> None:
    """With --kepler-generation 0.10, GPU energy is in Kepler >= 0.10's gpu families."""
    rng = random.Random(3)
    state = EnergyState(kepler_generation=kepler.V10)
    zones = fleet(tmp_path)["rapl-2s"]
    for seq in range(3):
        state.apply(window("rapl-2s", zones, seq, rng))
    samples = scraped(state)
    assert not any(name.startswith("kepler_container_package") for name, _, _ in samples)
    for gpu in GPU_ZONES:
        index = gpu.split("-")[1]
        ours = total(samples, "joulestream_node_joules_total", zone=gpu)
        assert ours > 0
        assert same(total(samples, "kepler_node_gpu_joules_total", gpu=index), ours)
    gpu_zone = str.startswith
    assert same(
        total(samples, "kepler_container_gpu_joules_total"),
        total(
            samples,
            "joulestream_workload_joules_total",
            kind="container",
            zone=lambda z: gpu_zone(z, "gpu"),
        ),
    )
    assert same(
        total(samples, "kepler_pod_gpu_joules_total"),
        total(
            samples,
            "joulestream_workload_joules_total",
            kind="container",
            pod=bool,
            zone=lambda z: gpu_zone(z, "gpu"),
        ),
    )
