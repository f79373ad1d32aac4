"""Fake sysfs trees the agent tests (unit and integration) run the agent against: no RAPL
and no writable cgroup hierarchy on CI machines."""

from __future__ import annotations

from pathlib import Path


def fake_cgroup(root: Path) -> Path:
    """A cgroup v2 root with only CPU accounting and no processes."""
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "cpu.stat").write_text("usage_usec 1000\n")
    (root / "cgroup.procs").write_text("")
    return root


def fake_powercap(root: Path) -> Path:
    """One RAPL package zone whose counter stands still."""
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root
