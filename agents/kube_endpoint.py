"""Where the Kubernetes API is and how to authenticate to it: in-cluster or a kubeconfig.

In a pod the service account gives the address (``KUBERNETES_SERVICE_HOST``/``_PORT``), a
bearer token and the CA. Out of a cluster (an agent run by hand or by systemd on a node, a
test against a local API server) a kubeconfig does, as for kubectl: ``--kubeconfig PATH``, else
the ``KUBECONFIG`` list (files merged, the first to set a value wins, missing ones skipped), and
only then the in-cluster account. Of the kubeconfig the current context's cluster (server, CA
file or data, ``insecure-skip-tls-verify``) and user (token, ``tokenFile``, client certificate
and key as files or data) are used; exec and auth-provider plugins and basic auth are refused
with a clear error rather than ignored, since the agent would then talk to the API anonymously.

Files (token, CA, client certificate) are re-read on every connection: projected service
account tokens and kubelet-issued certificates rotate under a long-running agent.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

Pem = Path | bytes  # a file (re-read for every connection) or the PEM itself


class KubernetesUnavailable(RuntimeError):
    """The API cannot be used from here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ApiEndpoint:
    base_url: str  # scheme://host:port
    token_file: Path | None = None
    ca: Pem | None = None  # None: the system's trust store
    token: str | None = None
    client_cert: Pem | None = None
    client_key: Pem | None = None
    insecure: bool = False  # insecure-skip-tls-verify
    source: str = "in-cluster service account"

    @classmethod
    def in_cluster(
        cls, environ: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT
    ) -> ApiEndpoint:
        host = environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise KubernetesUnavailable(
                "KUBERNETES_SERVICE_HOST not set (not running in a pod) and no --kubeconfig or "
                "KUBECONFIG: workloads carry container and pod ids, no pod names or namespaces"
            )
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        token, ca = sa_dir / "token", sa_dir / "ca.crt"
        for path in (token, ca):
            if not path.is_file():
                raise KubernetesUnavailable(
                    f"no {path}: mount the service account token (automountServiceAccountToken)"
                )
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, ca)

    def describe(self) -> str:
        return f"{self.base_url} ({self.source})"

    def authorization(self) -> str | None:
        """The Authorization header, if the user has a token (a rotated file is re-read)."""
        token = self.token_file.read_text().strip() if self.token_file else self.token
        return f"Bearer {token}" if token else None

    def ssl_context(self) -> ssl.SSLContext:
        ca = _read(self.ca) if self.ca is not None else None
        context = ssl.create_default_context(cadata=ca.decode() if ca else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None and self.client_key is not None:
            with tempfile.TemporaryDirectory() as private:  # ssl loads key pairs from files only
                cert, key = Path(private, "cert.pem"), Path(private, "key.pem")
                for path, pem in ((cert, self.client_cert), (key, self.client_key)):
                    path.touch(0o600)
                    path.write_bytes(_read(pem))
                context.load_cert_chain(cert, key)
        return context


def _read(pem: Pem) -> bytes:
    return pem.read_bytes() if isinstance(pem, Path) else pem


def kubeconfig_paths(flag: Path | None, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """``--kubeconfig`` if given, else the ``KUBECONFIG`` list; empty: the in-cluster account."""
    if flag is not None:
        return [flag]
    return [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]


def api_endpoint(
    kubeconfig: Sequence[Path], environ: Mapping[str, str] = os.environ
) -> ApiEndpoint:
    """The kubeconfig's current context when files are named, else the in-cluster account."""
    if kubeconfig:
        return from_kubeconfig(kubeconfig)
    return ApiEndpoint.in_cluster(environ)


def from_kubeconfig(paths: Sequence[Path]) -> ApiEndpoint:
    """The endpoint of the current context of ``paths`` merged as kubectl merges them.

    A single file must exist; of a list, missing files are skipped (client-go's rule), but at
    least one must be there.
    """
    merged: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current = ""
    read = []
    for path in paths:
        if not path.is_file() and len(paths) > 1:
            continue
        config = _load(path)
        read.append(str(path))
        current = current or str(config.get("current-context") or "")
        for section, item in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in config.get(section) or ():
                if not isinstance(entry, dict) or not entry.get("name"):
                    raise KubernetesUnavailable(
                        f"kubeconfig {path}: an entry of {section} has no name"
                    )
                merged[section].setdefault(entry["name"], (path.parent, entry.get(item) or {}))
    if not read:
        raise KubernetesUnavailable(f"no kubeconfig file among {[str(p) for p in paths]}")
    where = f"kubeconfig {os.pathsep.join(read)}"
    if not current:
        raise KubernetesUnavailable(f"{where} has no current-context")
    if current not in merged["contexts"]:
        raise KubernetesUnavailable(f"{where}: current-context {current!r} is not defined")
    _, context = merged["contexts"][current]
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if cluster_name not in merged["clusters"]:
        raise KubernetesUnavailable(f"{where}: context {current!r} names no defined cluster")
    cluster_dir, cluster = merged["clusters"][cluster_name]
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubernetesUnavailable(f"{where}: cluster {cluster_name!r} has no https:// server")
    if user_name and user_name not in merged["users"]:
        raise KubernetesUnavailable(f"{where}: context {current!r} names no defined user")
    user_dir, user = merged["users"][user_name] if user_name else (cluster_dir, {})
    unsupported = sorted({"exec", "auth-provider", "username", "password"} & user.keys())
    if unsupported:
        raise KubernetesUnavailable(
            f"{where}: user {user_name!r} authenticates with {', '.join(unsupported)}, which the "
            "agent does not support: use a token, tokenFile or client certificate"
        )
    cert = _pem(user, "client-certificate", user_dir, where)
    key = _pem(user, "client-key", user_dir, where)
    if (cert is None) != (key is None):
        raise KubernetesUnavailable(
            f"{where}: user {user_name!r} has a client certificate or key, it needs both"
        )
    token_file = user_dir / user["tokenFile"] if user.get("tokenFile") else None
    ca = _pem(cluster, "certificate-authority", cluster_dir, where)
    for file in (ca, cert, key, token_file):
        if isinstance(file, Path) and not file.is_file():
            raise KubernetesUnavailable(f"{where}: no file {file}")
    return ApiEndpoint(
        server,
        token_file=token_file,
        ca=ca,
        token=user.get("token") or None,
        client_cert=cert,
        client_key=key,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        source=f"{where}, context {current}",
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubernetesUnavailable(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KubernetesUnavailable(f"kubeconfig {path} is not YAML: {exc}") from exc
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise KubernetesUnavailable(f"kubeconfig {path} is not a mapping")
    return config


def _pem(entry: Mapping[str, Any], key: str, base: Path, where: str) -> Pem | None:
    """``<key>-data`` (base64 PEM) or ``<key>`` (a path relative to its kubeconfig)."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise KubernetesUnavailable(f"{where}: {key}-data is not base64: {exc}") from exc
    path = entry.get(key)
    return base / path if path else None
