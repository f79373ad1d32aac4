"""hwmon meters as a power source: energy counters used as they are, power integrated."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulestream.agents.power.hwmon import HwmonReader, discover
from joulestream.agents.power.select import select_power_source
from joulestream.agents.power.types import PowerUnavailable


def sensor(root: Path, device: str, name: str, files: dict[str, str]) -> Path:
    directory = root / device
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "name").write_text(name + "\n")
    for file, value in files.items():
        (directory / file).write_text(value + "\n")
    return directory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_power_meter_is_integrated_into_a_cumulative_counter(tmp_path: Path) -> None:
    meter = sensor(tmp_path, "hwmon0", "power_meter", {"power1_input": "100000000"})  # 100 W
    clock = Clock()
    reader = HwmonReader(tmp_path, clock)
    status = reader.detect()
    assert status.available and status.zones == ("platform",)
    assert reader.read() == {"platform": 0}
    clock.now += 2.0
    (meter / "power1_input").write_text("200000000\n")  # 200 W
    assert reader.read() == {"platform": 300_000_000}  # trapezoid: 150 W for 2 s = 300 J
    clock.now += 1.0
    assert reader.read() == {"platform": 500_000_000}


def test_energy_counters_per_socket_and_cores_skipped(tmp_path: Path) -> None:
    files = {
        "energy1_input": "1000", "energy1_label": "Ecore000",
        "energy2_input": "5000", "energy2_label": "Esocket0",
        "energy3_input": "7000", "energy3_label": "Esocket1",
    }  # fmt: skip
    device = sensor(tmp_path, "hwmon3", "amd_energy", files)
    assert [s.zone for s in discover(tmp_path)] == ["package-0", "package-1"]
    reader = HwmonReader(tmp_path, Clock())
    assert reader.read() == {"package-0": 0, "package-1": 0}
    (device / "energy2_input").write_text("9000\n")
    (device / "energy3_input").write_text("6000\n")  # went back: a reset, no energy invented
    assert reader.read() == {"package-0": 4000, "package-1": 0}


def test_energy_counter_preferred_over_power_for_the_same_zone(tmp_path: Path) -> None:
    sensor(tmp_path, "hwmon0", "x", {"power1_input": "1", "power1_label": "socket 0 power"})
    sensor(tmp_path, "hwmon1", "y", {"energy1_input": "1", "energy1_label": "socket 0 energy"})
    (only,) = discover(tmp_path)
    assert (only.zone, only.kind) == ("package-0", "energy")


def test_no_sensor_is_a_reason_not_zero(tmp_path: Path) -> None:
    sensor(tmp_path, "hwmon0", "coretemp", {"temp1_input": "45000"})
    reader = HwmonReader(tmp_path)
    status = reader.detect()
    assert not status.available and "no power or energy sensor" in status.reason
    with pytest.raises(PowerUnavailable):
        reader.read()
    assert not HwmonReader(tmp_path / "missing").detect().available


def test_auto_prefers_rapl_then_hwmon_and_reports_both(tmp_path: Path) -> None:
    sensor(tmp_path / "hwmon", "hwmon0", "power_meter", {"power1_input": "5"})
    reader, statuses = select_power_source("auto", tmp_path / "no-powercap", tmp_path / "hwmon")
    assert reader is not None and reader.source == "hwmon"
    assert not statuses["rapl"].available and statuses["hwmon"].available
    none, statuses = select_power_source("none", tmp_path / "no-powercap", tmp_path / "hwmon")
    assert none is None and "--power none" in statuses["hwmon"].reason
    rapl_only, _ = select_power_source("rapl", tmp_path / "no-powercap", tmp_path / "hwmon")
    assert rapl_only is None
