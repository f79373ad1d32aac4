"""Avro records of the pipeline (docs/architecture.md, 'Records'), their codec and errors."""

from typing import Any

Record = dict[str, Any]
"""A decoded Avro record (what Codec.decode returns and Codec.encode takes)."""
