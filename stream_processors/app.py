"""The faust wiring of the join (DESIGN.md §7, §10): Kafka in, NodeEnergy and dead letters out.

One agent consumes samples and power readings together, so the order of a node's messages is
handled in one place. Power series are compact per-node state in a table (changelogged, so a
restarted worker recovers them); samples waiting for a covering reading stay in memory, bounded,
and their source offsets are not acknowledged until their window is produced. All decisions are
in ``windows``/``join``/``attribution``; this module only moves bytes.

Values and keys are raw bytes decoded with our Codec: faust's own deserialisation crashes the
agent on the first bad message, here a bad message is dead-lettered and counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic
from faust.types import TP, EventT

from joulestream.kafka.clients import admin
from joulestream.kafka.topics import partition_counts
from joulestream.settings import Topics, node_key
from schemas.codec import Codec
from schemas.errors import CodecError
from stream_processors.attribution import AttributionConfig
from stream_processors.join import DEFAULT_MAX_READINGS, PowerSeries, RejectedReading, add_reading
from stream_processors.validation import InvalidRecord, check_key, check_reading, check_sample
from stream_processors.windows import Emitted, WindowJoin

log = logging.getLogger(__name__)

Event = EventT[Any]  # a Kafka message in faust; raw bytes key and value

DEFAULT_APP_ID = "joulestream-processor"
DEFAULT_LATENESS_S = 10.0
SERIES_TABLE = "power-series"


class StartupError(RuntimeError):
    """The processor refuses to start; the message says what to fix."""


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    topics: Topics
    app_id: str = DEFAULT_APP_ID
    lateness_s: float = DEFAULT_LATENESS_S
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    web_port: int = 0  # 0: faust's web server is off
    store: str = "memory://"
    max_readings: int = DEFAULT_MAX_READINGS

    @property
    def changelog_topic(self) -> str:
        """faust's name for the series table's changelog."""
        return f"{self.faust_id}-{SERIES_TABLE}-changelog"

    @property
    def faust_id(self) -> str:
        """Consumer group and table topic prefix; carries the topic prefix so that pipelines
        sharing a broker never share a group."""
        return f"{self.topics.prefix}{self.app_id}"


def faust_broker_url(bootstrap_servers: str) -> str:
    """``host1:9092,host2:9092`` → ``kafka://host1:9092;kafka://host2:9092``."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def co_partition_count(bootstrap_servers: str, topics: Topics, timeout_s: float = 15.0) -> int:
    """Partition count shared by the samples and power topics, or StartupError.

    The join looks a node's power series up in the partition its sample arrived on; with
    different counts a node's readings and samples land on different partitions and never meet.
    """
    needed = (topics.samples, topics.power, topics.energy, topics.deadletter)
    counts = partition_counts(admin(bootstrap_servers), needed, timeout_s)
    missing = [t for t in needed if t not in counts]
    if missing:
        raise StartupError(
            f"topics {missing} do not exist on {bootstrap_servers}; create them first "
            "(joulestream topics create)"
        )
    samples, power = counts[topics.samples], counts[topics.power]
    if samples != power:
        raise StartupError(
            f"{topics.samples} has {samples} partitions but {topics.power} has {power}: the join "
            "needs them co-partitioned (same partition count); recreate or expand one of them"
        )
    return samples


