"""A double of nvidia-ml-py's calls (the library's own errors and constants kept), for the
NVML tests on machines without a GPU; JOULESTREAM_REAL_NVML=1 runs them on the real library."""

from __future__ import annotations

import os
import time
from typing import Any

import pynvml

REAL = os.environ.get("JOULESTREAM_REAL_NVML") == "1"


class FakeNvml:
    """The nvidia-ml-py calls the readers make, for devices given as dicts (``energy_mj``
    None: no total-energy counter, as before Volta); errors are pynvml's.

    Per-process utilisation: ``samples`` lists (pid, timeStamp µs, smUtil) as NVML would
    return them; else ``processes`` ({pid: smUtil}) answer every poll with one sample per
    process at the current time. ``sampling`` False: NVML_ERROR_NOT_SUPPORTED, and the
    running-process lists (the pids of ``processes``) are all there is."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices: list[dict[str, Any]], init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.shutdowns = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("NVML_"):
            return getattr(pynvml, name)  # the library's constants
        raise AttributeError(name)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return str(handle["uuid"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: dict[str, Any]) -> int:
        if handle.get("lost"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if handle.get("energy_mj") is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(handle["energy_mj"])

    def nvmlDeviceGetPowerUsage(self, handle: dict[str, Any]) -> int:
        if handle.get("lost"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return int(handle["power_mw"])

    def nvmlDeviceGetProcessUtilization(
        self, handle: dict[str, Any], timeStamp: int
    ) -> list[pynvml.c_nvmlProcessUtilizationSample_t]:
        if handle.get("lost"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if not handle.get("sampling", True):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        samples = handle.get("samples")
        if samples is None:
            now = time.time_ns() // 1000
            samples = [(pid, now, sm) for pid, sm in handle.get("processes", {}).items()]
        found = [
            pynvml.c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=stamp, smUtil=sm)
            for pid, stamp, sm in samples
            if stamp > timeStamp
        ]
        if not found:  # what libnvidia-ml answers when no process ran since timeStamp
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return found

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict[str, Any]) -> list[Any]:
        return [
            pynvml.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": 1 << 30})
            for pid in handle.get("processes", {})
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: dict[str, Any]) -> list[Any]:
        return []


def a100(index: int, energy_mj: int | None = 5_000_000, power_mw: int = 250_000) -> dict[str, Any]:
    return {"name": "NVIDIA A100-SXM4-40GB", "uuid": f"GPU-{index:08x}",
            "energy_mj": energy_mj, "power_mw": power_mw}  # fmt: skip
