"""Typed codec errors. Each carries a short ``reason`` that becomes the dead-letter header."""


class CodecError(ValueError):
    reason = "codec-error"


class NotSingleObjectEncoded(CodecError):
    reason = "bad-magic"


class TruncatedMessage(CodecError):
    reason = "truncated"


class UnknownFingerprint(CodecError):
    reason = "unknown-fingerprint"


class SchemaViolation(CodecError):
    reason = "schema-violation"


class FeatureNameError(ValueError):
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
            "; ".join(parts) + " (feature names are the Counters fields of schemas/avro/NodeSample)"
        )
