"""The operator's API client: async JSON REST over aiohttp, bounded, with timeouts.

Why not the `kubernetes` package's (blocking) client: every call held one of the default thread pool's
few threads for a whole round trip, so a burst of ModelDeployments queued behind six threads. Why not
Kopf's own client: it is internal to Kopf. aiohttp is what Kopf already runs on. Credentials come from
`credentials.py` (in-cluster service account or kubeconfig, read without the `kubernetes` package), the
same object Kopf's login gets, so both authenticate alike; a 401 reads a rotated token file again and
retries once.

- `limit` bounds the requests in flight (a burst never opens hundreds of connections);
- every request has a total timeout (`timeout_s`), a connection timeout, and errors of the transport
  (refused, reset, timed out) become KubeError(status 0), which callers treat as transient.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from modeldeploy.controller.credentials import Credentials, client_credentials, load_any

FIELD_MANAGER = "modeldeploy"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
LIMIT = 16  # requests in flight at once


class KubeError(Exception):
    """An apiserver answer that is not 2xx, with the apiserver's own message (what users should read)."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @property
    def transient(self) -> bool:
        """Worth retrying soon: throttling, apiserver trouble (a webhook that is down is a 500), timeouts,
        optimistic-lock conflicts, and the apiserver not knowing our CRD's kind yet.

        The last one is a 403 from OwnerReferencesPermissionEnforcement ("cannot find RESTMapping for …
        ModelDeployment") when a ModelDeployment is applied right after the CRD was installed: the
        admission's discovery cache catches up within seconds, so it is retried, not reported as a refusal.
        """
        if self.status == 403 and "cannot find RESTMapping" in self.message:
            return True
        return self.status in (409, 429) or self.status >= 500 or self.status == 0

    @property
    def namespace_terminating(self) -> bool:
        """A create refused because its namespace is being deleted (the apiserver's NamespaceLifecycle
        admission names the cause `NamespaceTerminating`): the ModelDeployment goes with the namespace, so
        there is nothing to report or retry (docs/operator-at-scale.md, "Status on every failure")."""
        causes = (self.body.get("details") or {}).get("causes") or ()
        return self.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes)


def json_headers(content_type: str | None) -> dict[str, str]:
    """The headers of a JSON request to the apiserver (both clients: this one and blocking.Kube)."""
    return {"Accept": "application/json", **({"Content-Type": content_type} if content_type else {})}


class AsyncKube:
    """Minimal async JSON REST client for one apiserver. Create it on the running loop; close() it."""

    def __init__(self, credentials: Credentials | Any, *, limit: int = LIMIT, timeout_s: float = TIMEOUT_S) -> None:
        """`credentials`: a `credentials.Credentials`, or the `kubernetes` package's client configuration
        (scripts and tests that already hold one)."""
        if not isinstance(credentials, Credentials):
            credentials = client_credentials(credentials)
        self.credentials = credentials
        self.host = credentials.server.rstrip("/")
        connector = aiohttp.TCPConnector(ssl=credentials.ssl_context(), limit=limit)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S),
            json_serialize=json.dumps,
        )
        self.requests = 0  # made since start (for the metrics)
        self.by_verb: Counter[str] = Counter()  # the same, by HTTP method

    @classmethod
    def from_environment(cls, **kwargs: Any) -> AsyncKube:
        """In-cluster service account when there is one, else the kubeconfig ($KUBECONFIG), like Kopf's login."""
        return cls(load_any(), **kwargs)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = json_headers(content_type)
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        if data is not None and content_type is None:
            content_type = "application/json"
        for attempt in (1, 2):
            self.requests += 1
            self.by_verb[method] += 1
            sent = {**self._headers(content_type), **(headers or {})}
            try:
                async with self.session.request(
                    method, self.host + path, params=list(query), data=data, headers=sent
                ) as response:
                    raw = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise KubeError(0, exc.__class__.__name__, str(exc) or "no answer from the apiserver") from exc
            if status != 401 or attempt == 2 or not self.credentials.token_file:
                break
            self.credentials.reread_token()  # a projected token rotated under us: read it again, once
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"message": raw.decode(errors="replace")}
        if not 200 <= status < 300:
            raise KubeError(status, str(payload.get("reason", "")), str(payload.get("message", payload)), payload)
        return payload

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: Mapping[str, Any], path: str, *, force: bool = True) -> dict[str, Any]:
        """Server-side apply `obj` under our field manager; returns the object as stored."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        return await self.request("PATCH", path, query=query, body=dict(obj), content_type=APPLY_PATCH)

    async def merge_patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of `.status` through the status subresource (never touches spec or metadata)."""
        query = [("fieldManager", FIELD_MANAGER)]
        return await self.request(
            "PATCH", path + "/status", query=query, body={"status": dict(status)}, content_type=MERGE_PATCH
        )

    async def close(self) -> None:
        await self.session.close()
