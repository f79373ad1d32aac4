"""The faust wiring of the join: Kafka in, NodeEnergy and dead letters out (docs/architecture.md,
'Algorithms' and 'Reliability').

One agent consumes samples and power readings together, so the order of a node's messages is
handled in one place. All decisions are made by ``core.Core`` (shared with recompute and
training); this module only moves bytes. Samples waiting for a covering reading stay in memory,
bounded, and their source offsets are not acknowledged until their window is produced.

Values and keys are raw bytes decoded with our Codec: faust's own deserialisation crashes the
agent on the first bad message, here a bad message is dead-lettered and counted.

One changelogged table holds each node's state in one binary value (``state``): its progress
(seqs done, learned idle baseline) and its power series. It is written once per lateness tick
for each node whose windows were delivered since the last (once per window live, once per
several when a backlog drains), so a crash can repeat a window (byte-identical: outputs are a
pure function of the inputs and this state) but never lose one; windows and readings are
acknowledged when such a write holds them. Power models and grid intensities come from
``reference`` (every worker reads those topics whole).

faust writes its local state under ``datadir``: that is ``--state-dir``, never the working
directory. TLS/SASL: the same ``JOULESTREAM_KAFKA_*`` settings that configure librdkafka
(``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``) become faust broker
credentials; other librdkafka settings have no aiokafka equivalent and are ignored here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, methodcaller
from pathlib import Path
from typing import Any, cast

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic
from faust.auth import SASLCredentials, SSLCredentials
from faust.types import TP, EventT

from joulestream.kafka.clients import admin
from joulestream.kafka.topics import partition_counts
from joulestream.models.default import default_model
from joulestream.schemas import node_key
from joulestream.schemas.errors import CodecError, RejectedInput
from joulestream.settings import Topics, librdkafka_passthrough
from joulestream.stream_processors.acks import InOrderAcks
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.carbon import CarbonConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.deadletter import dead_letter_headers
from joulestream.stream_processors.faust_parts import (
    DirectConsumer,
    HashingPartitioner,
    IdempotentProducer,
    LeanMonitor,
    RawSchema,
)
from joulestream.stream_processors.join import (
    DEFAULT_MAX_READINGS,
    PowerSeries,
)
from joulestream.stream_processors.metrics import ProcessorStats, serve
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.reference import ReferenceData, ReferenceReader
from joulestream.stream_processors.sequence import OffsetSequence
from joulestream.stream_processors.sources import RESCAN_S, check_cluster, cluster_sources
from joulestream.stream_processors.state import decode_state, encode_state
from joulestream.stream_processors.validation import (
    DEFAULT_MAX_WORKLOADS,
)
from joulestream.stream_processors.watches import RecoveryWatch, StreamWatch
from joulestream.stream_processors.windows import Emitted

log = logging.getLogger(__name__)

Event = EventT[Any]  # a Kafka message in faust; raw bytes key and value

DEFAULT_APP_ID = "joulestream-processor"
DEFAULT_SESSION_TIMEOUT_S = 15.0
DEFAULT_LATENESS_S = 10.0
STATE_TABLE = "node-state"
# Readings that no window's state write has saved yet are written on their own after this long
# (a node whose samples stopped): their offsets wait for it.
FLUSH_AFTER_S = 5.0
PRODUCER_BATCH_BYTES = 1_000_000  # = aiokafka's max request size
PRODUCER_LINGER_S = 0.05  # linger >= 50 ms (docs/architecture.md, 'Kafka contract')
# A 100-workload window allocates ~1,000 short-lived containers (the decoded sample, the records
# for the encoder). At CPython's default gen-0 threshold of 700 the collector ran ~600 times per
# 1,000 windows and its older generations rescanned everything faust had built at start-up:
# 0.26-0.32 ms per window, ~8 % of a worker's CPU (bench/RESULTS.md, 2026-11-28).
GC_THRESHOLDS = (50_000, 20, 10)


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/joulestream/processor`` (``~/.local/state/...``), else a temp dir."""
    base = os.environ.get("XDG_STATE_HOME") or (
        str(Path.home() / ".local" / "state") if Path.home().is_dir() else tempfile.gettempdir()
    )
    return Path(base) / "joulestream" / "processor"


