"""GPU energy through NVML (nvidia-ml-py), one zone ``gpu-N`` per device.

docs/architecture.md, 'Algorithms'. A device's energy comes from its total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded; Volta and later), else
from its power (``nvmlDeviceGetPowerUsage``, mW) integrated over the agent's own reads with
trapezoids, as hwmon power meters are. Either becomes the cumulative µJ counter a
PowerReading carries, starting at 0 when the reader starts; a counter that goes back (driver
reload) adds nothing rather than a made-up value.

Nodes without an NVIDIA driver are the common case: the capability report then says which
NVML call failed and why (library not found, driver not loaded, no permission, no device),
never a zero-watt GPU. ``nvml`` is the nvidia-ml-py module (``pynvml``); tests pass a double
of its calls (tests/unit/test_agent_nvml.py, which runs on the real library where a GPU is).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pynvml

from joulestream.agents.power.types import PowerStatus, PowerUnavailable

SOURCE = "nvml"


@dataclass
class _Device:
    zone: str
    handle: Any
    name: str
    uuid: str
    counter: bool  # total-energy counter, else integrated power
    last: tuple[float, float] | None = None  # (time, mJ or mW) of the previous read
    total_uj: float = 0.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def library() -> Any:
    """nvidia-ml-py, looked up when called (tests replace this module's ``pynvml``)."""
    return pynvml


def failure(nvml: ModuleType | Any, call: str, exc: Exception) -> str:
    """Why an NVML call failed, in the words a node's operator can act on."""
    value = getattr(exc, "value", None)
    hints = {
        nvml.NVML_ERROR_LIBRARY_NOT_FOUND: "libnvidia-ml.so.1 not found: no NVIDIA driver "
        "on this node (or not mounted into the container)",
        nvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
        nvml.NVML_ERROR_NO_PERMISSION: "no permission (the device files /dev/nvidia*)",
        nvml.NVML_ERROR_NOT_SUPPORTED: "not supported by this device",
    }
    return f"NVML {call} failed: {hints.get(value, exc)}"


class NvmlReader:
    source = SOURCE
    capability = "nvml"

    def __init__(
        self, nvml: ModuleType | Any = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.nvml = library() if nvml is None else nvml
        self._clock = clock
        self._devices: list[_Device] | None = None

    def _reason(self, call: str, exc: Exception) -> str:
        return failure(self.nvml, call, exc)

    def detect(self) -> PowerStatus:
        """Initialise NVML and find every device and how its energy is read."""
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return PowerStatus(False, self._reason("nvmlInit", exc))
        try:
            count = nvml.nvmlDeviceGetCount()
            devices = []
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                counter = True
                try:
                    nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                except nvml.NVMLError:
                    nvml.nvmlDeviceGetPowerUsage(handle)  # raises if neither works
                    counter = False
                devices.append(
                    _Device(
                        f"gpu-{index}",
                        handle,
                        _text(nvml.nvmlDeviceGetName(handle)),
                        _text(nvml.nvmlDeviceGetUUID(handle)),
                        counter,
                    )
                )
        except nvml.NVMLError as exc:
            return PowerStatus(False, self._reason("device query", exc))
        if not devices:
            return PowerStatus(False, "NVML found no GPU on this node")
        self._devices = devices
        described = ", ".join(
            f"{d.zone} ({d.name}, {d.uuid}: "
            f"{'total-energy counter' if d.counter else 'power integrated, no energy counter'})"
            for d in devices
        )
        return PowerStatus(True, f"NVML: {described}", tuple(d.zone for d in devices))

    def read(self) -> dict[str, int]:
        """Cumulative µJ per GPU since the first read (0 then). Raises PowerUnavailable."""
        if self._devices is None:
            status = self.detect()
            if not status.available:
                raise PowerUnavailable(status.reason)
        assert self._devices is not None
        nvml = self.nvml
        now = self._clock()
        for device in self._devices:
            try:
                if device.counter:
                    value = float(nvml.nvmlDeviceGetTotalEnergyConsumption(device.handle))
                else:
                    value = float(nvml.nvmlDeviceGetPowerUsage(device.handle))
            except nvml.NVMLError as exc:
                raise PowerUnavailable(self._reason(f"read of {device.zone}", exc)) from exc
            if device.last is not None:
                then, before = device.last
                if device.counter:
                    device.total_uj += max(value - before, 0.0) * 1000  # mJ -> µJ
                else:
                    device.total_uj += (before + value) / 2 * (now - then) * 1000  # mW·s -> µJ
            device.last = (now, value)
        return {d.zone: round(d.total_uj) for d in self._devices}

    def close(self) -> None:
        if self._devices is not None:
            self._devices = None
            with contextlib.suppress(self.nvml.NVMLError):  # at exit: nothing left to lose
                self.nvml.nvmlShutdown()
