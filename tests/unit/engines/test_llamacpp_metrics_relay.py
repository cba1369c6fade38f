"""The llama.cpp entrypoint's /metrics relay: GET /metrics with the key on the loopback, nothing else.

docs/security.md, "API keys": llama.cpp asks for the key on /metrics when one is set; the picker and
Prometheus send none, so they scrape the relay. A stand-in for llama.cpp's server checks the bearer token
the way llama.cpp does (401 without it).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modeldeploy.engines.llamacpp import relay

KEY = "sk-relay-test"
BODY = b"llamacpp:requests_processing 2\nllamacpp:requests_deferred 5\n"


class _Upstream(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        _Upstream.seen.append(self.headers.get("Authorization"))
        ok = self.headers.get("Authorization") == f"Bearer {KEY}"
        body = BODY if ok else b'{"error":"Invalid API Key"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Upstream.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _relay(upstream: str, key: str | None) -> tuple[ThreadingHTTPServer, str]:
    logged: list[dict[str, Any]] = []
    server = relay.start(0, upstream, key, logged.append)
    assert logged == [{"event": "llamacpp.metrics_relay", "port": 0, "path": "/metrics"}]
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_metrics_are_relayed_with_the_key_and_only_metrics(upstream: str) -> None:
    server, base = _relay(upstream, KEY)
    try:
        assert _get(f"{base}/metrics") == (200, BODY)
        assert _Upstream.seen == [f"Bearer {KEY}"]
        for path in ("/v1/models", "/v1/chat/completions", "/slots", "/", "/metrics/../v1/models"):
            assert _get(f"{base}{path}")[0] == 404, path
        post = urllib.request.Request(f"{base}/metrics", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=10)
        assert refused.value.code == 501
        assert len(_Upstream.seen) == 1  # nothing but the one GET /metrics reached the server
    finally:
        server.shutdown()
        server.server_close()


def test_without_the_key_the_servers_refusal_is_passed_on(upstream: str) -> None:
    server, base = _relay(upstream, None)
    try:
        assert _get(f"{base}/metrics")[0] == 401
        assert _Upstream.seen == [None]
    finally:
        server.shutdown()
        server.server_close()
