"""One Kafka message as one archive row: its original bytes plus a few decoded columns."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from confluent_kafka._types import HeadersType

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import CodecError
from joulestream.sinks.archive.layout import RECORD_OF_KIND, Kind

Row = dict[str, Any]


def _key_parts(key: bytes | None) -> tuple[str | None, str | None]:
    """``<cluster>/<node>`` of the Kafka key (docs/architecture.md, 'Kafka contract'), or
    (None, None)."""
    if not key:
        return None, None
    try:
        cluster, sep, node = key.decode().partition("/")
    except UnicodeDecodeError:
        return None, None
    return (cluster, node) if sep else (None, None)


def _headers(headers: HeadersType | None) -> list[dict[str, Any]] | None:
    """As consumed: a list of (name, bytes or None); the client's types also allow a dict."""
    if headers is None:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [{"key": k, "value": v.encode() if isinstance(v, str) else v} for k, v in pairs]


def message_row(message: Message, kind: Kind, codec: Codec) -> Row:
    """Never raises on the message's content: what does not decode is archived raw, with
    ``decode_error`` set and cluster/node taken from the key where it has them."""
    kafka_type, kafka_ms = message.timestamp()
    timestamp_ms = None if kafka_type == TIMESTAMP_NOT_AVAILABLE else kafka_ms
    key = message.key()
    value = message.value()
    headers = message.headers()
    row: Row = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": timestamp_ms,
        "key": key,
        "value": value,
        "headers": _headers(headers),
        "end_ns": None,
        "agent_instance": None,
        "seq": None,
        "decode_error": None,
    }
    try:
        record = codec.decode(value or b"", expect=RECORD_OF_KIND[kind])
    except CodecError as exc:
        cluster, node = _key_parts(key)
        row.update(
            time_ns=(timestamp_ms or 0) * 1_000_000,
            cluster=cluster,
            node=node,
            decode_error=f"{exc.reason}: {exc}",
        )
        return row
    row.update(
        cluster=record["cluster"],
        node=record["node"],
        agent_instance=record["agent_instance"],
        seq=record["seq"],
    )
    if kind == "samples":
        row.update(time_ns=record["window_start_ns"], end_ns=record["window_end_ns"])
    else:
        row.update(time_ns=record["timestamp_ns"])
    return row
