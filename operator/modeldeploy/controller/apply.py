"""Talking to the apiserver: server-side apply of the children, reads, and status merge patches.

A thin JSON layer over `kubernetes.client.ApiClient` rather than the typed API classes: the renderer
produces plain camelCase dicts, the apiserver answers them, and nothing in between should round-trip
through generated models (which drop unknown fields and rename keys).

Server-side apply (SSA) under one field manager, `modeldeploy`:
- Applying the same content twice is a no-op on the apiserver (no new resourceVersion, no watch event),
  so the operator can re-apply on every reconcile and correct drift without churn.
- `force=True` takes back the fields we render when someone edited them (they are our intent), but the
  fields that others legitimately own are dropped from our apply first (`yield_fields`): today
  `spec.replicas` once an HPA or `kubectl scale` owns it, so we never fight an autoscaler.
- Children controlled by another object are not adopted (`ChildConflict`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

FIELD_MANAGER = "modeldeploy"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
TIMEOUT_S = 30

# Fields of our children we stop applying once another manager owns them (managedFields paths).
YIELDABLE: dict[str, tuple[str, ...]] = {"Deployment": ("spec", "replicas")}


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
        """Worth retrying: throttling, apiserver trouble, optimistic-lock conflicts, and the apiserver not
        knowing our CRD's kind yet.

        The last one is a 403 from OwnerReferencesPermissionEnforcement ("cannot find RESTMapping for …
        ModelDeployment") when a ModelDeployment is applied right after the CRD was installed: the
        admission's discovery cache catches up within seconds, so it is retried, not reported as a refusal.
        """
        if self.status == 403 and "cannot find RESTMapping" in self.message:
            return True
        return self.status in (409, 429) or self.status >= 500 or self.status == 0


class ChildConflict(Exception):
    """A Deployment/Service of the same name belongs to another controller; we do not take it."""


class ApplyError(Exception):
    """The apiserver refused one child; `applied` holds the children applied before it (in render order).

    The message names the child and carries the apiserver's own words, for the status condition.
    """

    def __init__(self, kind: str, name: str, error: KubeError, applied: list[Applied]) -> None:
        super().__init__(f"{kind} {name}: {error.status} {error.reason}: {error.message}".replace(":  ", ": "))
        self.kind, self.name, self.error, self.applied = kind, name, error, applied

    @property
    def transient(self) -> bool:
        return self.error.transient


class Kube:
    """Minimal JSON REST over the kubernetes client's ApiClient (auth, TLS and proxies come from it)."""

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
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
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

    def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply `obj` under our field manager; returns the object as stored."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        return self.request("PATCH", object_path(obj), query=query, body=dict(obj), content_type=APPLY_PATCH)

    def merge_patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of `.status` through the status subresource (never touches spec or metadata)."""
        query = [("fieldManager", FIELD_MANAGER)]
        return self.request(
            "PATCH", path + "/status", query=query, body={"status": dict(status)}, content_type=MERGE_PATCH
        )


# The kinds we apply: the workload, and the autoscaling and routing objects (docs/autoscaling.md).
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ScaledObject": "scaledobjects",
    "HTTPScaledObject": "httpscaledobjects",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "InferencePool": "inferencepools",
    "HTTPRoute": "httproutes",
}


def object_path(obj: Mapping[str, Any]) -> str:
    """The REST path of a namespaced object of one of the kinds we apply (PLURALS)."""
    meta = obj["metadata"]
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = PLURALS[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def md_path(namespace: str, name: str) -> str:
    from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION

    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def owned_by_others(live: Mapping[str, Any], path: Sequence[str]) -> bool:
    """Whether a manager other than ours owns the field at `path` (e.g. an HPA owning spec.replicas)."""
    for entry in (live.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") == FIELD_MANAGER and not entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1") or {}
        for part in path:
            fields = fields.get(f"f:{part}") if isinstance(fields, dict) else None
            if fields is None:
                break
        else:
            return True
    return False


def yield_fields(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """`desired` without the fields another manager owns on `live` (pure; the apply then never takes them)."""
    out = copy.deepcopy(dict(desired))
    if not live:
        return out
    for path in (YIELDABLE.get(str(desired.get("kind"))),):
        if path and owned_by_others(live, path):
            parent: Any = out
            for part in path[:-1]:
                parent = parent.get(part, {})
            parent.pop(path[-1], None)
    return out


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


@dataclass(frozen=True)
class Applied:
    """One child after apply: the stored object and whether the apiserver actually changed it."""

    obj: dict[str, Any]
    changed: bool
    created: bool


def apply_children(kube: Kube, objects: Iterable[Mapping[str, Any]], owner_uid: str | None) -> list[Applied]:
    """Apply each rendered child; refuse (ChildConflict) ones another controller owns; adopt orphans.

    A refusal of the apiserver becomes ApplyError naming the child, with what was applied before it.
    """
    results: list[Applied] = []
    for desired in objects:
        kind, name = str(desired["kind"]), str(desired["metadata"]["name"])
        try:
            live = kube.get(object_path(desired))
        except KubeError as exc:
            raise ApplyError(kind, name, exc, results) from exc
        if live is not None:
            uid = controller_uid(live)
            if uid is not None and owner_uid is not None and uid != owner_uid:
                raise ChildConflict(f"{kind} {name} already exists and is controlled by another object (uid {uid})")
        try:
            stored = kube.apply(yield_fields(desired, live))
        except KubeError as exc:
            raise ApplyError(kind, name, exc, results) from exc
        version = (stored.get("metadata") or {}).get("resourceVersion")
        before = (live.get("metadata") or {}).get("resourceVersion") if live else None
        results.append(Applied(obj=stored, changed=version != before, created=live is None))
    return results
