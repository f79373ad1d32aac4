"""Avro records of the pipeline (docs/architecture.md, 'Records'), their codec and errors."""

from typing import Any

Record = dict[str, Any]
"""A decoded Avro record (what Codec.decode returns and Codec.encode takes)."""


def node_id(cluster: str, node: str) -> str:
    """``<cluster>/<node>``: how a node is named in keys, state and messages."""
    return f"{cluster}/{node}"


def node_key(cluster: str, node: str) -> bytes:
    """The Kafka key of every record about a node (docs/architecture.md, 'Kafka contract')."""
    return node_id(cluster, node).encode()