class StartupError(RuntimeError):
    """The processor refuses to start; the message says what to fix."""


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    topics: Topics
    app_id: str = DEFAULT_APP_ID
    lateness_s: float = DEFAULT_LATENESS_S
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    web_port: int = 0  # 0: faust's web server is off
    # A worker that dies holds its partitions until the broker stops hearing from it: faust's
    # 60 s default stalls every node of those partitions for a minute after a crash.
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    store: str = "memory://"
    max_readings: int = DEFAULT_MAX_READINGS
    max_workloads: int = DEFAULT_MAX_WORKLOADS
    default_model: bool = True
    learn_idle: bool = False
    metrics_port: int | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    cluster_sources: tuple[str, ...] = ()  # per-cluster source topics (sources.py)

    @property
    def changelog_topic(self) -> str:
        """faust's name for the node-state table's changelog."""
        return f"{self.faust_id}-{STATE_TABLE}-changelog"

    @property
    def changelog_topics(self) -> tuple[str, ...]:
        return (self.changelog_topic,)

    @property
    def faust_id(self) -> str:
        """Consumer group and table topic prefix; carries the topic prefix so that pipelines
        sharing a broker never share a group."""
        return f"{self.topics.prefix}{self.app_id}"


def faust_broker_url(bootstrap_servers: str) -> str:
    """``host1:9092,host2:9092`` → ``kafka://host1:9092;kafka://host2:9092``."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def used_topics(topics: Topics) -> tuple[str, ...]:
    """What a worker reads or writes, all of which must exist before it starts."""
    return (
        topics.samples,
        topics.power,
        topics.energy,
        topics.deadletter,
        topics.models,
        topics.grid,
    )


def co_partition_count(bootstrap_servers: str, topics: Topics, timeout_s: float = 15.0) -> int:
    """Partition count shared by the samples and power topics, or StartupError.

    The join looks a node's power series up in the partition its sample arrived on; with
    different counts a node's readings and samples land on different partitions and never meet.
    """
    needed = used_topics(topics)
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
    """Create the node-state table's changelog (compacted, co-partitioned) before faust starts.

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
                    "it (node states restart empty) or use another --app-id"
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


def broker_credentials(config: Mapping[str, str]) -> SASLCredentials | SSLCredentials | None:
    """faust/aiokafka credentials from librdkafka-style settings (``JOULESTREAM_KAFKA_*``)."""
    protocol = config.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(  # ssl.ca.pem: the CA inline (a Secret)
            ssl.Purpose.SERVER_AUTH,
            cafile=config.get("ssl.ca.location"),
            cadata=config.get("ssl.ca.pem"),
        )
        if "ssl.certificate.location" in config:
            context.load_cert_chain(
                config["ssl.certificate.location"],
                config.get("ssl.key.location"),
                config.get("ssl.key.password"),
            )
    if protocol == "SSL":
        assert context is not None
        return SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return SASLCredentials(
            username=config.get("sasl.username"),
            password=config.get("sasl.password"),
            mechanism=config.get("sasl.mechanism", "PLAIN"),
            ssl_context=context,
        )
    raise StartupError(f"security.protocol {protocol!r} is not supported by the processor")


