"""RAPL energy from the powercap sysfs, as 64-bit cumulative counters per zone.

Zones: ``intel-rapl:N`` (name ``package-N``, ``psys``, ``dram``) and subzones
``intel-rapl:N:M`` (``core``, ``uncore``, ``dram``) → ``package-0``, ``core-0``, ``uncore-0``,
``dram-0``, ``psys``. ``amd-rapl`` and ``intel-rapl-mmio`` directories are read too; a zone
name already taken by an earlier control type (MMIO duplicates the MSR package counter) is
skipped. ``energy_uj`` wraps at ``max_energy_range_uj`` within minutes at high power: every
decrease adds the range, so the counters here only ever grow, starting at 0 when the reader
starts. Nested zones are reported as they are; only ``node_energy_zones`` sums, without
double counting (package ⊇ core + uncore).

Unreadable powercap is a status with a reason, never zero power: ``energy_uj`` is root-only
since Linux 5.10 (CVE-2020-8694), and container runtimes mask /sys/devices/virtual/powercap
(Kubernetes ≥ 1.31).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from joulestream.agents.power.types import PowerStatus, PowerUnavailable

SOURCE = "rapl-powercap"
DEFAULT_ROOT = Path("/sys/class/powercap")
_CONTROL_TYPES = ("intel-rapl", "amd-rapl", "intel-rapl-mmio")  # priority on name clashes
_ZONE_DIR = re.compile(
    r"^(?P<type>intel-rapl|amd-rapl|intel-rapl-mmio):(?P<zone>\d+)(?::(?P<sub>\d+))?$"
)
_INDEXED_NAME = re.compile(r"^[a-z]+-\d+$")


@dataclass(frozen=True)
class RaplZone:
    name: str
    path: Path
    max_energy_range_uj: int
    parent: str | None  # name of the enclosing zone, for subzones


def _zone_dirs(root: Path) -> list[Path]:
    """Zone dirs listed flat (as in /sys/class/powercap) or nested under their parent."""
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if _ZONE_DIR.match(entry.name) and entry.is_dir():
            found.setdefault(entry.name, entry)
            for child in sorted(entry.iterdir()):
                if _ZONE_DIR.match(child.name) and child.is_dir():
                    found.setdefault(child.name, child)

    def order(path: Path) -> tuple[int, int, int]:
        match = _ZONE_DIR.match(path.name)
        assert match is not None
        sub = int(match["sub"]) if match["sub"] is not None else -1
        return (_CONTROL_TYPES.index(match["type"]), int(match["zone"]), sub)

    return sorted(found.values(), key=order)


def _zone_name(raw: str, index: int) -> str:
    """``package-0`` stays; ``core`` of package 0 becomes ``core-0``; ``psys`` stays."""
    if _INDEXED_NAME.match(raw) or raw == "psys":
        return raw
    return f"{raw}-{index}"


def discover(root: Path) -> tuple[list[RaplZone], list[str]]:
    """Zones under ``root`` and notes on what was skipped. Raises PowerUnavailable."""
    if not root.is_dir():
        raise PowerUnavailable(
            f"no powercap at {root}: not mounted, masked by the container runtime "
            "(Kubernetes >= 1.31 masks /sys/devices/virtual/powercap), or no RAPL on this "
            "machine (common in VMs)"
        )
    try:
        dirs = _zone_dirs(root)
    except PermissionError as exc:
        raise PowerUnavailable(f"cannot list {root}: {exc.strerror}") from exc
    zones: list[RaplZone] = []
    notes: list[str] = []
    names: dict[str, str] = {}  # zone dir name -> zone name
    for directory in dirs:
        match = _ZONE_DIR.match(directory.name)
        assert match is not None
        try:
            raw = (directory / "name").read_text().strip()
            max_range = int((directory / "max_energy_range_uj").read_text())
        except (OSError, ValueError) as exc:
            notes.append(f"{directory.name}: unreadable name/max_energy_range_uj ({exc})")
            continue
        parent_dir = f"{match['type']}:{match['zone']}" if match["sub"] is not None else None
        parent = names.get(parent_dir) if parent_dir else None
        index = int(match["zone"])
        if parent is not None and _INDEXED_NAME.match(parent):
            index = int(parent.rsplit("-", 1)[1])
        name = _zone_name(raw, index)
        if any(z.name == name for z in zones):
            notes.append(f"{directory.name}: zone {name} already read from another control type")
            continue
        names[directory.name] = name
        zones.append(RaplZone(name, directory, max_range, parent))
    if not zones:
        raise PowerUnavailable(
            f"no RAPL zones under {root} (" + ("; ".join(notes) or "directory is empty") + ")"
        )
    return zones, notes


def node_energy_zones(zones: Iterable[str]) -> list[str]:
    """Zones whose energies add up to the node's without overlap: ``psys``/``platform``
    alone if present, else packages plus DRAM (DRAM is outside the package even where sysfs
    nests it); core and uncore are inside their package and never added."""
    names = list(zones)
    for whole_node in ("psys", "platform"):
        if whole_node in names:
            return [whole_node]
    return [n for n in names if n.startswith(("package-", "dram-"))]


class RaplReader:
    source = SOURCE
    capability = "rapl"

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root
        self._zones: list[RaplZone] | None = None
        self._last_raw: dict[str, int] = {}
        self._cumulative: dict[str, int] = {}

    def detect(self) -> PowerStatus:
        """Whether energy can be read here, and why not; reads every zone once to find out."""
        try:
            zones, notes = discover(self.root)
            for zone in zones:
                self._read_raw(zone)
        except PowerUnavailable as exc:
            return PowerStatus(False, exc.reason)
        self._zones = zones
        detail = f"{SOURCE} at {self.root}: " + ", ".join(z.name for z in zones)
        if notes:
            detail += " (skipped: " + "; ".join(notes) + ")"
        return PowerStatus(True, detail, tuple(z.name for z in zones))

    def read(self) -> dict[str, int]:
        """Cumulative µJ per zone since the first read. Raises PowerUnavailable."""
        if self._zones is None:
            status = self.detect()
            if not status.available:
                raise PowerUnavailable(status.reason)
        assert self._zones is not None
        raw = {zone.name: self._read_raw(zone) for zone in self._zones}
        for zone in self._zones:
            value, last = raw[zone.name], self._last_raw.get(zone.name)
            if last is None:
                self._cumulative[zone.name] = 0
            else:
                delta = value - last
                if delta < 0:  # wrapped around
                    delta += zone.max_energy_range_uj
                self._cumulative[zone.name] += delta
            self._last_raw[zone.name] = value
        return dict(self._cumulative)

    @staticmethod
    def _read_raw(zone: RaplZone) -> int:
        path = zone.path / "energy_uj"
        try:
            return int(path.read_text())
        except PermissionError as exc:
            raise PowerUnavailable(
                f"{path} is not readable: energy_uj is root-only since Linux 5.10 "
                "(CVE-2020-8694); run the agent as root"
            ) from exc
        except (OSError, ValueError) as exc:
            raise PowerUnavailable(f"cannot read {path}: {exc}") from exc
