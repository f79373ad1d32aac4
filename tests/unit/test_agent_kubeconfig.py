"""The agent out of a cluster: API server and credentials from a kubeconfig, as kubectl reads it
(current context; token, tokenFile or client certificate; CA file or data; KUBECONFIG lists
merged, the first file to set a value winning), and clear errors for what it cannot use."""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from joulestream.agents.capabilities import kubernetes_capability
from joulestream.agents.kube_endpoint import (
    KubernetesUnavailable,
    api_endpoint,
    from_kubeconfig,
    kubeconfig_paths,
)
from joulestream.agents.kubernetes import PodWatcher


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate and its key, by the openssl command line (as the API-server fixture)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(
    path: Path,
    current: str | None,
    clusters: dict[str, dict[str, Any]],
    users: dict[str, dict[str, Any]],
    contexts: dict[str, tuple[str, str]],
) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [
            {"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in contexts.items()
        ],
    }  # fmt: skip
    if current is not None:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_current_context_with_token_and_ca_data(tmp_path: Path) -> None:
    ca, _ = self_signed(tmp_path, "ca")
    path = kubeconfig(
        tmp_path / "config",
        "dev",
        {
            "prod": {"server": "https://prod.example:6443"},
            "local": {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(ca)},
        },
        {"admin": {"token": "prod-token"}, "me": {"token": "local-token"}},
        {"prod": ("prod", "admin"), "dev": ("local", "me")},
    )
    endpoint = from_kubeconfig([path])
    assert endpoint.base_url == "https://127.0.0.1:6443"
    assert endpoint.authorization() == "Bearer local-token"
    assert endpoint.ca == ca.read_bytes()
    assert endpoint.describe() == f"https://127.0.0.1:6443 (kubeconfig {path}, context dev)"
    context = endpoint.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_files_are_relative_to_their_kubeconfig_and_re_read(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    self_signed(tmp_path / "creds", "ca")
    cert, key = self_signed(tmp_path / "creds", "client")
    (tmp_path / "creds" / "token").write_text("first\n")
    path = kubeconfig(
        tmp_path / "config",
        "c",
        {"k": {"server": "https://10.0.0.1", "certificate-authority": "creds/ca.crt"}},
        {"u": {"tokenFile": "creds/token", "client-certificate": "creds/client.crt",
               "client-key": str(key)}},
        {"c": ("k", "u")},
    )  # fmt: skip
    endpoint = from_kubeconfig([path])
    assert endpoint.ca == tmp_path / "creds/ca.crt"
    assert (endpoint.client_cert, endpoint.client_key) == (cert, key)
    assert endpoint.authorization() == "Bearer first"
    (tmp_path / "creds" / "token").write_text("rotated\n")
    assert endpoint.authorization() == "Bearer rotated"
    endpoint.ssl_context()  # the client key pair loads


def test_client_certificate_data_must_match_its_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "client")
    _, other_key = self_signed(tmp_path, "other")
    user = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    clusters = {"k": {"server": "https://10.0.0.1", "insecure-skip-tls-verify": True}}
    good = from_kubeconfig(
        [kubeconfig(tmp_path / "a", "c", clusters, {"u": user}, {"c": ("k", "u")})]
    )
    assert good.authorization() is None  # the certificate authenticates
    assert good.ssl_context().verify_mode == ssl.CERT_NONE
    user["client-key-data"] = b64(other_key)
    bad = from_kubeconfig(
        [kubeconfig(tmp_path / "b", "c", clusters, {"u": user}, {"c": ("k", "u")})]
    )
    with pytest.raises(ssl.SSLError):
        bad.ssl_context()


def test_kubeconfig_list_merges_first_value_wins_and_skips_missing_files(tmp_path: Path) -> None:
    first = kubeconfig(
        tmp_path / "first", None, {"k": {"server": "https://first:6443"}}, {"u": {"token": "a"}}, {}
    )
    second = kubeconfig(
        tmp_path / "second",
        "c",
        {"k": {"server": "https://second:6443"}},
        {"u": {"token": "b"}},
        {"c": ("k", "u")},
    )
    endpoint = from_kubeconfig([tmp_path / "missing", first, second])
    assert endpoint.base_url == "https://first:6443"  # cluster k from the first file
    assert endpoint.authorization() == "Bearer a"
    assert f"kubeconfig {first}:{second}, context c" in endpoint.describe()


def test_flag_then_kubeconfig_env_then_in_cluster(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"{tmp_path}/a::{tmp_path}/b", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert kubeconfig_paths(tmp_path / "flag", env) == [tmp_path / "flag"]
    assert kubeconfig_paths(None, env) == [tmp_path / "a", tmp_path / "b"]
    assert kubeconfig_paths(None, {}) == []
    with pytest.raises(KubernetesUnavailable, match="KUBECONFIG"):
        api_endpoint([], {})


@pytest.mark.parametrize(
    ("current", "user", "cluster", "message"),
    [
        (None, {"token": "t"}, {"server": "https://k"}, "no current-context"),
        ("nope", {"token": "t"}, {"server": "https://k"}, "'nope' is not defined"),
        ("c", {"exec": {"command": "aws"}}, {"server": "https://k"}, "exec, which the agent"),
        ("c", {"username": "a", "password": "b"}, {"server": "https://k"}, "password, username"),
        ("c", {"token": "t"}, {"server": "k:6443"}, "no https:// server"),
        ("c", None, {"server": "https://k"}, "names no defined user"),
        ("c", {"client-certificate": "/etc/hostname"}, {"server": "https://k"}, "needs both"),
        ("c", {"token": "t"}, {"server": "https://k", "certificate-authority": "nope.crt"},
         "no file"),
        ("c", {"token": "t"}, {"server": "https://k", "certificate-authority-data": "%%"},
         "not base64"),
    ],
)  # fmt: skip
def test_unusable_kubeconfigs_say_why(
    tmp_path: Path,
    current: str | None,
    user: dict[str, Any] | None,
    cluster: dict[str, Any],
    message: str,
) -> None:
    users = {"u": user} if user is not None else {}
    path = kubeconfig(tmp_path / "config", current, {"k": cluster}, users, {"c": ("k", "u")})
    with pytest.raises(KubernetesUnavailable, match=message):
        from_kubeconfig([path])
    capability = kubernetes_capability([path])
    assert not capability.available and message in capability.detail


def test_not_a_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubernetesUnavailable, match="cannot read kubeconfig"):
        from_kubeconfig([tmp_path / "missing"])
    (tmp_path / "list").write_text("- a\n")
    with pytest.raises(KubernetesUnavailable, match="not a mapping"):
        from_kubeconfig([tmp_path / "list"])
    (tmp_path / "bad").write_text("a: [\n")
    with pytest.raises(KubernetesUnavailable, match="not YAML"):
        from_kubeconfig([tmp_path / "bad"])


def test_the_watcher_reports_the_server_and_context_it_watches(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config",
        "c",
        {"k": {"server": "http://127.0.0.1:9"}},  # nothing listens: the report says so
        {"u": {"token": "t"}},
        {"c": ("k", "u")},
    )
    watcher = PodWatcher(api_endpoint([path]), "node-1")
    detail = watcher.capability().detail
    assert f"http://127.0.0.1:9 (kubeconfig {path}, context c)" in detail
    assert kubernetes_capability([path]).detail == (
        f"API at http://127.0.0.1:9 (kubeconfig {path}, context c)"
    )
