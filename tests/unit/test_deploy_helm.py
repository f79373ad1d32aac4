"""deploy/helm/joulestream rendered by a real helm and validated offline like the kustomize
base (tests/unit/test_deploy_kubernetes.py, whose checks run here on the chart's output too):
kubernetes-validate strict for built-in kinds, the vendored CRD schemas for ServiceMonitor and
KafkaTopic. The chart holds the same objects as the kustomize base; values set the Kafka
bootstrap and credentials Secret, the cluster's name, the BMC, and the optional parts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_deploy_kubernetes as base
import yaml
from test_deploy_kubernetes import (
    KUSTOMIZATION,
    ROOT,
    Doc,
    kustomize,
    one,
    validate,
)

# The kustomize base's checks, collected here again to run on the chart's output.
test_agent_may_only_read_pods = base.test_agent_may_only_read_pods
test_agent_mounts_read_only_what_it_reads_and_points_its_roots_there = (
    base.test_agent_mounts_read_only_what_it_reads_and_points_its_roots_there
)
test_agent_runs_with_named_capabilities_not_privileged = (
    base.test_agent_runs_with_named_capabilities_not_privileged
)
test_every_rendered_resource_passes_its_schema = base.test_every_rendered_resource_passes_its_schema
test_replicas_never_exceed_the_partition_count = base.test_replicas_never_exceed_the_partition_count
test_service_monitor_scrapes_the_sink_port = base.test_service_monitor_scrapes_the_sink_port
test_topics_match_the_layout_the_code_creates = base.test_topics_match_the_layout_the_code_creates
test_workloads_read_settings_from_the_generated_config_map = (
    base.test_workloads_read_settings_from_the_generated_config_map
)

CHART = ROOT / "deploy/helm/joulestream"
HELM_INSTALL = "GOBIN=$PWD/.venv/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0 (scripts/setup.sh)"
NAMESPACE = "joulestream"


def helm() -> str:
    beside_python = Path(sys.executable).parent / "helm"
    found = str(beside_python) if beside_python.exists() else shutil.which("helm")
    if found is None:
        pytest.fail(f"helm is not installed: {HELM_INSTALL}")
    return found


def template(*values: str) -> list[Doc]:
    sets = [arg for value in values for arg in ("--set", value)]
    result = subprocess.run(
        [helm(), "template", "joulestream", str(CHART), "--namespace", NAMESPACE, *sets],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    """Everything on, the Namespace included, as the kustomize base renders it."""
    return template("createNamespace=true")


def identities(docs: list[Doc]) -> set[tuple[str, str, str | None]]:
    """(kind, name, namespace); kustomize's ConfigMap name carries a content hash."""
    found = set()
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0]
        found.add((doc["kind"], name, doc["metadata"].get("namespace")))
    return found


def test_helm_lint_is_clean() -> None:
    for values in ([], ["--set", "agent.redfish.url=https://bmc.example:443"]):
        result = subprocess.run(
            [helm(), "lint", "--strict", str(CHART), *values],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "[WARNING]" not in output and "[ERROR]" not in output, output
        assert "1 chart(s) linted, 0 chart(s) failed" in output


def test_the_chart_holds_the_same_objects_as_the_kustomize_base(rendered: list[Doc]) -> None:
    built = subprocess.run(
        [kustomize(), "build", str(KUSTOMIZATION)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    base = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert identities(rendered) == identities(base)


def containers(docs: list[Doc]) -> list[Doc]:
    return [
        container
        for doc in docs
        if doc["kind"] in {"DaemonSet", "Deployment", "StatefulSet"}
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_values_set_the_cluster_kafka_and_its_credentials_secret() -> None:
    docs = template(
        "clusterName=eu-west-1",
        "kafka.bootstrapServers=kafka-0.example:9093",
        "kafka.credentialsSecret=kafka-client",
        "image.tag=1.2.3",
    )
    for doc in docs:
        validate(doc)
    (config,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert config["data"]["JOULESTREAM_CLUSTER"] == "eu-west-1"
    assert config["data"]["JOULESTREAM_BOOTSTRAP_SERVERS"] == "kafka-0.example:9093"
    for container in containers(docs):
        assert {"configMapRef": {"name": "joulestream"}} in container["envFrom"]
        assert {"secretRef": {"name": "kafka-client"}} in container["envFrom"]
        assert container["image"].endswith(":1.2.3")
    # a settings change rolls the pods
    again = template("clusterName=us-east-1")
    checksum = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["annotations"]
        for doc in again
        if doc["kind"] == "DaemonSet"
    }
    first = one(docs, "DaemonSet", "joulestream-agent")["spec"]["template"]["metadata"]
    assert checksum["joulestream-agent"] != first["annotations"]


def test_the_bmc_option_reads_its_credentials_from_a_secret_directory() -> None:
    docs = template(
        "agent.redfish.url=https://10.0.0.5", "agent.redfish.credentialsSecret=bmc-login"
    )
    for doc in docs:
        validate(doc)
    agent = one(docs, "DaemonSet", "joulestream-agent")["spec"]["template"]["spec"]
    (container,) = agent["containers"]
    assert {"--power=redfish", "--redfish-url=https://10.0.0.5",
            "--redfish-credentials=/etc/joulestream/redfish"} <= set(container["args"])  # fmt: skip
    assert "--redfish-insecure" not in container["args"]  # TLS verified unless asked
    mount = next(m for m in container["volumeMounts"] if m["name"] == "redfish-credentials")
    assert mount["readOnly"] and mount["mountPath"] == "/etc/joulestream/redfish"
    volume = next(v for v in agent["volumes"] if v["name"] == "redfish-credentials")
    assert volume["secret"]["secretName"] == "bmc-login"


def test_optional_parts_can_be_left_out() -> None:
    docs = template(
        "kafkaTopics.enabled=false",
        "sinks.store.enabled=false",
        "sinks.prometheus.serviceMonitor.enabled=false",
    )
    kinds = {doc["kind"] for doc in docs}
    assert "KafkaTopic" not in kinds and "ServiceMonitor" not in kinds and "Namespace" not in kinds
    assert all(doc["metadata"]["name"] != "joulestream-sink-store" for doc in docs)


def test_topics_go_to_the_strimzi_namespace_and_cluster_given() -> None:
    docs = template("kafkaTopics.namespace=strimzi", "kafkaTopics.strimziCluster=main")
    topics = [doc for doc in docs if doc["kind"] == "KafkaTopic"]
    assert len(topics) == 6
    for topic in topics:
        assert topic["metadata"]["namespace"] == "strimzi"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "main"
