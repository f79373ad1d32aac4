"""Power and energy meters exposed through hwmon (/sys/class/hwmon), for nodes without RAPL.

Two kinds of sensor exist (Documentation/hwmon/sysfs-interface): ``energyN_input``, a
cumulative counter in µJ (amd_energy, some BMC and SMU drivers), and ``powerN_input``, the
average power in µW (ACPI power meters, PMBus supplies). Energy counters are used as they are;
power is integrated over the agent's own reads (trapezoids), so either becomes the cumulative
µJ counter a PowerReading carries. Zones: a sensor labelled with a socket becomes
``package-N``; per-core sensors are skipped (their package counter covers them); anything else
is ``platform`` (numbered when a node has several).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from joulestream.agents.power.types import PowerStatus, PowerUnavailable

SOURCE = "hwmon"
DEFAULT_ROOT = Path("/sys/class/hwmon")
_SENSOR = re.compile(r"^(?P<kind>energy|power)(?P<index>\d+)_input$")
_SOCKET = re.compile(r"socket\s*(\d+)", re.IGNORECASE)
_CORE = re.compile(r"^e?core", re.IGNORECASE)


@dataclass(frozen=True)
class Sensor:
    zone: str
    path: Path
    kind: str  # "energy" (µJ, cumulative) or "power" (µW, instantaneous)


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def discover(root: Path) -> list[Sensor]:
    """Every usable sensor; for a zone with both kinds, the energy counter wins."""
    by_zone: dict[str, Sensor] = {}
    platforms = 0
    for device in sorted(root.glob("hwmon*")):
        for entry in sorted(device.iterdir(), key=lambda p: p.name):
            match = _SENSOR.match(entry.name)
            if not match:
                continue
            kind, index = match["kind"], match["index"]
            label = _text(device / f"{kind}{index}_label") or ""
            if _CORE.match(label):
                continue
            socket = _SOCKET.search(label)
            if socket:
                zone = f"package-{socket.group(1)}"
            else:
                zone = "platform" if platforms == 0 else f"platform-{platforms}"
                platforms += 1
            known = by_zone.get(zone)
            if known is None or (known.kind == "power" and kind == "energy"):
                by_zone[zone] = Sensor(zone, entry, kind)
    return sorted(by_zone.values(), key=lambda s: s.zone)


class HwmonReader:
    source = SOURCE
    capability = "hwmon"

    def __init__(
        self, root: Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self._clock = clock
        self._sensors: list[Sensor] | None = None
        self._last: dict[str, tuple[float, int]] = {}  # zone → (time, raw value)
        self._total: dict[str, float] = {}  # zone → cumulative µJ

    def detect(self) -> PowerStatus:
        if not self.root.is_dir():
            return PowerStatus(False, f"no hwmon at {self.root}")
        sensors = discover(self.root)
        if not sensors:
            return PowerStatus(False, f"no power or energy sensor under {self.root}")
        unreadable = [str(s.path) for s in sensors if _text(s.path) is None]
        if unreadable:
            return PowerStatus(False, f"cannot read {', '.join(unreadable)} (permission?)")
        self._sensors = sensors
        described = ", ".join(f"{s.zone} ({s.path.parent.name}/{s.path.name})" for s in sensors)
        return PowerStatus(True, f"hwmon sensors: {described}", tuple(s.zone for s in sensors))

    def read(self) -> dict[str, int]:
        """Cumulative µJ per zone since the first read (0 then)."""
        if self._sensors is None and not self.detect().available:
            raise PowerUnavailable(self.detect().reason)
        assert self._sensors is not None
        now = self._clock()
        for sensor in self._sensors:
            raw_text = _text(sensor.path)
            if raw_text is None or not raw_text.lstrip("-").isdigit():
                raise PowerUnavailable(f"{sensor.path} unreadable or not a number: {raw_text!r}")
            raw = int(raw_text)
            previous = self._last.get(sensor.zone)
            self._last[sensor.zone] = (now, raw)
            if previous is None:
                self._total.setdefault(sensor.zone, 0.0)
                continue
            then, before = previous
            if sensor.kind == "energy":
                # A counter that went back was reset (driver reload): no energy is invented.
                self._total[sensor.zone] += max(raw - before, 0)
            else:
                self._total[sensor.zone] += (before + raw) / 2 * (now - then)  # µW·s = µJ
        return {zone: round(total) for zone, total in self._total.items()}