def ensure_changelog(
    bootstrap_servers: str, name: str, partitions: int, timeout_s: float = 60.0
) -> None:
    """Create the series table's changelog (compacted, co-partitioned) before faust starts.

    faust would create it too, but gives up on the first broker error (e.g. a broker briefly
    fenced after a missed heartbeat) and never checks the partition count of an existing one,
    which would restore series into the wrong partitions.
    """
    client = admin(bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    while True:
        existing = partition_counts(client, [name], timeout_s).get(name)
        if existing is not None:
            if existing != partitions:
                raise StartupError(
                    f"{name} has {existing} partitions, the source topics {partitions}: delete "
                    "it (power series restart empty) or use another --app-id"
                )
            return
        topic = NewTopic(name, partitions, config={"cleanup.policy": "compact"})
        try:
            client.create_topics([topic], operation_timeout=timeout_s)[name].result()
            problem = "created but not yet visible"
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            problem = error.str()
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                log.warning("creating %s failed (%s); retrying", name, problem)
        if time.monotonic() >= deadline:
            raise StartupError(f"cannot create {name}: {problem}")
        time.sleep(0.5)


class Processor:
    """A faust app running the join; build it, then ``run()`` it."""

    def __init__(self, settings: ProcessorSettings, partitions: int) -> None:
        self.settings = settings
        self.codec = Codec()
        self.join: WindowJoin[Event] = WindowJoin(settings.attribution, settings.lateness_s)
        self.dead_letters: Counter[str] = Counter()
        topics = settings.topics
        self.app = faust.App(
            settings.faust_id,
            broker=faust_broker_url(settings.bootstrap_servers),
            store=settings.store,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=partitions,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            # Waiting samples hold acks back until their window is produced: on shutdown, commit
            # what is safe instead of waiting for them.
            stream_wait_empty=False,
            web_enabled=settings.web_port != 0,
            web_port=settings.web_port or 6066,
        )
        self.series = self.app.Table(
            SERIES_TABLE,
            default=None,
            partitions=partitions,  # changelog co-partitioned with the sources
        )
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.source = self.app.topic(topics.samples, topics.power, **raw)
        self.energy = self.app.topic(topics.energy, **raw)
        self.deadletter = self.app.topic(topics.deadletter, **raw)
        self.app.agent(self.source, name="join")(self._consume)
        self.app.timer(min(1.0, max(settings.lateness_s / 2, 0.05)), name="lateness")(self._expire)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    def run(self) -> int:
        """Run the worker until SIGINT/SIGTERM; returns the exit code."""
        worker = faust.Worker(self.app, loglevel="INFO", redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        return 0

    async def _consume(self, stream: Any) -> None:
        # Manual acks: a message is acknowledged once everything it causes is produced.
        async for event in stream.noack().events():
            await self.handle(event)

    async def handle(self, event: Event) -> None:
        message = event.message
        value = message.value
        try:
            if not isinstance(value, bytes | bytearray):
                raise InvalidRecord("no-value", "message has no value (tombstone)")
            now_ns = time.time_ns()
            if message.topic == self.settings.topics.samples:
                sample = self.codec.decode(bytes(value), expect="NodeSample")
                check_key(message.key, sample)
                check_sample(sample, now_ns)
                key = f"{sample['cluster']}/{sample['node']}"
                emitted = self.join.on_sample(
                    key, sample, self._series_of(key), event, time.monotonic()
                )
            else:
                reading = self.codec.decode(bytes(value), expect="PowerReading")
                check_key(message.key, reading)
                check_reading(reading, now_ns)
                emitted = self._on_reading(reading)
                event.ack()
        except (CodecError, InvalidRecord, RejectedReading) as exc:
            await self._dead_letter(event, exc.reason, str(exc))
            return
        except Exception as exc:  # a bug must cost one message, not the worker
            log.exception("processing %s failed", message.topic)
            await self._dead_letter(event, "processing-error", repr(exc))
            return
        await self._send(emitted)

    def _on_reading(self, reading: dict[str, Any]) -> list[Emitted[Event]]:
        key = f"{reading['cluster']}/{reading['node']}"
        series, changed = add_reading(self._series_of(key), reading, self.settings.max_readings)
        if not changed:
            return []
        self.series[key] = series.to_state()
        return self.join.on_series(key, series)

    def _series_of(self, key: str) -> PowerSeries | None:
        state = self.series.get(key)
        return None if state is None else PowerSeries.from_state(state)

    async def _expire(self) -> None:
        await self._send(self.join.expire(time.monotonic()))

    async def _send(self, emitted: Iterable[Emitted[Event]]) -> None:
        for window in emitted:
            record = window.record
            try:
                value = self.codec.encode("NodeEnergy", record)
            except CodecError as exc:  # a bug in attribution: keep the input, keep running
                log.exception("cannot encode the window of %s", window.key)
                await self._dead_letter(window.token, "encode-failed", str(exc))
                continue
            await self.energy.send(
                key=node_key(record["cluster"], record["node"]),
                value=value,
                callback=partial(_ack_when_sent, window.token),
            )

    async def _dead_letter(self, event: Event, reason: str, detail: str) -> None:
        message = event.message
        self.dead_letters[reason] += 1
        log.warning(
            "dead letter %s from %s[%d]@%d: %s (dead letters so far: %s)",
            reason,
            message.topic,
            message.partition,
            message.offset,
            detail,
            dict(self.dead_letters),
        )
        value = message.value if isinstance(message.value, bytes | bytearray) else b""
        await self.deadletter.send(
            key=message.key,
            value=bytes(value),
            headers=dead_letter_headers(
                reason, detail, message.topic, message.partition, message.offset
            ),
            callback=partial(_ack_when_sent, event),
        )

    def _on_revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        revoked: Set[TP] = args[0]
        dropped = self.join.forget(lambda event: event.message.tp in revoked)
        if dropped:
            log.info("rebalance: %d waiting samples go to the partitions' new owner", dropped)


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    return [
        ("reason", reason.encode()),
        ("detail", detail[:1000].encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


def _ack_when_sent(event: Event, _sent: Any) -> None:
    """Producer delivery callback: only now may the source offset be committed."""
    event.ack()
