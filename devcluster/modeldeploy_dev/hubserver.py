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

The HTTP side is hubhandler.py; this module holds the content, the counters and the CLI:
`python -m modeldeploy_dev.hubserver --repo ORG/NAME=DIR [--repo …] [--port 0]` prints the
base URL on its first line and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_dev.httpfiles import (
    BackgroundServer,
    repo_dirs,
    repo_tokens,
    serve_until_signalled,
    server_parser,
)
from modeldeploy_dev.hubhandler import HubHandler
from modeldeploy_dev.hubrepos import FileSource, HubFile, HubRepo, files_of
from modeldeploy_dev.xetcas import XORB_CHUNKS, XetCas


@dataclass
class FileStats:
    gets: int = 0  # GET requests that were answered with (part of) the file
    bytes: int = 0  # body bytes actually written to clients
    heads: int = 0


class HubServer(BackgroundServer):
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
        for repo_id, spec in (repos or {}).items():
            self.add_repo(repo_id, spec, xet=xet is True or (isinstance(xet, set) and repo_id in xet))
        handler = type("BoundHubHandler", (HubHandler,), {"hub": self})
        self.serve(host, port, handler, "hubserver")

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
            if self.running:
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
        super().start()
        if self.cas is not None:
            self.cas.start()
        return self

    def stop(self) -> None:
        super().stop()
        if self.cas is not None:
            self.cas.stop()


def main(argv: list[str] | None = None) -> int:
    parser = server_parser("modeldeploy_dev.hubserver", __doc__, "ORG/NAME")
    parser.add_argument("--gated", action="append", default=[], metavar="ORG/NAME=TOKEN", help="gate a repository")
    parser.add_argument(
        "--xet", action="append", default=[], metavar="ORG/NAME", help="serve a repository's LFS files through Xet"
    )
    args = parser.parse_args(argv)
    hub = HubServer(repo_dirs(parser, args.repo, "ORG/NAME"), host=args.host, port=args.port, throttle=args.throttle)
    for repo_id, token in repo_tokens(parser, "--gated", args.gated, hub.repos).items():
        hub.repos[repo_id].gated_token = token
    for repo_id in args.xet:
        if repo_id not in hub.repos:
            parser.error(f"--xet {repo_id!r}: no --repo {repo_id}")
        hub.set_xet(repo_id)
    with hub:
        serve_until_signalled(hub.url, {f"{r}@main": hub.commit(r) for r in hub.repos})
    return 0


if __name__ == "__main__":
    sys.exit(main())
