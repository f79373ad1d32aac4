"""cgroup path → container id and pod uid, for each runtime's naming."""

from __future__ import annotations

import pytest

from agents.workloads import Identity, resolve

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
