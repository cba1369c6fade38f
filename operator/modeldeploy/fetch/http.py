"""Resumable, verified single-file download into the cache volume.

Model files are tens of gigabytes and init containers get killed (node drain, OOM, eviction), so a
download must survive being cut at any byte: bytes go to `<file>.part`, a retry or a restart asks the
server for the rest with an HTTP Range request, and only a file whose size (and SHA-256, when known)
matches is renamed into place, atomically. A small marker beside it records what was verified, so the
next pod start checks one `stat` and downloads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

CHUNK = 1 << 20
MARKER_DIR = ".modeldeploy"


class FetchError(RuntimeError):
    """A download that cannot succeed as asked; the message is one sentence for the pod log."""


class Retryable(Exception):
    """A transient failure (connection cut, 5xx): retry from where the .part file ends."""


Log = Callable[[dict[str, Any]], None]


def redact(url: str) -> str:
    """A URL safe for logs: no user:password, no query string (presigned URLs carry secrets there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def marker_path(dest: Path) -> Path:
    return dest.parent / MARKER_DIR / f"{dest.name}.json"


def read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        return json.loads(marker_path(dest).read_text())
    except (OSError, ValueError):
        return None


def already_present(dest: Path, size: int | None = None, sha256: str | None = None) -> bool:
    """True when a verified copy is in place: marker present, size unchanged, same expected hash."""
    marker = read_marker(dest)
    if not marker or not dest.is_file():
        return False
    if dest.stat().st_size != marker.get("size"):
        return False
    if size is not None and size != marker.get("size"):
        return False
    return not (sha256 and marker.get("sha256") != sha256.lower())


def write_marker(dest: Path, size: int, sha256: str | None, source: str) -> None:
    path = marker_path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": size, "sha256": sha256, "source": source, "verified_at": int(time.time())}))
    os.replace(tmp, path)


@dataclass
class Response:
    """What an opener returns: status, the byte range it serves, and the body."""

    status: int  # 200 (whole file) or 206 (from `start`)
    start: int
    total: int | None  # full file size when the server says it
    chunks: Iterator[bytes]
    close: Callable[[], None] = lambda: None


class Opener(Protocol):
    """Opens `source` from byte `offset` (HTTP GET with Range, S3 GetObject with Range, ...)."""

    def __call__(self, offset: int) -> Response: ...


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


def download(
    open_at: Opener,
    dest: Path,
    *,
    source: str,
    log: Log,
    expected_size: int | None = None,
    sha256: str | None = None,
    attempts: int = 5,
    backoff: float = 1.0,
) -> bool:
    """Fetch into `dest`; return False when a verified copy was already there (nothing downloaded)."""
    if already_present(dest, expected_size, sha256):
        log({"event": "fetch.present", "file": str(dest), "size": dest.stat().st_size})
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    started = False
    total = expected_size
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        if total is not None and offset > total:
            part.unlink()
            offset = 0
        try:
            response = open_at(offset)
        except Retryable as exc:
            _wait(log, dest, attempt, attempts, backoff, exc)
            continue
        try:
            if response.status == 200 and offset:
                log({"event": "fetch.restart", "file": str(dest), "reason": "server ignored the Range request"})
                offset = 0
            elif response.status == 206 and response.start != offset:
                raise FetchError(f"{redact(source)} answered a range from byte {response.start}, not {offset}.")
            if response.total is not None:
                if total is not None and response.total != total:
                    raise FetchError(
                        f"{redact(source)} is {response.total} bytes but the listing says {total}; refusing it."
                    )
                total = response.total
                _check_space(dest, total - offset)
            if not started:
                started = True
                log(
                    {
                        "event": "fetch.start",
                        "file": str(dest),
                        "source": redact(source),
                        "total": total,
                        "resume_from": offset,
                    }
                )
            elif offset:
                log({"event": "fetch.resume", "file": str(dest), "resume_from": offset})
            with part.open("r+b" if offset else "wb") as fh:
                fh.seek(offset)
                fh.truncate()
                for chunk in response.chunks:
                    fh.write(chunk)
        except Retryable as exc:
            _wait(log, dest, attempt, attempts, backoff, exc)
            continue
        finally:
            response.close()
        break
    else:
        raise FetchError(
            f"Giving up on {redact(source)} after {attempts} attempts; the .part file is kept for the next start."
        )

    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink()
        raise FetchError(f"{redact(source)} ended at {size} of {total} bytes; the partial file was removed.")
    digest_hex = None
    if sha256:
        digest = hashlib.sha256()
        _hash_file(part, digest)
        digest_hex = digest.hexdigest()
        if digest_hex != sha256.lower():
            part.unlink()
            raise FetchError(
                f"Checksum mismatch for {dest.name}: expected sha256 {sha256.lower()}, got {digest_hex}; "
                "the download was removed (check model.sha256 or the source)."
            )
    os.replace(part, dest)
    write_marker(dest, size, digest_hex, redact(source))
    if digest_hex:
        log({"event": "fetch.verified", "file": str(dest), "sha256": digest_hex})
    return True


def _wait(log: Log, dest: Path, attempt: int, attempts: int, backoff: float, exc: Exception) -> None:
    log({"event": "fetch.retry", "file": str(dest), "attempt": attempt, "of": attempts, "error": str(exc)})
    if attempt < attempts:
        time.sleep(backoff * 2 ** (attempt - 1))


def _check_space(dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest.parent).free
    if needed > free:
        raise FetchError(
            f"Not enough space for {dest.name}: {needed} more bytes needed, {free} free on the cache volume "
            "(raise cache.emptyDir.sizeLimit or the PVC size)."
        )


def http_opener(client: Any, url: str, headers: dict[str, str] | None = None) -> Opener:
    """An Opener for HTTP(S) with an httpx.Client: Range requests, redirects, transient errors retried."""
    import httpx

    def open_at(offset: int) -> Response:
        request_headers = dict(headers or {})
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            stream = client.stream("GET", url, headers=request_headers, follow_redirects=True)
            response = stream.__enter__()
        except httpx.TransportError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 416 and offset:
            # Range past the end: the .part already holds the whole file (the previous run died at the rename).
            stream.__exit__(None, None, None)
            return Response(206, offset, offset, iter(()))
        if status >= 500 or status == 429:
            stream.__exit__(None, None, None)
            raise Retryable(f"HTTP {status}")
        if status not in (200, 206):
            stream.__exit__(None, None, None)
            hint = " (is credentialsSecret set with the right token?)" if status in (401, 403) else ""
            raise FetchError(f"{redact(url)} answered HTTP {status}{hint}.")
        start, total = 0, None
        if status == 206:
            start, total = _content_range(response.headers.get("content-range", ""))
        elif response.headers.get("content-length", "").isdigit():
            total = int(response.headers["content-length"])

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_bytes()  # as received, so a cut loses nothing already read
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise Retryable(f"connection cut: {type(exc).__name__}") from None

        return Response(status, start, total, chunks(), lambda: stream.__exit__(None, None, None))

    return open_at


def _content_range(value: str) -> tuple[int, int | None]:
    """`bytes 100-199/1000` → (100, 1000)."""
    try:
        unit, _, rest = value.partition(" ")
        span, _, size = rest.partition("/")
        start = int(span.split("-")[0])
        return start, (int(size) if size.isdigit() else None)
    except ValueError:
        raise FetchError(f"unreadable Content-Range {value!r}") from None
