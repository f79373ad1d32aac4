"""What every power source gives the agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

PowerChoice = Literal["auto", "rapl", "hwmon", "redfish", "none"]


class PowerUnavailable(RuntimeError):
    """Energy cannot be read; ``reason`` says why (never report it as zero power)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PowerStatus:
    available: bool
    reason: str  # why not, or which zones are read
    zones: tuple[str, ...] = ()


class PowerSource(Protocol):
    source: str  # PowerReading.source
    capability: str  # its entry in NodeSample.capabilities

    def detect(self) -> PowerStatus: ...

    def read(self) -> dict[str, int]:
        """Cumulative, unwrapped µJ per zone; raises PowerUnavailable."""
        ...
