"""``joulestream process`` options turn into processor settings."""

from __future__ import annotations

import argparse

import pytest

from joulestream.stream_processors import cli
from joulestream.stream_processors.app import faust_broker_url


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
    assert settings.carbon.default_pue == 1.0 and dict(settings.carbon.pue) == {}
    assert settings.carbon.static_intensity == 475.0 and settings.carbon.default_region is None
    assert settings.attribution.rapl_error == 0.05
    assert settings.attribution.idle_policy == "none"
    assert dict(settings.attribution.idle_watts) == {}
    assert settings.default_model and not settings.learn_idle
    assert settings.metrics_port is None and settings.max_workloads == 10_000
    assert settings.state_dir.parts[-2:] == ("joulestream", "processor")


def test_every_option() -> None:
    settings = cli.settings_from_args(
        parse(
            "--bootstrap-servers", "h1:1,h2:2",
            "--topic-prefix", "t1.",
            "--app-id", "proc",
            "--lateness", "3.5",
            "--pue", "1.2",
            "--pue", "eu=1.1",
            "--region", "eu=DE",
            "--region", "*=FR",
            "--grid-intensity", "300",
            "--idle-policy", "proportional",
            "--learn-idle",
            "--no-default-model",
            "--max-workloads", "50",
            "--metrics-port", "9999",
            "--state-dir", "/tmp/x",
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
    assert settings.carbon.default_pue == 1.2 and dict(settings.carbon.pue) == {"eu": 1.1}
    assert dict(settings.carbon.region) == {"eu": "DE"} and settings.carbon.default_region == "FR"
    assert settings.carbon.static_intensity == 300.0
    assert settings.attribution.idle_policy == "proportional" and settings.learn_idle
    assert not settings.default_model and settings.max_workloads == 50
    assert settings.metrics_port == 9999 and str(settings.state_dir) == "/tmp/x"
    assert settings.attribution.rapl_error == 0.1
    assert faust_broker_url(settings.bootstrap_servers) == "kafka://h1:1;kafka://h2:2"


@pytest.mark.parametrize(
    "argv",
    [
        ["--idle-watts", "package"],
        ["--idle-watts", "=3"],
        ["--lateness", "-1"],
        ["--pue", "x"],
        ["--pue", "eu=0.5"],
        ["--pue", "nan"],
        ["--region", "eu"],
        ["--idle-policy", "all"],
    ],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_a_rapl_error_above_one_stops_the_start_with_exit_code_2() -> None:
    assert cli.run(parse("--rapl-error", "1.5")) == 2
