"""A local ModelScope hub: the part of its `/api/v1` API that the `modelscope` library downloads with.

There is no internet in tests or in `make demo`, yet modelscope:// must be fetched by ModelScope's own
client (`modelscope.hub.snapshot_download`, driven by modeldeploy.fetch.modelscope, with
`MODELSCOPE_ENDPOINT` pointing here). This server answers exactly what that client asks, in the shapes
it reads (the `{"Code", "Data", "Message", "Success"}` envelope):

- `GET /api/v1/models/{owner}/{name}` — model info (asked when a listing root is missing);
- `GET /api/v1/models/{owner}/{name}/revisions` — `Data.RevisionMap.{Branches,Tags}`, each entry with
  `Revision`, `CreatedAt` and the `CommitId` it names;
- `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=&Root=` — `Data.Files`, each with
  `Path`, `Name`, `Type` (`blob`/`tree`), `Size`, `Sha256`, `IsLFS` and `Revision` (the commit);
- `GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=` — the file, `Range` → 206 / 416;
- `GET /api/v1/repos/internalAccelerationInfo` — the client's cloud-region probe (on by default in the
  library): answered with no region, so it downloads over the plain route, as anywhere outside Alibaba
  Cloud;
- errors as HTTP status + envelope: 404 for a missing repository, revision or file; a private
  repository answers 401 without a token and 403 with a wrong one (the client sends the token as
  `Authorization: Bearer` and as the `m_session_id` cookie; either is accepted).

Revisions are branches (`master` by default) and tags; a full commit id is accepted wherever a revision
is. Repositories, commits and their ids come from `hubrepos` (the same content-derived commits as the
local Hugging Face Hub server). Every file GET is counted with the Range it asked for, in-process
(`ModelScopeServer.downloads()`) and at `GET /_msserver/stats`; an optional throttle (bytes/s) makes a
download slow enough to watch or to kill half-way.

CLI: `python -m modeldeploy_dev.modelscope_server --repo OWNER/NAME=DIR [--private OWNER/NAME=TOKEN]
[--port 0] [--throttle BYTES_PER_S]` prints the base URL on its first line and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from modeldeploy_dev.httpfiles import (
    BackgroundServer,
    QuietHandler,
    chunks,
    repo_dirs,
    repo_tokens,
    serve_until_signalled,
    server_parser,
)
from modeldeploy_dev.hubrepos import Commit, FileSource, HubRepo, files_of

CREATED_AT = 1767225600  # 2026-01-01, fixed: answers depend only on the content served
DEFAULT_BRANCH = "master"


@dataclass
class Downloads:
    """GETs of one file: how many, the Range header each carried (None = whole file), bytes written."""

    gets: int = 0
    bytes: int = 0
    ranges: list[str | None] = field(default_factory=list)


@dataclass
class MsRepo:
    """A ModelScope model repository: commits and refs (from hubrepos), which refs are tags, its token."""

    hub: HubRepo
    tags: set[str] = field(default_factory=set)
    token: str | None = None  # a private repository: every request needs this token


class ModelScopeServer(BackgroundServer):
    """`with ModelScopeServer({"owner/name": DIR_or_mapping}) as ms:` then `MODELSCOPE_ENDPOINT=ms.url`."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, FileSource] | Path | str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle: float | None = None,
    ) -> None:
        self.repos: dict[str, MsRepo] = {}
        self.throttle = throttle  # bytes per second for each file response, None = as fast as possible
        self._lock = threading.Lock()
        self._downloads: dict[tuple[str, str], Downloads] = {}
        self.requests: list[str] = []  # "METHOD /path?query" of every request but the stats endpoint's
        for repo_id, spec in (repos or {}).items():
            self.add_repo(repo_id, spec)
        handler = type("MsHandler", (_Handler,), {"ms": self})
        self.serve(host, port, handler, "msserver")

    # -- content --------------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileSource] | Path | str,
        *,
        revision: str = DEFAULT_BRANCH,
        tag: bool = False,
        token: str | None = None,
    ) -> str:
        """Add (or add a commit to) a repository under branch or tag `revision`; returns its commit id."""
        repo = self.repos.setdefault(repo_id, MsRepo(HubRepo(repo_id)))
        if token is not None:
            repo.token = token
        if tag:
            repo.tags.add(revision)
        return repo.hub.add(files_of(files), revision).sha

    def commit(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        found = self.repos[repo_id].hub.resolve(revision)
        if found is None:
            raise KeyError(f"{repo_id}@{revision}")
        return found.sha

    # -- counters -------------------------------------------------------------------------------------

    def _count(self, repo_id: str, path: str, *, ranged: str | None = None, get: bool = False, sent: int = 0) -> None:
        with self._lock:
            d = self._downloads.setdefault((repo_id, path), Downloads())
            if get:
                d.gets += 1
                d.ranges.append(ranged)
            d.bytes += sent

    def downloads(self, repo_id: str, path: str) -> Downloads:
        with self._lock:
            d = self._downloads.get((repo_id, path), Downloads())
            return Downloads(d.gets, d.bytes, list(d.ranges))

    def stats(self) -> dict[str, Any]:
        """{"requests": N, "gets": N, "bytes": N, "files": {"repo:path": {"gets", "bytes", "ranges"}}}."""
        with self._lock:
            files = {
                f"{r}:{p}": {"gets": d.gets, "bytes": d.bytes, "ranges": list(d.ranges)}
                for (r, p), d in self._downloads.items()
            }
            count = len(self.requests)
        return {
            "requests": count,
            "gets": sum(f["gets"] for f in files.values()),
            "bytes": sum(f["bytes"] for f in files.values()),
            "files": dict(sorted(files.items())),
        }

    # -- lifecycle ------------------------------------------------------------------------------------


class _Handler(QuietHandler):
    ms: ModelScopeServer

    # -- answers --------------------------------------------------------------------------------------

    def _envelope(self, status: int, data: Any, message: str) -> None:
        body = {
            "Code": status,
            "Data": data,
            "Message": message,
            "RequestId": uuid.uuid4().hex,
            "Success": status < 400,
        }
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _ok(self, data: Any) -> None:
        self._envelope(200, data, "success")

    def _error(self, status: int, message: str) -> None:
        self._envelope(status, None, message)

    # -- routing --------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if parts == ["_msserver", "stats"]:
            self._send(200, json.dumps(self.ms.stats()).encode(), {"Content-Type": "application/json"})
            return
        with self.ms._lock:
            self.ms.requests.append(f"{self.command} {self.path}")
        if parts == ["api", "v1", "repos", "internalAccelerationInfo"]:
            self._ok({})  # no InternalRegionQueryAddress: not inside a cloud region
            return
        if parts[:3] != ["api", "v1", "models"] or len(parts) < 5:
            self._error(404, "Not found")
            return
        repo_id, rest = "/".join(parts[3:5]), parts[5:]
        repo = self.ms.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Model {repo_id} does not exist.")
            return
        if not self._authorized(repo):
            return
        if not rest:
            self._ok(self._info(repo))
        elif rest == ["revisions"]:
            self._ok({"RevisionMap": self._revisions(repo)})
        elif rest == ["repo", "files"]:
            self._files(repo, query)
        elif rest == ["repo"] and "FilePath" in query:
            self._file(repo, query)
        else:
            self._error(404, "Not found")

    def _authorized(self, repo: MsRepo) -> bool:
        if not repo.token:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
        cookie = SimpleCookie(self.headers.get("Cookie", "")).get("m_session_id")
        if repo.token in (given, cookie.value if cookie else None):
            return True
        if given is None and cookie is None:
            self._error(401, f"Model {repo.hub.repo_id} is private; log in to access it.")
        else:
            self._error(403, f"The token has no access to model {repo.hub.repo_id}.")
        return False

    def _commit(self, repo: MsRepo, query: dict[str, str]) -> Commit | None:
        revision = query.get("Revision") or DEFAULT_BRANCH
        commit = repo.hub.resolve(revision)
        if commit is None:
            self._error(404, f"Revision {revision} of model {repo.hub.repo_id} does not exist.")
        return commit

    # -- metadata -------------------------------------------------------------------------------------

    @staticmethod
    def _info(repo: MsRepo) -> dict[str, Any]:
        owner, _, name = repo.hub.repo_id.partition("/")
        number = int(hashlib.sha1(repo.hub.repo_id.encode(), usedforsecurity=False).hexdigest()[:6], 16)
        return {"Id": number, "Name": name, "Path": owner, "Private": bool(repo.token)}

    @staticmethod
    def _revisions(repo: MsRepo) -> dict[str, list[dict[str, Any]]]:
        entries: dict[str, list[dict[str, Any]]] = {"Branches": [], "Tags": []}
        for ref, sha in sorted(repo.hub.refs.items()):
            kind = "Tags" if ref in repo.tags else "Branches"
            entries[kind].append({"Revision": ref, "CreatedAt": CREATED_AT, "CommitId": sha})
        return entries

    def _files(self, repo: MsRepo, query: dict[str, str]) -> None:
        commit = self._commit(repo, query)
        if commit is None:
            return
        root = query.get("Root", "").strip("/")
        recursive = query.get("Recursive", "false").lower() == "true"
        entries = commit.tree(root, recursive)
        if entries is None:
            self._error(404, f"Path {root} does not exist.")
            return
        files = []
        for entry in entries:
            path = str(entry["path"])
            item: dict[str, Any] = {"Name": path.rsplit("/", 1)[-1], "Path": path, "Revision": commit.sha}
            if entry["type"] == "directory":
                item.update(Type="tree", Size=0, Sha256="", IsLFS=False)
            else:
                f = commit.files[path]
                item.update(Type="blob", Size=f.size, Sha256=f.sha256, IsLFS=f.lfs, CommittedDate=CREATED_AT)
            files.append(item)
        self._ok({"Files": files})

    # -- file bytes -----------------------------------------------------------------------------------

    def _file(self, repo: MsRepo, query: dict[str, str]) -> None:
        commit = self._commit(repo, query)
        if commit is None:
            return
        path = query["FilePath"].strip("/")
        f = commit.files.get(path)
        if f is None:
            self._error(404, f"File {path} does not exist at revision {query.get('Revision', DEFAULT_BRANCH)}.")
            return
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "ETag": f'"{f.sha256}"'}
        span = self._file_head(headers, f.size)
        if span is None or self.command == "HEAD":
            return
        start, end = span
        self.ms._count(repo.hub.repo_id, path, ranged=self.headers.get("Range"), get=True)
        repo_id = repo.hub.repo_id
        self._write_paced(
            chunks(f.source, start, end), lambda: self.ms.throttle, lambda n: self.ms._count(repo_id, path, sent=n)
        )


def main(argv: list[str] | None = None) -> int:
    parser = server_parser("modeldeploy_dev.modelscope_server", __doc__, "OWNER/NAME")
    parser.add_argument("--private", action="append", default=[], metavar="OWNER/NAME=TOKEN", help="make it private")
    args = parser.parse_args(argv)
    ms = ModelScopeServer(
        repo_dirs(parser, args.repo, "OWNER/NAME"), host=args.host, port=args.port, throttle=args.throttle
    )
    for repo_id, token in repo_tokens(parser, "--private", args.private, ms.repos).items():
        ms.repos[repo_id].token = token
    with ms:
        serve_until_signalled(ms.url, {f"{r}@{DEFAULT_BRANCH}": ms.commit(r) for r in ms.repos})
    return 0


if __name__ == "__main__":
    sys.exit(main())
