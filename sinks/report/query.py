"""The report's one query path: SQL aggregation over the store's tables, the same statements
for SQLite and PostgreSQL (only the parameter style and time parameter types differ), per
segment of the range from the tier that answers it (sinks.report.tiers), summed here.

Raw windows: energy never adds nested zones: per window, a platform (else psys) zone covers
the node, otherwise every zone but core-N and uncore-N (they lie inside package-N) is summed — the
processor's rule for node energy (stream_processors.attribution.node_joules). Workload energy
is dynamic + idle joules by that rule; node energy is the zones' totals (idle, unattributed
and all). Carbon is the stored gCO2e, which is linear in energy and needs no such care.
Rollups hold that energy already, per window, in integer µJ (sinks.store.rollup).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from joulestream.sinks.report.tiers import Segment, TierChoice, plan
from joulestream.sinks.store.backend import parse_sqlite_dsn
from joulestream.sinks.store.migrations import POSTGRES, SQLITE, SchemaTooNew, pending
from joulestream.sinks.store.rows import ns_to_datetime
from joulestream.times import to_ns

GroupBy = Literal["namespace", "pod", "node", "cluster"]
GROUPINGS: tuple[GroupBy, ...] = ("namespace", "pod", "node", "cluster")
LABELS: dict[GroupBy, tuple[str, ...]] = {
    "namespace": ("cluster", "namespace"),
    "pod": ("cluster", "namespace", "pod"),
    "node": ("cluster", "node"),
    "cluster": ("cluster",),
}
J_PER_KWH = 3.6e6
NS_PER_S = 1e9


class ReportError(RuntimeError):
    """The store cannot answer: missing, unreachable, not migrated, or too new."""


@dataclass(frozen=True)
class ReportRow:
    labels: tuple[str, ...]
    joules: float
    co2e_g: float
    first_ns: int  # earliest window start in the group
    last_ns: int  # latest window end

    @property
    def kwh(self) -> float:
        return self.joules / J_PER_KWH

    @property
    def seconds(self) -> float:
        return (self.last_ns - self.first_ns) / NS_PER_S

    @property
    def avg_watts(self) -> float | None:
        """Over the span the group was seen in (first window start to last window end)."""
        return self.joules / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class Report:
    by: GroupBy
    since: datetime
    until: datetime
    store: str
    rows: list[ReportRow]
    unmeasured_windows: int  # node windows in range whose energy nobody knows
    tiers: tuple[str, ...] = ("raw",)  # which tiers answered, coarsest first

    @property
    def labels(self) -> tuple[str, ...]:
        return LABELS[self.by]

    def total(self) -> ReportRow | None:
        if not self.rows:
            return None
        return ReportRow(
            labels=(),
            joules=sum(r.joules for r in self.rows),
            co2e_g=sum(r.co2e_g for r in self.rows),
            first_ns=min(r.first_ns for r in self.rows),
            last_ns=max(r.last_ns for r in self.rows),
        )


def _zone_is(kind: str) -> str:
    return f"(zone = '{kind}' OR substr(zone, 1, {len(kind) + 1}) = '{kind}-')"


def _node_energy(joules: str) -> str:
    """One window's energy from its zone rows, nested zones not added twice."""
    return (
        f"COALESCE(SUM(CASE WHEN {_zone_is('platform')} THEN {joules} END), "
        f"SUM(CASE WHEN {_zone_is('psys')} THEN {joules} END), "
        f"SUM(CASE WHEN {_zone_is('core')} OR {_zone_is('uncore')} THEN 0 ELSE {joules} END))"
    )


def _in_range(alias: str = "") -> str:
    """window_start bounds the partitions PostgreSQL reads; the ns columns are exact."""
    return (
        f"{alias}window_start >= %(since_at)s AND {alias}window_start <= %(until_at)s "
        f"AND {alias}window_start_ns >= %(since)s AND {alias}window_start_ns < %(until)s "
        f"AND (CAST(%(cluster)s AS text) IS NULL OR {alias}cluster = %(cluster)s)"
    )


_OUTSIDE_PODS = (
    "CASE kind WHEN 'kernel' THEN 'kernel_processes' WHEN 'system' THEN 'system_processes' "
    "ELSE '(unknown)' END"
)

