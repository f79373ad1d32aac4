"""GPU energy through NVML. Here (no GPU) nvidia-ml-py's calls are replaced by a double that
keeps the library's own errors and constants; everything above the calls is real. The tests
marked ``gpu`` run against the real library on a machine with an NVIDIA GPU:
``JOULESTREAM_REAL_NVML=1 pytest -m gpu tests/unit/test_agent_nvml.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from nvml_double import REAL, FakeNvml, a100

from joulestream.agents.power.nvml import NvmlReader
from joulestream.agents.power.select import Combined, select_power_source


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nvml() -> Iterator[Any]:
    """The real library on a GPU machine (JOULESTREAM_REAL_NVML=1), else two GPUs' double."""
    yield pynvml if REAL else FakeNvml([a100(0), a100(1)])


@pytest.mark.gpu
def test_every_gpu_is_a_zone_whose_counter_starts_at_zero_and_never_goes_back(nvml: Any) -> None:
    reader = NvmlReader(nvml)
    status = reader.detect()
    assert status.available, status.reason
    assert status.zones == tuple(f"gpu-{i}" for i in range(len(status.zones)))
    first = reader.read()
    assert set(first) == set(status.zones) and set(first.values()) == {0}
    if not REAL:
        for device in nvml.devices:
            device["energy_mj"] += 1500  # 1.5 J each
    time.sleep(0.2)
    second = reader.read()
    assert all(second[zone] >= first[zone] for zone in first)
    if not REAL:
        assert second == {"gpu-0": 1_500_000, "gpu-1": 1_500_000}
    reader.close()


@pytest.mark.gpu
def test_the_capability_report_names_each_gpu_and_how_it_is_read(nvml: Any) -> None:
    status = NvmlReader(nvml).detect()
    assert status.reason.startswith("NVML: gpu-0 (")
    assert "total-energy counter" in status.reason or "power integrated" in status.reason


def test_without_an_energy_counter_power_is_integrated_with_trapezoids() -> None:
    fake = FakeNvml([a100(0, energy_mj=None, power_mw=200_000)])
    clock = Clock()
    reader = NvmlReader(fake, clock)
    assert "power integrated, no energy counter" in reader.detect().reason
    reader.read()
    clock.now += 2
    fake.devices[0]["power_mw"] = 300_000
    assert reader.read() == {"gpu-0": 500_000_000}  # (200 + 300) / 2 W x 2 s = 500 J


def test_a_counter_that_goes_back_adds_nothing() -> None:
    fake = FakeNvml([a100(0)])
    reader = NvmlReader(fake)
    reader.detect()
    reader.read()
    fake.devices[0]["energy_mj"] = 10  # driver reloaded
    assert reader.read() == {"gpu-0": 0}
    fake.devices[0]["energy_mj"] = 2010
    assert reader.read() == {"gpu-0": 2_000_000}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found: no NVIDIA driver"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA kernel driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
    ],
)
def test_what_is_missing_and_why(error: int, reason: str) -> None:
    status = NvmlReader(FakeNvml([], init_error=error)).detect()
    assert not status.available and reason in status.reason
    assert "NVML found no GPU" in NvmlReader(FakeNvml([])).detect().reason


def test_this_machine_without_a_driver_says_so_through_the_real_library() -> None:
    if REAL:
        pytest.skip("a machine with a GPU has a driver")  # the gpu-marked tests cover it
    status = NvmlReader().detect()
    assert not status.available and "libnvidia-ml.so.1 not found" in status.reason


def test_gpus_join_rapl_and_leave_only_their_zones_out_when_they_fail(tmp_path: Path) -> None:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    (zone / "energy_uj").write_text("5\n")
    fake = FakeNvml([a100(0)])
    source, statuses = select_power_source("auto", tmp_path / "powercap", tmp_path, nvml=fake)
    assert isinstance(source, Combined) and source.source == "rapl-powercap+nvml"
    assert statuses["nvml"].available and statuses["rapl"].available
    assert source.read() == {"package-0": 0, "gpu-0": 0}
    fake.devices[0]["lost"] = True  # the GPU falls off the bus: RAPL is read as ever
    (zone / "energy_uj").write_text("2000005\n")
    assert source.read() == {"package-0": 2_000_000}
    source.close()
    assert fake.shutdowns == 1
    none, statuses = select_power_source("none", tmp_path / "powercap", tmp_path, nvml=fake)
    assert none is None and statuses["nvml"].reason.startswith("not used (--power none)")
