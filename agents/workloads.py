"""Workload resolution: which container and pod a cgroup path belongs to.

Shared by every collector, since eBPF reports cgroup ids/paths too. Names (namespace, pod,
container) come from the Kubernetes API (agents/kubernetes.py), not from paths.

Patterns (systemd and cgroupfs drivers, v1 and v2):
``docker-<64hex>.scope``, ``cri-containerd-<id>.scope``, ``crio-<id>.scope``,
``libpod-<id>.scope``, ``/docker/<id>``, ``/kubepods/<qos>/pod<uid>/<id>``, and pod slices
``kubepods-<qos>-pod<uid_with_underscores>.slice`` (any prefix, e.g. kind's ``kubelet-``).
``crio-conmon-<id>.scope`` is CRI-O's monitor process, not the container, and stays a system
cgroup. Paths are relative to a hierarchy root, so v1 (per controller) and v2 read the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_CONTAINER_SEGMENT = re.compile(
    r"^(?:(?:docker|cri-containerd|crio|libpod)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# systemd driver: kubepods[-<qos>]-pod<uid_>.slice, also under a kubelet --cgroup-root such as
# kind's kubelet-kubepods-besteffort-pod<uid_>.slice; cgroupfs driver: pod<uid>.
_POD_SEGMENT = re.compile(rf"^(?:[a-z]+-)*pod(?P<uid>{_UID})(?:\.slice)?$")


@dataclass(frozen=True)
class Identity:
    """``cgroup_path`` is the path of the container's own cgroup (nested cgroups inside a
    container, e.g. a container's ``init.scope``, belong to that container)."""

    cgroup_path: str
    container_id: str | None = None
    pod_uid: str | None = None


@lru_cache(maxsize=8192)  # the same paths come back every interval
def resolve(cgroup_path: str) -> Identity:
    """Identity of a cgroup path relative to the hierarchy root ("/" for the root)."""
    segments = [s for s in cgroup_path.split("/") if s]
    pod_uid: str | None = None
    for depth, segment in enumerate(segments):
        pod = _POD_SEGMENT.match(segment)
        if pod:
            pod_uid = pod["uid"].replace("_", "-")
            continue
        container = _CONTAINER_SEGMENT.match(segment)
        if container:
            return Identity("/" + "/".join(segments[: depth + 1]), container["id"], pod_uid)
    return Identity("/" + "/".join(segments), None, pod_uid)