_WORKLOADS = f"""
WITH per_window AS (
    SELECT cluster, node, window_start_ns, workload_id,
           MIN(window_end_ns) AS window_end_ns,
           COALESCE(MIN(namespace), MIN({_OUTSIDE_PODS})) AS namespace,
           COALESCE(MIN(pod), MIN({_OUTSIDE_PODS})) AS pod,
           {_node_energy("dynamic_j + idle_j")} AS joules,
           SUM(co2e_g) AS co2e_g
    FROM workload_windows
    WHERE {_in_range()}
    GROUP BY cluster, node, window_start_ns, workload_id
)
SELECT {{labels}}, SUM(joules) AS joules, SUM(co2e_g) AS co2e_g,
       MIN(window_start_ns), MAX(window_end_ns)
FROM per_window
GROUP BY {{labels}}
ORDER BY joules DESC, {{labels}}
"""

_NODES = f"""
WITH zone_energy AS (
    SELECT cluster, node, window_start_ns, {_node_energy("total_j")} AS joules
    FROM node_zone_windows
    WHERE {_in_range()}
    GROUP BY cluster, node, window_start_ns
)
SELECT {{labels}}, SUM(COALESCE(z.joules, 0)) AS joules, SUM(n.co2e_g) AS co2e_g,
       MIN(n.window_start_ns), MAX(n.window_end_ns)
FROM node_windows n
LEFT JOIN zone_energy z
    ON z.cluster = n.cluster AND z.node = n.node AND z.window_start_ns = n.window_start_ns
WHERE {_in_range("n.")}
GROUP BY {{labels}}
ORDER BY joules DESC, {{labels}}
"""

_UNMEASURED = f"""
SELECT COUNT(*) FROM node_windows WHERE {_in_range()} AND source = 'unmeasured'
"""


_ROLLUP = """
SELECT {labels}, SUM(energy_uj), SUM(co2e_ng), MIN(first_start_ns), MAX(last_end_ns)
FROM {table}
WHERE bucket_ns >= %(since)s AND bucket_ns < %(until)s
  AND (CAST(%(cluster)s AS text) IS NULL OR cluster = %(cluster)s)
GROUP BY {labels}
"""

_ROLLUP_UNMEASURED = """
SELECT COALESCE(SUM(unmeasured), 0) FROM {table}
WHERE bucket_ns >= %(since)s AND bucket_ns < %(until)s
  AND (CAST(%(cluster)s AS text) IS NULL OR cluster = %(cluster)s)
"""

_ROLLUP_TABLES: dict[tuple[str, GroupBy], str] = {
    ("minute", "namespace"): "workload_minutes",
    ("minute", "pod"): "workload_minutes",
    ("minute", "node"): "node_minutes",
    ("minute", "cluster"): "node_minutes",
    ("hour", "namespace"): "namespace_hours",
    ("hour", "pod"): "pod_hours",
    ("hour", "node"): "node_hours",
    ("hour", "cluster"): "node_hours",
}

_COVERAGE = {
    "raw": "SELECT MIN(window_start_ns) FROM node_windows",
    "minute": "SELECT MIN(bucket_ns) FROM node_minutes",
    "hour": "SELECT MIN(bucket_ns) FROM node_hours",
}


def statement(by: GroupBy, tier: str = "raw") -> tuple[str, str]:
    """The grouped query and the unmeasured-windows query of one tier."""
    if tier != "raw":
        table = _ROLLUP_TABLES[(tier, by)]
        unmeasured = _ROLLUP_UNMEASURED.format(table=f"node_{tier}s")
        return _ROLLUP.format(labels=", ".join(LABELS[by]), table=table), unmeasured
    if by in ("namespace", "pod"):
        return _WORKLOADS.format(labels=", ".join(LABELS[by])), _UNMEASURED
    return _NODES.format(labels=", ".join(f"n.{label}" for label in LABELS[by])), _UNMEASURED


def _sqlite_style(sql: str) -> str:
    return re.sub(r"%\((\w+)\)s", r":\1", sql)


