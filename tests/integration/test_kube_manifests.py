"""The manifests against a real kube-apiserver, both renderings of them: ``kustomize build
deploy/kubernetes`` and ``helm template deploy/helm/joulestream``. Each passes a server-side
dry run (strict field validation, admission, the CRD schemas of ServiceMonitor and KafkaTopic),
is applied for real and read back; the agent's service account may list and watch pods and
nothing else, checked with ``kubectl auth can-i`` and with a token of that account, and the
checks flip when a permission is taken away through the API.

The two CRDs are made from the vendored schemas of tests/fixtures/deploy (prometheus-operator
ServiceMonitor v1, Strimzi KafkaTopic v1beta2), as their operators would install them.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.kube_fixtures import KubeApi, binary, write_kubeconfig
from unit.test_deploy_kubernetes import CRD_SCHEMAS

from joulestream.agents.kube_endpoint import from_kubeconfig
from joulestream.agents.kubernetes import PodWatcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AGENT = "system:serviceaccount:joulestream:joulestream-agent"
# What the agent does with the API (agents/kubernetes.py): list and watch pods, no more.
AGENT_MAY = {("pods", "list"), ("pods", "watch")}
AGENT_MAY_NOT = [
    ("pods", "get"), ("pods", "create"), ("pods", "delete"), ("pods", "patch"),
    ("pods/exec", "create"), ("pods/log", "get"), ("pods/eviction", "create"),
    ("nodes", "list"), ("nodes/proxy", "get"), ("secrets", "get"), ("secrets", "list"),
    ("configmaps", "list"), ("serviceaccounts/token", "create"), ("events", "create"),
    ("clusterroles", "escalate"), ("clusterrolebindings", "create"),
]  # fmt: skip

Doc = dict[str, Any]


def structural(schema: Any) -> Any:
    """A CRD's openAPIV3Schema from the vendored JSON schema: the catalogue added
    ``additionalProperties: false`` for strict offline validation, which a structural schema
    may not have (the API server rejects unknown fields by pruning and strict validation)."""
    if isinstance(schema, dict):
        return {
            k: structural(v)
            for k, v in schema.items()
            if not (k == "additionalProperties" and v is False)  # maps keep their value schema
        }
    if isinstance(schema, list):
        return [structural(v) for v in schema]
    return schema


def crds() -> list[Doc]:
    made = []
    for (api_version, kind), filename in CRD_SCHEMAS.items():
        group, version = api_version.split("/")
        plural = kind.lower() + "s"
        schema = json.loads((ROOT / "tests/fixtures/deploy" / filename).read_text())
        made.append({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                          "listKind": f"{kind}List"},
                "versions": [{"name": version, "served": True, "storage": True,
                              "schema": {"openAPIV3Schema": structural(schema)},
                              "subresources": {"status": {}}}],
            },
        })  # fmt: skip
    return made


def dump(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs)


def apply(api: KubeApi, docs: list[Doc], *flags: str) -> subprocess.CompletedProcess[str]:
    return api.kubectl(
        "apply", "--server-side", "--field-manager=joulestream-test", *flags, "-f", "-",
        stdin=dump(docs), check=False,
    )  # fmt: skip


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` (read back, with the server's defaults) lacks what was applied."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [m for k, v in expected.items() for m in mismatches(v, actual.get(k), f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [m for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for m in mismatches(e, a, f"{path}[{i}]")]  # fmt: skip
    return [] if expected == actual else [f"{path}: applied {expected!r}, read {actual!r}"]


RENDER = {
    "kustomize": ["kustomize", "build", str(ROOT / "deploy/kubernetes")],
    "helm": ["helm", "template", "joulestream", str(ROOT / "deploy/helm/joulestream"),
             "--namespace", "joulestream", "--set", "createNamespace=true"],
}  # fmt: skip


@pytest.fixture(scope="module")
def crds_installed(kube_api: KubeApi) -> KubeApi:
    """The CRDs installed and established; Strimzi's ``kafka`` namespace (not ours) made."""
    result = apply(kube_api, crds())
    assert result.returncode == 0, result.stderr
    kube_api.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *(f"crd/{c['metadata']['name']}" for c in crds()))  # fmt: skip
    kube_api.namespace("kafka")
    return kube_api


