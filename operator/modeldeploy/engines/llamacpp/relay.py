"""/metrics, relayed without the API key, on a port of its own.

With an API key (spec.auth), llama.cpp asks for it on every route but its health endpoints, /metrics
included, and neither the endpoint picker nor Prometheus can send a bearer token to a
model pod. So the entrypoint serves GET /metrics alone on a second port, fetched from the server on the
loopback with the key. It exposes what vLLM and SGLang serve openly on their own /metrics (queue and
cache gauges), nothing else: every other path or method is 404 (docs/security.md, "API keys").
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/metrics"
TIMEOUT_S = 5.0


def _handler(upstream: str, key: str | None) -> type[BaseHTTPRequestHandler]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    class Relay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0] != PATH:
                self._reply(404, b"not found\n", "text/plain")
                return
            try:
                request = urllib.request.Request(upstream + PATH, headers=headers)
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    body = response.read()
                    kind = response.headers.get("Content-Type", "text/plain; version=0.0.4")
                    self._reply(response.status, body, kind)
            except urllib.error.HTTPError as exc:
                self._reply(exc.code, b"", "text/plain")
            except OSError:
                self._reply(503, b"the model server does not answer yet\n", "text/plain")

        def _reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Quiet: a scrape every few seconds would drown the server's own log."""

    return Relay


def start(port: int, upstream: str, key: str | None, log: Callable[[dict[str, Any]], None]) -> ThreadingHTTPServer:
    """Serve the relay on 0.0.0.0:`port` in a daemon thread; `upstream` is the server's base URL."""
    server = ThreadingHTTPServer(("0.0.0.0", port), _handler(upstream, key))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-relay", daemon=True).start()
    log({"event": "llamacpp.metrics_relay", "port": port, "path": PATH})
    return server
