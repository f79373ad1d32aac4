"""``/metrics`` over HTTP for every process of ours (agent, processor, Prometheus sink): one
server, its own registry per process (no global state shared with libraries)."""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GZIP_LEVEL = 1  # level 9 (prometheus_client's) costs seconds at fleet scale for ~10 % less


class Registry(CollectorRegistry):
    """A registry that says what /metrics serves; a subclass may render faster (the sink)."""

    def exposition(self) -> bytes:
        return generate_latest(self)


class _MetricsHandler(BaseHTTPRequestHandler):
    registry: Registry  # set on the subclass MetricsServer makes

    def do_GET(self) -> None:
        try:
            body = self.registry.exposition()
        except Exception:  # a failed scrape must not kill the server thread
            log.exception("/metrics exposition failed")
            self.send_error(500, "exposition failed; see the log")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        if "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are routine: no access log."""


class MetricsServer:
    """/metrics over HTTP (text format 0.0.4, gzip when asked) on a daemon thread; ``port``
    is the bound one (useful with 0). Any path serves the metrics, as prometheus_client's
    server does. OSError when the address cannot be bound.

    The accept loop blocks until a scrape comes instead of waking every 0.5 s to check for
    shutdown (``serve_forever``'s default; 2 of an idle agent's ~9 wake-ups per second);
    ``close()`` wakes it with a connection of its own.
    """

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        handler = type("MetricsHandler", (_MetricsHandler,), {"registry": registry})
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        self._server = server_class((host, port), handler)
        self._server.daemon_threads = True  # a slow scrape never holds up the exit
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(None,), name="metrics", daemon=True
        )
        self._thread.start()
        self.host = host
        self.port: int = self._server.server_port
        local = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self._wake = (local if host in ("", "0.0.0.0", "::") else host, self.port)

    def close(self) -> None:
        stopping = threading.Thread(target=self._server.shutdown)  # sets the flag and waits
        stopping.start()
        deadline = time.monotonic() + 5
        while stopping.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # the loop sees the flag after this request
                socket.create_connection(self._wake, timeout=1).close()
            stopping.join(0.05)
        self._server.server_close()
        self._thread.join(5)
