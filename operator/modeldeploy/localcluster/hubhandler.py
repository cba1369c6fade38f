"""The local Hub server's HTTP handler: routes, the Hub's headers and errors, file streaming.

What it answers is listed in hubserver.py (the server, its content and counters); kept apart so each
module has one job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modeldeploy.localcluster.hubrepos import Commit, HubFile, HubRepo
from modeldeploy.localcluster.xetcas import parse_range

if TYPE_CHECKING:
    from modeldeploy.localcluster.hubserver import HubServer

STREAM_CHUNK = 64 << 10


class HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect; every answer has a Content-Length

    def log_message(self, *args: Any) -> None:  # quiet: tests and the demo read counters, not access logs
        pass

    # -- small answers ----------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None) -> None:
        extra = {"Content-Type": "application/json", "X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), extra)

    # -- routing ----------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/_hubserver/throttle":
            value = parse_qs(url.query).get("bytes_per_s", ["0"])[0]
            self.hub.throttle = float(value) or None
            self._json({"throttle": self.hub.throttle})
            return
        self._error(404, None, "Not found")

    def _route(self) -> None:
        url = urlsplit(self.path)
        # Split before unquoting: a revision like refs%2Fpr%2F1 is one segment.
        raw = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if raw[:2] == ["_hubserver", "stats"]:
            self._json(self.hub.stats())
            return
        with self.hub._lock:
            self.hub.requests += 1
        if raw[:2] == ["api", "models"]:
            self._api(raw[2:], query)
        elif "resolve" in raw:
            i = raw.index("resolve")
            self._resolve("/".join(unquote(p) for p in raw[:i]), raw[i + 1 :])
        else:
            self._error(404, None, "Not found")

    def _repo(self, raw: list[str]) -> tuple[HubRepo | None, str, list[str]]:
        """The repository named by the first one or two segments, its id, and the rest of the path."""
        for n in (2, 1):
            repo_id = "/".join(unquote(p) for p in raw[:n])
            if repo_id in self.hub.repos:
                return self.hub.repos[repo_id], repo_id, raw[n:]
        return None, "/".join(unquote(p) for p in raw[:2]), raw[2:]

    def _repo_not_found(self, repo_id: str) -> None:
        self._error(404, "RepoNotFound", f"Repository {repo_id} not found")

    def _revision(self, repo: HubRepo, raw_rev: str) -> Commit | None:
        commit = repo.resolve(unquote(raw_rev))
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(raw_rev)}")
        return commit

    def _api(self, raw: list[str], query: dict[str, str]) -> None:
        repo, repo_id, rest = self._repo(raw)
        if repo is None:
            self._repo_not_found(repo_id)
            return
        if not rest or rest[0] == "revision":
            commit = repo.main if not rest else self._revision(repo, rest[1] if len(rest) > 1 else "main")
            if commit is not None:
                self._json(self._info(repo, commit, blobs=query.get("blobs", "").lower() in ("1", "true")))
            return
        if rest[0] == "tree" and len(rest) >= 2:
            commit = self._revision(repo, rest[1])
            if commit is None:
                return
            prefix = "/".join(unquote(p) for p in rest[2:])
            entries = commit.tree(prefix, recursive=query.get("recursive", "").lower() in ("1", "true"))
            if entries is None:
                self._error(404, "EntryNotFound", f"{prefix} does not exist on {rest[1]}")
                return
            for entry in entries:
                found = commit.files.get(str(entry["path"])) if entry["type"] == "file" else None
                if found is not None and (xet_hash := self.hub.xet_hash(repo, found)):
                    entry["xetHash"] = xet_hash
            start = int(query.get("cursor", "0") or 0)
            page = entries[start : start + self.hub.page_size]
            headers = {}
            if start + self.hub.page_size < len(entries):
                nxt = dict(query, cursor=str(start + self.hub.page_size))
                link = urlsplit(self.path).path + "?" + "&".join(f"{k}={quote(v)}" for k, v in nxt.items())
                headers["Link"] = f'<{self.hub.url}{link}>; rel="next"'
            self._json(page, headers)
            return
        if rest[0] == "xet-read-token" and len(rest) == 2 and repo.xet and self.hub.cas is not None:
            if self._revision(repo, rest[1]) is not None and self._authorized(repo):
                grant = self.hub.cas.grant()
                self._json(
                    grant,  # hf_xet reads the JSON when it refreshes, huggingface_hub the headers
                    {
                        "X-Xet-Cas-Url": grant["casUrl"],
                        "X-Xet-Access-Token": grant["accessToken"],
                        "X-Xet-Token-Expiration": str(grant["exp"]),
                    },
                )
            return
        self._error(404, None, "Not found")

    @staticmethod
    def _info(repo: HubRepo, commit: Commit, blobs: bool) -> dict[str, Any]:
        return {
            "_id": commit.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "private": False,
            "gated": "manual" if repo.gated_token else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [f.sibling(blobs) for _, f in sorted(commit.files.items())],
            "usedStorage": sum(f.size for f in commit.files.values()),
        }

    # -- files ------------------------------------------------------------------------------------------

    def _authorized(self, repo: HubRepo) -> bool:
        if not repo.gated_token:
            return True
        given = self.headers.get("Authorization")
        if given == f"Bearer {repo.gated_token}":
            return True
        message = f"Access to model {repo.repo_id} is restricted"
        if given is None:
            self._error(401, "GatedRepo", f"{message}. You must be authenticated to access it.")
        else:
            self._error(403, "GatedRepo", f"{message} and your token is not in the authorized list.")
        return False

    def _resolve(self, repo_path: str, raw: list[str]) -> None:
        repo = self.hub.repos.get(repo_path)
        if repo is None:
            self._repo_not_found(repo_path)
            return
        if not raw:
            self._error(404, "RevisionNotFound", "No revision given")
            return
        commit = self._revision(repo, raw[0])
        if commit is None:
            return
        if not self._authorized(repo):
            return
        path = "/".join(unquote(p) for p in raw[1:])
        hub_file = commit.files.get(path)
        if hub_file is None:
            message = f"{path} does not exist on {unquote(raw[0])}"
            self._error(404, "EntryNotFound", message, {"X-Repo-Commit": commit.sha})
            return
        self._file(repo, commit, hub_file)

    def _file(self, repo: HubRepo, commit: Commit, f: HubFile) -> None:
        repo_id = repo.repo_id
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        xet_hash = self.hub.xet_hash(repo, f)
        if xet_hash and self.hub.cas is not None:
            token_url = f"{self.hub.url}/api/models/{quote(repo_id)}/xet-read-token/{commit.sha}"
            info_url = f"{self.hub.cas.url}/v1/reconstructions/{xet_hash}"
            headers["X-Xet-Hash"] = xet_hash
            headers["Link"] = f'<{token_url}>; rel="xet-auth", <{info_url}>; rel="xet-reconstruction-info"'
        start, end, status = 0, f.size, 200
        ranged = self.headers.get("Range")
        if ranged:
            parsed = parse_range(ranged, f.size)
            if parsed is None:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{f.size}"})
                return
            start, end, status = parsed[0], parsed[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            self.hub._count(repo_id, f.path, head=True)
            return
        self.hub._count(repo_id, f.path, get=True)
        self._stream(repo_id, f, start, end)

    def _stream(self, repo_id: str, f: HubFile, start: int, end: int) -> None:
        began = time.monotonic()
        try:
            if isinstance(f.source, bytes):
                chunks = (f.source[i : min(i + STREAM_CHUNK, end)] for i in range(start, end, STREAM_CHUNK))
                self._write_all(repo_id, f, chunks, began)
                return
            with Path(f.source).open("rb") as fh:
                fh.seek(start)
                remaining = end - start

                def read() -> Any:
                    nonlocal remaining
                    while remaining > 0 and (block := fh.read(min(STREAM_CHUNK, remaining))):
                        remaining -= len(block)
                        yield block

                self._write_all(repo_id, f, read(), began)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up (a test cutting a download); counted so far

    def _write_all(self, repo_id: str, f: HubFile, chunks: Any, began: float) -> None:
        done = 0
        for block in chunks:
            self.wfile.write(block)
            done += len(block)
            self.hub._count(repo_id, f.path, sent=len(block))
            rate = self.hub.throttle
            if rate:
                ahead = done / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
