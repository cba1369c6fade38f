"""Where a model's weights live inside the pod, derived from `model.uri` alone.

The fetch init container writes there and the engine container reads from there, so both sides call
this one pure function; nothing is passed between them but the URI.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import urlparse, urlsplit, urlunsplit

CACHE_MOUNT = "/models"  # the cache volume (PVC or emptyDir) in every model pod
PVC_MOUNT_ROOT = "/mnt/pvc"  # pvc:// claims are mounted read-only under here
NGL_DIR = "/var/run/modeldeploy"  # shared emptyDir: the auto-NGL result
NGL_FILE = f"{NGL_DIR}/ngl.json"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ModelUriError(ValueError):
    """A `model.uri` that names no place weights can come from."""


@dataclass(frozen=True)
class ModelLocation:
    """The parsed URI and the paths derived from it."""

    scheme: str  # hf, modelscope, s3, https, http, pvc, local
    needs_fetch: bool  # False when the weights are already on a mounted path
    directory: str  # where the repository/prefix is (or will be) inside the pod
    pvc_claim: str | None = None  # pvc:// only

    def model_path(self, file: str | None) -> str:
        """The path the engine loads: the directory, or the one file inside it (GGUF)."""
        if self.scheme in ("https", "http"):
            return self.directory  # already the file
        return posixpath.join(self.directory, file) if file else self.directory


def _clean(part: str) -> str:
    """Path segment from user text: no traversal, no odd characters."""
    cleaned = _SAFE.sub("_", part).strip(".")
    return cleaned or "_"


REDACTED = "<redacted>"


def redact_uri(uri: str) -> str:
    """`uri` as annotations, status and Events may show it: an http(s) URI's query string (where presigned
    URLs carry their signature: X-Amz-Signature, sig, token) and user:password@ become `<redacted>`.

    Whoever may read a ModelDeployment's status or a cache claim's annotations need not be able to fetch
    the weights with its signature (docs/security.md, "Presigned URIs"). The fetcher still gets the whole URI.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https", "s3"):
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


_URI_IN_TEXT = re.compile(r"(?:https?|s3)://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """`text` (a fetcher's failure message) with every URI in it redacted as `redact_uri` does."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def locate(uri: str) -> ModelLocation:
    """Parse `model.uri` into where the weights will be in the pod."""
    if uri.startswith("/"):
        norm = posixpath.normpath(uri)
        if ".." in uri.split("/"):
            raise ModelUriError(f"model.uri {redact_uri(uri)!r} must not contain '..'")
        return ModelLocation("local", False, norm)
    parsed = urlparse(uri)
    scheme = parsed.scheme
    if scheme in ("hf", "modelscope"):
        repo, _, rev = (parsed.netloc + parsed.path).partition("@")
        parts = [p for p in repo.split("/") if p]
        if len(parts) != 2:
            raise ModelUriError(f"model.uri {redact_uri(uri)!r}: expected {scheme}://org/repo[@revision]")
        rev_dir = _clean(rev) if rev else "main"
        return ModelLocation(scheme, True, posixpath.join(CACHE_MOUNT, scheme, *map(_clean, parts), rev_dir))
    if scheme == "s3":
        if not parsed.netloc:
            raise ModelUriError(f"model.uri {redact_uri(uri)!r}: expected s3://bucket/prefix")
        parts = [_clean(p) for p in parsed.path.split("/") if p]
        return ModelLocation(scheme, True, posixpath.join(CACHE_MOUNT, "s3", _clean(parsed.netloc), *parts))
    if scheme in ("https", "http"):
        name = posixpath.basename(parsed.path)
        if not parsed.netloc or not name:
            raise ModelUriError(f"model.uri {redact_uri(uri)!r}: expected https://host/path/file")
        return ModelLocation(scheme, True, posixpath.join(CACHE_MOUNT, "url", _clean(parsed.netloc), _clean(name)))
    if scheme == "pvc":
        claim = parsed.netloc
        if not claim:
            raise ModelUriError(f"model.uri {redact_uri(uri)!r}: expected pvc://claim/path")
        sub = [_clean(p) for p in parsed.path.split("/") if p]
        return ModelLocation(scheme, False, posixpath.join(PVC_MOUNT_ROOT, claim, *sub), pvc_claim=claim)
    raise ModelUriError(
        f"model.uri {redact_uri(uri)!r} has an unsupported scheme; use hf://, modelscope://, s3://, https://, pvc:// "
        "or an absolute path"
    )
