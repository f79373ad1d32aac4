"""Durable file writes: a file is either complete under its final name or not there at all.

Write to a hidden temporary name in the target directory, fsync it, rename it over the final
name, fsync the directory (and any directory made on the way): after ``write_durably``
returns, a power cut cannot lose the file, so the offsets inside it may be committed.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from joulestream.sinks.archive.layout import TEMP_MARKER, Kind

STALE_TEMP_S = 3600.0
_TOPIC_FILE = "_topic"


class ArchiveMismatch(RuntimeError):
    """The archive directory holds another topic's messages under the same kind."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a crash: each new directory's parent is synced."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):  # another replica made it meanwhile
        path.mkdir()
    _fsync_dir(path.parent)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    make_dirs(path.parent)
    temp = path.with_name(f".{path.name}{TEMP_MARKER}{uuid.uuid4().hex}")
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise OSError(exc.errno, f"writing {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def write_durably(path: Path, table: pa.Table) -> None:
    """Write ``table`` as Parquet at ``path`` atomically; an existing file is replaced.

    On any error (ENOSPC included) the temporary file is removed, giving its space back, and
    the error propagates as an OSError with the same errno, naming the final path.
    """
    _atomic_write(path, lambda file: pq.write_table(table, file, compression="zstd"))


def remove_stale_temps(root: Path, kind: Kind, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete temporary files a crashed writer left (old enough that no live writer, of this
    or another replica, is still on them); return how many went."""
    removed = 0
    horizon = time.time() - older_than_s
    for temp in (root / kind).glob(f"*/*/.*{TEMP_MARKER}*"):
        with contextlib.suppress(FileNotFoundError):
            if temp.stat().st_mtime < horizon:
                temp.unlink()
                removed += 1
    return removed


def claim_kind(root: Path, kind: Kind, topic: str) -> None:
    """Bind ``root/kind`` to one shared source topic (and the per-cluster topics named after
    it): file names carry partition, offsets and the cluster of a per-cluster topic but not the
    topic prefix, so two topic prefixes in one directory would overwrite each other."""
    kind_dir = root / kind
    marker = kind_dir / _TOPIC_FILE
    try:
        owner = marker.read_text().strip()
    except FileNotFoundError:
        _atomic_write(marker, lambda file: file.write(f"{topic}\n".encode()))
        owner = marker.read_text().strip()
    if owner != topic:
        raise ArchiveMismatch(
            f"{kind_dir} archives topic {owner!r}, not {topic!r}: use another --archive-dir per "
            "topic set"
        )
