"""DMTF's Redfish mockup (tests/fixtures/redfish) served like DMTF's mockup server does:
``/redfish/v1/<path>`` answers ``<mockup>/<path>/index.json``. A test can make it slow,
stop it (an unreachable BMC), start it again on the same port, ask for Basic auth, serve
HTTPS, and change a resource (``patch``)."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MOCKUP = Path(__file__).resolve().parent / "fixtures" / "redfish" / "public-rackmount1"
PREFIX = "/redfish/v1"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = directory / "bmc.crt", directory / "bmc.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class MockupBMC:
    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        without: tuple[str, ...] = (),
    ) -> None:
        self.resources: dict[str, dict[str, Any]] = {}
        for index in MOCKUP.rglob("index.json"):
            relative = index.parent.relative_to(MOCKUP).as_posix()
            path = PREFIX if relative == "." else f"{PREFIX}/{relative}"
            self.resources[path] = json.loads(index.read_text())
        for path in without:  # a BMC that lacks a resource answers 404 for it
            self.resources.pop(path)
        self.credentials = credentials
        self.tls = tls
        self.delay_s = 0.0
        self.requests = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def patch(self, path: str, changes: dict[str, Any]) -> None:
        resource = copy.deepcopy(self.resources[path])
        resource.update(changes)
        self.resources[path] = resource

    def set_watts(self, watts: float) -> None:
        """What EnvironmentMetrics.PowerWatts reads from now on."""
        path = f"{PREFIX}/Chassis/1U/EnvironmentMetrics"
        self.patch(path, {"PowerWatts": {**self.resources[path]["PowerWatts"], "Reading": watts}})

    def start(self) -> None:
        bmc = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                bmc.requests += 1
                if bmc.delay_s:
                    time.sleep(bmc.delay_s)
                if bmc.credentials is not None:
                    user, password = bmc.credentials
                    token = base64.b64encode(f"{user}:{password}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {token}":
                        self._answer(401, {"error": "unauthorized"})
                        return
                resource = bmc.resources.get(self.path.rstrip("/"))
                if resource is None:
                    self._answer(404, {"error": f"no {self.path}"})
                else:
                    self._answer(200, resource)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout): what a slow BMC sees

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="mockup-bmc", daemon=True).start()

    def stop(self) -> None:
        """Unreachable from now on: the port refuses connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