class Processor:
    """A faust app running the join; build it, then ``run()`` it."""

    def __init__(self, settings: ProcessorSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        # Deserialised power series of this worker's nodes; the table (with the unsaved
        # readings) is the source of truth and the cache is dropped when partitions move.
        self._series_cache: dict[str, PowerSeries] = {}
        # Readings in a cached series that no state write holds yet: node → (since, events).
        self._unsaved: dict[str, tuple[float, list[Event]]] = {}
        self._saved_progress: dict[str, NodeProgress] = {}  # as last written
        # Delivered windows whose state write waits for the next tick: node → (source partition,
        # progress after its latest delivered window, tokens acknowledged by that write).
        self._pending: dict[str, tuple[TP, NodeProgress, list[Event]]] = {}
        # Offsets are released to faust in arrival order per partition (see stream_processors.acks).
        self.acks: InOrderAcks[Event] = InOrderAcks(attrgetter("message.tp"), methodcaller("ack"))
        self.stats = ProcessorStats()
        shipped = [default_model()] if settings.default_model else []
        self.reference = ReferenceData(settings.carbon, shipped)
        self.core: Core[Event] = Core.from_settings(settings, self.reference, self._progress_of)
        self.stats.duplicates = lambda: self.core.join.duplicates
        self.stats.gap_seqs = lambda: self.core.join.gap_seqs
        self.stats.pending = lambda: self.core.join.pending
        self.stats.held = lambda: self.acks.held
        # Each source partition handled as an unbroken run of offsets (stream_processors.sequence).
        self.sequence = OffsetSequence()
        self.stats.rewinds = lambda: self.sequence.rewinds
        self.stats.absent_offsets = lambda: self.sequence.skipped
        topics = settings.topics
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.faust_id,
            broker=faust_broker_url(settings.bootstrap_servers),
            broker_credentials=broker_credentials(librdkafka_passthrough()),
            datadir=str(settings.state_dir / "{conf.name}-data"),
            store=settings.store,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=partitions,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.session_timeout_s,
            # Waiting samples hold acks back until their window is produced: on shutdown, commit
            # what is safe instead of waiting for them.
            stream_wait_empty=False,
            # A 100-workload window is ~14 KB: with aiokafka's default 16 KB batches and no
            # linger every window was its own acks=all request, one in flight per partition,
            # which capped the worker at ~130 windows/s while its CPU idled. Windows batch now.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            producer_linger=PRODUCER_LINGER_S,
            producer_acks=-1,  # all in-sync replicas (docs/architecture.md, 'Kafka contract')
            producer_compression_type="zstd",
            producer_partitioner=HashingPartitioner(),
            web_enabled=settings.web_port != 0,
            monitor=LeanMonitor(),
            web_port=settings.web_port or 6066,
        )
        # faust builds its producer and consumer from the transport's classes; this instance's
        # transport builds ours (faust has no setting for them).
        self.app.transport.Producer = IdempotentProducer  # type: ignore[misc]
        recovery_watch, stream_watch = RecoveryWatch(self.app), StreamWatch(self.app, self.sequence)
        self.stats.recovery_rereads = lambda: recovery_watch.rereads
        self.stats.stalled_rereads = lambda: stream_watch.rereads
        self.app.transport.Consumer = partial(  # type: ignore[misc,assignment]
            DirectConsumer, sequence=self.sequence, watches=(recovery_watch, stream_watch)
        )
        # One entry per node: progress + power series, binary (stream_processors.state).
        self.state = self.app.Table(
            STATE_TABLE, default=None, partitions=partitions, value_type=bytes
        )
        raw = RawSchema()
        self.source = self.app.topic(
            topics.samples, topics.power, *settings.cluster_sources, schema=raw
        )
        self._samples = {topics.samples} | {
            t for t in settings.cluster_sources if t.startswith(topics.samples + ".")
        }
        self.resubscribe = False  # new per-cluster topics: the CLI restarts the worker
        self.app.timer(RESCAN_S, name="cluster-sources")(self._rescan)
        self.energy = self.app.topic(topics.energy, schema=raw)
        self.deadletter = self.app.topic(topics.deadletter, schema=raw)
        self.app.agent(self.source, name="join")(self._consume)
        self.app.timer(self.core.tick_s, name="lateness")(self._expire)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        # Before faust's final commit: the pending writes, so that a clean stop repeats nothing.
        self.app.on_before_shutdown.connect(self._on_shutdown)

    def run(self) -> int:
        """Run the worker until SIGINT/SIGTERM; returns the exit code."""
        settings = self.settings
        reader = ReferenceReader(
            self.reference, settings.bootstrap_servers, settings.topics, self._count_dead
        )
        reader.start()
        if settings.metrics_port is not None:
            serve(self.stats, settings.metrics_port)
        worker = faust.Worker(self.app, loglevel="INFO", redirect_stdouts=False)
        gc.freeze()  # what exists now lives as long as the worker: keep it out of every scan
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        finally:
            reader.stop()
        return 0

    async def _consume(self, stream: Any) -> None:
        # Manual acks: a message is acknowledged once everything it causes is produced.
        async for event in stream.noack().events():
            await self.handle(event)

    async def handle(self, event: Event) -> None:
        message = event.message
        if not await cast(DirectConsumer, self.app.consumer).admit(message.tp, message.offset):
            return  # handled already, or after offsets the consumer skipped (read again)
        self.acks.received(event)
        value = message.value
        try:
            now_ns = time.time_ns()
            check_cluster(self.settings.topics, message.topic, message.key)
            if message.topic in self._samples:
                emitted = self.core.sample(
                    message.key, value, self._series_of, event, time.monotonic(), now_ns
                )
                if emitted is None:  # a duplicate: its window exists already
                    self.acks.done(event)
                    return
            else:
                emitted = self._on_reading(event, now_ns)
        except RejectedInput as exc:
            await self._dead_letter(event, exc.reason, str(exc))
            return
        except Exception as exc:  # a bug must cost one message, not the worker
            log.exception("processing %s failed", message.topic)
            await self._dead_letter(event, "processing-error", repr(exc))
            return
        await self._send(emitted)

    def _on_reading(self, event: Event, now_ns: int) -> list[Emitted[Event]]:
        """The reading joins its node's series in memory; its offset is released once a write
        of the node's state that holds it is in the changelog (the next window's, or the
        flush after FLUSH_AFTER_S): faust's commit flushes its producer buffer for at most
        0.1 s, so an offset committed ahead of the write would, after a crash, leave the
        reading out of the restored series."""
        message = event.message
        key, series, changed = self.core.reading(
            message.key, message.value, self._series_of, now_ns
        )
        if not changed:
            self.acks.done(event)
            return []
        self._series_cache[key] = series
        self._unsaved.setdefault(key, (time.monotonic(), []))[1].append(event)
        return self.core.join.on_series(key, series)

    def _restored(self, key: str) -> tuple[NodeProgress, PowerSeries | None] | None:
        state = self.state.get(key)
        return None if state is None else decode_state(state)

    def _series_of(self, key: str) -> PowerSeries | None:
        """The node's series, deserialised once from the table and then kept in memory (with
        the readings received since its last write).

        ``add_reading`` changes a series in place; a reading it rejects leaves it unchanged
        (it raises before inserting).
        """
        series = self._series_cache.get(key)
        if series is None:
            restored = self._restored(key)
            if restored is None or restored[1] is None:
                return None
            series = self._series_cache[key] = restored[1]
        return series

    def _progress_of(self, key: str) -> NodeProgress | None:
        restored = self._restored(key)
        return None if restored is None else restored[0]

    def _write_state(
        self, key: str, partition: int, progress: NodeProgress, tokens: list[Event]
    ) -> None:
        """One changelog write of the node's state; ``tokens`` and the readings it saves are
        acknowledged when it is written."""
        value = encode_state(progress, self._series_of(key))
        self.state.data[key] = value
        self._saved_progress[key] = progress
        _since, readings = self._unsaved.pop(key, (0.0, []))
        written = self.state.send_changelog(partition, key, value)
        for event in (*readings, *tokens):
            written.add_done_callback(partial(self._ack_when_written, event))

    async def _rescan(self) -> None:
        """A cluster onboarded while running: stop cleanly (offsets committed), and the CLI
        starts the worker again in this process with the new topics."""
        settings = self.settings
        found = await asyncio.to_thread(
            cluster_sources, settings.bootstrap_servers, settings.topics, self.partitions
        )
        if set(found) - set(settings.cluster_sources) and not self.resubscribe:
            log.info("new cluster source topics %s: restarting the worker to read them", found)
            self.resubscribe = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _write_pending(self, drop: Set[TP] = frozenset()) -> None:
        """The state writes of delivered windows, one per node; those of partitions in
        ``drop`` are dropped instead (their offsets stay uncommitted)."""
        pending, self._pending = self._pending, {}
        for key, (tp, progress, tokens) in pending.items():
            if tp not in drop:
                self._write_state(key, tp.partition, progress, tokens)

    async def _expire(self) -> None:
        self._write_pending()
        now = time.monotonic()
        for key, (since, readings) in list(self._unsaved.items()):
            if now - since >= FLUSH_AFTER_S:
                progress = self._saved_progress.get(key) or self._progress_of(key)
                if progress is None:  # no window of the node yet
                    series = self._series_of(key)
                    assert series is not None  # it holds the unsaved readings
                    progress = NodeProgress(series.agent_instance)
                self._write_state(key, readings[0].message.partition, progress, [])
        await self._send(self.core.expire(now, self._series_of))

    async def _send(self, emitted: Iterable[Emitted[Event]]) -> None:
        """Windows go to the producer directly, not through faust's ``Topic.send``: its
        per-message FutureMessage, sensors and completion task were ~10 % of a draining
        worker's CPU (bench/RESULTS.md, 2026-11-30). Delivery is awaited by nobody: the
        callback writes state and acknowledges."""
        producer = None
        for window in emitted:
            energy = window.energy
            try:
                value = self.core.encode(energy)
            except CodecError as exc:  # a bug in attribution: keep the input, keep running
                log.exception("cannot encode the window of %s", window.key)
                await self._dead_letter(window.token, "encode-failed", str(exc))
                continue
            self.stats.window(energy.source, energy.window_end_ns)
            producer = producer or await self.app.maybe_start_producer()
            sent = await producer.send(
                self.settings.topics.energy,
                node_key(energy.cluster, energy.node),
                value,
                partition=None,
                timestamp=None,
                headers=None,
            )
            cast(asyncio.Future[Any], sent).add_done_callback(partial(self._delivered, window))

    def _delivered(self, window: Emitted[Event], sent: asyncio.Future[Any]) -> None:
        """Producer delivery callback: only now may the node's state (progress after this
        window, and its series) be written — at the next tick, one write for all the node's
        windows delivered by then — and, once the token's last window is out and that state
        is in the changelog, the source offset released for commit (a progress lost behind a
        committed offset would turn the next seq into a gap over windows that exist). A failed
        delivery writes and acknowledges nothing: the window is made again after a restart."""
        if sent.cancelled() or sent.exception() is not None:
            log.error("energy of %s not delivered; its input stays unacknowledged", window.key)
            return
        key = window.key
        pending = self._pending.get(key)
        tokens = [window.token] if window.last else []
        if window.progress is None:
            if pending is not None:  # behind a pending write: acknowledged with it
                pending[2].extend(tokens)
            elif window.last:
                self.acks.done(window.token)
            return
        progress = NodeProgress.from_state(window.progress)
        if pending is not None:
            tokens = pending[2] + tokens
        self._pending[key] = (window.token.message.tp, progress, tokens)

    def _count_dead(self, reason: str) -> None:
        self.stats.dead_letters[reason] += 1

    async def _dead_letter(self, event: Event, reason: str, detail: str) -> None:
        message = event.message
        self._count_dead(reason)
        log.warning(
            "dead letter %s from %s[%d]@%d: %s (dead letters so far: %s)",
            reason,
            message.topic,
            message.partition,
            message.offset,
            detail,
            dict(self.stats.dead_letters),
        )
        value = message.value if isinstance(message.value, bytes | bytearray) else b""
        await self.deadletter.send(
            key=message.key,
            value=bytes(value),
            headers=dead_letter_headers(
                reason, detail, message.topic, message.partition, message.offset
            ),
            callback=partial(self._ack_when_sent, event),
        )

    def _on_revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """Readings of revoked partitions that no state write saved go to the partitions' new
        owner (their offsets were not committed); those of kept partitions stay in memory,
        which is where they live until written."""
        revoked: Set[TP] = args[0]
        self.acks.revoke(revoked)
        self._write_pending(drop=revoked)
        for key, (_since, readings) in list(self._unsaved.items()):
            if any(event.message.tp in revoked for event in readings):
                del self._unsaved[key]
        self._keep_unsaved_series()
        self._saved_progress.clear()
        dropped = self.core.join.forget(lambda event: event.message.tp in revoked)
        if dropped:
            log.info("rebalance: %d waiting samples go to the partitions' new owner", dropped)

    async def _on_shutdown(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        self._write_pending()

    def _on_assigned(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """Tables are recovered from their changelogs after an assignment: series cached before
        it may be stale, so they are read from the table again (but for unsaved readings)."""
        self._keep_unsaved_series()

    def _keep_unsaved_series(self) -> None:
        self._series_cache = {k: v for k, v in self._series_cache.items() if k in self._unsaved}

    def _ack_when_sent(self, event: Event, _sent: Any) -> None:
        """Producer delivery callback: only now may the source offset be committed."""
        self.acks.done(event)

    def _ack_when_written(self, event: Event, written: asyncio.Future[Any]) -> None:
        """A changelog write's completion: a failed write leaves the offset uncommitted, so
        the message is processed again after a restart instead of being lost."""
        if not written.cancelled() and written.exception() is None:
            self.acks.done(event)
        else:
            log.error("changelog write failed; %s stays unacknowledged", event.message.tp)
