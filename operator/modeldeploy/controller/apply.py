"""Applying the children: server-side apply under our field manager, skipped when nothing would change.

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

import asyncio
import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.controller.kube import FIELD_MANAGER, AsyncKube, KubeError
from modeldeploy.controller.views import (
    HASH_ANNOTATION,
    YIELDABLE,
    ChildView,
    controller_uid,
    digest,
    drift_marker,
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
    "apply_children",
    "controller_uid",
    "md_path",
    "needs_apply",
    "object_path",
    "owned_by_others",
    "yield_fields",
]

SECOND_CONTROLLER = "Only one reference can have Controller set to true"


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


# The kinds we apply: the workload, and the autoscaling and routing objects (docs/autoscaling.md).
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
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
    """`desired` without the fields another manager owns (dotted paths); the input is not changed."""
    out = copy.deepcopy(dict(desired))
    for dotted in yielded:
        *parents, leaf = dotted.split(".")
        parent: Any = out
        for part in parents:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(leaf, None)
    return out


@dataclass
class AppliedMemory:
    """Per child, right after our last apply: (hash applied, drift marker of the stored object).

    Keyed by (kind, namespace, name). A child the watch has not shown yet but that we applied with the
    same hash is not applied again; a DELETED event forgets the child (`drop`), so a deleted child is
    re-created.
    """

    entries: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)

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


def _view_of(kind: str, name: str, live: Mapping[Any, ChildView | None]) -> ChildView | None:
    """The watch's view of the child `kind`/`name` (`live`: by (kind, name), or by kind for the model's own
    Deployment and Service); a view of another child of that kind does not count (judged by memory alone)."""
    view = live.get((kind, name), live.get(kind))
    return view if view is not None and view.name == name else None


def any_needs_apply(
    objects: Iterable[tuple[Mapping[str, Any], str]], live: Mapping[Any, ChildView | None], memory: AppliedMemory
) -> bool:
    """Whether apply_children would send anything (objects: with_hash pairs, or stubs with kind/metadata)."""
    for body, value in objects:
        kind, meta = str(body["kind"]), body["metadata"]
        key = (kind, str(meta["namespace"]), str(meta["name"]))
        if needs_apply(body, value, _view_of(kind, key[2], live), memory.get(*key)):
            return True
    return False


# Kinds whose admission reads another child (apply_children): RBAC checks a RoleBinding against its Role,
# KEDA's admission webhook reads a ScaledObject's target workload (and an HPA targets one too).
APPLIED_AFTER = frozenset({"RoleBinding", "ScaledObject", "HTTPScaledObject", "HorizontalPodAutoscaler"})


async def apply_children(
    kube: AsyncKube,
    objects: Iterable[tuple[Mapping[str, Any], str]],
    live: Mapping[Any, ChildView | None],
    memory: AppliedMemory,
) -> list[Applied]:
    """Apply each rendered child (with_hash's pairs) that needs it (`live`: the watch's view by (kind, name),
    or by kind for the model's own Deployment and Service).

    The children are sent at once, not one after another, so a new ModelDeployment's Deployment, Service and
    status cost two round trips, not three, which is what a burst waits on (docs/operator-at-scale.md).
    Admission reads no child from another, except RBAC (a RoleBinding is checked against the Role it
    names: the binder must hold that Role's permissions) and KEDA's webhook (a ScaledObject's target
    workload must exist): those kinds (APPLIED_AFTER) go once the rest is applied.

    Raises ChildConflict for a child another controller owns, ApplyError for any other refusal (the first
    in render order; it holds the children that were applied).
    """
    results: list[Applied | None] = []  # in render order; None where an apply is on its way
    wanted: list[tuple[int, tuple[str, str, str], str, ChildView | None, Mapping[str, Any]]] = []
    for body, value in objects:
        kind, meta = str(body["kind"]), body["metadata"]
        key = (kind, str(meta["namespace"]), str(meta["name"]))
        view = _view_of(kind, key[2], live)
        if needs_apply(body, value, view, memory.get(*key)):
            wanted.append((len(results), key, value, view, body))
            results.append(None)
        else:
            results.append(Applied(kind, key[2], None, changed=False, created=False))

    async def send(view: ChildView | None, body: Mapping[str, Any]) -> dict[str, Any]:
        return await kube.apply(yield_fields(body, view.yielded if view else ()), object_path(body))

    answers: list[Any] = [None] * len(wanted)
    for later in (False, True):
        wave = [i for i, (_, key, *_) in enumerate(wanted) if (key[0] in APPLIED_AFTER) == later]
        got = await asyncio.gather(*(send(wanted[i][3], wanted[i][4]) for i in wave), return_exceptions=True)
        for i, answer in zip(wave, got, strict=True):
            answers[i] = answer
    failure: tuple[str, str, KubeError] | None = None
    for (slot, key, value, view, _), stored in zip(wanted, answers, strict=True):
        kind, name = key[0], key[2]
        if isinstance(stored, KubeError):
            if stored.status == 422 and SECOND_CONTROLLER in stored.message:
                raise ChildConflict(f"{kind} {name} already exists and is controlled by another object") from stored
            failure = failure or (kind, name, stored)
            continue
        if isinstance(stored, BaseException):
            raise stored
        memory.entries[key] = (value, drift_marker(stored))
        version = (stored.get("metadata") or {}).get("resourceVersion")
        before = view.resource_version if view is not None else None
        created = view is None and (stored.get("metadata") or {}).get("generation") in (None, 1)
        results[slot] = Applied(kind, name, stored, changed=version != before, created=created)
    done = [result for result in results if result is not None]
    if failure is not None:
        raise ApplyError(failure[0], failure[1], failure[2], done) from failure[2]
    return done
