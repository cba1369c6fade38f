"""The local Hub server's HTTP handler: routes, the Hub's headers and errors, file streaming.

What it answers is listed in hubserver.py (the server, its content and counters); kept apart so each
module has one job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modeldeploy_dev.httpfiles import QuietHandler, chunks
from modeldeploy_dev.hubrepos import Commit, HubFile, HubRepo

if TYPE_CHECKING:
    from modeldeploy_dev.hubserver import HubServer


class HubHandler(QuietHandler):
    hub: HubServer

    # -- small answers ----------------------------------------------------------------------------------

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
        span = self._file_head(headers, f.size)
        if span is None:
            return
        if self.command == "HEAD":
            self.hub._count(repo_id, f.path, head=True)
            return
        self.hub._count(repo_id, f.path, get=True)
        self._write_paced(
            chunks(f.source, *span), lambda: self.hub.throttle, lambda n: self.hub._count(repo_id, f.path, sent=n)
        )
