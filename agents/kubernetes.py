"""Pod names and namespaces from the Kubernetes API: a watch on the pods of this node.

http.client + ssl: the ``kubernetes`` client package is heavy for a per-node agent that needs
one list and one watch. The endpoint (agents/kube_endpoint.py: the in-cluster service account
or a kubeconfig) gives the API address, the credentials (re-read on every request: projected
tokens rotate) and the CA.

Protocol: LIST ``/api/v1/pods?fieldSelector=spec.nodeName=<node>`` (paged), then WATCH from
the list's ``resourceVersion`` with bookmarks; every event moves the version on. A watch that
ends is resumed from the last version; 410 Gone (as an HTTP status or as an ERROR event: the
version is too old) means re-list. Other failures back off; a broken watch then resumes from
its last version, a failed list lists again. Without the API the
agent still works: workloads keep their container and pod ids, with null names.

Deleted pods are kept for ``retain_s`` so the last windows of their containers, published
after the DELETED event, still carry names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse, HTTPSConnection
from typing import Any

from joulestream.agents.capabilities import Capability
from joulestream.agents.kube_endpoint import ApiEndpoint, KubernetesUnavailable

log = logging.getLogger(__name__)

_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


class _Gone(Exception):
    """410: the resource version is too old, re-list."""


@dataclass(frozen=True)
class PodNames:
    namespace: str
    pod: str
    container: str | None  # None: the pod's own cgroup or its sandbox


@dataclass
class _Pod:
    namespace: str
    name: str
    containers: dict[str, str]  # container id → container name


def _container_id(raw: str) -> str | None:
    """``containerd://<id>``, ``cri-o://<id>``, ``docker://<id>`` → ``<id>``."""
    _, sep, rest = raw.partition("://")
    return (rest or None) if sep else None


def _parse_pod(obj: Mapping[str, Any]) -> tuple[str, _Pod] | None:
    meta = obj.get("metadata") or {}
    uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace")
    if not (uid and name and namespace):
        return None
    containers: dict[str, str] = {}
    status = obj.get("status") or {}
    for key in _STATUS_LISTS:
        for container in status.get(key) or ():
            cid = _container_id(container.get("containerID") or "")
            if cid and container.get("name"):
                containers[cid] = container["name"]
    return uid, _Pod(namespace, name, containers)


class PodIndex:
    """pod uid / container id → names; thread-safe (the watcher writes, the loop reads)."""

    def __init__(self, retain_s: float = 120.0, clock: Callable[[], float] = time.monotonic):
        self.retain_s = retain_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}
        self._containers: dict[str, tuple[str, str]] = {}  # id → (pod uid, container name)
        self._deleted: dict[str, float] = {}  # uid → when it may go

    def replace(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """A fresh list: pods absent from it are treated as deleted (kept for ``retain_s``)."""
        parsed = dict(p for p in map(_parse_pod, pods) if p is not None)
        with self._lock:
            for uid in self._pods.keys() - parsed.keys():
                self._deleted.setdefault(uid, self._clock() + self.retain_s)
            for uid, pod in parsed.items():
                self._put(uid, pod)
            self._expire()

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        parsed = _parse_pod(obj)
        if parsed is None:
            return
        uid, pod = parsed
        with self._lock:
            if event_type == "DELETED":
                self._put(uid, pod)  # its final status may name containers not seen yet
                self._deleted[uid] = self._clock() + self.retain_s
            elif event_type in ("ADDED", "MODIFIED"):
                self._put(uid, pod)
            self._expire()

    def lookup(self, container_id: str | None, pod_uid: str | None) -> PodNames | None:
        with self._lock:
            if container_id is not None and container_id in self._containers:
                uid, container = self._containers[container_id]
                pod = self._pods[uid]
                return PodNames(pod.namespace, pod.name, container)
            owner = self._pods.get(pod_uid) if pod_uid is not None else None
            return PodNames(owner.namespace, owner.name, None) if owner else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods) - len(self._deleted)

    def _put(self, uid: str, pod: _Pod) -> None:
        old = self._pods.get(uid)
        if old is not None:  # names of containers from earlier statuses stay known
            pod.containers = {**old.containers, **pod.containers}
        self._pods[uid] = pod
        self._deleted.pop(uid, None)
        for cid, name in pod.containers.items():
            self._containers[cid] = (uid, name)

    def _expire(self) -> None:
        now = self._clock()
        for uid, deadline in list(self._deleted.items()):
            if deadline <= now:
                del self._deleted[uid]
                for cid in self._pods.pop(uid).containers:
                    self._containers.pop(cid, None)


