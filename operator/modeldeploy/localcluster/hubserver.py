"""A local Hugging Face Hub: the part of its HTTP API that model downloaders use, on loopback.

There is no internet in tests or in `make demo`, yet the fetch code must be exercised by the real
clients (`huggingface_hub` with `HF_ENDPOINT` pointing here, and plain HTTP). This server answers what
they ask, with the headers they read:

- `GET /api/models/{repo}[/revision/{rev}]` — repo info: `sha` (the resolved commit) and `siblings`
  (with sizes, blob ids and LFS sha256 when `?blobs=true`);
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=…` — the listing, paged with a `Link` header;
- `HEAD|GET /{repo}/resolve/{rev}/{file}` — `X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`,
  `Content-Length`, `Range` → 206 / 416;
- for a Xet-backed repository (`xet=` / `--xet ORG/NAME`), its LFS files answer with `X-Xet-Hash` and
  the `xet-auth` / `xet-reconstruction-info` links, tree entries carry `xetHash`, and
  `GET /api/models/{repo}/xet-read-token/{rev}` hands out a token for the local Xet CAS (xetcas.py),
  which `hf_xet` then downloads from; small files stay plain, as on the Hub;
- errors as the Hub sends them: 404 with `X-Error-Code: RepoNotFound`, `RevisionNotFound` or
  `EntryNotFound`; a gated repository's files answer 401 without a token and 403 with a wrong one
  (`X-Error-Code: GatedRepo`).

Every GET of a file is counted (requests and bytes actually sent), in-process (`HubServer.stats()`) and
at `GET /_hubserver/stats`, so a test can prove that N replicas caused one download. An optional
throttle (bytes/s, also settable at `POST /_hubserver/throttle?bytes_per_s=N`) makes a download slow
enough to watch its progress.

CLI: `python -m modeldeploy.localcluster.hubserver --repo ORG/NAME=DIR [--repo …] [--port 0]` prints the
base URL on its first line and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modeldeploy.localcluster.hubrepos import Commit, FileSource, HubFile, HubRepo, files_of
from modeldeploy.localcluster.xetcas import XORB_CHUNKS, XetCas, parse_range

STREAM_CHUNK = 64 << 10


@dataclass
class FileStats:
    gets: int = 0  # GET requests that were answered with (part of) the file
    bytes: int = 0  # body bytes actually written to clients
    heads: int = 0


class HubServer:
    """`with HubServer({"org/name": DIR_or_mapping}) as hub:` then point `HF_ENDPOINT` at `hub.url`."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, FileSource] | Path | str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle: float | None = None,
        page_size: int = 1000,
        xet: bool | set[str] = False,
        xorb_chunks: int = XORB_CHUNKS,
    ) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.throttle = throttle  # bytes per second for each file response, None = as fast as possible
        self.page_size = page_size
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], FileStats] = {}
        self.requests = 0  # every request but the stats endpoint's: proves a client asked nothing at all
        self.cas: XetCas | None = None  # started with the first Xet-backed repository
        self._host, self._xorb_chunks = host, xorb_chunks
        self._thread: threading.Thread | None = None
        for repo_id, spec in (repos or {}).items():
            self.add_repo(repo_id, spec, xet=xet is True or (isinstance(xet, set) and repo_id in xet))
        handler = type("HubHandler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"

    # -- content --------------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileSource] | Path | str,
        *,
        revision: str = "main",
        gated_token: str | None = None,
        xet: bool | None = None,
    ) -> str:
        """Add (or add a commit to) a repository; returns the commit id `revision` now names."""
        repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
        if gated_token is not None:
            repo.gated_token = gated_token
        sha = repo.add(files_of(files), revision).sha
        if xet is not None:
            self.set_xet(repo_id, xet)
        elif repo.xet:
            self.set_xet(repo_id, True)  # the new commit's files go to the CAS too
        return sha

    def set_xet(self, repo_id: str, xet: bool = True) -> None:
        """Mark a repository Xet-backed (its LFS files go to the local CAS) or plain again."""
        repo = self.repos[repo_id]
        repo.xet = xet
        if not xet:
            return
        if self.cas is None:
            self.cas = XetCas(host=self._host, throttle=lambda: self.throttle, xorb_chunks=self._xorb_chunks)
            if self._thread is not None:
                self.cas.start()
        for commit in repo.commits.values():
            for f in commit.files.values():
                if f.lfs and f.size:
                    self.cas.add(f.sha256, f.source if isinstance(f.source, bytes) else Path(f.source), f.size)

    def xet_hash(self, repo: HubRepo, f: HubFile) -> str | None:
        """The Xet hash a file answers with, None for a plain one (small files stay plain, as on the Hub)."""
        if repo.xet and self.cas is not None and f.lfs and f.sha256 in self.cas.files:
            return f.sha256
        return None

    def commit(self, repo_id: str, revision: str = "main") -> str:
        found = self.repos[repo_id].resolve(revision)
        if found is None:
            raise KeyError(f"{repo_id}@{revision}")
        return found.sha

    # -- counters -------------------------------------------------------------------------------------

    def _count(self, repo_id: str, path: str, *, get: bool = False, head: bool = False, sent: int = 0) -> None:
        with self._lock:
            s = self._stats.setdefault((repo_id, path), FileStats())
            s.gets += get
            s.heads += head
            s.bytes += sent

    def downloads(self, repo_id: str, path: str) -> FileStats:
        with self._lock:
            s = self._stats.get((repo_id, path), FileStats())
            return FileStats(s.gets, s.bytes, s.heads)

    def stats(self) -> dict[str, Any]:
        """{"requests", "bytes", "gets", "repos": {repo: {"bytes", "gets", "files": {path: {gets, bytes, heads}}}}}."""
        with self._lock:
            items = [(k, FileStats(v.gets, v.bytes, v.heads)) for k, v in self._stats.items()]
        repos: dict[str, dict[str, Any]] = {}
        for (repo_id, path), s in sorted(items):
            r = repos.setdefault(repo_id, {"bytes": 0, "gets": 0, "files": {}})
            r["files"][path] = {"gets": s.gets, "bytes": s.bytes, "heads": s.heads}
            r["bytes"] += s.bytes
            r["gets"] += s.gets
        return {
            "requests": self.requests,
            "bytes": sum(r["bytes"] for r in repos.values()),
            "gets": sum(r["gets"] for r in repos.values()),
            "repos": repos,
            **({"xet": self.cas.stats()} if self.cas is not None else {}),
        }

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self.requests = 0
        if self.cas is not None:
            self.cas.reset_stats()

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="hubserver", daemon=True)
        self._thread.start()
        if self.cas is not None:
            self.cas.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        if self.cas is not None:
            self.cas.stop()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy.localcluster.hubserver", description=__doc__)
    parser.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=DIR", help="serve DIR as ORG/NAME")
    parser.add_argument("--gated", action="append", default=[], metavar="ORG/NAME=TOKEN", help="gate a repository")
    parser.add_argument(
        "--xet", action="append", default=[], metavar="ORG/NAME", help="serve a repository's LFS files through Xet"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--throttle", type=float, default=None, metavar="BYTES_PER_S")
    args = parser.parse_args(argv)
    repos: dict[str, Path] = {}
    for item in args.repo:
        repo_id, sep, directory = item.partition("=")
        if not sep or not Path(directory).is_dir():
            parser.error(f"--repo {item!r}: expected ORG/NAME=DIR with an existing directory")
        repos[repo_id] = Path(directory)
    hub = HubServer(repos, host=args.host, port=args.port, throttle=args.throttle)
    for item in args.gated:
        repo_id, _, token = item.partition("=")
        if repo_id not in hub.repos:
            parser.error(f"--gated {item!r}: no --repo {repo_id}")
        hub.repos[repo_id].gated_token = token
    for repo_id in args.xet:
        if repo_id not in hub.repos:
            parser.error(f"--xet {repo_id!r}: no --repo {repo_id}")
        hub.set_xet(repo_id)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with hub:
        print(hub.url, flush=True)
        for repo_id in sorted(hub.repos):
            print(f"{repo_id}@main = {hub.commit(repo_id)}", file=sys.stderr, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