@pytest.fixture(scope="module", params=list(RENDER))
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    tool, *args = RENDER[request.param]
    result = subprocess.run([binary(tool), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def cluster(crds_installed: KubeApi, rendered: list[Doc]) -> Iterator[KubeApi]:
    """The rendering's namespace applied first (namespaced objects cannot be dry-run before
    their namespace exists); afterwards its objects are deleted for the next rendering (the
    namespace stays: without a namespace controller it would never finish terminating)."""
    namespaces = [doc for doc in rendered if doc["kind"] == "Namespace"]
    assert apply(crds_installed, namespaces).returncode == 0
    yield crds_installed
    others = [doc for doc in rendered if doc["kind"] != "Namespace"]
    crds_installed.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=dump(others))


def test_server_side_dry_run_accepts_every_rendered_object(
    cluster: KubeApi, rendered: list[Doc]
) -> None:
    result = apply(cluster, rendered, "--dry-run=server")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(rendered), result.stdout
    assert all(line.endswith("(server dry run)") for line in lines), result.stdout
    assert not result.stderr.strip(), result.stderr  # no warnings (unknown fields, PSA, ...)
    # a dry run creates nothing
    assert cluster.kubectl("get", "daemonsets", "-n", "joulestream", "-o", "name").stdout == ""


@pytest.mark.parametrize(
    ("kind", "break_it", "message"),
    [
        ("DaemonSet", lambda d: d["spec"]["template"]["spec"].update(hostPid=True),
         ".spec.template.spec.hostPid: field not declared in schema"),
        ("DaemonSet", lambda d: d["spec"]["template"]["metadata"]["labels"].clear(),
         "`selector` does not match template `labels`"),
        ("KafkaTopic", lambda d: d["spec"].update(partitions=0),
         "spec.partitions: Invalid value: 0"),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(scrapeEvery="15s"),
         ".spec.endpoints[0].scrapeEvery: field not declared in schema"),
    ],
    ids=["unknown-field", "selector", "crd-minimum", "crd-unknown-field"],
)  # fmt: skip
def test_server_side_dry_run_rejects_broken_objects(
    cluster: KubeApi, rendered: list[Doc], kind: str, break_it: Any, message: str
) -> None:
    broken = copy.deepcopy(next(d for d in rendered if d["kind"] == kind))
    break_it(broken)
    result = apply(cluster, [broken], "--dry-run=server")
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_applied_for_real_and_read_back(cluster: KubeApi, rendered: list[Doc]) -> None:
    result = apply(cluster, rendered)
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        cluster.kubectl("get", "-f", "-", "-o", "json", stdin=dump(rendered)).stdout
    )
    assert len(stored["items"]) == len(rendered)
    for applied, read in zip(rendered, stored["items"], strict=True):
        body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
        assert mismatches(body, read) == [], f"{applied['kind']}/{applied['metadata']['name']}"
    # applied again, nothing changes: the server keeps what the manifests say
    assert apply(cluster, rendered).returncode == 0
    again = json.loads(cluster.kubectl("get", "-f", "-", "-o", "json", stdin=dump(rendered)).stdout)
    versions = [[o["metadata"]["resourceVersion"] for o in x["items"]] for x in (stored, again)]
    assert versions[0] == versions[1]


def can_i(api: KubeApi, resource: str, verb: str) -> bool:
    resource, _, subresource = resource.partition("/")  # kubectl reads pods/log as pod "log"
    result = api.kubectl(
        "auth", "can-i", verb, resource, f"--subresource={subresource}", "--all-namespaces",
        f"--as={AGENT}", check=False,
    )  # fmt: skip
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def agent_may(api: KubeApi, checked: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``checked`` (resource, verb) the agent's service account may do."""
    with ThreadPoolExecutor(4) as pool:
        allowed = pool.map(lambda check: can_i(api, *check), sorted(checked))
        return {check for check, ok in zip(sorted(checked), allowed, strict=True) if ok}


def wait_for_permissions(api: KubeApi, expected: set[tuple[str, str]]) -> None:
    deadline = time.monotonic() + 20
    while (found := agent_may(api, AGENT_MAY)) != expected:  # RBAC reaches the authorizer in ms
        assert time.monotonic() < deadline, f"{found} != {expected}"
        time.sleep(0.2)


def agent_watcher(api: KubeApi, tmp_path: Path) -> PodWatcher:
    """The pod watch as the deployed agent runs it: with a token of its service account."""
    token = api.kubectl("create", "token", "joulestream-agent", "-n", "joulestream").stdout
    config = write_kubeconfig(tmp_path / "agent.kubeconfig", api.url, api.ca,
                              {"token": token.strip()})  # fmt: skip
    watcher = PodWatcher(from_kubeconfig([config]), "some-node", backoff_s=(0.2, 0.5))
    watcher.start()
    return watcher


def test_the_agent_may_list_and_watch_pods_and_nothing_more(
    cluster: KubeApi, rendered: list[Doc], tmp_path: Path
) -> None:
    assert apply(cluster, rendered).returncode == 0
    assert agent_may(cluster, {*AGENT_MAY, *AGENT_MAY_NOT}) == AGENT_MAY
    watcher = agent_watcher(cluster, tmp_path)
    try:
        assert watcher.wait_synced(20), watcher.capability().detail
        time.sleep(1)  # its watch is open and stays open
        assert watcher.capability().available, watcher.capability().detail
    finally:
        watcher.stop()
    token = cluster.kubectl("create", "token", "joulestream-agent", "-n", "joulestream").stdout
    secrets = cluster.kubectl("get", "secrets", "-A", f"--token={token.strip()}", check=False)
    assert secrets.returncode != 0 and "Forbidden" in secrets.stderr, secrets.stderr


@pytest.mark.parametrize("verb", ["list", "watch"])
def test_removing_a_permission_is_caught(
    cluster: KubeApi, rendered: list[Doc], tmp_path: Path, verb: str
) -> None:
    assert apply(cluster, rendered).returncode == 0
    role = cluster.request(
        "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/joulestream-agent"
    )
    for rule in role["rules"]:
        rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    cluster.request(
        "PUT", "/apis/rbac.authorization.k8s.io/v1/clusterroles/joulestream-agent", role
    )
    try:
        wait_for_permissions(cluster, AGENT_MAY - {("pods", verb)})
        watcher = agent_watcher(cluster, tmp_path)
        try:
            deadline = time.monotonic() + 20
            while "403" not in watcher.capability().detail:
                assert time.monotonic() < deadline, watcher.capability().detail
                time.sleep(0.1)
            assert not watcher.capability().available
        finally:
            watcher.stop()
    finally:  # the manifests restore it (taking the rules back from the PUT's manager)
        assert apply(cluster, rendered, "--force-conflicts").returncode == 0
    wait_for_permissions(cluster, AGENT_MAY)
