"""Pod names end to end: pods made through a real kube-apiserver, their containers' cgroups
made on this machine where the kubelet would make them, real load in them, and the whole
pipeline (agent → Kafka → processor → Prometheus sink) naming their energy.

The kubelet's part is played by the test: it reads each pod's QoS class from the API server,
creates the container cgroup in the kubelet's layout for that class and the pod's uid (systemd
driver ``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/
cri-containerd-<id>.scope``, cgroupfs driver ``kubepods/<qos>/pod<uid>/<id>``; Guaranteed
pods sit directly under kubepods), moves a CPU burner into it and, for some pods, reports the
container's id in the pod status as the kubelet does. The cgroups sit under a test directory of
the v2 hierarchy, as under a kubelet ``--cgroup-root``. The agent reads the API server
through a kubeconfig with a client certificate, as an agent outside the cluster would.
"""

from __future__ import annotations

import datetime
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from integration.kube_fixtures import KubeApi
from integration.test_pipeline_e2e import Series, joulestream, scrape, wait_for

from joulestream.agents.collectors.ebpf.cgroup_ids import v2_hierarchy
from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import decode_sample
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

V2 = v2_hierarchy(Path("/sys/fs/cgroup"))
# About a fifth of a core each: real load without starving the machine's other tests.
BURNER = """
import time
while True:
    end = time.monotonic() + 0.02
    while time.monotonic() < end:
        pass
    time.sleep(0.08)
"""


def kubelet_cgroup(root: Path, driver: str, qos: str, uid: str, container_id: str) -> Path:
    """Where the kubelet (with containerd) puts a container of a pod of QoS class ``qos``."""
    qos = qos.lower()
    if driver == "systemd":
        kubepods, uid_ = root / "kubepods.slice", uid.replace("-", "_")
        pod = (
            kubepods / f"kubepods-pod{uid_}.slice"
            if qos == "guaranteed"
            else kubepods / f"kubepods-{qos}.slice" / f"kubepods-{qos}-pod{uid_}.slice"
        )
        return pod / f"cri-containerd-{container_id}.scope"
    kubepods = root / "kubepods"
    pod = kubepods / f"pod{uid}" if qos == "guaranteed" else kubepods / qos / f"pod{uid}"
    return pod / container_id


class Node:
    """This machine as a kubelet would use it: container cgroups with a process in each."""

    def __init__(self) -> None:
        assert V2 is not None
        self.root = V2 / f"joulestream-test-{secrets.token_hex(4)}"
        self.root.mkdir()
        self.burners: dict[Path, subprocess.Popen[bytes]] = {}

    def run(self, cgroup: Path) -> None:
        cgroup.mkdir(parents=True)
        script = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"'
        self.burners[cgroup] = subprocess.Popen(
            ["sh", "-c", script, "sh", sys.executable, "-c", BURNER]
        )

    def stop(self, cgroup: Path) -> None:
        burner = self.burners.pop(cgroup)
        burner.kill()
        burner.wait()
        self._remove(cgroup)

    def cleanup(self) -> None:
        for cgroup in list(self.burners):
            self.stop(cgroup)
        for directory, _, _ in sorted(os.walk(self.root), reverse=True):  # deepest first
            self._remove(Path(directory))

    @staticmethod
    def _remove(directory: Path) -> None:
        for _ in range(100):  # the kernel frees an emptied cgroup asynchronously
            try:
                directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("this test creates cgroups and needs root")
    if V2 is None:
        pytest.fail("no cgroup v2 hierarchy under /sys/fs/cgroup")
    made = Node()
    try:
        yield made
    finally:
        made.cleanup()


@dataclass
class Pod:
    namespace: str
    name: str
    resources: dict[str, Any]
    qos: str  # what the API server must compute from the resources
    driver: str  # cgroup driver of the simulated kubelet
    reports_container: bool  # the kubelet has put the container id in the pod status
    uid: str = ""
    container_id: str = ""

    def body(self, node_name: str) -> dict[str, Any]:
        labels = {"app.kubernetes.io/name": self.name, "qos": self.qos.lower()}
        container = {"name": "app", "image": "registry.k8s.io/pause:3.10"}
        return {
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"nodeName": node_name, "containers": [{**container, **self.resources}]},
        }


def start_pod(api: KubeApi, node: Node, pod: Pod, node_name: str) -> None:
    """Create the pod through the API, then do the kubelet's part on this machine."""
    created = api.request("POST", f"/api/v1/namespaces/{pod.namespace}/pods", pod.body(node_name))
    assert created["status"]["qosClass"] == pod.qos
    pod.uid, pod.container_id = created["metadata"]["uid"], secrets.token_hex(32)
    node.run(kubelet_cgroup(node.root, pod.driver, pod.qos, pod.uid, pod.container_id))
    if pod.reports_container:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "name": "app",
            "containerID": f"containerd://{pod.container_id}",
            "image": "registry.k8s.io/pause:3.10",
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        api.request(
            "PATCH",
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
            {"status": {"phase": "Running", "containerStatuses": [status]}},
            content_type="application/merge-patch+json",
        )


