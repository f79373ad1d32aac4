"""NodeEnergy encoding on the hot path.

``Codec.encode`` validates every record with fastavro.validation first, which costs ~6x the
write itself for a 100-workload window (it builds error objects for every union branch it
tries). The processor's records come from ``attribution`` (typed, and encoded with validation
in its tests), so the hot path writes directly, in the same single object encoding, and only
when the writer fails does it re-encode through the validating codec for a clear error.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_writer

from schemas.codec import MAGIC, Codec


class FastEncoder:
    def __init__(self, codec: Codec, name: str) -> None:
        self.codec = codec
        self.name = name
        self.schema = codec.registry.latest(name)
        self.prefix = MAGIC + self.schema.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        """Raises the codec's SchemaViolation for a record the schema rejects."""
        buf = io.BytesIO()
        buf.write(self.prefix)
        try:
            schemaless_writer(buf, self.schema.parsed, record)
        except Exception:  # fastavro raises assorted errors: let the validator say what is wrong
            return self.codec.encode(self.name, record)
        return buf.getvalue()
