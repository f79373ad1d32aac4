"""Consuming with manual, synchronous commits, as the store and archive sinks do: a sink
commits an offset only after what it read there is durable in its output."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from joulestream.kafka import clients
from joulestream.kafka.readiness import TopicGate
from joulestream.options import add_group_id, add_kafka_options, topics_from
from joulestream.sinks.names import READER_CONFIG, ReaderFactory


def add_consumer_options(parser: argparse.ArgumentParser, default_group_id: str) -> None:
    """The Kafka options and the sink's consumer group."""
    add_kafka_options(parser)
    add_group_id(parser, default_group_id)


def group_id(args: argparse.Namespace) -> str:
    """``--group-id`` under the topic prefix, as the processor's ``--app-id``."""
    return topics_from(args).group(args.group_id)


def wait_for_topics(
    args: argparse.Namespace, names: list[str], who: str, stop: threading.Event
) -> bool:
    """Wait until the sink may read ``names`` (saying once what it waits for); False when
    ``stop`` came first."""
    gate = TopicGate(names, who=who, operation="read", bootstrap=args.bootstrap_servers)
    return gate.wait(stop)


def manual_commit_consumer(args: argparse.Namespace) -> Consumer:
    """The consumer of ``add_consumer_options``' group; offsets are committed by the sink."""
    return clients.consumer(group_id(args), args.bootstrap_servers, **{"enable.auto.commit": False})


def read_back_reader(args: argparse.Namespace) -> ReaderFactory:
    """Makes the group's non-committing reader for reading assigned partitions back
    (joulestream.sinks.names)."""
    return lambda: clients.consumer(group_id(args), args.bootstrap_servers, **READER_CONFIG)


def consume_messages(
    consumer: Consumer,
    num_messages: int,
    timeout: float,
    on_error: Callable[[KafkaError], None],
) -> list[Message]:
    """Up to ``num_messages`` messages; a fatal consumer error raises, another one is passed
    to ``on_error`` (logged by the sink) and left out."""
    good: list[Message] = []
    for message in consumer.consume(num_messages, timeout):
        error = message.error()
        if error is None:
            good.append(message)
        elif error.fatal():
            raise KafkaException(error)
        else:
            on_error(error)
    return good


def commit_offsets(consumer: Consumer, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit ``{(topic, partition): next offset}`` synchronously; KafkaException if refused
    (partitions taken away meanwhile)."""
    consumer.commit(
        offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
        asynchronous=False,
    )
