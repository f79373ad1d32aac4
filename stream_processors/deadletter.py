"""The dead-letter contract (docs/architecture.md, 'Reliability'): original key and bytes,
reason and origin in headers."""

from __future__ import annotations


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
