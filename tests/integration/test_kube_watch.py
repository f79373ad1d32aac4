"""The agent's pod watch (PodWatcher, as the agent runs it) against a real kube-apiserver.

Pods are created, deleted and recreated through the API; the API server is killed and
restarted mid-watch; a thousand pods are listed in pages; bookmarks move the watch's version
on. No kubelet runs: pods stay Pending, which changes nothing for the watch.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from integration.kube_fixtures import KubeApi

from joulestream.agents.kube_endpoint import from_kubeconfig
from joulestream.agents.kubernetes import PodNames, PodWatcher

pytestmark = pytest.mark.integration


def pod(name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    containers = [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": containers},
    }


def create(api: KubeApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    return created


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def node() -> str:
    """A node of its own per test: the watch selects spec.nodeName, other tests' pods stay out."""
    return f"node-{secrets.token_hex(4)}"


@pytest.fixture
def namespace(kube_api: KubeApi) -> str:
    return kube_api.namespace(f"watch-{secrets.token_hex(4)}")


@pytest.fixture
def start_watcher(kube_api: KubeApi, node: str) -> Iterator[Callable[..., PodWatcher]]:
    started: list[PodWatcher] = []

    def start(**options: Any) -> PodWatcher:
        watcher = PodWatcher(
            from_kubeconfig([kube_api.kubeconfig]), node, backoff_s=(0.2, 1.0), **options
        )
        watcher.start()
        started.append(watcher)
        assert watcher.wait_synced(20), watcher.capability().detail
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def test_pod_deleted_then_recreated_under_the_same_name(
    kube_api: KubeApi, namespace: str, node: str, start_watcher: Callable[..., PodWatcher]
) -> None:
    watcher = start_watcher()
    first = create(kube_api, namespace, pod("checkout", node, {"app": "checkout"}))
    old_uid = first["metadata"]["uid"]
    names = PodNames(namespace, "checkout", None)
    wait_for(lambda: watcher.index.lookup(None, old_uid) == names, "the ADDED pod")
    assert len(watcher.index) == 1

    path = f"/api/v1/namespaces/{namespace}/pods/checkout"
    kube_api.request("DELETE", path)  # graceful: a bound pod waits for its kubelet
    assert kube_api.request("GET", path)["metadata"]["deletionTimestamp"]
    kube_api.request("DELETE", path, params={"gracePeriodSeconds": "0"})  # the kubelet's delete
    wait_for(lambda: len(watcher.index) == 0, "the DELETED event")
    assert watcher.index.lookup(None, old_uid) == names  # kept for its last windows (120 s)

    second = create(kube_api, namespace, pod("checkout", node, {"app": "checkout"}))
    new_uid = second["metadata"]["uid"]
    assert new_uid != old_uid
    wait_for(lambda: watcher.index.lookup(None, new_uid) == names, "the recreated pod")
    assert len(watcher.index) == 1
    assert watcher.lists == 1  # all of it came by the watch


def test_watch_survives_an_api_server_restart_relisting_when_its_version_is_too_old(
    kube_api: KubeApi,
    namespace: str,
    node: str,
    start_watcher: Callable[..., PodWatcher],
) -> None:
    before = create(kube_api, namespace, pod("before", node))
    watcher = start_watcher()
    assert watcher.index.lookup(None, before["metadata"]["uid"]) is not None
    for i in range(5):  # writes this watch never sees: its version falls behind etcd's
        create(kube_api, namespace, pod(f"elsewhere-{i}", "another-node"))

    kube_api.restart()  # the restarted cache starts past the watch's version: 410, re-list
    after = create(kube_api, namespace, pod("after", node))
    names = PodNames(namespace, "after", None)
    wait_for(lambda: watcher.index.lookup(None, after["metadata"]["uid"]) == names, "the pod")
    assert watcher.lists == 2, "a watch resumed from a version the API no longer serves"
    wait_for(lambda: watcher.capability().available, "the capability to recover")
    assert len(watcher.index) == 2
    assert f"from {kube_api.url} (kubeconfig" in watcher.capability().detail


def test_bookmarks_carry_the_version_past_other_nodes_pods(
    kube_api: KubeApi, namespace: str, start_watcher: Callable[..., PodWatcher]
) -> None:
    # The API server sends a bookmark 2 s before a watch's timeout: 3 s gives one per watch.
    watcher = start_watcher(watch_timeout_s=3)
    last = {}
    for i in range(3):
        last = create(kube_api, namespace, pod(f"elsewhere-{i}", "another-node"))
    written = int(last["metadata"]["resourceVersion"])  # etcd revisions, compared in a test only

    def bookmarked_past_it() -> bool:
        return watcher.bookmarks > 0 and int(watcher.resource_version) >= written

    wait_for(bookmarked_past_it, "a bookmark past the other node's pods", timeout=15)
    assert len(watcher.index) == 0 and watcher.lists == 1


def test_a_thousand_pods_are_listed_in_pages(
    kube_api: KubeApi, node: str, start_watcher: Callable[..., PodWatcher]
) -> None:
    namespaces = [kube_api.namespace(f"many-{i}-{secrets.token_hex(3)}") for i in range(2)]
    bodies = [(namespaces[i % 2], pod(f"p-{i:04d}", node, {"i": str(i)})) for i in range(1000)]
    bodies += [(namespaces[0], pod(f"other-{i}", "another-node")) for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda nb: create(kube_api, *nb), bodies))
    watcher = start_watcher(page_size=300)  # 4 pages, continued with their tokens
    assert len(watcher.index) == 1000
    for done in created[:1000:97]:
        meta = done["metadata"]
        names = PodNames(meta["namespace"], meta["name"], None)
        assert watcher.index.lookup(None, meta["uid"]) == names
    assert "1000 pods" in watcher.capability().detail
