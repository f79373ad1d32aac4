"""Topic creation (docs/architecture.md, 'Kafka contract') against the session's real broker."""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from joulestream.kafka import clients, topics_cli
from joulestream.kafka.topics import TopicLayoutError, create_topics, partition_counts
from joulestream.settings import Topics

pytestmark = pytest.mark.integration


def cleanup_policies(admin: AdminClient, names: tuple[str, ...]) -> dict[str, str]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    return {
        resource.name: future.result()["cleanup.policy"].value
        for resource, future in admin.describe_configs(resources).items()
    }


def make_topic(admin: AdminClient, topic: NewTopic) -> None:
    """Create one topic by hand and wait until the broker's metadata shows it."""
    admin.create_topics([topic])[topic.topic].result()
    deadline = time.monotonic() + 10
    while topic.topic not in partition_counts(admin, [topic.topic]):
        assert time.monotonic() < deadline, f"{topic.topic} never appeared"
        time.sleep(0.05)


def topics_cli_run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    topics_cli.add_arguments(parser)
    return topics_cli.run(parser.parse_args(list(argv)))


@pytest.fixture
def fresh(kafka_bootstrap: str) -> Iterator[Topics]:
    """A prefix with no topics yet; whatever the test creates under it is deleted after."""
    names = Topics(prefix=f"f{uuid.uuid4().hex[:12]}.")
    yield names
    admin = clients.admin(kafka_bootstrap)
    for future in admin.delete_topics(list(names.all()), operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result()


def test_fixture_topics_follow_the_contract(kafka_bootstrap: str, topics: Topics) -> None:
    admin = clients.admin(kafka_bootstrap)
    assert partition_counts(admin, topics.all()) == {name: 2 for name in topics.all()}
    assert cleanup_policies(admin, topics.all()) == {
        topics.samples: "delete",
        topics.power: "delete",
        topics.energy: "delete",
        topics.models: "compact",
        topics.grid: "compact",
        topics.deadletter: "delete",
    }


def test_create_again_is_a_no_op(kafka_bootstrap: str, topics: Topics) -> None:
    result = create_topics(clients.admin(kafka_bootstrap), topics, partitions=2)
    assert result.created == ()
    assert set(result.existing) == set(topics.all())


def test_a_co_partitioned_topic_with_another_count_stops_creation(
    kafka_bootstrap: str, fresh: Topics
) -> None:
    admin = clients.admin(kafka_bootstrap)
    make_topic(admin, NewTopic(fresh.power, 3, 1))
    with pytest.raises(TopicLayoutError) as caught:
        create_topics(admin, fresh, partitions=2)
    assert f"{fresh.power} has 3" in str(caught.value)
    assert "requested 2" in str(caught.value)
    assert partition_counts(admin, fresh.all()) == {fresh.power: 3}  # nothing else made


def test_a_compacted_topic_without_compaction_is_an_error(
    kafka_bootstrap: str, fresh: Topics
) -> None:
    admin = clients.admin(kafka_bootstrap)
    make_topic(admin, NewTopic(fresh.grid, 2, 1))
    with pytest.raises(TopicLayoutError, match=f"{fresh.grid} has cleanup.policy=delete"):
        create_topics(admin, fresh, partitions=2)


def test_cli_create_adopts_the_existing_count_and_describe_reports(
    kafka_bootstrap: str, fresh: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", fresh.prefix]
    assert topics_cli_run("describe", *where) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [[name, "missing"] for name in fresh.all()]

    admin = clients.admin(kafka_bootstrap)
    make_topic(admin, NewTopic(fresh.samples, 3, 1))
    assert topics_cli_run("create", *where) == 0
    out = capsys.readouterr().out
    assert f"{fresh.samples}: exists" in out and f"{fresh.power}: created" in out
    counts = partition_counts(admin, fresh.co_partitioned())
    assert counts == {name: 3 for name in fresh.co_partitioned()}

    assert topics_cli_run("describe", *where) == 0
    described = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    one_copy = ["partitions=3", "replication=1", "min.insync.replicas=1"]  # one broker
    assert described[fresh.grid] == [*one_copy, "cleanup.policy=compact"]
    assert described[fresh.samples] == [*one_copy, "cleanup.policy=delete"]

    assert topics_cli_run("create", "--partitions", "4", *where) == 1
    assert f"{fresh.samples} has 3" in capsys.readouterr().err
