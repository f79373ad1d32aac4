"""Packed integer columns of the column-wise records (docs/architecture.md, 'Records').

A column is n int64 values, little-endian, stored as 8 byte planes: all lowest bytes, then all
second bytes, ... then all highest bytes. Counters and microjoules are small next to 2**63, so
most planes are zeros that zstd (on the producer) removes almost for free, while the low planes
keep each value's entropy. Packing and unpacking is C-level slicing plus array.array: no per-value
Python work, and no fastavro work per value (fastavro sees one ``bytes`` field per column).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate

from joulestream.schemas.errors import SchemaViolation

WIDTH = 8  # bytes per value
_BIG_ENDIAN = sys.byteorder == "big"


def pack(values: Sequence[int]) -> bytes:
    """Raises SchemaViolation for a value outside int64."""
    try:
        packed = array("q", values)
    except (OverflowError, TypeError) as exc:
        raise SchemaViolation(f"a column value is not an int64: {exc}") from None
    if _BIG_ENDIAN:
        packed.byteswap()
    raw = packed.tobytes()
    return b"".join([raw[plane::WIDTH] for plane in range(WIDTH)])


def unpack(data: bytes) -> list[int]:
    """Raises SchemaViolation when the length is not a whole number of values."""
    count, rest = divmod(len(data), WIDTH)
    if rest:
        raise SchemaViolation(f"packed column of {len(data)} bytes is not n x {WIDTH} bytes")
    raw = bytearray(len(data))
    for plane in range(WIDTH):
        raw[plane::WIDTH] = data[plane * count : (plane + 1) * count]
    values = array("q")
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tolist()


def pack_ids(ids: Sequence[int]) -> bytes:
    """Workload ids as differences to the previous id (ids in table order pack to ones)."""
    return pack([b - a for a, b in zip((0, *ids), ids, strict=False)])


def unpack_ids(data: bytes) -> list[int]:
    return list(accumulate(unpack(data)))
