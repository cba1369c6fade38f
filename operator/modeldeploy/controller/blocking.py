"""`Kube`: blocking JSON REST over the `kubernetes` package's ApiClient, for scripts and tests.

The operator uses `kube.AsyncKube` and never imports this module: its process runs without the
`kubernetes` package (credentials.py says why; `.importlinter` keeps it so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client as k8s

from modeldeploy.controller.kube import FIELD_MANAGER, MERGE_PATCH, TIMEOUT_S, KubeError, json_headers

__all__ = ["Kube", "KubeError"]


class Kube:
    """Blocking JSON REST over the kubernetes client's ApiClient (for scripts and tests)."""

    def __init__(self, api_client: k8s.ApiClient | None = None) -> None:
        self.api = api_client or k8s.ApiClient()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = json_headers(content_type)
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=list(query), header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=TIMEOUT_S)
        except k8s.ApiException as exc:  # connection-level trouble surfaces here in some client versions
            raise KubeError(exc.status or 0, str(exc.reason), str(exc.body or exc)) from exc
        response.read()
        data = response.data or b"{}"
        try:
            payload = json.loads(data)
        except ValueError:
            payload = {"message": data.decode(errors="replace")}
        if not 200 <= response.status < 300:
            raise KubeError(
                response.status, str(payload.get("reason", "")), str(payload.get("message", payload)), payload
            )
        return payload

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def merge_patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        query = [("fieldManager", FIELD_MANAGER)]
        return self.request(
            "PATCH", path + "/status", query=query, body={"status": dict(status)}, content_type=MERGE_PATCH
        )
