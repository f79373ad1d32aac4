"""The choice of power source: RAPL first, then hwmon, or none; beside it the GPUs NVML finds,
and with ``redfish`` the BMC's ``platform`` zone."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from joulestream.agents.power.hwmon import HwmonReader
from joulestream.agents.power.nvml import NvmlReader
from joulestream.agents.power.rapl import RaplReader
from joulestream.agents.power.redfish import RedfishConfig
from joulestream.agents.power.types import (
    PowerChoice,
    PowerSource,
    PowerStatus,
    PowerUnavailable,
)


class Combined:
    """The main source's zones (RAPL or hwmon) and each extra's (NVML's GPUs, the BMC's
    platform) in one reading. An extra that fails leaves only its own zones out (the agent
    counts the gap); the main source failing skips the reading, as it always has."""

    def __init__(self, primary: PowerSource | None, extras: list[PowerSource]) -> None:
        self.primary = primary
        self.extras = extras
        parts = [*([primary] if primary is not None else []), *extras]
        self.source = "+".join(part.source for part in parts)
        self.capability = parts[0].capability

    def detect(self) -> PowerStatus:
        parts = [*([self.primary] if self.primary is not None else []), *self.extras]
        statuses = [part.detect() for part in parts]
        zones = tuple(zone for status in statuses for zone in status.zones)
        reason = "; ".join(status.reason for status in statuses)
        return PowerStatus(any(status.available for status in statuses), reason, zones)

    def read(self) -> dict[str, int]:
        zones = self.primary.read() if self.primary is not None else {}
        reasons = []
        for extra in self.extras:
            try:
                zones.update(extra.read())
            except PowerUnavailable as exc:  # a gap in its zones, never a zero
                reasons.append(exc.reason)
        if not zones:
            raise PowerUnavailable("; ".join(reasons))
        return zones

    def close(self) -> None:
        for extra in self.extras:
            close = getattr(extra, "close", None)
            if close is not None:
                close()


def select_power_source(
    choice: PowerChoice,
    powercap_root: Path,
    hwmon_root: Path,
    redfish: RedfishConfig | None = None,
    nvml: ModuleType | Any = None,
) -> tuple[PowerSource | None, dict[str, PowerStatus]]:
    """The source to read (RAPL before hwmon for ``auto``) and every source's status, so the
    capability report says why each one is or is not used. GPUs join whenever NVML finds one
    (except with ``none``). ``redfish`` polls the BMC from here on (the source's ``close``
    stops it), also when it does not answer yet: ``platform`` joins once it does. ``nvml``
    replaces the nvidia-ml-py module (tests)."""
    readers: dict[str, PowerSource] = {
        reader.capability: reader for reader in (RaplReader(powercap_root), HwmonReader(hwmon_root))
    }
    statuses = {name: reader.detect() for name, reader in readers.items()}
    gpus = NvmlReader(nvml)
    statuses["nvml"] = gpus.detect()
    if choice == "none":
        statuses = {
            name: PowerStatus(False, f"not used (--power none); {s.reason}")
            for name, s in statuses.items()
        }
        gpus.close()
        return None, statuses
    extras: list[PowerSource] = [gpus] if statuses["nvml"].available else []
    if choice == "redfish":
        if redfish is None:
            raise ValueError("--power redfish needs --redfish-url")
        bmc = redfish.reader()
        statuses["redfish"] = bmc.detect()
        bmc.start()
        extras.append(bmc)
    names = ("rapl", "hwmon") if choice in ("auto", "redfish") else (choice,)
    primary = next((readers[n] for n in names if statuses[n].available), None)
    if not extras:
        return primary, statuses
    if primary is None and len(extras) == 1:
        return extras[0], statuses
    return Combined(primary, extras), statuses


def close_source(source: PowerSource | None) -> None:
    """Stop what a source runs (the BMC's poller, NVML): at the agent's exit."""
    close = getattr(source, "close", None)
    if close is not None:
        close()
