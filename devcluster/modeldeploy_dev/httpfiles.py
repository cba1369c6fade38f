"""What the local file servers share: byte ranges, streaming a file slowly, quiet keep-alive answers.

The local Hugging Face Hub, its Xet CAS and the local ModelScope server each stand in for a real
service in tests and the demo (docs/real-node.md, docs/model-cache.md). Their APIs differ; how they
send bytes must not, or a fetcher test would pass against one and not the other: the same `Range`
reading, the same throttle (so a download can be watched, or killed mid-file), the same refusal to log.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

STREAM_CHUNK = 64 << 10


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`bytes=A-B`, `bytes=A-` or `bytes=-N` (the first range) → [start, end); None when unsatisfiable."""
    spec = value.strip().removeprefix("bytes=").split(",")[0].strip()
    first, _, last = spec.partition("-")
    try:
        if not first:
            start, end = max(size - int(last), 0), size
        else:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    if start >= size or start >= end:
        return None
    return start, end


def chunks(source: Path | bytes, start: int, end: int) -> Iterator[bytes]:
    """The bytes [start, end) of a file on disk or in memory, in pieces a throttle can pace."""
    if isinstance(source, bytes):
        for i in range(start, end, STREAM_CHUNK):
            yield source[i : min(i + STREAM_CHUNK, end)]
        return
    with Path(source).open("rb") as fh:
        fh.seek(start)
        remaining = end - start
        while remaining > 0 and (block := fh.read(min(STREAM_CHUNK, remaining))):
            remaining -= len(block)
            yield block


class BackgroundServer:
    """An HTTP server answering from a daemon thread of the test or demo that owns it (`with server:`)."""

    _thread: threading.Thread | None = None  # set while serving

    @property
    def running(self) -> bool:
        return self._thread is not None

    def serve(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        """Bind now (port 0 picks a free one, so `url` is known before `start`)."""
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._name = name

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive (every answer has a Content-Length, as clients expect) and no access log: tests and
    the demo read the servers' counters instead."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file_head(self, headers: Mapping[str, str], size: int) -> tuple[int, int] | None:
        """Status line and headers for a file of `size` bytes, or for the part its `Range` asks for:
        [start, end) to send, or None when the range cannot be met (416 answered)."""
        start, end, status = 0, size, 200
        if ranged := self.headers.get("Range"):
            parsed = parse_range(ranged, size)
            if parsed is None:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
                return None
            (start, end), status = parsed, 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        return start, end

    def _write_paced(
        self, blocks: Iterator[bytes], rate: Callable[[], float | None], sent: Callable[[int], None]
    ) -> None:
        """Write `blocks`, never faster than `rate()` bytes/s (read on every block: a test may change it
        mid-download); `sent` counts each block once it is out. A client that hangs up (a killed fetcher)
        ends the answer; what was sent is counted."""
        began, done = time.monotonic(), 0
        try:
            for block in blocks:
                self.wfile.write(block)
                done += len(block)
                sent(len(block))
                if limit := rate():
                    ahead = done / limit - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def server_parser(module: str, description: str | None, shape: str) -> argparse.ArgumentParser:
    """The options every local file server takes: `--repo ID=DIR` (repeated), `--host`, `--port`, `--throttle`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--repo", action="append", default=[], metavar=f"{shape}=DIR", help="serve DIR as a repository")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--throttle", type=float, default=None, metavar="BYTES_PER_S")
    return parser


def repo_tokens(
    parser: argparse.ArgumentParser, option: str, items: list[str], known: Mapping[str, Any]
) -> dict[str, str]:
    """`--OPTION ID=TOKEN` options → {ID: TOKEN}, refusing an ID that no `--repo` serves."""
    tokens: dict[str, str] = {}
    for item in items:
        repo_id, _, token = item.partition("=")
        if repo_id not in known:
            parser.error(f"{option} {item!r}: no --repo {repo_id}")
        tokens[repo_id] = token
    return tokens


def repo_dirs(parser: argparse.ArgumentParser, items: list[str], shape: str) -> dict[str, Path]:
    """`--repo ID=DIR` options → {ID: DIR}, refusing a missing `=` or a directory that is not there."""
    repos: dict[str, Path] = {}
    for item in items:
        repo_id, sep, directory = item.partition("=")
        if not sep or not Path(directory).is_dir():
            parser.error(f"--repo {item!r}: expected {shape}=DIR with an existing directory")
        repos[repo_id] = Path(directory)
    return repos


def serve_until_signalled(url: str, commits: Mapping[str, str]) -> None:
    """The servers' command line: the base URL on stdout's first line, each repository's commit on
    stderr, then wait for SIGTERM or SIGINT (the caller's `with server:` stops it)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(url, flush=True)
    for ref in sorted(commits):
        print(f"{ref} = {commits[ref]}", file=sys.stderr, flush=True)
    stop.wait()
