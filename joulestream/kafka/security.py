"""``kafka start --secure``: SASL_SSL only, SCRAM-SHA-512 over TLS, the StandardAuthorizer
with nothing allowed by default (docs/architecture.md, 'Security').

Everything lives in the data dir: ``tls/`` holds a CA and the brokers' certificate (made
here with ``cryptography``; the CA key never leaves the data dir), ``secrets.json`` (mode
0600) the passwords of the principals. Principals:

- ``User:admin``, a super user: manages topics, users and ACLs (``--role admin``);
- ``User:broker``: the brokers among themselves (SCRAM), and ``User:CN=joulestream-broker``
  on the controller listener (mutual TLS), both super users;
- ``User:pipeline``: reads every source topic, writes energy and dead letters, owns the
  processor's changelogs and every consumer group under the topic prefix (``--role pipeline``);
- ``User:cluster-NAME``: writes only NAME's own source topics (``--cluster NAME``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MECHANISM = "SCRAM-SHA-512"
BROKER_DN = "CN=joulestream-broker"
SUPER_USERS = ("User:admin", "User:broker", f"User:{BROKER_DN}")
_VALIDITY = datetime.timedelta(days=3650)


def tls_dir(data_dir: Path) -> Path:
    """Absolute: brokers run in their own directory, clients anywhere."""
    return data_dir.resolve() / "tls"


def ca_file(data_dir: Path) -> Path:
    return tls_dir(data_dir) / "ca.pem"


def ensure_pki(data_dir: Path, host: str) -> None:
    """A CA and one certificate for every broker of this host (TLS server and controller
    client), written once; PEM files the brokers read directly (ssl.keystore.type=PEM)."""
    directory = tls_dir(data_dir)
    if (directory / "broker.pem").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "joulestream local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "joulestream-broker")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    _write_private(
        directory / "ca.key", ca_key.private_bytes(pem, private, serialization.NoEncryption())
    )
    _write_private(
        directory / "broker.pem",
        key.private_bytes(pem, private, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem),
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def load_secrets(data_dir: Path) -> dict[str, str]:
    """user → password; the brokers' and the admin's made on first use."""
    path = data_dir / "secrets.json"
    try:
        stored: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        stored = {}
    if "admin" not in stored or "broker" not in stored:
        stored = {"admin": secrets.token_urlsafe(24), "broker": secrets.token_urlsafe(24)}
        save_secrets(data_dir, stored)
    return stored


def save_secrets(data_dir: Path, stored: Mapping[str, str]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(data_dir / "secrets.json", (json.dumps(dict(stored), indent=2) + "\n").encode())


def server_overrides(data_dir: Path, host: str, port: int, controller_port: int) -> dict[str, str]:
    """Listeners and security of one broker: clients and brokers on SASL_SSL (SCRAM), the
    controllers on mutual TLS; the StandardAuthorizer denies what no ACL allows."""
    broker_password = load_secrets(data_dir)["broker"]
    tls = tls_dir(data_dir)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="broker" password="{broker_password}";'
    )
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / "broker.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.pem"),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(SUPER_USERS),
    }


def format_options(data_dir: Path) -> tuple[str, ...]:
    """SCRAM credentials of the broker and admin users, written into the metadata log at
    format time (the brokers need theirs before any admin could create it)."""
    stored = load_secrets(data_dir)
    return tuple(
        option
        for user in ("broker", "admin")
        for option in ("--add-scram", f"{MECHANISM}=[name={user},password={stored[user]}]")
    )


def client_settings(data_dir: Path, user: str, password: str) -> dict[str, str]:
    """librdkafka settings of a principal of this cluster."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(ca_file(data_dir)),
    }


def admin_settings(data_dir: Path) -> dict[str, str]:
    return client_settings(data_dir, "admin", load_secrets(data_dir)["admin"])
