"""The choice of power source: RAPL first, then hwmon, or none; or, with ``redfish``, the
BMC's ``platform`` zone beside whichever of the two this node has."""

from __future__ import annotations

import contextlib
from pathlib import Path

from joulestream.agents.power.hwmon import HwmonReader
from joulestream.agents.power.rapl import RaplReader
from joulestream.agents.power.redfish import RedfishConfig, RedfishReader
from joulestream.agents.power.types import (
    PowerChoice,
    PowerSource,
    PowerStatus,
    PowerUnavailable,
)


class WithPlatform:
    """RAPL's (or hwmon's) zones and the BMC's ``platform`` in one reading. A BMC gap leaves
    only ``platform`` out (the agent counts it); the other zones are read as ever."""

    capability = "redfish"

    def __init__(self, primary: PowerSource, bmc: RedfishReader) -> None:
        self.primary = primary
        self.bmc = bmc
        self.source = f"{primary.source}+{bmc.source}"

    def detect(self) -> PowerStatus:
        status = self.bmc.detect()
        zones = (*self.primary.detect().zones, *status.zones)
        return PowerStatus(status.available, status.reason, zones)

    def read(self) -> dict[str, int]:
        zones = self.primary.read()
        with contextlib.suppress(PowerUnavailable):  # a gap in the platform zone, never a zero
            zones.update(self.bmc.read())
        return zones

    def close(self) -> None:
        self.bmc.close()


def select_power_source(
    choice: PowerChoice,
    powercap_root: Path,
    hwmon_root: Path,
    redfish: RedfishConfig | None = None,
) -> tuple[PowerSource | None, dict[str, PowerStatus]]:
    """The source to read (RAPL before hwmon for ``auto``) and every source's status, so the
    capability report says why each one is or is not used. ``redfish`` polls the BMC from
    here on (its thread stops with the source's ``close``), also when it does not answer yet:
    the platform zone then joins the readings once it does."""
    readers: dict[str, PowerSource] = {
        reader.capability: reader for reader in (RaplReader(powercap_root), HwmonReader(hwmon_root))
    }
    statuses = {name: reader.detect() for name, reader in readers.items()}
    if choice == "redfish":
        if redfish is None:
            raise ValueError("--power redfish needs --redfish-url")
        bmc = redfish.reader()
        statuses["redfish"] = bmc.detect()
        bmc.start()
        primary = next((readers[n] for n in ("rapl", "hwmon") if statuses[n].available), None)
        return (bmc if primary is None else WithPlatform(primary, bmc)), statuses
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
