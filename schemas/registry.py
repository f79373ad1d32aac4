"""Every shipped schema version, by record name and by CRC-64-AVRO fingerprint.

Files are ``avro/<Record>.v<N>.avsc``; the highest N of a record is what writers write. A reader
resolves a writer to the highest version of the same *layout* (the schema's
``joulestream_layout`` attribute, "records" when absent): NodeSample v1 is read as v2, but v3
(column-wise, dictionary-encoded) is a new layout that the older ones do not resolve into.
Fingerprints are computed once here: fastavro rebuilds its CRC table on every call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    fingerprint: bytes  # 8 bytes, little-endian, as written after C3 01
    parsed: Any  # fastavro parsed schema
    raw: dict[str, Any]


RECORDS_LAYOUT = "records"  # one Avro record per workload (NodeSample v1/v2, NodeEnergy v1)
COLUMNS_LAYOUT = "columns"  # column-wise, dictionary-encoded (joulestream.schemas.records)


def layout_of(schema: SchemaVersion) -> str:
    return str(schema.raw.get("joulestream_layout", RECORDS_LAYOUT))


def fingerprint_of(schema: dict[str, Any] | str) -> bytes:
    """fastavro's hex digest already lists the 64-bit value's bytes little-endian first."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaRegistry:
    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}

    @classmethod
    def shipped(cls) -> SchemaRegistry:
        registry = cls()
        for entry in sorted(
            resources.files("joulestream.schemas").joinpath("avro").iterdir(), key=str
        ):
            match = _FILE_NAME.match(entry.name)
            if match:
                registry.add(json.loads(entry.read_text()), int(match["version"]))
        return registry

    def add_file(self, path: Path) -> SchemaVersion:
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: schema files are named <Record>.v<N>.avsc")
        return self.add(json.loads(path.read_text()), int(match["version"]))

    def add(self, raw: dict[str, Any], version: int) -> SchemaVersion:
        parsed = parse_schema(raw)
        entry = SchemaVersion(raw["name"], version, fingerprint_of(raw), parsed, raw)
        self._by_fingerprint[entry.fingerprint] = entry
        self._by_name.setdefault(entry.name, {})[version] = entry
        return entry

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

    def latest(self, name: str, layout: str | None = None) -> SchemaVersion:
        """The newest version of ``name`` (of ``layout`` when given)."""
        versions = self._by_name.get(name)
        if not versions:
            raise KeyError(f"no schema named {name!r}; known: {sorted(self._by_name)}")
        matching = [v for v in versions.values() if layout is None or layout_of(v) == layout]
        return max(matching, key=lambda v: v.version)

    def reader_of(self, writer: SchemaVersion) -> SchemaVersion:
        """The highest version of the writer's record and layout (Avro schema resolution)."""
        versions = self._by_name[writer.name]
        return max(
            (v for v in versions.values() if layout_of(v) == layout_of(writer)),
            key=lambda v: v.version,
        )

    def version(self, name: str, version: int) -> SchemaVersion:
        return self._by_name[name][version]

    def names(self) -> list[str]:
        return sorted(self._by_name)
