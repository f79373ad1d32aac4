"""Where archived messages live and what an archive file holds.

``ROOT/<kind>/cluster=<cluster>/hour=<YYYY-MM-DDTHH>/part-<partition>-<first>-<last>.parquet``:
kind is ``samples`` or ``power``; the hour is the UTC hour of the record's own time (window
start or reading timestamp), so a time range maps to a few directories. A file holds messages
of one topic partition only, and its name gives the first and last offset inside it: names are
a function of content, so writing the same messages again replaces a file instead of adding one.
A file of a cluster's own source topic (``<samples>.<cluster>``, docs/architecture.md, 'Kafka
contract') says whose before the suffix,
``part-<partition>-<first>-<last>.topic=<cluster>.parquet``, since its offsets overlap those of
the shared topic and of other clusters' topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

import pyarrow as pa

Kind = Literal["samples", "power"]
KINDS: tuple[Kind, ...] = ("samples", "power")
RECORD_OF_KIND: dict[Kind, str] = {"samples": "NodeSample", "power": "PowerReading"}

NS_PER_HOUR = 3600 * 1_000_000_000
UNKNOWN_CLUSTER_DIR = "cluster=_unknown"  # neither the record nor the key names a cluster
_HOUR_FORMAT = "%Y-%m-%dT%H"
_PART = re.compile(
    r"^part-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)(?:\.topic=(?P<topic>[^.]+))?\.parquet$"
)
TEMP_MARKER = ".tmp-"  # temporary files are ``.<final name>.tmp-<unique>``, hidden and ignored

# One row per Kafka message. key/value/headers are the original bytes; the rest is decoded for
# filtering, and null where the message did not decode (``decode_error`` says why).
SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp_ms", pa.int64()),  # Kafka message timestamp, null if none
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field(
            "headers",
            pa.list_(
                pa.struct(
                    [pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())]
                )
            ),
        ),
        # Record time (window start / reading timestamp); the Kafka timestamp if undecodable.
        pa.field("time_ns", pa.int64(), nullable=False),
        pa.field("end_ns", pa.int64()),  # window end of a NodeSample
        pa.field("cluster", pa.string()),
        pa.field("node", pa.string()),
        pa.field("agent_instance", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("decode_error", pa.string()),
    ]
)


def _encoded(cluster: str) -> str:
    """Percent-encoded (dots too), so any cluster name is one safe path component."""
    return quote(cluster, safe="").replace(".", "%2E")


def cluster_dir(cluster: str | None) -> str:
    if cluster is None:
        return UNKNOWN_CLUSTER_DIR
    return "cluster=" + _encoded(cluster)


def cluster_of_dir(name: str) -> str | None:
    if name == UNKNOWN_CLUSTER_DIR:
        return None
    return unquote(name.removeprefix("cluster="))


def hour_of(time_ns: int) -> datetime:
    return datetime.fromtimestamp(time_ns // NS_PER_HOUR * 3600, tz=UTC)


def hour_dir(hour: datetime) -> str:
    return f"hour={hour:{_HOUR_FORMAT}}"


def hour_of_dir(name: str) -> datetime | None:
    """The hour a directory stands for, or None if it is not an hour directory."""
    try:
        return datetime.strptime(name.removeprefix("hour="), _HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def hour_range_ns(hour: datetime) -> tuple[int, int]:
    start = int(hour.timestamp()) * 1_000_000_000
    return start, start + NS_PER_HOUR


def next_hour(hour: datetime) -> datetime:
    return hour + timedelta(hours=1)


@dataclass(frozen=True)
class PartName:
    partition: int
    first: int
    last: int
    topic_cluster: str | None = None  # whose own source topic; None: the shared one

    @property
    def filename(self) -> str:
        topic = "" if self.topic_cluster is None else f".topic={_encoded(self.topic_cluster)}"
        return f"part-{self.partition}-{self.first}-{self.last}{topic}.parquet"

    @classmethod
    def parse(cls, filename: str) -> PartName | None:
        match = _PART.match(filename)
        if match is None:
            return None
        topic = None if match["topic"] is None else unquote(match["topic"])
        return cls(int(match["partition"]), int(match["first"]), int(match["last"]), topic)


def part_path(root: Path, kind: Kind, cluster: str | None, hour: datetime, name: PartName) -> Path:
    return root / kind / cluster_dir(cluster) / hour_dir(hour) / name.filename


def part_files(root: Path, kind: Kind) -> list[tuple[Path, PartName]]:
    """Every finished file of ``kind`` (temporary and foreign files are not listed)."""
    found: list[tuple[Path, PartName]] = []
    kind_dir = root / kind
    if not kind_dir.is_dir():
        return found
    for cluster in sorted(kind_dir.iterdir()):
        if not cluster.is_dir():
            continue
        for hour in sorted(cluster.iterdir()):
            if not hour.is_dir() or hour_of_dir(hour.name) is None:
                continue
            for file in sorted(hour.iterdir()):
                name = PartName.parse(file.name)
                if name is not None:
                    found.append((file, name))
    return found
