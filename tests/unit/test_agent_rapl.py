"""RAPL powercap reader against fake sysfs trees."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from joulestream.agents.power.rapl import RaplReader, discover, node_energy_zones

MAX = 262_143_328_850


def zone(root: Path, dirname: str, name: str, energy: int, max_range: int = MAX) -> Path:
    path = root / dirname
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def set_energy(root: Path, dirname: str, energy: int) -> None:
    (root / dirname / "energy_uj").write_text(f"{energy}\n")


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """Two sockets with core/uncore/dram subzones, listed flat like /sys/class/powercap."""
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type itself is not a zone
    for pkg in (0, 1):
        zone(root, f"intel-rapl:{pkg}", f"package-{pkg}", 1_000)
        zone(root, f"intel-rapl:{pkg}:0", "core", 500)
        zone(root, f"intel-rapl:{pkg}:1", "uncore", 100)
        zone(root, f"intel-rapl:{pkg}:2", "dram", 300)
    return root


def test_zone_names_follow_their_package(server: Path) -> None:
    status = RaplReader(server).detect()
    assert status.available, status.reason
    assert status.zones == (
        "package-0", "core-0", "uncore-0", "dram-0",
        "package-1", "core-1", "uncore-1", "dram-1",
    )  # fmt: skip


def test_counters_start_at_zero_and_accumulate(server: Path) -> None:
    reader = RaplReader(server)
    assert set(reader.read().values()) == {0}
    set_energy(server, "intel-rapl:0", 6_000)
    set_energy(server, "intel-rapl:1:0", 2_500)
    reading = reader.read()
    assert reading["package-0"] == 5_000
    assert reading["core-1"] == 2_000
    assert reading["package-1"] == 0


def test_wraparound_is_unwrapped_with_max_energy_range(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000, max_range=10_000)
    reader = RaplReader(tmp_path)
    reader.read()
    set_energy(tmp_path, "intel-rapl:0", 9_000)
    assert reader.read()["package-0"] == 8_000
    set_energy(tmp_path, "intel-rapl:0", 500)  # wrapped: 9,000 → 10,000 → 500
    assert reader.read()["package-0"] == 8_000 + 1_000 + 500
    set_energy(tmp_path, "intel-rapl:0", 700)
    assert reader.read()["package-0"] == 9_700  # keeps growing past the 10,000 range


def test_node_sum_does_not_double_count_nested_zones(server: Path) -> None:
    reader = RaplReader(server)
    reader.read()
    for dirname, energy in {
        "intel-rapl:0": 11_000, "intel-rapl:0:0": 8_500, "intel-rapl:0:1": 1_100,
        "intel-rapl:0:2": 2_300, "intel-rapl:1": 4_000, "intel-rapl:1:2": 1_300,
    }.items():  # fmt: skip
        set_energy(server, dirname, energy)
    reading = reader.read()
    summed = node_energy_zones(reading)
    assert sorted(summed) == ["dram-0", "dram-1", "package-0", "package-1"]
    assert sum(reading[z] for z in summed) == 10_000 + 2_000 + 3_000 + 1_000


def test_psys_is_the_node_total_when_present(server: Path) -> None:
    zone(server, "intel-rapl:2", "psys", 0)
    assert node_energy_zones(RaplReader(server).read()) == ["psys"]


def test_missing_powercap_is_reported_not_zero(tmp_path: Path) -> None:
    status = RaplReader(tmp_path / "absent").detect()
    assert not status.available
    assert "no powercap" in status.reason and "masked" in status.reason


def test_empty_powercap_is_reported(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl").mkdir()
    status = RaplReader(tmp_path).detect()
    assert not status.available
    assert "no RAPL zones" in status.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_permission_denied_is_reported() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # world-traversable, unlike pytest's tmp_path
        root = Path(tmp)
        root.chmod(0o755)
        zone(root, "intel-rapl:0", "package-0", 1_000)
        (root / "intel-rapl:0" / "energy_uj").chmod(0o400)  # as on Linux >= 5.10
        assert _unprivileged_detect(root) == "denied"


def _unprivileged_detect(root: Path) -> str:
    pid = os.fork()
    if pid == 0:  # child: an unprivileged user, as an agent without root would be
        try:
            os.setuid(65534)
            status = RaplReader(root).detect()
            ok = not status.available and "root-only since Linux 5.10" in status.reason
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, code = os.waitpid(pid, 0)
    return {0: "denied", 1: "not reported", 2: "crashed"}[os.waitstatus_to_exitcode(code)]


def test_nested_layout_and_mmio_duplicate(tmp_path: Path) -> None:
    """/sys/devices/virtual/powercap nests subzones; MMIO repeats the MSR package counter."""
    top = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    zone(top, "intel-rapl:0:0", "core", 0)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    zones, notes = discover(tmp_path)
    assert [z.name for z in zones] == ["package-0", "core-0"]
    assert zones[1].parent == "package-0"
    assert any("intel-rapl-mmio:0" in note for note in notes)


def test_amd_rapl_dirs_are_read(tmp_path: Path) -> None:
    zone(tmp_path, "amd-rapl:0", "package-0", 0)
    zone(tmp_path, "amd-rapl:0:0", "core", 0)
    assert RaplReader(tmp_path).detect().zones == ("package-0", "core-0")
