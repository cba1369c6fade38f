"""A local HTTP file server for fetch tests: Range requests, cut connections.

It plays a plain HTTPS file host, on 127.0.0.1 only (the Hugging Face Hub is
modeldeploy_dev.hubserver, ModelScope modeldeploy_dev.modelscope_server). Every request
is recorded so tests can assert what was asked (Range headers, whether a token reached the CDN, that a
second start asked nothing).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)  # path → content (served at /files/<path>)
    cut_after: int | None = None  # send only this many body bytes, then drop the connection...
    cuts_left: int = 0  # ...for this many GETs
    ignore_range: bool = False  # answer 200 with the whole file even when a Range is asked
    token: str | None = None  # when set, files need "Bearer <token>"
    seen: list[Seen] = field(default_factory=list)


class Server:
    """Start with `with Server(behaviour) as srv:`; `srv.url` is the base URL."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        handler = type("Handler", (_Handler,), {"behaviour": behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _authorized(self) -> bool:
        token = self.behaviour.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        b = self.behaviour
        b.seen.append(Seen("GET", self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:1] == ["files"]:
            if not self._authorized():
                return
            self._file("/".join(parts[1:]))
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, path: str) -> None:
        b = self.behaviour
        data = b.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not b.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if b.cuts_left > 0 and b.cut_after is not None:
            b.cuts_left -= 1
            self.wfile.write(body[: b.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
