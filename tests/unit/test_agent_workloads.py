"""cgroup path → container id and pod uid, for each runtime's naming."""

from __future__ import annotations

import pytest

from joulestream.agents.workloads import Identity, resolve

CID = "3f2a" * 16  # 64 hex
UID = "0c1e6a5b-7f3d-4c2a-9b8e-1d2f3a4b5c6d"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/system.slice/docker-{CID}.scope", Identity(f"/system.slice/docker-{CID}.scope", CID)),
        (f"/docker/{CID}", Identity(f"/docker/{CID}", CID)),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
            f"cri-containerd-{CID}.scope",
            Identity(
                f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
                f"cri-containerd-{CID}.scope",
                CID,
                UID,
            ),
        ),
        (
            f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope",  # guaranteed QoS
            Identity(f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope", CID, UID),
        ),
        (
            f"/kubepods/besteffort/pod{UID}/{CID}",
            Identity(f"/kubepods/besteffort/pod{UID}/{CID}", CID, UID),
        ),
        (
            f"/kubepods/pod{UID}/crio-{CID}",
            Identity(f"/kubepods/pod{UID}/crio-{CID}", CID, UID),
        ),
        (f"/machine.slice/libpod-{CID}.scope", Identity(f"/machine.slice/libpod-{CID}.scope", CID)),
    ],
)
def test_container_patterns(path: str, expected: Identity) -> None:
    assert resolve(path) == expected


def test_nested_cgroup_belongs_to_its_container() -> None:
    assert resolve(f"/docker/{CID}/init.scope") == Identity(f"/docker/{CID}", CID)


def test_pod_slice_without_container_keeps_pod_uid() -> None:
    path = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
    assert resolve(path) == Identity(path, None, UID)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/system.slice/sshd.service",
        "/user.slice/user-0.slice/session-3.scope",
        f"/system.slice/crio-conmon-{CID}.scope",  # CRI-O's monitor, not the container
        f"/system.slice/docker-{CID[:12]}.scope",  # short ids are not container cgroups
    ],
)
def test_other_cgroups_are_system(path: str) -> None:
    assert resolve(path) == Identity(path)


# Real-world layouts per runtime and cgroup driver. Relative paths are the same in a cgroup v1
# controller hierarchy (e.g. /sys/fs/cgroup/cpu,cpuacct/<path>) and in v2 (/sys/fs/cgroup/<path>).
SYSTEMD = "/kubepods.slice"
REAL_WORLD = [
    # systemd driver (v1 and v2), each QoS class
    (f"{SYSTEMD}/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, UID),
    (f"{SYSTEMD}/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-{CID}.scope", CID, UID),
    (f"{SYSTEMD}/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"docker-{CID}.scope", CID, UID),  # cri-dockerd
    (f"{SYSTEMD}/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope/init.scope", CID, UID),  # nested cgroup in a container
    # cgroupfs driver (v1 and v2), each QoS class
    (f"/kubepods/pod{UID}/{CID}", CID, UID),  # containerd, guaranteed
    (f"/kubepods/burstable/pod{UID}/{CID}", CID, UID),  # containerd or docker
    (f"/kubepods/besteffort/pod{UID}/crio-{CID}", CID, UID),  # CRI-O
    (f"/kubepods/burstable/pod{UID}/{CID}/sub", CID, UID),
    # kubelet under another --cgroup-root (kind: kubelet.slice, systemd driver)
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope", CID, UID),
    # k3s with cgroupfs
    (f"/kubepods/besteffort/pod{UID}/{CID}", CID, UID),
    # containers outside Kubernetes
    (f"/system.slice/docker-{CID}.scope", CID, None),  # docker, systemd
    (f"/docker/{CID}", CID, None),  # docker, cgroupfs
    (f"/default/{CID}", CID, None),  # containerd (nerdctl/ctr), cgroupfs, namespace "default"
    (f"/machine.slice/libpod-{CID}.scope", CID, None),  # podman, rootful
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", CID, None),
    # pod-level cgroups without a container: the pod uid only
    (f"{SYSTEMD}/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", None, UID),
    (f"/kubepods/besteffort/pod{UID}", None, UID),
    # QoS slices and runtime helpers: system
    (f"{SYSTEMD}/kubepods-besteffort.slice", None, None),
    ("/kubepods/burstable", None, None),
    (f"/system.slice/crio-conmon-{CID}.scope", None, None),
    ("/system.slice/containerd.service", None, None),
    ("/system.slice/kubelet.service", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("path", "container_id", "pod_uid"), REAL_WORLD)
def test_real_world_paths(path: str, container_id: str | None, pod_uid: str | None) -> None:
    identity = resolve(path)
    assert (identity.container_id, identity.pod_uid) == (container_id, pod_uid)
    if container_id is not None:  # the container's own cgroup, without nested children
        assert identity.cgroup_path.endswith(CID) or identity.cgroup_path.endswith(".scope")
        assert container_id in identity.cgroup_path.rsplit("/", 1)[-1]
