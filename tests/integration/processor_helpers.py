"""Run `joulestream process` as a subprocess, as production does, and stop it cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from joulestream.settings import Topics

JOULESTREAM = Path(sys.executable).with_name("joulestream")


def start_processor(
    bootstrap: str, topics: Topics, workdir: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """The processor with its state and log (``processor.log``) under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(JOULESTREAM), "process", "--bootstrap-servers", bootstrap,
         "--topic-prefix", topics.prefix, "--state-dir", str(workdir / "state"), *extra],
        stdout=(workdir / "processor.log").open("ab"),
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )  # fmt: skip


def stop_processor(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    """SIGTERM, and the processor must exit cleanly (code 0)."""
    proc.terminate()
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, (workdir / "processor.log").read_text(errors="replace")[-5000:]
