"""Rejected input: the one base of every error that sends a record to a dead-letter topic.

Each carries a short ``reason`` (its dead-letter class, the header on the dead letter) and a
message saying what is wrong (docs/architecture.md, 'Reliability').
"""


class RejectedInput(ValueError):
    """A record that must not be used; stages raise a subclass, a consumer catches this."""

    reason = "rejected-input"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CodecError(RejectedInput):
    """Bytes that do not decode; each subclass has one fixed reason."""

    reason = "codec-error"

    def __init__(self, message: str) -> None:
        super().__init__(type(self).reason, message)


class NotSingleObjectEncoded(CodecError):
    reason = "bad-magic"


class TruncatedMessage(CodecError):
    reason = "truncated"


class UnknownFingerprint(CodecError):
    reason = "unknown-fingerprint"


class SchemaViolation(CodecError):
    reason = "schema-violation"


class FeatureNameError(RejectedInput):
    """A feature list names something the schema does not define, or names it twice."""

    reason = "bad-feature-names"

    def __init__(self, unknown: list[str], duplicates: list[str]) -> None:
        self.unknown = unknown
        self.duplicates = duplicates
        parts = []
        if unknown:
            parts.append(f"unknown feature names {unknown}")
        if duplicates:
            parts.append(f"duplicate feature names {duplicates}")
        super().__init__(
            self.reason,
            "; ".join(parts)
            + " (feature names are the Counters fields of schemas/avro/NodeSample)",
        )
