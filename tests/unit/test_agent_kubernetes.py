"""Pod watch against a small fake API server (http.server on 127.0.0.1): list, watch events
(ADDED/MODIFIED/DELETED/BOOKMARK), 410 Gone as an event and as a status, re-list, auth.

A plain fake, not Kubernetes: it serves what the API documents for
GET /api/v1/pods?fieldSelector=spec.nodeName=<node>[&watch=1&resourceVersion=…].
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from joulestream.agents.agent import _Loop
from joulestream.agents.kube_endpoint import ApiEndpoint, KubernetesUnavailable
from joulestream.agents.kubernetes import PodIndex, PodNames, PodWatcher

CID_A = "a" * 64
CID_B = "b" * 64
CID_A2 = "c" * 64


def pod(uid: str, name: str, rv: str, containers: dict[str, str] | None = None) -> dict[str, Any]:
    statuses = [
        {"name": n, "containerID": f"containerd://{cid}"} for cid, n in (containers or {}).items()
    ]
    return {
        "metadata": {"uid": uid, "name": name, "namespace": "shop", "resourceVersion": rv},
        "status": {"containerStatuses": statuses},
    }


class FakeApi:
    """Scripted responses: ``lists`` in order (the last repeats), ``watches`` in order, each
    a list of events or an HTTP status; when exhausted a watch hangs until the test ends."""

    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.watches: list[list[dict[str, Any]] | int] = []
        self.requests: list[tuple[dict[str, list[str]], str | None]] = []
        self.done = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                api.requests.append((query, self.headers.get("Authorization")))
                if url.path != "/api/v1/pods":
                    self.send_error(404)
                    return
                if "watch" not in query:
                    body = api.lists.pop(0) if len(api.lists) > 1 else api.lists[0]
                    self._send(200, json.dumps(body).encode())
                    return
                if not api.watches:
                    self.send_response(200)
                    self.end_headers()
                    api.done.wait(10)
                    return
                script = api.watches.pop(0)
                if isinstance(script, int):
                    self._send(script, b'{"kind":"Status","code":%d}' % script)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for event in script:
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                    self.wfile.flush()

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def watcher(api: FakeApi, tmp_path: Path) -> PodWatcher:
    token = tmp_path / "token"
    token.write_text("sekret\n")
    return PodWatcher(ApiEndpoint(api.url, token), "node-1", backoff_s=(0.05, 0.1))


def test_list_watch_events_and_relist_on_410(api: FakeApi, tmp_path: Path) -> None:
    uid_a, uid_b, uid_c = "uid-a", "uid-b", "uid-c"
    api.lists = [
        {"metadata": {"resourceVersion": "10"},
         "items": [pod(uid_a, "web", "9", {CID_A: "nginx"}), pod(uid_c, "old", "8")]},
        {"metadata": {"resourceVersion": "30"}, "items": [pod(uid_b, "api", "29", {CID_B: "app"})]},
    ]  # fmt: skip
    api.watches = [
        [
            {"type": "ADDED", "object": pod(uid_b, "api", "11", {CID_B: "app"})},
            {"type": "MODIFIED", "object": pod(uid_a, "web", "12", {CID_A2: "sidecar"})},
            {"type": "DELETED", "object": pod(uid_c, "old", "13")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}},
        ],  # the server ends this watch: resume from 14
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}],
        410,  # the re-list's first watch is refused with the status: re-list again
    ]
    w = watcher(api, tmp_path)
    w.start()
    try:
        wait_for(lambda: w.lists >= 3)
        wait_for(lambda: len(api.requests) >= 7)  # list, 2 watches, list, watch, list, watch
    finally:
        w.stop()
    kinds = [("watch" in q, q.get("resourceVersion", [""])[0]) for q, _ in api.requests]
    assert kinds[:7] == [
        (False, ""), (True, "10"), (True, "14"), (False, ""), (True, "30"), (False, ""),
        (True, "30"),
    ]  # fmt: skip
    for query, auth in api.requests:
        assert query["fieldSelector"] == ["spec.nodeName=node-1"]
        assert auth == "Bearer sekret"
    # after the re-list, only pod B is current; A and C linger as deleted (for late windows)
    index = w.index
    assert index.lookup(CID_B, None) == PodNames("shop", "api", "app")
    assert len(index) == 1
    assert w.capability().available and "1 pods" in w.capability().detail


def test_events_update_the_index_between_lists(api: FakeApi, tmp_path: Path) -> None:
    api.lists = [{"metadata": {"resourceVersion": "1"}, "items": [pod("u1", "web", "1")]}]
    api.watches = [
        [
            {"type": "MODIFIED", "object": pod("u1", "web", "2", {CID_A: "nginx"})},
            {"type": "ADDED", "object": pod("u2", "db", "3", {CID_B: "pg"})},
            {"type": "DELETED", "object": pod("u2", "db", "4", {CID_B: "pg"})},
        ]
    ]
    w = watcher(api, tmp_path)
    w.start()
    try:
        assert w.wait_synced(5)
        wait_for(lambda: w.index.lookup(CID_A, None) is not None)
        wait_for(lambda: len(w.index) == 1)
        assert w.index.lookup(CID_A, "u1") == PodNames("shop", "web", "nginx")
        assert w.index.lookup(None, "u1") == PodNames("shop", "web", None)  # pod slice/sandbox
        assert w.index.lookup(CID_B, None) == PodNames("shop", "db", "pg")  # deleted, retained
    finally:
        w.stop()


def test_forbidden_is_reported_and_retried(api: FakeApi, tmp_path: Path) -> None:
    api.lists = [{}]
    w = watcher(api, tmp_path)

    def forbidden(params: object, timeout: float) -> Any:
        raise KubernetesUnavailable("HTTP 403 from the API: needs list and watch on pods")

    w._get = forbidden  # type: ignore[method-assign]
    w.start()
    try:
        wait_for(lambda: "403" in w.capability().detail)
    finally:
        w.stop()
    assert not w.capability().available
    assert not w.wait_synced(0)


def test_deleted_pods_expire_after_retention() -> None:
    now = [0.0]
    index = PodIndex(retain_s=60, clock=lambda: now[0])
    index.replace([pod("u1", "web", "1", {CID_A: "nginx"})])
    index.apply("DELETED", pod("u1", "web", "2", {CID_A: "nginx"}))
    assert index.lookup(CID_A, None) is not None and len(index) == 0
    now[0] = 61
    index.apply("ADDED", pod("u2", "x", "3"))
    assert index.lookup(CID_A, None) is None and index.lookup(None, "u1") is None


def test_container_ids_of_every_runtime_and_init_containers() -> None:
    index = PodIndex()
    obj = pod("u1", "web", "1")
    obj["status"] = {
        "containerStatuses": [{"name": "a", "containerID": f"cri-o://{CID_A}"}],
        "initContainerStatuses": [{"name": "init", "containerID": f"docker://{CID_B}"}],
        "ephemeralContainerStatuses": [{"name": "debug", "containerID": ""}],  # not started
    }
    index.apply("ADDED", obj)
    assert index.lookup(CID_A, None) == PodNames("shop", "web", "a")
    assert index.lookup(CID_B, None) == PodNames("shop", "web", "init")


def test_in_cluster_endpoint(tmp_path: Path) -> None:
    with pytest.raises(KubernetesUnavailable, match="KUBERNETES_SERVICE_HOST"):
        ApiEndpoint.in_cluster({}, tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    with pytest.raises(KubernetesUnavailable, match="token"):
        ApiEndpoint.in_cluster(env, tmp_path)
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("c")
    endpoint = ApiEndpoint.in_cluster(env, tmp_path)
    assert endpoint.base_url == "https://10.0.0.1:6443"
    assert endpoint.ca == tmp_path / "ca.crt"
    assert endpoint.authorization() == "Bearer t"
    v6 = ApiEndpoint.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6.base_url == "https://[fd00::1]:443"


def test_loop_names_workloads_from_the_index(api: FakeApi, tmp_path: Path) -> None:
    """The loop's naming step, with the watcher fed by the fake API."""
    from joulestream.agents.collectors.base import CollectedWindow, Counters, Workload

    api.lists = [
        {"metadata": {"resourceVersion": "1"}, "items": [pod("u1", "web", "1", {CID_A: "nginx"})]}
    ]
    w = watcher(api, tmp_path)
    w.start()
    try:
        assert w.wait_synced(5)
        loop = _Loop.__new__(_Loop)
        loop.watcher = w
        loop.capabilities = [{"name": "kubernetes_api", "available": False, "detail": "x"}]
        loop.state = type("S", (), {"capabilities": []})()  # type: ignore[assignment]
        window = CollectedWindow(
            Counters(),
            [
                Workload("container", CID_A, "/p", container_id=CID_A, pod_uid="u1"),
                Workload("container", "u1-sandbox", "/p", container_id="d" * 64, pod_uid="u1"),
                Workload("system", "/", "/"),
            ],
        )
        loop._name_workloads(window)
    finally:
        w.stop()
    named = [(x.namespace, x.pod, x.container) for x in window.workloads]
    assert named == [("shop", "web", "nginx"), ("shop", "web", None), (None, None, None)]
    assert loop.capabilities[0]["available"] is True
