"""Packed integer columns of the column-wise records (docs/architecture.md, 'Records').

A packed column is n int64 values as: one byte W (1-8), the column's common factor F (an
unsigned LEB128 varint, >= 1), then the values divided by F, little-endian, as W byte planes,
highest first (all bytes W-1 of the values, ..., then all lowest bytes). Planes above W are all
zeros and not stored. Highest first because zstd then packs the sparse top plane of each column
next to the previous column's low planes ~0.1 B per workload better than lowest first.

Why: counters are small next to 2**63, so most high bytes are zeros that need not travel, while
the low planes keep each value's entropy; and real counters have a granularity (memory in pages,
block I/O in sectors, cgroup v2 CPU time in microseconds) whose zero low bits F removes. F is the
greatest common divisor of the column's values in this one message, so a reader needs no state.
Packing and unpacking is C-level slicing plus array.array; a column with F > 1 is scaled by one
numpy multiplication when unpacked.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate

from joulestream.schemas.errors import SchemaViolation

WIDTH = 8  # bytes per int64
_INT64 = 1 << 63
_BIG_ENDIAN = sys.byteorder == "big"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pack(values: Sequence[int]) -> bytes:
    """Raises SchemaViolation for a value outside int64."""
    try:
        packed = array("q", values)
    except (OverflowError, TypeError) as exc:
        raise SchemaViolation(f"a column value is not an int64: {exc}") from None
    factor = math.gcd(*values) or 1  # 0 when every value is 0 (or there are none)
    if factor > 1:
        packed = array("q", [v // factor for v in values])
    if _BIG_ENDIAN:
        packed.byteswap()
    raw = packed.tobytes()
    planes = [raw[p::WIDTH] for p in range(WIDTH)]
    zero = bytes(len(packed))
    width = WIDTH  # a negative value keeps every plane (its high bytes are 0xff)
    while width > 1 and planes[width - 1] == zero:
        width -= 1
    return b"".join([bytes((width,)), _varint(factor), *planes[width - 1 :: -1]])


def _header(data: bytes) -> tuple[int, int, int]:
    """(width, factor, offset of the first plane)."""
    if len(data) < 2 or not 1 <= data[0] <= WIDTH:
        raise SchemaViolation(f"packed column header {data[:2]!r} is not a width of 1-{WIDTH}")
    factor, shift, at = 0, 0, 1
    while True:
        if at == len(data) or shift > 63:
            raise SchemaViolation("packed column factor is cut short or too long")
        byte = data[at]
        factor |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            break
        shift += 7
    if not 1 <= factor <= _INT64:
        raise SchemaViolation(f"packed column factor {factor} is outside 1..2**63")
    return data[0], factor, at


def unpack(data: bytes) -> list[int]:
    """Raises SchemaViolation for bytes that are not a packed column of int64 values."""
    if len(data) > 2 and data[1] == 1:  # the common case: factor 1, a one-byte varint
        width, factor, at = data[0], 1, 2
        if not 1 <= width <= WIDTH:
            raise SchemaViolation(f"packed column width {width} is not 1-{WIDTH}")
    else:
        width, factor, at = _header(data)
    count, rest = divmod(len(data) - at, width)
    if rest:
        raise SchemaViolation(f"packed column of {len(data) - at} bytes is not n x {width} bytes")
    raw = bytearray(count * WIDTH)
    for stored in range(width):  # highest plane first
        raw[width - 1 - stored :: WIDTH] = data[at + stored * count : at + (stored + 1) * count]
    values = array("q")
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    if factor == 1:
        return values.tolist()
    # Scaled in one vector pass: the products wrap modulo 2**64 in uint64, which is exact for
    # every product that fits int64. Below 8 planes every value is < 2**(8 x width), so a small
    # enough factor cannot leave int64; otherwise the bounds are checked.
    # numpy is imported here, where readers unpack, not with the module: agents only pack,
    # and numpy added ~12 MiB to their resident set (bench/RESULTS.md, 'Agent overhead').
    import numpy as np

    signed = np.frombuffer(values, dtype=np.int64)
    fits = width < WIDTH and factor < _INT64 >> 8 * width
    if (
        not fits
        and count
        and not (-(_INT64 // factor) <= signed.min() <= signed.max() <= (_INT64 - 1) // factor)
    ):
        raise SchemaViolation(f"packed column factor {factor} takes a value outside int64")
    scaled: list[int] = (signed.view(np.uint64) * np.uint64(factor)).view(np.int64).tolist()
    return scaled


def pack_ids(ids: Sequence[int]) -> bytes:
    """Workload ids as differences to the previous id (ids in table order pack to ones)."""
    return pack([b - a for a, b in zip((0, *ids), ids, strict=False)])


def unpack_ids(data: bytes) -> list[int]:
    return list(accumulate(unpack(data)))
