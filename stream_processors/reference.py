"""Reference data every worker needs whole: power models and grid intensities.

The models and grid topics are compacted and small, and each worker must see all of their
partitions (a node of any partition may need any model), so they are not faust agents (which
would split partitions between workers) but a background consumer that assigns every partition
from the start and never commits. Updates apply while the processor runs (hot reload); at
start-up the processor waits until both topics are read to their end, so a restarted worker
prices and estimates windows exactly as before.

A bad record (undecodable, bad feature names, NaN/inf, negative intensity) is dead-lettered
with its reason and counted; it never replaces a good model.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from joulestream.kafka.clients import consumer, producer
from joulestream.models.artifact import PowerModel
from joulestream.models.selection import ModelSet
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.settings import Topics
from joulestream.stream_processors.attribution import Carbon
from joulestream.stream_processors.carbon import CarbonConfig, GridIntensities
from joulestream.stream_processors.deadletter import dead_letter_headers

log = logging.getLogger(__name__)

DeadLetterCount = Callable[[str], None]


class ReferenceData:
    """Models and grid intensities, updated by ``apply`` (from any thread), read by the join."""

    def __init__(self, carbon: CarbonConfig, shipped: list[PowerModel]) -> None:
        self.carbon_config = carbon
        self._shipped = ModelSet.of(shipped)
        self._published: dict[bytes, PowerModel] = {}  # models topic key → model
        self._models = self._shipped
        self._grid = GridIntensities()
        self._lock = threading.Lock()
        self.codec = Codec()

    def models(self) -> ModelSet:
        return self._models  # an immutable snapshot: swapped whole, never mutated

    def pricing(self, cluster: str, t_ns: int) -> Carbon:
        with self._lock:
            return self.carbon_config.carbon(cluster, t_ns, self._grid)

    def apply_model(self, key: bytes | None, value: bytes | None) -> None:
        """A models-topic message; raises CodecError/ModelRejected for a bad one."""
        slot = key or b""
        if value is None:  # tombstone: the model under this key is withdrawn
            self._published.pop(slot, None)
        else:
            model = PowerModel.from_record(self.codec.decode(value, expect="PowerModel"))
            self._published[slot] = model
            log.info("power model %s loaded for zone %s", model.id, model.zone)
        models = self._shipped
        for model in sorted(self._published.values(), key=lambda m: m.id):
            models = models.with_model(model)
        self._models = models

    def apply_grid(self, value: bytes | None) -> None:
        if value is None:
            return
        record = self.codec.decode(value, expect="GridIntensity")
        with self._lock:
            self._grid.add(record)


class ReferenceReader:
    """The background consumer feeding a ReferenceData from the models and grid topics."""

    def __init__(
        self,
        data: ReferenceData,
        bootstrap_servers: str,
        topics: Topics,
        on_dead_letter: DeadLetterCount,
    ) -> None:
        self.data = data
        self.topics = topics
        self.bootstrap = bootstrap_servers
        self.on_dead_letter = on_dead_letter
        self.dead_letters: Counter[str] = Counter()
        self._consumer: Consumer = consumer(
            f"{topics.prefix}joulestream-reference-unused", bootstrap_servers,
            **{"enable.auto.commit": False, "enable.partition.eof": True},
        )  # fmt: skip
        self._producer = producer(bootstrap_servers)
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reference-data", daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        """Assign every partition from the beginning and read up to the current end."""
        metadata = self._consumer.list_topics(timeout=timeout_s)
        assignment: list[TopicPartition] = []
        self._ends: dict[tuple[str, int], int] = {}
        for topic in (self.topics.models, self.topics.grid):
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise RuntimeError(f"topic {topic} does not exist; create the topics first")
            for partition in info.partitions:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout_s
                )
                if high > 0:
                    self._ends[(topic, partition)] = high
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        self._consumer.assign(assignment)
        self._thread.start()
        if not self._caught_up.wait(timeout_s):
            raise RuntimeError(f"models/grid topics not read within {timeout_s} s")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._producer.flush(10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._ends:
                    self._caught_up.set()
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                tp = (str(msg.topic()), int(msg.partition() or 0))
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._ends.pop(tp, None)
                    else:
                        log.warning("reference data: %s", error)
                    continue
                self._handle(msg)
                if tp in self._ends and int(msg.offset() or 0) + 1 >= self._ends[tp]:
                    del self._ends[tp]
        finally:
            self._consumer.close()

    def _handle(self, msg: Any) -> None:
        try:
            if msg.topic() == self.topics.models:
                self.data.apply_model(msg.key(), msg.value())
            else:
                self.data.apply_grid(msg.value())
        except RejectedInput as exc:
            self._dead_letter(msg, exc.reason, str(exc))
        except Exception as exc:  # a bug must cost one record, not the reader
            log.exception("reference record %s@%d failed", msg.topic(), msg.offset())
            self._dead_letter(msg, "processing-error", repr(exc))

    def _dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        log.warning(
            "dead letter %s from %s[%d]@%d: %s",
            reason, msg.topic(), msg.partition(), msg.offset(), detail,
        )  # fmt: skip
        self.on_dead_letter(reason)
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value)
            for name, value in dead_letter_headers(
                reason, detail, msg.topic(), msg.partition(), msg.offset()
            )
        ]
        self._producer.produce(
            self.topics.deadletter,
            key=msg.key(),
            value=msg.value() or b"",
            headers=headers,
        )
        self._producer.poll(0)
