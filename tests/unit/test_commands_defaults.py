"""What a user hits first: `joulestream report` reads the store `joulestream up` writes, and
`up` numbers its steps once each."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from joulestream.cli import build_parser
from joulestream.commands import up
from joulestream.settings import store_dsn_in


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(list(argv)).parse_args(list(argv))


def test_report_and_the_store_sink_default_to_the_store_up_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("JOULESTREAM_STORE_DSN", raising=False)
    written_by_up = store_dsn_in(parse("up").state_dir)
    assert written_by_up == f"sqlite:///{tmp_path}/joulestream/joulestream.db"
    assert parse("report").store == written_by_up
    assert parse("sink", "store").store == written_by_up
    monkeypatch.setenv("JOULESTREAM_STORE_DSN", "postgresql://u@h/db")
    assert parse("report").store == parse("sink", "store").store == "postgresql://u@h/db"


class _Broker:
    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.bootstrap = "127.0.0.1:1"

    def status(self) -> SimpleNamespace:
        return SimpleNamespace(running=True)


def test_up_numbers_every_step_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every stage up starts, with the services themselves replaced by fakes that exit at
    once (so up stops after start-up)."""
    exited = SimpleNamespace(poll=lambda: 0, pid=1)
    log = (tmp_path / "child.log").open("ab")

    def spawn(name: str, _command: list[str], _logs: Path) -> up.Child:
        return up.Child(name, exited, tmp_path / "child.log", log)  # type: ignore[arg-type]

    monkeypatch.setattr(up, "LocalKafka", _Broker)
    monkeypatch.setattr(up, "clients", SimpleNamespace(admin=lambda _b: None))
    monkeypatch.setattr(
        up, "create_topics", lambda *_a, **_k: SimpleNamespace(created=[], existing=[])
    )
    monkeypatch.setattr(subprocess, "run", lambda *_a, **_k: None)
    monkeypatch.setattr(up, "_spawn", spawn)
    monkeypatch.setattr(up, "_wait_http", lambda *_a, **_k: None)
    monkeypatch.setattr(up, "_start_prometheus", lambda *_a: spawn("prometheus", [], tmp_path))
    monkeypatch.setattr(up.shutil, "which", lambda _name: "/usr/bin/prometheus")
    args = parse("up", "--state-dir", str(tmp_path / "state"))
    assert up.run(args) == 1  # the fake children "exited"
    numbers = [int(n) for n in re.findall(r"^\[(\d+)\]", capsys.readouterr().out, re.M)]
    assert numbers == list(range(1, 9)), numbers
