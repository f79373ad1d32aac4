"""The pipeline's topics (docs/architecture.md, 'Kafka contract'): creating them and checking
an existing layout.

Co-partitioning is what the per-node join relies on: samples, power and energy of one node
must land on the same partition number, which only holds while the three topics have the same
partition count. A mismatch is therefore an error here, never silently accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from joulestream.settings import Topics

_TIMEOUT = 30.0


class TopicLayoutError(RuntimeError):
    """Existing topics contradict the topic layout (partition counts or cleanup policy)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool

    @property
    def config(self) -> dict[str, str]:
        return {"cleanup.policy": "compact" if self.compacted else "delete"}


@dataclass(frozen=True)
class TopicState:
    """What the broker holds for one topic; ``partitions`` is None when it does not exist."""

    name: str
    compacted: bool
    partitions: int | None = None
    replication: int | None = None
    cleanup_policy: str | None = None
    min_insync_replicas: str | None = None

    @property
    def exists(self) -> bool:
        return self.partitions is not None


@dataclass(frozen=True)
class CreateResult:
    created: tuple[str, ...]
    existing: tuple[str, ...]


def topic_specs(topics: Topics, partitions: int) -> list[TopicSpec]:
    """Every topic gets ``partitions``; only models and grid are compacted (latest per key)."""
    compacted = set(topics.compacted())
    return [TopicSpec(name, partitions, name in compacted) for name in topics.all()]


def layout_problems(
    topics: Topics, states: list[TopicState], partitions: int | None = None
) -> list[str]:
    """Why the existing topics break the layout; empty when they are fine. Missing topics are not
    problems (they can be created); ``partitions`` is the count the caller wants."""
    by_name = {state.name: state for state in states}
    problems = []
    counts = {
        name: by_name[name].partitions
        for name in topics.co_partitioned()
        if name in by_name and by_name[name].exists
    }
    wanted = set(counts.values()) | ({partitions} if partitions is not None else set())
    if len(wanted) > 1:
        listed = ", ".join(f"{name} has {count}" for name, count in counts.items())
        requested = f" (requested {partitions})" if partitions is not None else ""
        problems.append(
            "co-partitioned topics must have the same partition count: "
            f"{listed}{requested}; recreate them or pass --partitions to match"
        )
    for state in states:
        if not state.exists or state.cleanup_policy is None:
            continue
        is_compacted = "compact" in state.cleanup_policy.split(",")
        if is_compacted != state.compacted:
            expected = "compact" if state.compacted else "delete"
            problems.append(
                f"{state.name} has cleanup.policy={state.cleanup_policy}, expected {expected}"
            )
    return problems


def partition_counts(
    admin_client: AdminClient, names: tuple[str, ...] | list[str], timeout: float = _TIMEOUT
) -> dict[str, int]:
    """Partition count of each named topic that exists; missing topics are left out."""
    metadata = admin_client.list_topics(timeout=timeout)
    return {
        name: len(metadata.topics[name].partitions)
        for name in names
        if name in metadata.topics and metadata.topics[name].error is None
    }


def inspect_topics(
    admin_client: AdminClient, topics: Topics, timeout: float = _TIMEOUT
) -> list[TopicState]:
    metadata = admin_client.list_topics(timeout=timeout)
    compacted = set(topics.compacted())
    present = [
        name
        for name in topics.all()
        if name in metadata.topics and metadata.topics[name].error is None
    ]
    configs = _configs(admin_client, present, timeout)
    states = []
    for name in topics.all():
        if name not in present:
            states.append(TopicState(name, name in compacted))
            continue
        partitions = metadata.topics[name].partitions
        first = partitions[min(partitions)] if partitions else None
        states.append(
            TopicState(
                name,
                name in compacted,
                partitions=len(partitions),
                replication=len(first.replicas) if first is not None else None,
                cleanup_policy=configs.get(name, {}).get("cleanup.policy"),
                min_insync_replicas=configs.get(name, {}).get("min.insync.replicas"),
            )
        )
    return states


def create_topics(
    admin_client: AdminClient,
    topics: Topics,
    partitions: int,
    replication: int | None = None,
    timeout: float = _TIMEOUT,
) -> CreateResult:
    """Create the missing topics; idempotent.

    Existing topics are checked first, and nothing is created when they contradict the layout (so a
    half-made, mismatched layout never appears). Checked again afterwards, which also catches
    a concurrent creator that used other settings.
    """
    if replication is None:
        replication = default_replication(admin_client, timeout)
    if partitions < 1 or replication < 1:
        raise ValueError(f"partitions and replication must be ≥ 1, got {partitions}, {replication}")
    states = inspect_topics(admin_client, topics, timeout)
    _raise_problems(topics, states, partitions)
    before = {state.name for state in states if state.exists}
    missing = [spec for spec in topic_specs(topics, partitions) if spec.name not in before]
    if missing:
        futures = admin_client.create_topics(
            [
                NewTopic(s.name, s.partitions, replication, config=_durability(s, replication))
                for s in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicLayoutError(f"creating {name} failed: {error.str()}") from exc
    states = _wait_until_visible(admin_client, topics, timeout)
    _raise_problems(topics, states, partitions)
    created = tuple(spec.name for spec in missing)
    return CreateResult(created=created, existing=tuple(sorted(before)))


def default_replication(admin_client: AdminClient, timeout: float = _TIMEOUT) -> int:
    """min(3, brokers): a real cluster keeps three copies (docs/architecture.md, 'Kafka
    contract'); a smaller one as many as it has."""
    return min(3, len(admin_client.list_topics(timeout=timeout).brokers))


def _durability(spec: TopicSpec, replication: int) -> dict[str, str]:
    """With three copies an acks=all write needs two of them: one broker may be down
    without refusing writes, and an acknowledged record is never on one disk only."""
    isr = {"min.insync.replicas": "2"} if replication >= 3 else {}
    return {**spec.config, **isr}


def _raise_problems(topics: Topics, states: list[TopicState], partitions: int) -> None:
    problems = layout_problems(topics, states, partitions)
    if problems:
        raise TopicLayoutError("; ".join(problems))


def _wait_until_visible(
    admin_client: AdminClient, topics: Topics, timeout: float
) -> list[TopicState]:
    """Created topics reach the broker's metadata cache shortly after the controller commits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = inspect_topics(admin_client, topics, timeout)
        except KafkaException:  # another broker does not know a new topic yet
            states = [TopicState(name, False) for name in topics.all()]
        missing = [state.name for state in states if not state.exists]
        if not missing:
            return states
        if time.monotonic() >= deadline:
            raise TopicLayoutError(f"topics still missing after creation: {', '.join(missing)}")
        time.sleep(0.1)


def _configs(
    admin_client: AdminClient, names: list[str], timeout: float
) -> dict[str, dict[str, str]]:
    """cleanup.policy and min.insync.replicas of each named topic."""
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin_client.describe_configs(resources, request_timeout=timeout)
    return {
        resource.name: {
            key: future.result()[key].value for key in ("cleanup.policy", "min.insync.replicas")
        }
        for resource, future in futures.items()
    }
