"""``--level container|pod|namespace|node``: how fine the workload series are, like Kepler's
metricsLevel (docs/architecture.md, 'Kepler compatibility').

A window's workloads are merged to the level before they are folded, so every family that
reads workloads (ours and Kepler's) sees the same coarser workloads: ``pod`` merges the
containers of a pod (workload_id = the pod uid, else namespace/pod; no container labels),
``namespace`` the pods of a namespace (workload_id = the namespace; no pod labels), ``node``
keeps no workload series at all (the node families still count every joule). Workloads
outside pods (system, kernel) stay as they are at pod and namespace level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LEVELS: tuple[str, ...] = ("container", "pod", "namespace", "node")
DEFAULT_LEVEL = "container"

_SUMMED = ("dynamic_j", "idle_j", "lower_j", "upper_j")


def _merged(group: list[Mapping[str, Any]], identity: dict[str, Any]) -> dict[str, Any]:
    zones: dict[str, dict[str, Any]] = {}
    for workload in group:
        for zone in workload["zones"]:
            acc = zones.get(zone["zone"])
            if acc is None:
                zones[zone["zone"]] = dict(zone)
            else:
                for name in _SUMMED:
                    acc[name] += zone[name]
    return {
        **identity,
        "co2e_g": sum(w["co2e_g"] for w in group),
        "zones": list(zones.values()),
    }


def at_level(workloads: Sequence[Mapping[str, Any]], level: str) -> Sequence[Mapping[str, Any]]:
    """The window's workloads merged to ``level`` (unchanged at container level)."""
    if level == "container":
        return workloads
    if level == "node":
        return []
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    identities: dict[tuple[str, ...], dict[str, Any]] = {}
    out: list[Mapping[str, Any]] = []
    for workload in workloads:
        if workload["kind"] != "container":
            out.append(workload)
            continue
        namespace = workload.get("namespace") or ""
        if level == "pod":
            pod = workload.get("pod") or ""
            uid = workload.get("pod_uid")
            key: tuple[str, ...] = (namespace, pod, uid or "")
            ident = {"workload_id": uid or f"{namespace}/{pod}", "pod_uid": uid, "pod": pod}
        else:
            key = (namespace,)
            ident = {"workload_id": namespace, "pod_uid": None, "pod": None}
        if key not in groups:
            groups[key] = []
            identities[key] = {"kind": "container", "namespace": namespace,
                               "container_id": None, "container": None, **ident}  # fmt: skip
        groups[key].append(workload)
    out.extend(_merged(group, identities[key]) for key, group in groups.items())
    return out
