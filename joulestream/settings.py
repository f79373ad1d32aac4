"""Settings every part shares: where Kafka is and what the topics are called."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_LIBRDKAFKA_ENV_PREFIX = "JOULESTREAM_KAFKA_"
SourceKind = Literal["samples", "power"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("samples", "power")
# How often a pattern subscription looks for new matching topics (librdkafka's
# topic.metadata.refresh.interval.ms, 300 s by default): a cluster onboarded while a reader
# runs is read within this long, as the processor's rescan does (docs/architecture.md,
# 'Kafka contract').
SOURCE_REFRESH_MS = 10_000
_SOURCE_NAME = re.compile(
    r"^(?P<prefix>.*)joulestream\.(?P<kind>samples|power)\.v1(?:\.(?P<cluster>.+))?$"
)


def bootstrap_servers(cli_value: str | None = None) -> str:
    return cli_value or os.environ.get("JOULESTREAM_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)


def librdkafka_passthrough() -> dict[str, str]:
    """TLS/SASL and other client settings: ``JOULESTREAM_KAFKA_SASL_MECHANISM=PLAIN``
    becomes ``sasl.mechanism=PLAIN`` for every producer, consumer and admin client."""
    return {
        key[len(_LIBRDKAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for key, value in os.environ.items()
        if key.startswith(_LIBRDKAFKA_ENV_PREFIX)
    }


@dataclass(frozen=True)
class Topics:
    """Topic names (docs/architecture.md, 'Kafka contract'); ``prefix`` lets several pipelines
    share one broker."""

    prefix: str = field(default_factory=lambda: os.environ.get("JOULESTREAM_TOPIC_PREFIX", ""))

    def _name(self, base: str) -> str:
        return f"{self.prefix}joulestream.{base}.v1"

    @property
    def samples(self) -> str:
        return self._name("samples")

    @property
    def power(self) -> str:
        return self._name("power")

    @property
    def energy(self) -> str:
        return self._name("energy")

    @property
    def models(self) -> str:
        return self._name("models")

    @property
    def grid(self) -> str:
        return self._name("grid")

    @property
    def deadletter(self) -> str:
        return self._name("deadletter")

    def sources_of(self, cluster: str) -> tuple[str, str]:
        """A cluster's own samples and power topics: only its principal may write them, and
        the processor accepts on them only records of that cluster (docs/architecture.md,
        'Security'). Same partition count as the shared ones: co-partitioned."""
        return f"{self.samples}.{cluster}", f"{self.power}.{cluster}"

    def source_cluster(self, topic: str) -> str | None:
        """The cluster a per-cluster source topic belongs to; None for other topics."""
        for shared in (self.samples, self.power):
            if topic.startswith(shared + ".") and len(topic) > len(shared) + 1:
                return topic[len(shared) + 1 :]
        return None

    def source_kind(self, topic: str) -> SourceKind | None:
        """``samples`` or ``power`` for a source topic of the pipeline (the shared one or a
        cluster's own), None for any other topic. Every reader of the sources (processor,
        archive sink, replay, training) asks this, so they agree on what is a source."""
        for kind in SOURCE_KINDS:
            shared = getattr(self, kind)
            if topic == shared or (topic.startswith(shared + ".") and len(topic) > len(shared) + 1):
                return kind
        return None

    def source_topics(self, names: Iterable[str], kind: SourceKind) -> list[str]:
        """The source topics of ``kind`` among ``names`` (a broker's topic list), sorted."""
        return sorted(name for name in names if self.source_kind(name) == kind)

    def source_pattern(self, kind: SourceKind) -> str:
        """A subscription (librdkafka regex: the leading ``^`` makes it one) to the shared
        topic of ``kind`` and every per-cluster one, those made later included: the consumer
        finds new ones on its metadata refresh (SOURCE_REFRESH_MS)."""
        literal = re.sub(r"([^A-Za-z0-9_-])", r"\\\1", getattr(self, kind))
        return f"^{literal}(\\..+)?$"

    @classmethod
    def of_source(cls, topic: str) -> tuple[Topics, SourceKind, str | None] | None:
        """The topic set, kind and (for a cluster's own topic) cluster of a source topic of
        any prefix, e.g. a topic archived by another pipeline; None for other names."""
        match = _SOURCE_NAME.match(topic)
        if match is None:
            return None
        kind: SourceKind = "samples" if match["kind"] == "samples" else "power"
        return cls(prefix=match["prefix"]), kind, match["cluster"]

    def group(self, name: str) -> str:
        """A consumer group, static member or transactional id under the topic prefix, so that
        pipelines sharing a broker never meet in a group (docs/architecture.md, 'Kafka
        contract')."""
        return f"{self.prefix}{name}"

    def co_partitioned(self) -> tuple[str, str, str]:
        return (self.samples, self.power, self.energy)

    def compacted(self) -> tuple[str, str]:
        return (self.models, self.grid)

    def all(self) -> tuple[str, ...]:
        return (*self.co_partitioned(), *self.compacted(), self.deadletter)


STORE_DSN_ENV = "JOULESTREAM_STORE_DSN"


def cluster_topics() -> bool:
    """Whether agents write their cluster's own source topics (``JOULESTREAM_CLUSTER_TOPICS=1``,
    printed by ``joulestream kafka credentials --cluster NAME``) instead of the shared ones."""
    return os.environ.get("JOULESTREAM_CLUSTER_TOPICS", "") == "1"


def state_home() -> Path:
    """Where a single-machine joulestream keeps its state (Kafka data, the store, logs):
    ``$XDG_DATA_HOME/joulestream``, ``~/.local/share/joulestream`` by default."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "joulestream"


def store_dsn_in(state_dir: Path) -> str:
    """The SQLite store under a state directory (what ``joulestream up`` writes)."""
    return f"sqlite:///{(state_dir / 'joulestream.db').resolve()}"


def default_store_dsn() -> str:
    """The store ``joulestream sink store`` writes and ``joulestream report`` reads unless
    told otherwise: $JOULESTREAM_STORE_DSN, else the one ``joulestream up`` writes by default."""
    return os.environ.get(STORE_DSN_ENV) or store_dsn_in(state_home())
