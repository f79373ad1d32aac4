"""The choice of power source: RAPL first, then hwmon, or none."""

from __future__ import annotations

from pathlib import Path

from joulestream.agents.power.hwmon import HwmonReader
from joulestream.agents.power.rapl import RaplReader
from joulestream.agents.power.types import PowerChoice, PowerSource, PowerStatus


def select_power_source(
    choice: PowerChoice, powercap_root: Path, hwmon_root: Path
) -> tuple[PowerSource | None, dict[str, PowerStatus]]:
    """The source to read (RAPL before hwmon for ``auto``) and every source's status, so the
    capability report says why each one is or is not used."""
    readers: dict[str, PowerSource] = {
        reader.capability: reader for reader in (RaplReader(powercap_root), HwmonReader(hwmon_root))
    }
    statuses = {name: reader.detect() for name, reader in readers.items()}
    if choice == "none":
        statuses = {
            name: PowerStatus(False, f"not used (--power none); {s.reason}")
            for name, s in statuses.items()
        }
        return None, statuses
    for name in ("rapl", "hwmon") if choice == "auto" else (choice,):
        if statuses[name].available:
            return readers[name], statuses
    return None, statuses
