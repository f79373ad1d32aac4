"""deploy/kubernetes rendered by a real kustomize and validated offline.

Built-in kinds go through kubernetes-validate (strict: unknown fields fail) with the schemas it
ships; the two custom resources through their CRD schemas vendored in tests/fixtures/deploy
(ServiceMonitor from prometheus-operator, KafkaTopic v1beta2 from Strimzi). Every rendered kind
must have a schema: a new kind without one fails here rather than going unchecked.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from joulestream.kafka.topics import topic_specs
from joulestream.settings import Topics

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION = ROOT / "deploy/kubernetes"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic_v1beta2.json",
}
KUBERNETES_VERSION = "1.31.0"  # masks /sys/devices/virtual/powercap; the agent works around it
KUSTOMIZE_INSTALL = (
    "GOBIN=$PWD/.venv/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 (scripts/setup.sh)"
)

Doc = dict[str, Any]


def kustomize() -> str:
    beside_python = Path(sys.executable).parent / "kustomize"
    found = str(beside_python) if beside_python.exists() else shutil.which("kustomize")
    if found is None:
        pytest.fail(f"kustomize is not installed: {KUSTOMIZE_INSTALL}")
    return found


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    result = subprocess.run(
        [kustomize(), "build", str(KUSTOMIZATION)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(doc: Doc) -> None:
    """Raise if ``doc`` breaks its schema; a kind with no schema at all is an error too."""
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    schema = json.loads((ROOT / "tests/fixtures/deploy" / crd).read_text())
    jsonschema.validate(doc, schema)


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_every_rendered_resource_passes_its_schema(rendered: list[Doc]) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "StatefulSet",
        "Service",
        "ServiceMonitor",
        "KafkaTopic",
    }
    for doc in rendered:
        validate(doc)


@pytest.mark.parametrize(
    ("kind", "name", "break_it"),
    [
        ("DaemonSet", "joulestream-agent", lambda d: d["spec"].update(hostPid=True)),
        (
            "ServiceMonitor",
            "joulestream-sink-prometheus",
            lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"),
        ),
        ("KafkaTopic", "joulestream.samples.v1", lambda d: d["spec"].update(partitions=0)),
    ],
)
def test_validation_rejects_broken_resources(
    rendered: list[Doc], kind: str, name: str, break_it: Any
) -> None:
    broken = copy.deepcopy(one(rendered, kind, name))
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_a_kind_without_a_schema_is_refused() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(unknown)


def agent_container(rendered: list[Doc]) -> Doc:
    spec = one(rendered, "DaemonSet", "joulestream-agent")["spec"]["template"]["spec"]
    containers: list[Doc] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def test_agent_runs_with_named_capabilities_not_privileged(rendered: list[Doc]) -> None:
    pod = one(rendered, "DaemonSet", "joulestream-agent")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    context = agent_container(rendered)["securityContext"]
    assert context.get("privileged", False) is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert sorted(context["capabilities"]["add"]) == ["BPF", "PERFMON", "SYS_RESOURCE"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_agent_mounts_read_only_what_it_reads_and_points_its_roots_there(
    rendered: list[Doc],
) -> None:
    container = agent_container(rendered)
    pod = one(rendered, "DaemonSet", "joulestream-agent")["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {
        m["mountPath"]: host_paths[m["name"]]
        for m in container["volumeMounts"]
        if m["name"] in host_paths
    }
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] in host_paths)
    assert mounts == {
        "/host/sys/fs/cgroup": "/sys/fs/cgroup",
        "/host/sys/class": "/sys/class",
        "/host/sys/devices/virtual": "/sys/devices/virtual",
        "/sys/kernel/tracing": "/sys/kernel/tracing",
        "/sys/kernel/debug": "/sys/kernel/debug",
        "/lib/modules": "/lib/modules",
        "/usr/src": "/usr/src",
    }
    # The powercap class links point at ../../devices/virtual/powercap: both trees must sit
    # side by side under the same prefix for the links to resolve.
    assert "--powercap-root=/host/sys/class/powercap" in container["args"]
    assert "--cgroup-root=/host/sys/fs/cgroup" in container["args"]
    assert "--node=$(NODE_NAME)" in container["args"]
    node_name = next(e for e in container["env"] if e["name"] == "NODE_NAME")
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_agent_may_only_read_pods(rendered: list[Doc]) -> None:
    role = one(rendered, "ClusterRole", "joulestream-agent")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = one(rendered, "ClusterRoleBinding", "joulestream-agent")
    assert binding["roleRef"]["name"] == "joulestream-agent"
    account = one(rendered, "ServiceAccount", "joulestream-agent")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "joulestream-agent",
            "namespace": account["metadata"]["namespace"],
        }
    ]
    pod = one(rendered, "DaemonSet", "joulestream-agent")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "joulestream-agent"


def test_topics_match_the_layout_the_code_creates(rendered: list[Doc]) -> None:
    topics = [doc for doc in rendered if doc["kind"] == "KafkaTopic"]
    partitions = {doc["spec"]["partitions"] for doc in topics}
    assert len(partitions) == 1, f"co-partitioned topics need one count, got {partitions}"
    expected = {
        spec.name: (spec.partitions, spec.config["cleanup.policy"])
        for spec in topic_specs(Topics(prefix=""), partitions.pop())
    }
    found = {
        doc["metadata"]["name"]: (
            doc["spec"]["partitions"],
            doc["spec"]["config"]["cleanup.policy"],
        )
        for doc in topics
    }
    assert found == expected
    for doc in topics:
        assert doc["metadata"]["labels"]["strimzi.io/cluster"]


def test_replicas_never_exceed_the_partition_count(rendered: list[Doc]) -> None:
    samples = one(rendered, "KafkaTopic", Topics(prefix="").samples)["spec"]["partitions"]
    assert one(rendered, "Deployment", "joulestream-processor")["spec"]["replicas"] <= samples
    sink = one(rendered, "StatefulSet", "joulestream-sink-prometheus")
    assert sink["spec"]["replicas"] <= samples


def test_service_monitor_scrapes_the_sink_port(rendered: list[Doc]) -> None:
    monitor = one(rendered, "ServiceMonitor", "joulestream-sink-prometheus")
    service = one(rendered, "Service", "joulestream-sink-prometheus")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= port_names
    sink = one(rendered, "StatefulSet", "joulestream-sink-prometheus")
    pod = sink["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert f"--port={container['ports'][0]['containerPort']}" in container["args"]


def test_workloads_read_settings_from_the_generated_config_map(rendered: list[Doc]) -> None:
    (config,) = [doc for doc in rendered if doc["kind"] == "ConfigMap"]
    assert "JOULESTREAM_BOOTSTRAP_SERVERS" in config["data"]
    for doc in rendered:
        if doc["kind"] in {"DaemonSet", "Deployment", "StatefulSet"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                refs = [e["configMapRef"]["name"] for e in container["envFrom"][:1]]
                assert refs == [config["metadata"]["name"]], doc["metadata"]["name"]


def test_workloads_read_the_optional_kafka_credentials_secret(rendered: list[Doc]) -> None:
    """``joulestream kafka credentials --format kubernetes`` makes Secret joulestream-kafka
    (a cluster's, or the pipeline's); optional, so a plaintext Kafka needs none."""
    for doc in rendered:
        if doc["kind"] in {"DaemonSet", "Deployment", "StatefulSet"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["envFrom"][1:] == [
                    {"secretRef": {"name": "joulestream-kafka", "optional": True}}
                ], doc["metadata"]["name"]
