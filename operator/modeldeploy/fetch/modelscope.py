"""modelscope:// through ModelScope's own client, the `modelscope` library (what Xinference downloads with).

The library does what our HTTP code used to: the file API and its listing, tokens (`MODELSCOPE_API_TOKEN`,
sent as a bearer token and as the session cookie), mirrors and private deployments (`MODELSCOPE_ENDPOINT`;
the deprecated `MODELSCOPE_DOMAIN` is honoured too), retries, sha256 checks against the listing, and
downloads that resume from `<file>.incomplete` — a fixed name, so a Job pod killed mid-file continues
where it stopped (docs/model-cache.md "Resume"). What is left here mirrors hub.py: resolve the revision
once to the commit ModelScope reports and download exactly that commit, turn the library's errors into
one sentence that names the fix, report the listing's sizes so progress has a total, and keep the
library's log lines in our JSON log instead of on stderr (where the failure sentence goes).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path
from typing import Any

from modeldeploy.fetch.http import FetchError
from modeldeploy.fetch.hub import HubListing
from modeldeploy.fetch.progress import Log
from modeldeploy.fetch.sources import RemoteFile, parse_repo, safe_relpath

DEFAULT_BRANCH = "master"  # ModelScope's default branch; a uri without @revision means it
COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
CLIENT_LOGGERS = ("modelscope_hub", "modelscope")


def _endpoint() -> str | None:
    """The hub to use: `MODELSCOPE_ENDPOINT` (the operator's fetchEnv), else the deprecated `MODELSCOPE_DOMAIN`.

    None leaves the choice to the library (modelscope.cn, or modelscope.ai when the model lives there).
    Passed explicitly because the library caches its environment-derived configuration per process.
    """
    value = (os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or "").strip()
    if not value:
        return None
    return (value if value.lower().startswith(("http://", "https://")) else f"https://{value}").rstrip("/")


def _token() -> str:
    """The token from credentialsSecret; "" (not None) so no credentials file on the image is ever read."""
    return os.environ.get("MODELSCOPE_API_TOKEN") or ""


def _api() -> Any:
    from modelscope.hub.api import HubApi

    return HubApi(endpoint=_endpoint(), token=_token())


def _cause(exc: BaseException) -> BaseException:
    """The library error behind a wrapper: the compatibility layer re-raises 401/403/404 as requests'
    HTTPError (the original is its __cause__) and a snapshot gathers per-file failures."""
    from modelscope_hub.errors import FileDownloadError, HubError

    for _ in range(5):  # requests' HTTPError is an OSError too: unwrap by what the cause is, not the wrapper
        if isinstance(exc, FileDownloadError) and exc.failed_files:
            exc = next(iter(exc.failed_files.values()))
        elif not isinstance(exc, HubError) and isinstance(exc.__cause__, HubError):
            exc = exc.__cause__
        else:
            break
    return exc


def _sentence(exc: BaseException, what: str, missing: str) -> FetchError:
    """A library error as one sentence that names what to fix; `missing` says what a 404 means here."""
    from modelscope_hub import errors

    exc = _cause(exc)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, errors.AuthenticationError):
        if _token():
            return FetchError(
                f"{what}: HTTP 401, ModelScope refused the MODELSCOPE_API_TOKEN in credentialsSecret "
                "(expired or wrong)."
            )
        return FetchError(
            f"{what}: HTTP 401, the repository is private or gated; set model.credentialsSecret to a Secret with "
            "a MODELSCOPE_API_TOKEN that has access."
        )
    if isinstance(exc, errors.PermissionDeniedError):
        return FetchError(
            f"{what}: HTTP 403, the token in credentialsSecret has no access to this repository (request access on "
            "ModelScope, or use a token that has it)."
        )
    if isinstance(exc, errors.NotExistError):
        return FetchError(f"{what}: HTTP 404, {missing}.")
    if isinstance(exc, errors.FileIntegrityError):
        return FetchError(f"{what}: {exc.message.splitlines()[0]} (the download was removed; the next start retries).")
    if isinstance(exc, errors.APIError):
        hint = " (is credentialsSecret set with the right token?)" if status in (401, 403) else ""
        return FetchError(f"{what}: HTTP {status}{hint}.")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return FetchError(f"{what}: no space left on the cache volume (give the cache a larger size).")
    text = getattr(exc, "message", None) or str(exc)
    return FetchError(f"{what}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": "))


def _repo_missing() -> str:
    hint = "" if _token() else "; a private repository needs model.credentialsSecret with a MODELSCOPE_API_TOKEN"
    return f"repository not found (check model.uri{hint})"


def resolve(uri: str, wanted: list[str] | None = None) -> HubListing:
    """The commit `uri`'s revision names now (as ModelScope reports it) and the files to fetch, with sizes.

    A branch or tag resolves to the `CommitId` ModelScope lists for it; where a hub lists none, the name
    itself is kept. A full or abbreviated commit id is used as given.
    """
    repo, asked = parse_repo(uri)
    revision = DEFAULT_BRANCH if asked == "main" else asked
    what = f"modelscope://{repo}@{revision}"
    api = _api()
    try:
        branches, tags = api.get_model_branches_and_tags_details(repo)
    except Exception as exc:  # every failure becomes the one sentence the status shows
        raise _sentence(exc, what, _repo_missing()) from None
    refs = {d.get("Revision"): d for d in [*(branches or []), *(tags or [])]}
    if revision in refs:
        commit = str(refs[revision].get("CommitId") or revision)
    elif COMMIT.match(revision):
        commit = revision
    else:
        raise FetchError(
            f"{what}: HTTP 404, the revision does not exist (check the @revision in model.uri; ModelScope's default "
            f"branch is {DEFAULT_BRANCH})."
        )
    try:
        listed = api.list_repo_files(repo, "model", revision=commit, recursive=True)
    except Exception as exc:
        raise _sentence(exc, what, "the revision does not exist (check the @revision in model.uri)") from None
    available = {safe_relpath(f.path): f for f in listed if not f.is_dir}
    names = wanted or sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise FetchError(
            f"{what}: HTTP 404, no file {', '.join(missing)} in the repository at revision {commit} (check model.file)."
        )
    files = [RemoteFile(n, available[n].size, available[n].sha256 or None) for n in names]
    return HubListing(repo, revision, commit, files)


class _JsonLines(logging.Handler):
    """The library's warnings (retries, fallbacks) as JSON lines in our log."""

    def __init__(self, log: Log) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log({"event": "fetch.client", "level": record.levelname.lower(), "message": record.getMessage()})
        except Exception:  # a log line never fails a download
            self.handleError(record)


def _route_logs(log: Log) -> None:
    """Replace the library's stderr handlers (added when it is imported) with our JSON lines."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [_JsonLines(log)]
        logger.propagate = False


def download(listing: HubListing, dest: Path, *, log: Log, workers: int = 4, whole: bool = False) -> None:
    """Every listed file of the resolved commit into `dest` (the library's local-dir layout).

    `whole`: the listing is the whole repository, so no patterns are passed (a file name with a comma
    or a glob character would be read as a pattern by the library).
    """
    from modelscope.hub.snapshot_download import snapshot_download

    _route_logs(log)
    what = f"modelscope://{listing.repo}@{listing.revision}"
    try:
        snapshot_download(
            listing.repo,
            revision=listing.commit,
            local_dir=str(dest),
            allow_patterns=None if whole else [f.path for f in listing.files],
            max_workers=workers,
            token=_token(),
            endpoint=_endpoint(),
        )
    except Exception as exc:
        raise _sentence(exc, what, "no such file in the repository (check model.file)") from None
