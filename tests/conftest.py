"""Shared fixtures: one real Kafka broker per test session, fresh topics per test.

The broker is started by the same ``LocalKafka`` that ``joulestream kafka start`` uses, on free
ports in a temporary directory, so tests never touch a broker on 9092. Set
JOULESTREAM_TEST_BOOTSTRAP=host:port to run against an already running broker instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaException

from joulestream.kafka import clients
from joulestream.kafka.broker import LocalKafka, free_ports
from joulestream.kafka.errors import PortInUseError
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

pytest_plugins = ["integration.postgres_fixtures", "integration.kube_fixtures"]


@pytest.fixture
def unused_ports() -> Callable[[int], list[int]]:
    """``unused_ports(n)``: n distinct ports free right now, for a service a test starts."""
    return free_ports


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("JOULESTREAM_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    for attempt in range(3):  # another process may grab a free port before Kafka binds it
        port, controller_port = free_ports(2)
        broker = LocalKafka(data_dir, port=port, controller_port=controller_port)
        try:
            broker.start(timeout=120)
            break
        except PortInUseError:
            if attempt == 2:
                raise
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """All topics (docs/architecture.md, 'Kafka contract') under a prefix of their own, with 2
    partitions each."""
    names = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    admin = clients.admin(kafka_bootstrap)
    create_topics(admin, names, partitions=2)
    yield names
    for future in admin.delete_topics(list(names.all()), operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # a test may have deleted one itself
            future.result()