def delete_pod(api: KubeApi, node: Node, pod: Pod) -> None:
    """A graceful delete, the containers stopped, then the kubelet's final delete."""
    path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
    api.request("DELETE", path)
    node.stop(kubelet_cgroup(node.root, pod.driver, pod.qos, pod.uid, pod.container_id))
    api.request("DELETE", path, params={"gracePeriodSeconds": "0"})


def named_joules(series: Series, cluster: str, pod: Pod) -> float:
    """Joules on /metrics of ``pod``'s container, under its namespace and pod name."""
    container = "app" if pod.reports_container else ""
    return sum(
        value
        for labels, value in series.get("joulestream_workload_joules_total", [])
        if labels.get("cluster") == cluster
        and labels.get("workload_id") == pod.container_id
        and (labels.get("namespace"), labels.get("pod")) == (pod.namespace, pod.name)
        and labels.get("container", "") == container
    )


def last_capabilities(bootstrap: str, topics: Topics, node_name: str) -> list[dict[str, Any]]:
    """The capability report of the node's last sample that carries one."""
    consumer = clients.consumer(f"kube-e2e-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topics.samples])
    codec, found = Codec(), None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if found is not None:
                    return found
                continue
            if not message.error() and message.key().endswith(f"/{node_name}".encode()):
                frame = decode_sample(codec, message.value())
                found = frame.capabilities if frame.capabilities is not None else found
    finally:
        consumer.close()
    assert found is not None, "no sample of the node with capabilities"
    return found


def test_pods_of_a_real_api_server_are_named_in_the_sink(
    kafka_bootstrap: str,
    topics: Topics,
    kube_api: KubeApi,
    node: Node,
    tmp_path: Path,
    unused_ports: Any,
) -> None:
    suffix = secrets.token_hex(3)
    shop, batch, web = (kube_api.namespace(f"{n}-{suffix}") for n in ("shop", "batch", "web"))
    limits = {"cpu": "100m", "memory": "64Mi"}
    pods = [
        Pod(shop, "checkout", {"resources": {"requests": limits, "limits": limits}},
            "Guaranteed", "systemd", reports_container=True),
        Pod(batch, "trainer", {"resources": {"requests": {"cpu": "50m"}}},
            "Burstable", "systemd", reports_container=True),
        Pod(batch, "loader", {"resources": {"requests": {"memory": "32Mi"}}},
            "Burstable", "cgroupfs", reports_container=False),
        Pod(web, "frontend", {}, "BestEffort", "cgroupfs", reports_container=False),
    ]  # fmt: skip
    node_name, cluster = f"kube-e2e-{suffix}", "kube-e2e"
    for pod in pods:
        start_pod(kube_api, node, pod, node_name)

    (sink_port,) = unused_ports(1)
    common = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix]
    with (
        joulestream("process", *common, "--lateness", "1", log=tmp_path / "processor.log"),
        joulestream(
            "sink", "prometheus", *common, "--port", str(sink_port), log=tmp_path / "sink.log"
        ),
        joulestream(
            "agent", *common, "--cluster", cluster, "--node", node_name, "--interval", "0.5",
            "--collector", "procfs", "--cgroup-root", str(V2), "--power", "none",
            "--metrics-port", "0", "--kubeconfig", str(kube_api.cert_kubeconfig),
            log=tmp_path / "agent.log",
        ) as agent,
    ):  # fmt: skip

        def logs() -> str:
            return "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                for p in sorted(tmp_path.glob("*.log"))
            )

        def all_named(expected: list[Pod]) -> bool:
            series = scrape(sink_port)
            return all(named_joules(series, cluster, pod) > 0 for pod in expected)

        try:
            wait_for(lambda: all_named(pods), timeout=90, what="every pod's energy by name")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None

        # The pod is deleted and made again under the same name: a new uid, a new container.
        checkout = pods[0]
        delete_pod(kube_api, node, checkout)
        old_uid = checkout.uid
        start_pod(kube_api, node, checkout, node_name)
        assert checkout.uid != old_uid
        try:
            wait_for(lambda: all_named([checkout]), timeout=60, what="the recreated pod by name")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        assert agent.poll() is None, logs()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, logs()

    capabilities = last_capabilities(kafka_bootstrap, topics, node_name)
    (kubernetes,) = [c for c in capabilities if c["name"] == "kubernetes_api"]
    assert kubernetes["available"], kubernetes
    assert f"from {kube_api.url} (kubeconfig {kube_api.cert_kubeconfig}" in kubernetes["detail"]