class PodWatcher:
    """Keeps a PodIndex in step with the pods of ``node``, in a daemon thread."""

    def __init__(
        self,
        endpoint: ApiEndpoint,
        node: str,
        index: PodIndex | None = None,
        watch_timeout_s: int = 300,
        backoff_s: tuple[float, float] = (1.0, 30.0),
        page_size: int = 500,
    ) -> None:
        self.endpoint = endpoint
        self.node = node
        self.index = index or PodIndex()
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self.page_size = page_size
        self.lists = 0  # successful LISTs (re-lists after 410 included)
        self.bookmarks = 0  # BOOKMARK events: the version moved on without an event for us
        self.resource_version = ""  # the version a broken watch resumes from
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()
        self._error: str | None = None
        self._socket: socket.socket | None = None  # of the request in progress
        url = urllib.parse.urlsplit(endpoint.base_url)
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname or "", url.port or (443 if self._https else 80)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-watcher", daemon=True)
        self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):  # unblocks a watch waiting for the next event
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def capability(self) -> Capability:
        where = f"pods of node {self.node} from {self.endpoint.describe()}"
        if self._synced.is_set() and self._error is None:
            return Capability("kubernetes_api", True, f"watching {where}: {len(self.index)} pods")
        return Capability(
            "kubernetes_api",
            False,
            f"cannot watch {where}: {self._error or 'not listed yet'}; workloads carry ids, "
            "names may be missing",
        )

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        """List, then watch from the list's version. A watch that breaks (the API server
        restarts, the network drops) resumes from the last version it saw, so nothing is
        missed and nothing re-listed; only 410 Gone (that version is no longer served) or a
        failed list means a fresh list."""
        delay = self.backoff_s[0]
        version = ""  # empty: list before watching
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
                delay = self.backoff_s[0]
            except _Gone:
                log.info("pod watch: resource version %s expired (410), re-listing", version)
                version = ""
            except Exception as exc:  # the watcher must outlive any answer; retried below
                if self._stop.is_set():
                    return
                if self._error is None:  # the last request had succeeded: back off afresh
                    delay = self.backoff_s[0]
                self._error = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
                log.warning("pod watch failed (retry in %.0f s): %s", delay, self._error)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_s[1])

    def _list(self) -> str:
        pods: list[Mapping[str, Any]] = []
        token = ""
        while True:
            params = {"fieldSelector": f"spec.nodeName={self.node}", "limit": self.page_size}
            if token:
                params["continue"] = token
            with self._get(params, timeout=30) as response:
                body = json.loads(response.read())
            pods.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                break
        self.index.replace(pods)
        self.lists += 1
        self._synced.set()
        log.info("pod list: %d pods on node %s", len(pods), self.node)
        self.resource_version = str(meta.get("resourceVersion") or "")
        return self.resource_version

    def _watch(self, version: str) -> str:
        """One watch request; returns the version to resume from when the server ends it."""
        params: dict[str, object] = {
            "fieldSelector": f"spec.nodeName={self.node}",
            "watch": 1,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.watch_timeout_s,
        }
        if version:
            params["resourceVersion"] = version
        with self._get(params, timeout=self.watch_timeout_s + 30) as response:
            for line in response:
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise KubernetesUnavailable(f"watch error: {obj.get('message', obj)}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                self.resource_version = version
                if kind == "BOOKMARK":
                    self.bookmarks += 1
                else:
                    self.index.apply(str(kind), obj)
        return version

    @contextlib.contextmanager
    def _get(self, params: Mapping[str, object], timeout: float) -> Iterator[HTTPResponse]:
        """GET /api/v1/pods on a connection of its own (no proxies: the API is direct)."""
        connection: HTTPConnection = (
            HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self.endpoint.ssl_context()
            )
            if self._https
            else HTTPConnection(self._host, self._port, timeout=timeout)
        )
        headers = {"Accept": "application/json"}
        authorization = self.endpoint.authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            connection.request(
                "GET", f"/api/v1/pods?{urllib.parse.urlencode(params)}", None, headers
            )
            # kept: http.client drops connection.sock once a response will close it
            self._socket = connection.sock
            response = connection.getresponse()
            if response.status == 410:
                raise _Gone
            if response.status in (401, 403):
                raise KubernetesUnavailable(
                    f"HTTP {response.status} from the API: the agent's service account needs "
                    "list and watch on pods"
                )
            if response.status != 200:
                raise KubernetesUnavailable(
                    f"HTTP {response.status} from the API: {response.read(500)!r}"
                )
            self._error = None
            yield response
        finally:
            self._socket = None
            connection.close()
