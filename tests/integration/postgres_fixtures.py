"""PostgreSQL fixtures (a pytest plugin: tests/conftest.py lists it in ``pytest_plugins``).

``postgres_server``/``postgres_dsn``: one throwaway PostgreSQL 15 cluster per session, made
by scripts/postgres.sh on a free port in a directory of its own under /tmp (as root it runs
as the ``postgres`` user, who must be able to reach it: pytest's own tmp dirs are 0700 root).
``postgres_db``: a fresh, empty database per test, its DSN.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from joulestream.kafka.broker import free_ports

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"


class PostgresServer:
    """A cluster driven through scripts/postgres.sh; tests stop and start it (outages)."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _script(self, command: str) -> str:
        result = subprocess.run(
            [str(SCRIPT), command, str(self.datadir), str(self.port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"postgres.sh {command} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self) -> None:
        assert self._script("start") == self.dsn

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: open sessions are cut, as in a real outage."""
        self._script("stop")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="joulestream-pg-", dir="/tmp"))
    root.chmod(0o755)
    datadir = root / "data"
    for attempt in range(3):  # another process may take the free port before postgres binds it
        server = PostgresServer(datadir, free_ports(1)[0])
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                shutil.rmtree(root, ignore_errors=True)
                raise
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The maintenance database's DSN; tests that write should use ``postgres_db``."""
    return postgres_server.dsn


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """DSN of a new empty database, dropped after the test (sessions forced off)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres_server.dsn_for(name)
    with (
        contextlib.suppress(psycopg.OperationalError),
        psycopg.connect(postgres_server.dsn, autocommit=True) as conn,
    ):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
