"""The one place confluent-kafka clients are configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from joulestream.settings import SOURCE_REFRESH_MS, bootstrap_servers, librdkafka_passthrough

# murmur2_random matches the Java/aiokafka (faust) partitioner, so samples and power readings of
# one node land on the same partition number as faust expects (docs/architecture.md,
# 'Kafka contract').
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "zstd",
    "linger.ms": 50,
    "partitioner": "murmur2_random",
}
# Agents (and loadgen, which stands in for them) keep zstd's default level 3 on purpose:
# librdkafka sizes zstd's tables for the level, not for the ~3 KB batch an agent sends per
# interval. Level 9 packed samples ~1 % smaller (0.25 B per workload-sample) but cost each agent
# ~9 MiB more resident memory (53 vs 44 MiB) and ~3x the CPU per batch; level 12, 27 ms per
# batch (bench/RESULTS.md, 'Agent overhead', 2026-11-30; docs/architecture.md, 'Kafka contract').
AGENT_PRODUCER: dict[str, Any] = {"compression.level": 3}
# Readers of every source topic (archive sink; Topics.source_pattern) look for newly made
# per-cluster topics this often; a JOULESTREAM_KAFKA_* setting still wins.
SOURCE_READER: dict[str, Any] = {"topic.metadata.refresh.interval.ms": SOURCE_REFRESH_MS}


def _base(bootstrap: str | None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers(bootstrap), **librdkafka_passthrough()}


def producer(bootstrap: str | None = None, **overrides: Any) -> Producer:
    return Producer({**_base(bootstrap), **PRODUCER_DEFAULTS, **overrides})


def consumer(group_id: str, bootstrap: str | None = None, **overrides: Any) -> Consumer:
    """At-least-once consumer: offsets are stored by the caller after its output is durable."""
    return _consumer({}, group_id, bootstrap, overrides)


def source_consumer(group_id: str, bootstrap: str | None = None, **overrides: Any) -> Consumer:
    """``consumer`` for a subscription to every source topic (``Topics.source_pattern``): it
    looks for new per-cluster topics every SOURCE_REFRESH_MS unless the environment says."""
    return _consumer(SOURCE_READER, group_id, bootstrap, overrides)


def _consumer(
    defaults: Mapping[str, Any], group_id: str, bootstrap: str | None, overrides: Mapping[str, Any]
) -> Consumer:
    config = {
        **defaults,
        **_base(bootstrap),
        "group.id": group_id,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **overrides,
    }
    return Consumer(config)


def admin(
    bootstrap: str | None = None, security: Mapping[str, str] | None = None, **overrides: Any
) -> AdminClient:
    """``security`` replaces the JOULESTREAM_KAFKA_* settings (a local broker's own probe)."""
    if security is None:
        return AdminClient({**_base(bootstrap), **overrides})
    return AdminClient({"bootstrap.servers": bootstrap_servers(bootstrap), **security, **overrides})
