"""Avro single object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + body.

fastavro writes and reads the body; the prefix and the fingerprint lookup are ours. Every message
names its writer schema, and readers resolve it to the latest version of the same layout
(``SchemaRegistry.reader_of``).
"""

from __future__ import annotations

import io

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from joulestream.schemas import Record
from joulestream.schemas.errors import (
    NotSingleObjectEncoded,
    SchemaViolation,
    TruncatedMessage,
    UnknownFingerprint,
)
from joulestream.schemas.registry import RECORDS_LAYOUT, SchemaRegistry, SchemaVersion

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


class Codec:
    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or SchemaRegistry.shipped()

    def encode(
        self, name: str, record: Record, version: int | None = None, *, validate: bool = True
    ) -> bytes:
        """Raises SchemaViolation for a record the schema rejects.

        Without ``version`` the newest version of the record-per-workload layout is written:
        a plain record dict has that shape; column-wise records are written from frames
        (``joulestream.schemas.records``), which name their version.

        ``validate=False`` is for hot paths whose records are typed by construction: fastavro's
        validation costs several times the write itself (it builds error objects for every union
        branch it tries), so the record is written directly and only validated when the write
        fails, to say what is wrong. A record fastavro writes without complaint is valid for it
        either way; the bytes are the same.
        """
        schema = (
            self.registry.latest(name, RECORDS_LAYOUT)
            if version is None
            else self.registry.version(name, version)
        )
        if validate:
            self._validate(schema, record)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        try:
            schemaless_writer(buf, schema.parsed, record)
        except Exception as exc:  # wrong types surface as assorted errors: let the validator say
            if validate:
                raise
            self._validate(schema, record)
            raise SchemaViolation(
                f"{name} v{schema.version} cannot write the record: {exc!r}"
            ) from exc
        return buf.getvalue()

    @staticmethod
    def _validate(schema: SchemaVersion, record: Record) -> None:
        try:
            validate(record, schema.parsed, raise_errors=True)
        except ValidationError as exc:
            raise SchemaViolation(
                f"{schema.name} v{schema.version} rejects the record: {exc}"
            ) from None

    def writer_of(self, data: bytes) -> SchemaVersion:
        if len(data) < HEADER_LEN:
            if data[: len(MAGIC)] != MAGIC[: len(data)]:
                raise NotSingleObjectEncoded("message does not start with C3 01")
            raise TruncatedMessage(
                f"{len(data)} bytes is shorter than the {HEADER_LEN}-byte header"
            )
        if data[:2] != MAGIC:
            raise NotSingleObjectEncoded(
                f"message starts with {data[:2].hex()} where Avro single object encoding has c301"
            )
        writer = self.registry.by_fingerprint(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise UnknownFingerprint(
                f"writer schema fingerprint {bytes(data[2:HEADER_LEN]).hex()} is not a shipped "
                f"schema version (known records: {self.registry.names()})"
            )
        return writer

    def decode(self, data: bytes, expect: str | None = None) -> Record:
        """Decode to the latest version of the writer's record and layout; ``expect`` names the
        record the caller accepts."""
        writer = self.writer_of(data)
        if expect is not None and writer.name != expect:
            raise SchemaViolation(f"expected a {expect} message, got {writer.name}")
        reader = self.registry.reader_of(writer)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = schemaless_reader(
                buf, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:  # fastavro raises assorted errors on short or corrupt bodies
            if isinstance(exc, EOFError | StopIteration) or buf.tell() >= len(data):
                raise TruncatedMessage(
                    f"{writer.name} body ends early ({len(data)} bytes)"
                ) from exc
            raise SchemaViolation(
                f"{writer.name} v{writer.version} body is corrupt: {exc!r}"
            ) from exc
        if buf.tell() != len(data):
            raise SchemaViolation(f"{writer.name} body has {len(data) - buf.tell()} trailing bytes")
        assert isinstance(record, dict)
        return record
