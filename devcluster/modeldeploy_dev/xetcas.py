"""A local Xet CAS: the storage side of Xet-backed Hub files, on loopback, for `hf_xet` to download from.

Most large files on the Hugging Face Hub are stored with Xet: the Hub's resolve answer for such a file
carries `X-Xet-Hash` and a `xet-auth` link, and `huggingface_hub` then hands the download to `hf_xet`,
which asks a CAS server how to rebuild the file (a *reconstruction*: terms naming chunk ranges of
*xorbs*, plus URLs and byte ranges to fetch those xorb ranges from) and assembles it. The local Hub
server (hubserver.py) starts this server for repositories marked Xet-backed, so that path runs in tests
with the real client (docs/model-cache.md, "Xet-backed files").

What is served, from the Xet protocol as `hf_xet` reads it:

- `GET /v2/reconstructions/{file_hash}` and `/v1/...` (the client tries v2, falls back to v1 on 404) —
  terms `{hash, unpacked_length, range: {start, end}}` (chunk indices in the xorb, end exclusive),
  `offset_into_first_range`, and per xorb the URL with the byte range (inclusive end) to fetch; a
  `Range` header asks for part of the file, past its end answers 416. Needs `Authorization: Bearer`
  with the access token the Hub's `xet-read-token` endpoint handed out.
- `GET /xorbs/{xorb_hash}?key=…` with `Range` — the xorb's bytes: each chunk an 8-byte header (version
  0, compressed length as 3 bytes little-endian, compression scheme 0 = none, uncompressed length as 3
  bytes little-endian) followed by the chunk. The `key` stands in for the presigned URL's signature.
- `POST /v1/telemetry` — what hf_xet reports when a download group ends; accepted and dropped.

Chunking is ours: fixed 64 KiB chunks, up to 1024 per xorb (64 MiB, Xet's maximum; `xorb_chunks`).
What `hf_xet` checks on download is lengths only — each chunk header against the bytes that follow, each term's
`unpacked_length`, the file's size — not chunk or file hashes (those are checked when a shard is
uploaded), so the identifiers here are content-derived but are not Xet's merkle hashes: the file hash
is the file's sha256 and a xorb's is the sha256 of (file sha256, xorb index). Xorbs are never
materialised: a byte range is produced from the file on demand.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from modeldeploy_dev.httpfiles import BackgroundServer, QuietHandler, parse_range

CHUNK_SIZE = 64 << 10
XORB_CHUNKS = 1024
HEADER_SIZE = 8
RECORD = HEADER_SIZE + CHUNK_SIZE  # a full chunk as stored in a xorb (no compression)
TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class XetFile:
    """One file stored in the CAS: its bytes (a path or in memory), size and the xorbs that hold it."""

    file_hash: str
    source: Path | bytes
    size: int
    xorbs: tuple[str, ...]

    def chunk_len(self, index: int) -> int:
        return min(CHUNK_SIZE, self.size - index * CHUNK_SIZE)

    def read(self, start: int, length: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start : start + length]
        with self.source.open("rb") as fh:
            fh.seek(start)
            return fh.read(length)

    @property
    def chunks(self) -> int:
        return -(-self.size // CHUNK_SIZE)


def chunk_header(length: int) -> bytes:
    """The 8-byte header of an uncompressed chunk of `length` bytes."""
    size = length.to_bytes(3, "little")
    return bytes([0]) + size + bytes([0]) + size


class XetCas(BackgroundServer):
    """`cas = XetCas().start()`; `cas.add(sha256, source, size)` returns the file's Xet hash."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle: Callable[[], float | None] = lambda: None,
        xorb_chunks: int = XORB_CHUNKS,
    ) -> None:
        # hf_xet writes a term once its whole xorb range has arrived, so on-disk progress moves in
        # xorb-sized steps: 64 MiB like the Hub by default, smaller in tests that watch progress.
        self.xorb_chunks = xorb_chunks
        self.throttle = throttle  # bytes per second for each xorb response (the Hub server's setting)
        self.files: dict[str, XetFile] = {}
        self.xorbs: dict[str, tuple[XetFile, int]] = {}
        self.access_token = "xet_" + secrets.token_urlsafe(16)
        self.url_key = secrets.token_urlsafe(16)
        self._lock = threading.Lock()
        self.reconstructions = 0
        self.xorb_gets = 0
        self.bytes_sent = 0
        self.token_grants = 0
        self.telemetry = 0  # transfer reports hf_xet posted (the fetcher turns them off)
        self._free_at = 0.0  # when the throttle lets the next byte go
        handler = type("XetCasHandler", (_Handler,), {"cas": self})
        self.serve(host, port, handler, "xetcas")

    # -- content ----------------------------------------------------------------------------------------

    def add(self, sha256: str, source: Path | bytes, size: int) -> str:
        """Store a file (idempotent: the same content is one entry) and return its hash."""
        with self._lock:
            if sha256 in self.files:
                return sha256
            n_xorbs = -(-size // (CHUNK_SIZE * self.xorb_chunks))
            names = tuple(hashlib.sha256(f"{sha256}:{k}".encode()).hexdigest() for k in range(n_xorbs))
            stored = XetFile(sha256, source, size, names)
            self.files[sha256] = stored
            for k, name in enumerate(names):
                self.xorbs[name] = (stored, k)
            return sha256

    def grant(self) -> dict[str, Any]:
        """What the Hub's xet-read-token endpoint answers: the token, its expiry and this CAS's URL."""
        with self._lock:
            self.token_grants += 1
        return {"accessToken": self.access_token, "exp": int(time.time()) + TOKEN_TTL_S, "casUrl": self.url}

    # -- reconstruction -----------------------------------------------------------------------------------

    def reconstruction(self, f: XetFile, start: int, end: int, version: int) -> dict[str, Any]:
        """Terms and fetch ranges for file bytes [start, end), in the v1 or v2 layout."""
        first, stop = start // CHUNK_SIZE, -(-end // CHUNK_SIZE)
        terms: list[dict[str, Any]] = []
        fetch: dict[str, list[dict[str, Any]]] = {}
        per = self.xorb_chunks
        for k in range(first // per, (stop - 1) // per + 1):
            base = k * per
            lo, hi = max(first, base) - base, min(stop, base + per) - base
            unpacked = sum(f.chunk_len(base + j) for j in range(lo, hi))
            chunks = {"start": lo, "end": hi}
            wanted = {"start": lo * RECORD, "end": (hi - 1) * RECORD + HEADER_SIZE + f.chunk_len(base + hi - 1) - 1}
            name = f.xorbs[k]
            url = f"{self.url}/xorbs/{name}?key={self.url_key}"
            terms.append({"hash": name, "unpacked_length": unpacked, "range": chunks})
            if version == 1:
                fetch[name] = [{"range": chunks, "url": url, "url_range": wanted}]
            else:
                fetch[name] = [{"url": url, "ranges": [{"chunks": chunks, "bytes": wanted}]}]
        layout = {"offset_into_first_range": start - first * CHUNK_SIZE, "terms": terms}
        return {**layout, ("fetch_info" if version == 1 else "xorbs"): fetch}

    def xorb_size(self, f: XetFile, k: int) -> int:
        n = min(self.xorb_chunks, f.chunks - k * self.xorb_chunks)
        return (n - 1) * RECORD + HEADER_SIZE + f.chunk_len(k * self.xorb_chunks + n - 1)

    def xorb_bytes(self, f: XetFile, k: int, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of xorb `k` of `f`: chunk headers and chunk data, made on demand."""
        j = start // RECORD
        while j * RECORD < end:
            g = k * self.xorb_chunks + j
            length = f.chunk_len(g)
            record = chunk_header(length) + f.read(g * CHUNK_SIZE, length)
            yield record[max(start - j * RECORD, 0) : end - j * RECORD]
            j += 1

    def pace(self, sent: int) -> None:
        """Hold a response so that all of them together stay under the throttle (hf_xet fetches in parallel)."""
        rate = self.throttle()
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + sent / rate
            wait = self._free_at - now
        time.sleep(wait)

    # -- counters and lifecycle ------------------------------------------------------------------------

    def count(
        self, *, reconstruction: bool = False, xorb_get: bool = False, sent: int = 0, telemetry: bool = False
    ) -> None:
        with self._lock:
            self.telemetry += telemetry
            self.reconstructions += reconstruction
            self.xorb_gets += xorb_get
            self.bytes_sent += sent

    def stats(self) -> dict[str, int]:
        """{"reconstructions", "xorb_gets", "bytes", "token_grants", "telemetry"}: what clients asked and got."""
        with self._lock:
            return {
                "reconstructions": self.reconstructions,
                "xorb_gets": self.xorb_gets,
                "bytes": self.bytes_sent,
                "token_grants": self.token_grants,
                "telemetry": self.telemetry,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self.reconstructions = self.xorb_gets = self.bytes_sent = self.token_grants = self.telemetry = 0


class _Handler(QuietHandler):
    cas: XetCas

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if len(parts) == 3 and parts[0] in ("v1", "v2") and parts[1] == "reconstructions":
            self._reconstruction(int(parts[0][1]), parts[2])
        elif len(parts) == 2 and parts[0] == "xorbs":
            self._xorb(parts[1], parse_qs(url.query).get("key", [""])[0])
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:  # noqa: N802
        """hf_xet reports transfer telemetry to the CAS when a download group ends; taken and dropped."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if urlsplit(self.path).path == "/v1/telemetry":
                self.cas.count(telemetry=True)
                self._send(200, b"{}", {"Content-Type": "application/json"})
            else:
                self._send(404, b"not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client does not wait for the answer

    def _reconstruction(self, version: int, file_hash: str) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.cas.access_token}":
            self._send(401, b"missing or wrong CAS access token")
            return
        f = self.cas.files.get(file_hash.lower())
        if f is None:
            self._send(404, b"no such file")
            return
        start, end = 0, f.size
        if self.headers.get("Range"):
            parsed = parse_range(self.headers["Range"], f.size)
            if parsed is None:
                self._send(416, b"", {"Content-Range": f"bytes */{f.size}"})
                return
            start, end = parsed
        self.cas.count(reconstruction=True)
        body = json.dumps(self.cas.reconstruction(f, start, end, version)).encode()
        self._send(200, body, {"Content-Type": "application/json"})

    def _xorb(self, name: str, key: str) -> None:
        found = self.cas.xorbs.get(name)
        if not secrets.compare_digest(key, self.cas.url_key) or found is None:
            self._send(403, b"bad or expired fetch URL")
            return
        f, k = found
        size = self.cas.xorb_size(f, k)
        start, end, status = 0, size, 200
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if self.headers.get("Range"):
            parsed = parse_range(self.headers["Range"], size)
            if parsed is None:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            start, end, status = parsed[0], parsed[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self.send_response(status)
        for key_, value in headers.items():
            self.send_header(key_, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self.cas.count(xorb_get=True)
        try:
            for block in self.cas.xorb_bytes(f, k, start, end):
                self.wfile.write(block)
                self.cas.count(sent=len(block))
                self.cas.pace(len(block))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
