"""Applying the children: what a server-side apply sends and whether it is needed (the sending itself is
execute.py's, the one module that writes to the apiserver).

Server-side apply (SSA) under one field manager, `modeldeploy`:
- `force=True` takes back the fields we render when someone edited them (they are our intent), but the
  fields that others legitimately own are dropped from our apply first (`yield_fields`): today
  `spec.replicas` once an HPA or `kubectl scale` owns it, so we never fight an autoscaler.
- Children controlled by another object are not adopted (`ChildConflict`): the apiserver itself refuses
  a second controller ownerReference, so no GET is needed to find out.

Skipping (`needs_apply`): every applied child carries the hash of what we rendered
(`modeldeploy.io/applied-hash`). When the watch shows the child with the hash of what we would apply
now, with its labels, and unedited since our last apply (its drift marker: a Deployment's generation,
a Service's spec digest), the apply would be a no-op and is not sent. The marker is remembered per
child in memory (`AppliedMemory`); after a restart the first reconcile applies once, then skips.

The blocking client for scripts and tests is `blocking.Kube`; the operator uses `kube.AsyncKube`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.controller.kube import FIELD_MANAGER, KubeError
from modeldeploy.controller.views import (
    HASH_ANNOTATION,
    YIELDABLE,
    ChildView,
    controller_uid,
    digest,
    owned_by_others,
)

__all__ = [
    "FIELD_MANAGER",
    "YIELDABLE",
    "AppliedMemory",
    "Applied",
    "ApplyError",
    "ChildConflict",
    "KubeError",
    "any_needs_apply",
    "controller_uid",
    "md_path",
    "needs_apply",
    "object_path",
    "owned_by_others",
    "yield_fields",
]


class ChildConflict(Exception):
    """A Deployment/Service of the same name belongs to another controller; we do not take it."""


@dataclass(frozen=True)
class Applied:
    """One child after apply (or a skipped apply): the object as stored, whether the apiserver changed it."""

    kind: str
    name: str
    obj: dict[str, Any] | None  # the apiserver's answer; None when the apply was skipped
    changed: bool
    created: bool


class ApplyError(Exception):
    """The apiserver refused one child; `applied` holds the children applied before it (in render order).

    The message names the child and carries the apiserver's own words, for the status condition.
    """

    def __init__(self, kind: str, name: str, error: KubeError, applied: list[Applied]) -> None:
        reason = f" {error.reason}" if error.reason else ""
        super().__init__(f"{kind} {name}: {error.status}{reason}: {error.message}")
        self.kind, self.name, self.error, self.applied = kind, name, error, applied

    @property
    def transient(self) -> bool:
        return self.error.transient


# The kinds we apply: the workload and its NetworkPolicy, and the autoscaling and routing objects
# (docs/autoscaling.md, docs/security.md).
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "NetworkPolicy": "networkpolicies",
    "ScaledObject": "scaledobjects",
    "HTTPScaledObject": "httpscaledobjects",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "InferencePool": "inferencepools",
    "HTTPRoute": "httproutes",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
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


def with_hash(desired: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The object with the hash of its rendered content as an annotation, and the hash."""
    value = digest(desired)
    meta = dict(desired.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: value}
    return {**desired, "metadata": meta}, value  # `desired` unchanged; the rest shared, never mutated


def yield_fields(desired: Mapping[str, Any], yielded: Iterable[str]) -> dict[str, Any]:
    """`desired` without the fields another manager owns (dotted paths); the input is not changed.

    Only the dicts on a yielded field's path are copied; the rest is shared with `desired`, as rendered
    objects are never mutated (`with_hash`). A deep copy of every applied child was 3 % of the operator's
    CPU in a burst, nearly all of it for children that yield nothing (docs/operator-at-scale.md)."""
    out = dict(desired)
    for dotted in yielded:
        *parents, leaf = dotted.split(".")
        parent = out
        for part in parents:
            child = parent.get(part)
            if not isinstance(child, dict):
                break
            copied = dict(child)
            parent[part] = copied
            parent = copied
        else:
            parent.pop(leaf, None)
    return out


