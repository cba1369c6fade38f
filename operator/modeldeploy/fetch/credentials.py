"""Which keys of `model.credentialsSecret` reach the fetcher, and where a credential may be sent.

Only the keys the fetcher reads for the URI's scheme are imported from the Secret, one `secretKeyRef`
each (optional, so a Secret holding just HF_TOKEN is fine): importing the whole Secret (`envFrom`)
would hand the fetcher every other key of it too, and would let a key such as HF_ENDPOINT, PYTHONPATH
or HTTPS_PROXY redirect the download or the fetcher itself. A variable the operator's `fetchEnv` sets
is never taken from the Secret.

A bearer token (HF_TOKEN, MODELSCOPE_API_TOKEN, HTTP_BEARER_TOKEN) travels in a request header, so over
plain http:// anyone on the path reads it: the fetcher refuses to send one there, except to a loopback
address (a mirror or a test server on the same machine). S3 keys are not sent: requests are signed.
See docs/security.md "Credentials".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

# What the fetcher reads from the environment, per scheme (fetch/hub.py, modelscope.py, sources.py).
SCHEME_KEYS: dict[str, tuple[str, ...]] = {
    "hf": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "modelscope": ("MODELSCOPE_API_TOKEN",),
    "https": ("HTTP_BEARER_TOKEN",),
    "http": ("HTTP_BEARER_TOKEN",),
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ),
}
CREDENTIAL_KEYS = tuple(dict.fromkeys(k for keys in SCHEME_KEYS.values() for k in keys))

# Per scheme: the endpoint a token goes to (its variable, its default) and the token variables.
_TOKEN_ROUTES: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {
    "hf": ("HF_ENDPOINT", "https://huggingface.co", ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")),
    "modelscope": ("MODELSCOPE_ENDPOINT", None, ("MODELSCOPE_API_TOKEN",)),
    "http": (None, None, ("HTTP_BEARER_TOKEN",)),
    "https": (None, None, ("HTTP_BEARER_TOKEN",)),
}


def secret_env(secret: str, scheme: str, taken: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The env entries that import from `secret` the keys the fetcher reads for `scheme`, but for the
    names already `taken` (the operator's fetchEnv)."""
    skip = set(taken)
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in SCHEME_KEYS.get(scheme, ())
        if key not in skip
    ]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_refusal(uri: str, environ: Mapping[str, str]) -> str | None:
    """Why the fetch must not start: a token from the environment would go to a plain http:// host that is
    not loopback. None when no token is set or it goes over https:// (or to loopback)."""
    scheme = urlsplit(uri).scheme.lower()
    route = _TOKEN_ROUTES.get(scheme)
    if route is None:
        return None
    endpoint_var, default, token_vars = route
    sent = [v for v in token_vars if environ.get(v)]
    if not sent:
        return None
    target = uri if endpoint_var is None else (environ.get(endpoint_var) or default or "")
    parts = urlsplit(target.strip())
    if parts.scheme.lower() != "http" or _loopback((parts.hostname or "").lower()):
        return None
    where = f"{parts.scheme}://{parts.hostname}" + (f" (from {endpoint_var})" if endpoint_var else "")
    return (
        f"Refusing to send {sent[0]} from credentialsSecret to {where} over plain http://, where anyone on "
        "the network can read it; use an https:// address (http:// is allowed only for loopback)."
    )
