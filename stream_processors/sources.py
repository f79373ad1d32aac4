"""Per-cluster source topics (docs/architecture.md, 'Security'): which ones a worker reads,
and the check that a record on cluster B's topic is B's.

Kafka's ACLs cannot look into keys, so a cluster's principal may write only its own source
topics (``<samples>.<cluster>``, ``<power>.<cluster>``), and the processor drops to the dead
letters any record whose cluster is not the topic's. faust subscribes to a fixed list of topics
(its pattern subscription does not work), so a worker reads the per-cluster topics that exist
when it starts, watches for new ones, and restarts itself in place when a cluster is onboarded.
"""

from __future__ import annotations

import logging

from joulestream.kafka.clients import admin
from joulestream.settings import Topics
from joulestream.stream_processors.validation import InvalidRecord

log = logging.getLogger(__name__)

RESCAN_S = 10.0


def cluster_sources(bootstrap: str, topics: Topics, partitions: int) -> tuple[str, ...]:
    """Every per-cluster source topic with the shared topics' partition count (others are
    said and skipped: their nodes would land on other workers than their series)."""
    metadata = admin(bootstrap).list_topics(timeout=15)
    found = []
    for name, info in sorted(metadata.topics.items()):
        if info.error is not None or topics.source_cluster(name) is None:
            continue
        if len(info.partitions) != partitions:
            log.error(
                "%s has %d partitions, the shared source topics %d: not read (recreate it)",
                name,
                len(info.partitions),
                partitions,
            )
            continue
        found.append(name)
    return tuple(found)


def check_cluster(topics: Topics, topic: str, key: bytes | None) -> None:
    """A record on a cluster's own topic must be of that cluster: only its principal could
    write there, so another cluster's name is an attempt to write that cluster's energy. The
    key is checked (``<cluster>/<node>``); the record must match its key (``check_key``)."""
    owner = topics.source_cluster(topic)
    if owner is None:
        return
    cluster = (key or b"").decode(errors="replace").partition("/")[0]
    if cluster != owner:
        raise InvalidRecord(
            "cluster-mismatch",
            f"record of cluster {cluster!r} on {topic}, which carries only cluster "
            f"{owner!r}'s records",
        )
