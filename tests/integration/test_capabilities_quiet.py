"""`joulestream capabilities` (step 3 of `joulestream up`) prints its report and nothing else:
libbpf's complaints about a probe that falls back and our loaders' log lines stay off the
terminal, because the report already says what each probe found."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_capability_report_is_the_only_output() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "joulestream.cli", "capabilities"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["capability", "ok", "detail"]
    names = {line.split()[0] for line in lines[1:] if line and not line.startswith(" ")}
    assert {"cpu_time_ns", "rapl", "hwmon", "kubernetes_api"} <= names


def test_verbose_still_shows_what_the_probes_say() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "joulestream.cli", "-v", "capabilities"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and "DEBUG" in result.stderr + result.stdout
