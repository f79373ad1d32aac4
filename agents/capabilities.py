"""What a node can and cannot measure, as the NodeSample ``capabilities`` list.

Every counter of the schema gets exactly one entry, so a consumer can tell "this node cannot
count cache misses" (null, with a reason) from "this workload had none" (0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from joulestream.agents.kube_endpoint import KubernetesUnavailable, from_kubeconfig
from joulestream.agents.power.types import PowerStatus
from joulestream.schemas.features import FEATURE_NAMES, validate_feature_names

# Counters the agent measures beside its collector: per-process GPU time from NVML
# (agents/collectors/gpu.py gives their capability).
AGENT_COUNTERS = ("gpu_sm_time_ns",)
COLLECTOR_COUNTERS = tuple(name for name in FEATURE_NAMES if name not in AGENT_COUNTERS)


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str = ""

    def to_record(self) -> dict[str, object]:
        return {"name": self.name, "available": self.available, "detail": self.detail}


def counter_capabilities(
    available: Mapping[str, str], unavailable: Mapping[str, str]
) -> list[Capability]:
    """One capability per collector counter (the schema's but ``AGENT_COUNTERS``);
    ``available``/``unavailable`` map names to details.

    Raises if a name is not a schema counter, appears in both maps, or a counter is missing,
    so a collector cannot silently forget to say what it measures.
    """
    validate_feature_names([*available, *unavailable])
    theirs = sorted(name for name in AGENT_COUNTERS if name in available or name in unavailable)
    if theirs:
        raise ValueError(f"{theirs} are the agent's to report, not the collector's")
    missing = [
        name for name in COLLECTOR_COUNTERS if name not in available and name not in unavailable
    ]
    if missing:
        raise ValueError(f"collector does not say whether it measures {missing}")
    return [
        Capability(name, True, available[name])
        if name in available
        else Capability(name, False, unavailable[name])
        for name in COLLECTOR_COUNTERS
    ]


def kubernetes_capability(
    kubeconfig: Sequence[Path] = (), environ: Mapping[str, str] = os.environ
) -> Capability:
    """Whether pod names can come from the Kubernetes API: a usable kubeconfig, or the
    in-cluster service environment present."""
    if kubeconfig:
        try:
            endpoint = from_kubeconfig(kubeconfig)
        except KubernetesUnavailable as exc:
            return Capability("kubernetes_api", False, exc.reason)
        return Capability("kubernetes_api", True, f"API at {endpoint.describe()}")
    host = environ.get("KUBERNETES_SERVICE_HOST")
    if host:
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        return Capability("kubernetes_api", True, f"in-cluster API at {host}:{port}")
    return Capability(
        "kubernetes_api",
        False,
        "KUBERNETES_SERVICE_HOST not set (not running in a pod) and no --kubeconfig or "
        "KUBECONFIG: workloads carry container and pod ids, no pod names or namespaces",
    )


def node_capabilities(
    collector: Iterable[Capability],
    power: Mapping[str, PowerStatus],
    node: Iterable[Capability] = (),
) -> list[dict[str, object]]:
    """The NodeSample list: the collector's own entries, each power source ("rapl", "hwmon")
    with why it is or is not read, then facts about the node (eBPF prerequisites, PMU,
    Kubernetes API)."""
    sources = [Capability(name, status.available, status.reason) for name, status in power.items()]
    return to_records([*collector, *sources, *node])


def to_records(capabilities: Iterable[Capability]) -> list[dict[str, object]]:
    capabilities = list(capabilities)
    names = [c.name for c in capabilities]
    if len(set(names)) != len(names):
        raise ValueError(f"capability names repeat: {sorted(names)}")
    return [c.to_record() for c in capabilities]
