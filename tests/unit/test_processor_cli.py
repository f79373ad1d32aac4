"""``joulestream process`` options turn into processor settings."""

from __future__ import annotations

import argparse

import pytest

from stream_processors import cli
from stream_processors.app import faust_broker_url


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULESTREAM_TOPIC_PREFIX", raising=False)
    monkeypatch.delenv("JOULESTREAM_BOOTSTRAP_SERVERS", raising=False)
    settings = cli.settings_from_args(parse())
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.faust_id == "joulestream-processor"
    assert settings.lateness_s == 10.0 and settings.web_port == 0
    assert settings.store == "memory://"
    assert settings.attribution.pue == 1.0
    assert settings.attribution.grid_intensity_g_per_kwh == 475.0
    assert settings.attribution.rapl_error == 0.05
    assert dict(settings.attribution.idle_watts) == {}


def test_every_option() -> None:
    settings = cli.settings_from_args(
        parse(
            "--bootstrap-servers", "h1:1,h2:2",
            "--topic-prefix", "t1.",
            "--app-id", "proc",
            "--lateness", "3.5",
            "--pue", "1.2",
            "--grid-intensity", "300",
            "--idle-watts", "package=4",
            "--idle-watts", "dram-0=1.5",
            "--rapl-error", "0.1",
            "--web-port", "6100",
        )
    )  # fmt: skip
    assert settings.topics.samples == "t1.joulestream.samples.v1"
    assert settings.faust_id == "t1.proc"
    assert settings.lateness_s == 3.5 and settings.web_port == 6100
    assert dict(settings.attribution.idle_watts) == {"package": 4.0, "dram-0": 1.5}
    assert settings.attribution.pue == 1.2
    assert settings.attribution.grid_intensity_g_per_kwh == 300.0
    assert settings.attribution.rapl_error == 0.1
    assert faust_broker_url(settings.bootstrap_servers) == "kafka://h1:1;kafka://h2:2"


@pytest.mark.parametrize(
    "argv",
    [["--idle-watts", "package"], ["--idle-watts", "=3"], ["--lateness", "-1"], ["--pue", "x"]],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_a_pue_below_one_stops_the_start_with_exit_code_2() -> None:
    assert cli.run(parse("--pue", "0.5")) == 2