class _Database:
    """A read-only connection and how to talk to it."""

    def __init__(self, dsn: str) -> None:
        self.postgres = dsn.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            import psycopg

            from joulestream.sinks.store.postgres import CONNECT_TIMEOUT_S, describe

            self.description = describe(dsn)
            try:
                self._conn: Any = psycopg.connect(
                    dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.OperationalError as exc:
                raise ReportError(f"cannot reach {self.description}: {exc}".strip()) from exc
            self._conn.execute("SET default_transaction_read_only = on")
            self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        elif dsn.startswith("sqlite:///"):
            path = Path(parse_sqlite_dsn(dsn))
            self.description = f"SQLite {path}"
            if not path.is_file():
                raise ReportError(f"no store at {path}: nothing has been stored there yet")
            self._conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
            self._errors = (sqlite3.Error,)
        else:
            raise ReportError(
                f"unsupported store DSN {dsn!r}: use postgresql://… or sqlite:///PATH"
            )

    def query(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        if not self.postgres:
            sql = _sqlite_style(sql)
            params = {
                k: v.isoformat(sep=" ") if isinstance(v, datetime) else v for k, v in params.items()
            }
        try:
            rows: list[Sequence[Any]] = self._conn.execute(sql, params).fetchall()
        except self._errors as exc:
            raise ReportError(f"{self.description}: {exc}".strip()) from exc
        return rows

    def check_schema(self) -> None:
        try:
            [(version,)] = self.query("SELECT max(version) FROM schema_version", {})
        except ReportError as exc:
            raise ReportError(
                f"{self.description} has no joulestream schema (has the store sink run?): {exc}"
            ) from exc
        try:
            pending(int(version or 0), POSTGRES if self.postgres else SQLITE)
        except SchemaTooNew as exc:
            raise ReportError(str(exc)) from exc
        if not version:
            raise ReportError(f"{self.description} is not migrated yet (run the store sink)")

    def close(self) -> None:
        self._conn.close()


def _params(segment: Segment, cluster: str | None) -> dict[str, Any]:
    return {
        "since": segment.since_ns,
        "until": segment.until_ns,
        "since_at": ns_to_datetime(segment.since_ns),
        "until_at": ns_to_datetime(segment.until_ns),
        "cluster": cluster,
    }


def energy_report(
    dsn: str,
    by: GroupBy,
    since: datetime,
    until: datetime,
    cluster: str | None = None,
    tier: TierChoice = "auto",
) -> Report:
    """Windows starting in [since, until), grouped ``by``, most energy first; ``tier``
    chooses the storage tier (``auto``: sinks.report.tiers), and the report's range is the
    one the tiers could answer exactly."""
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {GROUPINGS}, not {by!r}")
    if until <= since:
        raise ValueError(f"the report ends ({until}) before it starts ({since})")
    database = _Database(dsn)
    width = len(LABELS[by])
    exact: dict[tuple[str, ...], list[int]] = {}  # µJ, ng, first, last
    raw: dict[tuple[str, ...], list[float]] = {}  # J, g
    unmeasured = 0
    try:
        database.check_schema()
        coverage = {t: _first(database.query(q, {})) for t, q in _COVERAGE.items()}
        segments = plan(to_ns(since), to_ns(until), tier, coverage)
        for segment in segments:
            grouped, count = statement(by, segment.tier)
            params = _params(segment, cluster)
            [(found,)] = database.query(count, params)
            unmeasured += int(found or 0)
            for row in database.query(grouped, params):
                labels = tuple(str(v) for v in row[:width])
                acc = exact.setdefault(labels, [0, 0, int(row[width + 2]), int(row[width + 3])])
                acc[2] = min(acc[2], int(row[width + 2]))
                acc[3] = max(acc[3], int(row[width + 3]))
                if segment.tier == "raw":
                    parts = raw.setdefault(labels, [0.0, 0.0])
                    parts[0] += float(row[width] or 0.0)
                    parts[1] += float(row[width + 1] or 0.0)
                else:
                    acc[0] += int(row[width] or 0)
                    acc[1] += int(row[width + 1] or 0)
    finally:
        database.close()
    rows = [
        ReportRow(
            labels=labels,
            joules=uj / 1e6 + raw.get(labels, [0.0, 0.0])[0],
            co2e_g=ng / 1e9 + raw.get(labels, [0.0, 0.0])[1],
            first_ns=first,
            last_ns=last,
        )
        for labels, (uj, ng, first, last) in exact.items()
    ]
    rows.sort(key=lambda r: (-r.joules, r.labels))
    answered = tuple(t for t in ("hour", "minute", "raw") if any(s.tier == t for s in segments))
    return Report(
        by,
        ns_to_datetime(segments[0].since_ns) if segments else since,
        ns_to_datetime(segments[-1].until_ns) if segments else until,
        database.description,
        rows,
        unmeasured,
        answered,
    )


def _first(rows: list[Sequence[Any]]) -> int | None:
    value = rows[0][0] if rows else None
    return None if value is None else int(value)
