"""hf:// through `huggingface_hub`, the Hub's own client.

The client does what our code used to: revisions resolved to a commit, tokens (`HF_TOKEN`), mirrors
(`HF_ENDPOINT`, how many users in China reach the Hub), Xet-backed files (through `hf_xet`),
resumable downloads and the Hub's error codes. What is left here is the part no library does for us:
resolving once and downloading exactly that commit (so every file comes from one commit, even if the
branch moves mid-download), turning its errors into one sentence that names the fix, and reporting
the listing's sizes so progress has a total.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy.fetch.http import FetchError
from modeldeploy.fetch.sources import RemoteFile, parse_repo

HF_DEFAULT = "https://huggingface.co"


@dataclass(frozen=True)
class HubListing:
    """What one repository revision holds: the commit it resolved to and the files to fetch."""

    repo: str
    revision: str  # as asked (branch, tag or commit)
    commit: str
    files: list[RemoteFile]

    @property
    def total(self) -> int:
        return sum(f.size or 0 for f in self.files)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HF_DEFAULT).rstrip("/")


def _token() -> str | bool:
    """The token from credentialsSecret; False (not None) so no token file on the image is ever read."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or False


def _sentence(exc: BaseException, what: str) -> FetchError:
    """A huggingface_hub error as one sentence that names what to fix."""
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError):
        if status == 403 or _token():
            return FetchError(
                f"{what}: HTTP {status or 403}, the token in credentialsSecret has no access to this gated "
                "repository (request access on the Hub, or use a token that has it)."
            )
        return FetchError(
            f"{what}: HTTP {status or 401}, the repository is gated; set model.credentialsSecret to a Secret "
            "with an HF_TOKEN that has access."
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return FetchError(f"{what}: HTTP 404, the revision does not exist (check the @revision in model.uri).")
    if isinstance(exc, errors.EntryNotFoundError):
        return FetchError(f"{what}: HTTP 404, no such file in the repository (check model.file).")
    if isinstance(exc, errors.RepositoryNotFoundError):
        hint = "" if _token() else "; a private repository needs model.credentialsSecret with an HF_TOKEN"
        return FetchError(f"{what}: HTTP {status or 404}, repository not found (check model.uri{hint}).")
    if isinstance(exc, errors.HfHubHTTPError):
        hint = " (is credentialsSecret set with the right token?)" if status in (401, 403) else ""
        return FetchError(f"{what}: HTTP {status}{hint}.")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return FetchError(f"{what}: no space left on the cache volume (give the cache a larger size).")
    return FetchError(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))


def resolve(uri: str, wanted: list[str] | None = None) -> HubListing:
    """The commit `uri`'s revision names now and the files to fetch (all, or `wanted`), with sizes."""
    from huggingface_hub import HfApi

    repo, revision = parse_repo(uri)
    what = f"hf://{repo}@{revision}"
    try:
        info = HfApi(endpoint=_endpoint()).model_info(repo, revision=revision, files_metadata=True, token=_token())
    except Exception as exc:  # every failure becomes the one sentence the status shows
        raise _sentence(exc, what) from None
    siblings: dict[str, Any] = {s.rfilename: s for s in info.siblings or []}
    names = wanted or sorted(siblings)
    missing = [n for n in names if n not in siblings]
    if missing:
        raise FetchError(
            f"{what}: HTTP 404, no file {', '.join(missing)} in the repository at commit {info.sha} (check model.file)."
        )
    files = []
    for name in names:
        sib = siblings[name]
        files.append(RemoteFile(name, sib.size, sib.lfs.sha256 if sib.lfs else None))
    return HubListing(repo, revision, str(info.sha), files)


def download(listing: HubListing, dest: Path, *, workers: int = 4) -> None:
    """Every listed file of the resolved commit into `dest` (huggingface_hub's local-dir layout)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]  # not re-exported

    disable_progress_bars()  # our progress lines say it; its bars would garble the log and the failure sentence
    what = f"hf://{listing.repo}@{listing.revision}"
    try:
        snapshot_download(
            listing.repo,
            revision=listing.commit,
            local_dir=dest,
            allow_patterns=[f.path for f in listing.files],
            endpoint=_endpoint(),
            token=_token(),
            max_workers=workers,
        )
    except Exception as exc:
        raise _sentence(exc, what) from None
