"""Apache Kafka's jars from Maven Central, and the Java that runs them.

There is no Kafka tarball on these machines, only Maven: ``pom.xml`` next to this module names
the broker and its logging binding, and ``mvn dependency:copy-dependencies`` copies every jar
into a cache directory once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from joulestream.kafka.errors import LocalKafkaError, ToolMissingError

KAFKA_VERSION = "4.1.1"
# Written last, after every jar is in place: its absence means an interrupted fetch.
_COMPLETE_MARKER = ".complete"


def default_libs_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "joulestream" / f"kafka-{KAFKA_VERSION}" / "libs"


def package_file(name: str) -> Path:
    """A data file shipped in this package (pom.xml, log4j2.properties) as a real path."""
    path = resources.files("joulestream.kafka") / name
    return Path(str(path))


def java_executable() -> Path:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not os.access(java, os.X_OK):
            raise ToolMissingError(
                f"JAVA_HOME={java_home} has no executable bin/java; fix JAVA_HOME or unset it"
            )
        return java
    found = shutil.which("java")
    if found is None:
        raise ToolMissingError(
            "java not found: install Java 17 or newer "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return Path(found)


def maven_executable() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise ToolMissingError("mvn not found: install Maven (Debian: apt-get install maven)")
    return Path(found)


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars_complete(libs_dir: Path, pom: Path | None = None) -> bool:
    """True when a fetch from this very pom finished and none of its jars went missing."""
    marker = libs_dir / _COMPLETE_MARKER
    if not marker.is_file():
        return False
    digest, *jars = marker.read_text().split()
    pom_now = pom or package_file("pom.xml")
    return digest == _pom_digest(pom_now) and all((libs_dir / jar).is_file() for jar in jars)


def fetch_jars(libs_dir: Path | None = None) -> Path:
    """Copy Kafka and its dependencies into ``libs_dir`` unless a complete copy is there.

    Copies into a sibling temporary directory and renames it, so an interrupted fetch never
    leaves a half-filled directory that looks complete.
    """
    target = libs_dir or default_libs_dir()
    pom = package_file("pom.xml")
    if jars_complete(target, pom):
        return target
    mvn = maven_executable()
    java_executable()  # Maven needs Java too; say so before Maven does, less clearly.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the jars are not secret
    try:
        result = subprocess.run(
            [
                str(mvn),
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise LocalKafkaError(
                f"mvn could not fetch Kafka {KAFKA_VERSION} (exit {result.returncode}); "
                "it needs Maven Central or a filled ~/.m2. Last lines:\n" + "\n".join(output[-20:])
            )
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not any(jar.startswith("kafka_2.13-") for jar in jars):
            raise LocalKafkaError(f"mvn finished but copied no kafka_2.13 jar into {staging}")
        (staging / _COMPLETE_MARKER).write_text("\n".join([_pom_digest(pom), *jars]) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
