"""Grid intensity as a step function per region, PUE and region per cluster."""

from __future__ import annotations

import math

import pytest

from joulestream.stream_processors.carbon import BadGridRecord, CarbonConfig, GridIntensities


def point(region: str, t: int, g: float) -> dict[str, object]:
    return {"region": region, "time_ns": t, "g_co2e_per_kwh": g, "source": "electricitymaps"}


def test_intensity_is_the_latest_point_at_or_before_the_time() -> None:
    grid = GridIntensities()
    for t, g in ((100, 300.0), (200, 250.0), (50, 400.0), (200, 260.0)):
        grid.add(point("DE", t, g))
    assert [grid.at("DE", t) for t in (49, 50, 99, 100, 199, 200, 10**18)] == [
        None, 400.0, 400.0, 300.0, 300.0, 260.0, 260.0,
    ]  # fmt: skip
    assert grid.at("FR", 100) is None


def test_points_per_region_are_bounded() -> None:
    grid = GridIntensities(max_points=3)
    for t in range(10):
        grid.add(point("DE", t, float(t)))
    assert grid.at("DE", 6) is None and grid.at("DE", 9) == 9.0


@pytest.mark.parametrize(
    ("g", "reason"),
    [(math.nan, "non-finite"), (math.inf, "non-finite"), (-1.0, "negative-intensity")],
)
def test_bad_grid_points_are_refused(g: float, reason: str) -> None:
    with pytest.raises(BadGridRecord) as caught:
        GridIntensities().add(point("DE", 1, g))
    assert caught.value.reason == reason


def test_cluster_settings_and_static_fallback() -> None:
    grid = GridIntensities()
    grid.add(point("DE", 100, 300.0))
    config = CarbonConfig(pue={"eu": 1.1}, default_pue=1.3, region={"eu": "DE"},
                          default_region="XX", static_intensity=475.0)  # fmt: skip
    eu = config.carbon("eu", 150, grid)
    assert (eu.pue, eu.intensity_g_per_kwh) == (1.1, 300.0)
    early = config.carbon("eu", 50, grid)
    assert early.intensity_g_per_kwh == 475.0
    other = config.carbon("us", 150, grid)
    assert (other.pue, other.intensity_g_per_kwh) == (1.3, 475.0)
    with pytest.raises(ValueError):
        CarbonConfig(pue={"eu": 0.9})
