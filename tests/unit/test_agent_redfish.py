"""The Redfish power reader against DMTF's mockup served locally (tests/redfish_mockup.py):
where the power comes from, the counter between and across polls, a slow and an unreachable
BMC (counted gaps, never zeros), credentials and TLS verification."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redfish_mockup import PREFIX, MockupBMC, self_signed

from joulestream.agents.power.redfish import (
    PASSWORD_ENV,
    USERNAME_ENV,
    Credentials,
    RedfishClient,
    RedfishError,
    RedfishReader,
    load_credentials,
)
from joulestream.agents.power.types import PowerUnavailable

CHASSIS = f"{PREFIX}/Chassis/1U"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bmc() -> Iterator[MockupBMC]:
    server = MockupBMC()
    yield server
    server.stop()


def reader(bmc: MockupBMC, clock: Clock, **kwargs: float) -> RedfishReader:
    client = RedfishClient(bmc.url, timeout_s=kwargs.pop("timeout_s", 2.0))
    return RedfishReader(client, interval_s=1.0, max_age_s=10.0, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_environment_metrics_power_of_the_dmtf_mockup(bmc: MockupBMC) -> None:
    status = reader(bmc, Clock()).detect()
    assert status.available and status.zones == ("platform",)
    assert (
        "chassis 1U" in status.reason and "EnvironmentMetrics PowerWatts (374 W)" in status.reason
    )


def test_deprecated_power_then_power_supplies_when_newer_resources_are_missing() -> None:
    without_env = MockupBMC(without=(f"{CHASSIS}/EnvironmentMetrics",))
    only_supplies = MockupBMC(without=(f"{CHASSIS}/EnvironmentMetrics", f"{CHASSIS}/Power"))
    try:
        sample = RedfishClient(without_env.url).power()
        assert (sample.watts, sample.origin) == (344.0, f"{CHASSIS}/Power PowerConsumedWatts")
        sample = RedfishClient(only_supplies.url).power()
        assert sample.watts == 937.4 and "InputPowerWatts" in sample.origin  # Bay1 only
    finally:
        without_env.stop()
        only_supplies.stop()


def test_energy_kwh_is_reported_where_present(bmc: MockupBMC) -> None:
    metrics = f"{CHASSIS}/EnvironmentMetrics"
    bmc.patch(metrics, {"EnergykWh": {"Reading": 1234.5}})
    assert "EnergykWh 1234.5" in reader(bmc, Clock()).detect().reason


def test_the_counter_holds_each_poll_until_the_next_and_never_goes_back(bmc: MockupBMC) -> None:
    clock = Clock()
    source = reader(bmc, clock)
    source.poll()  # 374 W
    assert source.read() == {"platform": 0}
    clock.now += 2
    assert source.read() == {"platform": 374 * 2 * 1_000_000}
    bmc.set_watts(400)
    clock.now += 3
    source.poll()  # the 374 W held for 5 s, then 400 W
    assert source.read() == {"platform": 374 * 5 * 1_000_000}
    clock.now += 1.5
    assert source.read() == {"platform": (374 * 5 + 400 * 1.5) * 1_000_000}


def test_an_unreachable_bmc_gives_a_counted_gap_then_resumes_without_invented_energy(
    bmc: MockupBMC,
) -> None:
    clock = Clock()
    source = reader(bmc, clock)
    source.poll()
    bmc.stop()
    clock.now += 5
    with pytest.raises(RedfishError, match="refused"):
        source.poll()
    assert source.read() == {"platform": 374 * 5 * 1_000_000}  # within max_age: held
    clock.now += 6  # 11 s since the last answer > max_age 10 s
    with pytest.raises(PowerUnavailable, match=r"11\.0 s old"):
        source.read()  # a gap, not a zero
    assert source.stats.failures == 1
    bmc.start()  # the same port answers again
    clock.now += 100
    source.poll()
    # the hold counted only up to max_age (what reads could hand out), not the 111 s gap
    assert source.read() == {"platform": 374 * 10 * 1_000_000}


def test_a_slow_bmc_times_out_counted_and_goes_stale(bmc: MockupBMC) -> None:
    clock = Clock()
    source = reader(bmc, clock, timeout_s=0.3)
    source.poll()
    bmc.delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(RedfishError, match="timed out"):
        source.poll()
    assert time.monotonic() - started < 1.0  # the timeout, not the BMC, decides
    assert source.stats.failures == 1 and source.stats.polls == 1
    clock.now += 10.5
    with pytest.raises(PowerUnavailable):
        source.read()


def test_polling_thread_feeds_reads_without_blocking_them(bmc: MockupBMC) -> None:
    client = RedfishClient(bmc.url, timeout_s=2.0)
    source = RedfishReader(client, interval_s=0.1, max_age_s=5.0)
    assert source.detect().available
    source.start()
    try:
        deadline = time.monotonic() + 10
        while bmc.requests < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.stats.polls >= 3
        first = source.read()["platform"]
        time.sleep(0.3)
        later = source.read()["platform"]
        assert math.isclose(later - first, 374 * 0.3 * 1e6, rel_tol=0.5)
    finally:
        source.close()


def test_credentials_from_file_directory_or_environment(tmp_path: Path) -> None:
    line = tmp_path / "bmc"
    line.write_text("admin:s3cr:et\n")
    assert load_credentials(line) == Credentials("admin", "s3cr:et")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text("root\n")
    (secret / "password").write_text("pw\n")
    assert load_credentials(secret) == Credentials("root", "pw")
    env = {USERNAME_ENV: "u", PASSWORD_ENV: "p"}
    assert load_credentials(None, env) == Credentials("u", "p")
    assert load_credentials(None, {}) is None
    (tmp_path / "bad").write_text("no colon\n")
    with pytest.raises(ValueError, match="username:password"):
        load_credentials(tmp_path / "bad")


def test_basic_auth_is_sent_and_required() -> None:
    bmc = MockupBMC(credentials=("admin", "pw"))
    try:
        refused = RedfishReader(RedfishClient(bmc.url)).detect()
        assert not refused.available and "HTTP 401" in refused.reason
        client = RedfishClient(bmc.url, Credentials("admin", "pw"))
        assert RedfishReader(client).detect().available
    finally:
        bmc.stop()


def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    bmc = MockupBMC(tls=(cert, key))
    try:
        default = RedfishReader(RedfishClient(bmc.url)).detect()
        assert not default.available and "CERTIFICATE_VERIFY_FAILED" in default.reason
        assert RedfishReader(RedfishClient(bmc.url, ca_file=cert)).detect().available
        assert RedfishReader(RedfishClient(bmc.url, insecure=True)).detect().available
    finally:
        bmc.stop()


def test_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        RedfishClient("bmc.example:443")
