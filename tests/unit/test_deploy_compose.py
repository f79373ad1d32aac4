"""docker-compose.yml against the Compose Specification, and what the stack needs to run.

No Docker engine runs here, so the file is validated with check-jsonschema and the
compose-spec JSON schema it ships (``--builtin-schema vendor.compose-spec``); a mutated copy
must fail, so a validator that accepts anything fails the test. The rest checks what a schema
cannot: the files the stack mounts and builds from exist, the agent gets the host access it
needs, Prometheus scrapes the sink where it listens (``promtool`` checks the config itself).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"


def tool(name: str, install: str) -> str:
    """A command-line tool from the venv or PATH; missing is a failure, not a skip."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {install}")
    return found


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    checker = tool("check-jsonschema", "pip install -e '.[dev]' (check-jsonschema)")
    return subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_passes_the_compose_specification() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_key_the_specification_does_not_have(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    pid: host\n", "    pidd: host\n", 1))
    result = check_compose(broken)
    assert result.returncode != 0
    assert "pidd" in result.stdout + result.stderr


def test_stack_has_every_part(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {
        "kafka",
        "topics",
        "postgres",
        "agent",
        "processor",
        "sink-prometheus",
        "sink-store",
        "prometheus",
        "grafana",
    }


def test_kafka_runs_kraft_without_auto_created_topics(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_depends_on_names_only_services_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_pipeline_services_wait_for_the_topics(compose: dict[str, Any]) -> None:
    for name in ("agent", "processor", "sink-prometheus", "sink-store"):
        condition = compose["services"][name]["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name


def test_agent_sees_the_host(compose: dict[str, Any]) -> None:
    agent = compose["services"]["agent"]
    assert agent["privileged"] is True
    assert agent["pid"] == "host"
    targets = {volume.split(":")[1] for volume in agent["volumes"]}
    assert targets >= {
        "/sys/fs/cgroup",
        "/sys/class/powercap",
        "/sys/devices/virtual/powercap",
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/lib/modules",
        "/usr/src",
    }
    assert all(volume.endswith(":ro") for volume in agent["volumes"])


def test_store_sink_writes_to_the_compose_postgres(compose: dict[str, Any]) -> None:
    store = compose["services"]["sink-store"]
    dsn = store["command"][store["command"].index("--store") + 1]
    assert dsn.startswith("postgresql://") and "@postgres:5432/" in dsn
    assert store["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_build_files_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "agent.Dockerfile"])
def test_dockerfile_copies_only_what_exists_and_its_ignore_file_lets_through(
    dockerfile: str,
) -> None:
    path = ROOT / "deploy/docker" / dockerfile
    allowed = {
        line[1:]
        for line in (path.parent / f"{dockerfile}.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copies = [
        line.split()[1:-1] for line in path.read_text().splitlines() if line.startswith("COPY ")
    ]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile} copies missing {source}"
            assert source in allowed, f"{source} is excluded from the build context"


def test_agent_image_has_bcc_from_debian() -> None:
    text = (ROOT / "deploy/docker/agent.Dockerfile").read_text()
    assert "FROM debian:bookworm" in text
    assert "python3-bpfcc" in text
    assert "--system-site-packages" in text


def test_prometheus_scrapes_the_sink_where_it_listens(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    sink = compose["services"]["sink-prometheus"]["command"]
    port = sink[sink.index("--port") + 1]
    assert f"sink-prometheus:{port}" in targets


def test_prometheus_config_passes_promtool() -> None:
    promtool = tool("promtool", "apt-get install prometheus (Debian)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_gets_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/joulestream.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
