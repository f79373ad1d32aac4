"""A real Kubernetes API server for the tests (a pytest plugin: tests/conftest.py lists it).

``kube_api``: one etcd (Debian's etcd-server) and one kube-apiserver (built by
scripts/kubernetes.sh into the venv) per session, on free ports in a temporary directory:
TLS with a CA of its own, a static admin token (``--token-auth-file``, group
system:masters), client certificates signed by that CA, service-account signing keys (so
``kubectl create token`` works) and ``--authorization-mode=RBAC``. No kubelet, scheduler or
controller manager: pods stay Pending, namespaces get no ``default`` service account and
are never finalized, so tests make what those controllers would have made and use namespaces
of their own. ``kube_api.restart()`` kills and restarts the API server alone (etcd keeps the state).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from joulestream.kafka.broker import free_ports

BIN = Path(sys.executable).parent
SETUP = "scripts/setup.sh (it builds kube-apiserver, kubectl, kustomize and helm)"


def binary(name: str) -> str:
    """A tool beside the venv's Python (scripts/setup.sh puts them there), else on PATH."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run {SETUP}")
    return str(found)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _key_and_csr(directory: Path, name: str, subject: str, *extensions: str) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", subject, "-keyout", str(directory / f"{name}.key"),
        "-out", str(directory / f"{name}.csr"),
        *(arg for ext in extensions for arg in ("-addext", ext)),
    )  # fmt: skip


def make_pki(directory: Path) -> None:
    """CA, API-server certificate for 127.0.0.1, an admin client certificate, SA keys."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", "/CN=joulestream-test-ca",
        "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
    )  # fmt: skip
    for name, subject, usage, extra in (
        ("server", "/CN=kube-apiserver", "serverAuth", ["subjectAltName=IP:127.0.0.1"]),
        ("admin", "/O=system:masters/CN=cert-admin", "clientAuth", []),
    ):
        _key_and_csr(directory, name, subject, f"extendedKeyUsage={usage}", *extra)
        _openssl(
            "x509", "-req", "-in", str(directory / f"{name}.csr"), "-days", "2",
            "-CA", str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"),
            "-CAcreateserial", "-copy_extensions", "copy", "-out", str(directory / f"{name}.crt"),
        )  # fmt: skip
    _openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(directory / "sa.key")
    )


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    """A kubeconfig with one context, as kubectl and the agent read it."""
    cluster = {"server": server, "certificate-authority": str(ca)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class KubeApi:
    """etcd + kube-apiserver under ``root``; ``request`` and ``kubectl`` act as the admin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        self.pki.mkdir()
        make_pki(self.pki)
        self.ca = self.pki / "ca.crt"
        self.admin_token = secrets.token_hex(16)
        (root / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        self.etcd_port, self.etcd_peer_port, self.port = free_ports(3)
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = write_kubeconfig(
            root / "admin.kubeconfig", self.url, self.ca, {"token": self.admin_token}
        )
        self.cert_kubeconfig = write_kubeconfig(  # the same admin by client certificate
            root / "cert.kubeconfig",
            self.url,
            self.ca,
            {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"},
        )
        self._context = ssl.create_default_context(cafile=str(self.ca))
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        etcd = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = self._spawn(
            "etcd",
            [binary("etcd"), "--data-dir", str(self.root / "etcd"), "--name", "test",
             "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--log-level", "warn"],
        )  # fmt: skip
        self._wait(f"{etcd}/health", "etcd", self._etcd, tls=False)
        self.start_apiserver()

    def start_apiserver(self) -> None:
        self._apiserver = self._spawn(
            "apiserver",
            [binary("kube-apiserver"),
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={self.port}", f"--cert-dir={self.root / 'certs'}",
             f"--tls-cert-file={self.pki / 'server.crt'}",
             f"--tls-private-key-file={self.pki / 'server.key'}",
             f"--client-ca-file={self.ca}",
             f"--token-auth-file={self.root / 'tokens.csv'}",
             "--authorization-mode=RBAC",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={self.pki / 'sa.key'}",
             f"--service-account-signing-key-file={self.pki / 'sa.key'}",
             "--service-cluster-ip-range=10.96.0.0/24",
             "--endpoint-reconciler-type=none",  # no node address to advertise here
             "--enable-priority-and-fairness=false", "--profiling=false"],
        )  # fmt: skip
        self._wait(f"{self.url}/readyz", "kube-apiserver", self._apiserver, tls=True)

    def restart(self) -> None:
        """The API server alone is killed (as by the OOM killer; a graceful stop waits for
        open watches) and comes back on the same port; etcd keeps the state."""
        assert self._apiserver is not None
        self._apiserver.kill()
        self._apiserver.wait()
        self.start_apiserver()

    def stop(self) -> None:
        """Killed: nothing here needs a graceful stop, which open watches would hold up."""
        for process in (self._apiserver, self._etcd):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, url: str, name: str, process: subprocess.Popen[bytes], tls: bool) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(OSError, urllib.error.URLError):
                request = urllib.request.Request(url)
                if tls:
                    request.add_header("Authorization", f"Bearer {self.admin_token}")
                context = self._context if tls else None
                with urllib.request.urlopen(request, timeout=5, context=context) as response:
                    if response.status == 200:
                        return
            time.sleep(0.25)
        log = (self.root / f"{name.split('-')[-1]}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} did not become ready (exit {process.poll()}):\n{log}")

    # -- clients ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call as the admin; the decoded JSON answer, ApiError on a non-2xx."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr or result.stdout}")
        return result

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """A namespace with the ``default`` service account the controller manager would add
        (the ServiceAccount admission plugin refuses pods without it)."""
        self.request("POST", "/api/v1/namespaces",
                     {"metadata": {"name": name, "labels": labels or {}}})  # fmt: skip
        self.request(
            "POST", f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}}
        )
        return name


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    api = KubeApi(tmp_path_factory.mktemp("kube"))
    try:
        api.start()
        yield api
    finally:
        api.stop()
