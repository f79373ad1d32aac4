"""Topic layout rules (docs/architecture.md, 'Kafka contract'), checked without a broker."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

import pytest

from joulestream.kafka import topics_cli
from joulestream.kafka.cli import add_arguments, local_listener
from joulestream.kafka.topics import TopicState, layout_problems, topic_specs
from joulestream.settings import Topics

TOPICS = Topics(prefix="x.")


def state(name: str, partitions: int | None, policy: str | None = None) -> TopicState:
    return TopicState(
        name, name in TOPICS.compacted(), partitions, 1 if partitions else None, policy
    )


def healthy(partitions: int) -> list[TopicState]:
    return [
        state(spec.name, partitions, spec.config["cleanup.policy"])
        for spec in topic_specs(TOPICS, partitions)
    ]


def test_specs_compact_only_models_and_grid_and_share_one_count() -> None:
    specs = {spec.name: spec for spec in topic_specs(TOPICS, 3)}
    assert set(specs) == set(TOPICS.all())
    assert {spec.partitions for spec in specs.values()} == {3}
    policies = {name: spec.config["cleanup.policy"] for name, spec in specs.items()}
    assert policies == {
        "x.joulestream.samples.v1": "delete",
        "x.joulestream.power.v1": "delete",
        "x.joulestream.energy.v1": "delete",
        "x.joulestream.models.v1": "compact",
        "x.joulestream.grid.v1": "compact",
        "x.joulestream.deadletter.v1": "delete",
    }


def test_a_healthy_or_absent_layout_has_no_problems() -> None:
    assert layout_problems(TOPICS, healthy(3), 3) == []
    assert layout_problems(TOPICS, healthy(3)) == []
    assert layout_problems(TOPICS, [state(name, None) for name in TOPICS.all()], 5) == []


def test_co_partitioned_topics_with_different_counts_are_named() -> None:
    states = healthy(3)
    states[1] = state(TOPICS.power, 6, "delete")
    (problem,) = layout_problems(TOPICS, states)
    assert "x.joulestream.samples.v1 has 3" in problem
    assert "x.joulestream.power.v1 has 6" in problem
    assert "x.joulestream.energy.v1 has 3" in problem


def test_an_existing_count_other_than_the_requested_one_is_a_problem() -> None:
    states = [state(TOPICS.samples, 3, "delete"), state(TOPICS.power, None)]
    (problem,) = layout_problems(TOPICS, states, partitions=2)
    assert "x.joulestream.samples.v1 has 3" in problem and "requested 2" in problem


def test_non_co_partitioned_topics_may_differ_in_count() -> None:
    states = healthy(3)
    states[3] = state(TOPICS.models, 1, "compact")
    assert layout_problems(TOPICS, states, 3) == []


@pytest.mark.parametrize(
    ("name", "policy"),
    [
        (TOPICS.models, "delete"),
        (TOPICS.grid, "delete"),
        (TOPICS.samples, "compact"),
        (TOPICS.deadletter, "compact,delete"),
    ],
)
def test_a_wrong_cleanup_policy_is_a_problem(name: str, policy: str) -> None:
    states = [s if s.name != name else state(name, 3, policy) for s in healthy(3)]
    (problem,) = layout_problems(TOPICS, states, 3)
    assert problem.startswith(f"{name} has cleanup.policy={policy}, expected ")


def test_compact_and_delete_counts_as_compacted() -> None:
    states = [
        s if s.name != TOPICS.grid else state(TOPICS.grid, 3, "compact,delete") for s in healthy(3)
    ]
    assert layout_problems(TOPICS, states, 3) == []


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:19092", ("127.0.0.1", 19092)),
        ("localhost:9095,localhost:9096", ("localhost", 9095)),
        ("kafka.example.com:9092", ("127.0.0.1", 9092)),  # remote: the local default
        ("garbage", ("127.0.0.1", 9092)),
    ],
)
def test_local_broker_listens_where_clients_look(bootstrap: str, expected: tuple[str, int]) -> None:
    assert local_listener(bootstrap) == expected


def test_kafka_cli_defaults_follow_the_bootstrap_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOULESTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["start"])
    assert (args.host, args.port, args.controller_port) == (
        "127.0.0.1",
        19092,
        None,
    )  # PORT + brokers
    args = parser.parse_args(["stop", "--port", "1234", "--controller-port", "1235"])
    assert (args.port, args.controller_port, args.timeout) == (1234, 1235, 30)


def test_topics_cli_says_when_kafka_is_unreachable(
    unused_ports: Callable[[int], list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = unused_ports(1)
    parser = argparse.ArgumentParser()
    topics_cli.add_arguments(parser)
    args = parser.parse_args(["describe", "--bootstrap-servers", f"127.0.0.1:{port}"])
    assert topics_cli.run(args) == 1
    assert capsys.readouterr().err == (
        f"joulestream topics: cannot connect to Kafka at 127.0.0.1:{port}\n"
    )


def test_every_reader_agrees_on_the_source_topics() -> None:
    """Shared and per-cluster source topics (docs/architecture.md, 'Kafka contract'), by name,
    by kind and by the pattern the archive sink subscribes with."""
    listed = [
        "x.joulestream.samples.v1",
        "x.joulestream.samples.v1.eu-1",
        "x.joulestream.power.v1.eu-1",
        "x.joulestream.power.v1",
        "x.joulestream.samples.v10",  # another name, not a cluster's topic
        "x.joulestream.samples.v1.",
        "xjoulestream.samples.v1",  # the prefix's dot is literal
        "y.x.joulestream.samples.v1",  # another prefix
        "x.joulestream.energy.v1",
    ]
    assert TOPICS.source_topics(listed, "samples") == [
        "x.joulestream.samples.v1",
        "x.joulestream.samples.v1.eu-1",
    ]
    assert TOPICS.source_topics(listed, "power") == [
        "x.joulestream.power.v1",
        "x.joulestream.power.v1.eu-1",
    ]
    for kind in ("samples", "power"):
        pattern = TOPICS.source_pattern(kind)  # type: ignore[arg-type]
        assert pattern.startswith("^")  # librdkafka's mark of a regex subscription
        matched = [name for name in listed if re.match(pattern, name)]
        assert matched == [n for n in listed if TOPICS.source_kind(n) == kind]
    assert Topics.of_source("y.x.joulestream.power.v1.eu-1") == (Topics("y.x."), "power", "eu-1")
    assert Topics.of_source("x.joulestream.energy.v1") is None