# Kinds whose objects nobody but their creator writes once created (no controller writes their status), so
# the ADDED event of one this process created shows just what its create answered: that event is the
# create's echo, and stops at the event gate (indexes.own_create_echo). Kopf then never handles it: one
# event a ModelDeployment for its Service and one for its NetworkPolicy, in a burst
# (docs/operator-at-scale.md, "The event gate").
QUIET_KINDS = frozenset({"Service", "NetworkPolicy"})
ECHOES_MAX = 4096  # creates whose echo is awaited; one that came ahead of its create's answer stays here


@dataclass
class AppliedMemory:
    """Per child, right after our last apply: (hash applied, drift marker of the stored object).

    Keyed by (kind, namespace, name). A child the watch has not shown yet but that we applied with the
    same hash is not applied again; a DELETED event forgets the child (`drop`), so a deleted child is
    re-created.

    `created`: the quiet children (QUIET_KINDS) this process created whose ADDED event has not come yet,
    uid -> the resourceVersion the create answered; noted as soon as the answer comes. The event comes on
    the watch's connection at about the same time, often first (measured: half of them), so `creating`
    holds the creates under way, (kind, namespace, name) -> the hash applied: an ADDED object of that
    name with that hash annotation is what the create is writing (nobody else writes a quiet child).
    """

    entries: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)
    creating: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def await_echo(self, stored: Mapping[str, Any]) -> None:
        """Note a create's answer: its ADDED event will show this uid at this resourceVersion."""
        meta = stored.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if uid and version:
            self.created[str(uid)] = str(version)
            if len(self.created) > ECHOES_MAX:
                del self.created[next(iter(self.created))]  # the oldest

    def is_echo(self, obj: Mapping[str, Any]) -> bool:
        """Whether an ADDED object is the echo of a create: noted by await_echo (then no longer awaited), or
        under way (`creating`)."""
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if uid and self.created.pop(str(uid), None) == meta.get("resourceVersion"):
            return True
        key = (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        applying = self.creating.get(key)
        if applying and (meta.get("annotations") or {}).get(HASH_ANNOTATION) == applying:
            self.creating[key] = ""  # seen: the answer awaits no echo (execute.apply_children)
            return True
        return False

    def get(self, kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        return self.entries.get((kind, namespace, name))

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self.entries.pop((kind, namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self.entries if k[1:] == (namespace, name)]:
            del self.entries[key]


def needs_apply(
    desired: Mapping[str, Any], desired_hash: str, live: ChildView | None, remembered: tuple[str, str] | None
) -> bool:
    """Whether applying `desired` could change anything, judged from the watch's view. Pure.

    `remembered`: (hash, marker) of our last apply of this child, if this process made one.
    """
    if live is None:
        return remembered is None or remembered[0] != desired_hash  # applied; the watch has not shown it yet
    if live.deleting:
        return False  # going away: re-created once the watch says it is gone
    if live.applied_hash != desired_hash or remembered is None or live.marker != remembered[1]:
        return True
    labels = dict(live.labels)
    wanted = (desired.get("metadata") or {}).get("labels") or {}
    return any(labels.get(k) != v for k, v in wanted.items())


def view_of(kind: str, name: str, live: Mapping[Any, ChildView | None]) -> ChildView | None:
    """The watch's view of the child `kind`/`name` (`live`: by (kind, name), or by kind for the model's own
    Deployment and Service); a view of another child of that kind does not count (judged by memory alone)."""
    view = live.get((kind, name), live.get(kind))
    return view if view is not None and view.name == name else None


def any_needs_apply(
    objects: Iterable[tuple[Mapping[str, Any], str]], live: Mapping[Any, ChildView | None], memory: AppliedMemory
) -> bool:
    """Whether execute.apply_children would send anything (objects: with_hash pairs, or stubs with kind/metadata)."""
    for body, value in objects:
        kind, meta = str(body["kind"]), body["metadata"]
        key = (kind, str(meta["namespace"]), str(meta["name"]))
        if needs_apply(body, value, view_of(kind, key[2], live), memory.get(*key)):
            return True
    return False
