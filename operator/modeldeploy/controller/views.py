"""What the operator keeps from its watches: compact views of ModelDeployments, children and pods. Pure.

Kopf already watches ModelDeployments, our Deployments, Services and pods; its indexes keep what the
index functions return. Keeping views (a few fields each) instead of whole bodies is what makes a
reconcile free of GETs and LISTs without holding every Deployment's pod template and managedFields in
memory: the reconcile reads the views, and only writes go to the apiserver.

- `ChildView`: a Deployment or Service of ours: the hash of what we last applied (an annotation on the
  child), a drift marker (the Deployment's generation, or a digest of the Service's spec), the
  controller's uid, whether another manager owns `spec.replicas`, and the Deployment's status view;
- `PodView`: what pod_report reads of one pod (the auto-NGL decision, the scheduler's message);
- `md_view`: the ModelDeployment minus managedFields and Kopf's own bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.controller.pod_report import has_auto_ngl, n_gpu_layers, unschedulable

HASH_ANNOTATION = "modeldeploy.io/applied-hash"
INSTANCE = "app.kubernetes.io/instance"
# Fields of our children we stop applying once another manager owns them (managedFields paths).
YIELDABLE: dict[str, tuple[str, ...]] = {"Deployment": ("spec", "replicas")}
FIELD_MANAGER = "modeldeploy"

PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # a Deployment's Progressing reason
ENGINE_LABEL = "modeldeploy.io/engine"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class DeploymentView:
    """The parts of a Deployment the status is computed from (read once, so the logic needs no dict-digging)."""

    engine: str | None
    image: str | None
    generation: int
    observed_generation: int
    replicas: int  # desired (spec.replicas)
    status_replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    deadline_exceeded: bool
    failure: str | None  # ReplicaFailure condition message (quota, admission), when True

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> DeploymentView:
        """Read a Deployment as the apiserver returns it (camelCase JSON)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or ()}
        progressing = conditions.get("Progressing") or {}
        failure = conditions.get("ReplicaFailure") or {}
        replicas = spec.get("replicas")
        return cls(
            engine=(meta.get("labels") or {}).get(ENGINE_LABEL),
            image=engine_image(obj),
            generation=_int(meta.get("generation")),
            observed_generation=_int(status.get("observedGeneration")),
            replicas=1 if replicas is None else _int(replicas),  # the apiserver defaults a missing one to 1
            status_replicas=_int(status.get("replicas")),
            updated_replicas=_int(status.get("updatedReplicas")),
            ready_replicas=_int(status.get("readyReplicas")),
            available_replicas=_int(status.get("availableReplicas")),
            deadline_exceeded=progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED,
            failure=failure.get("message") if failure.get("status") == "True" else None,
        )


def engine_image(deployment: Mapping[str, Any]) -> str | None:
    """The engine container's image: the pod's default container (the renderer names it), else the first."""
    template = (deployment.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        return None
    wanted = ((template.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    for container in containers:
        if container.get("name") == wanted:
            return str(container["image"]) if container.get("image") is not None else None
    image = containers[0].get("image")
    return str(image) if image is not None else None


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able value (sorted keys: the same content, the same digest)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def owned_by_others(live: Mapping[str, Any], path: Iterable[str]) -> bool:
    """Whether a manager other than ours owns the field at `path` (e.g. an HPA owning spec.replicas)."""
    parts = tuple(path)
    for entry in (live.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") == FIELD_MANAGER and not entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1") or {}
        for part in parts:
            fields = fields.get(f"f:{part}") if isinstance(fields, dict) else None
            if fields is None:
                break
        else:
            return True
    return False


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


def drift_marker(obj: Mapping[str, Any]) -> str:
    """What changes when anyone edits the child's spec: a Deployment's generation, else a digest of what
    the object says besides metadata and status (its spec; a Role's rules, a RoleBinding's subjects)."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "Deployment" and meta.get("generation") is not None:
        return f"g{meta['generation']}"
    return digest({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")})


@dataclass(frozen=True)
class ChildView:
    """One child as the watch last showed it."""

    kind: str
    name: str
    uid: str | None
    resource_version: str | None
    applied_hash: str | None
    marker: str
    controller_uid: str | None
    yielded: tuple[str, ...]  # dotted paths another manager owns (we stop applying them)
    labels: tuple[tuple[str, str], ...]
    deleting: bool
    deployment: DeploymentView | None = None
    auto_ngl: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ChildView:
        """The view of `obj`; one object at one resourceVersion is viewed once (`_VIEWS`)."""
        meta = obj.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if uid and version:
            known = (str(uid), str(version))
            view = _VIEWS.get(known)
            if view is None:
                view = _VIEWS[known] = cls._of(obj, meta)
                if len(_VIEWS) > VIEWS_MAX:
                    del _VIEWS[next(iter(_VIEWS))]  # the oldest
            return view
        return cls._of(obj, meta)

    @classmethod
    def _of(cls, obj: Mapping[str, Any], meta: Mapping[str, Any]) -> ChildView:
        kind = str(obj.get("kind") or "")
        path = YIELDABLE.get(kind)
        yielded = (".".join(path),) if path and owned_by_others(obj, path) else ()
        is_deployment = kind == "Deployment"
        return cls(
            kind=kind,
            name=str(meta.get("name")),
            uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"),
            applied_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION),
            marker=drift_marker(obj),
            controller_uid=controller_uid(obj),
            yielded=yielded,
            labels=tuple(sorted((meta.get("labels") or {}).items())),
            deleting=bool(meta.get("deletionTimestamp")),
            deployment=DeploymentView.from_object(obj) if is_deployment else None,
            auto_ngl=is_deployment and has_auto_ngl(obj),
        )


# The views of the children seen last, by (uid, resourceVersion): an object's content at one version never
# changes, and each event of a child was viewed three times (the event gate's relevance key, the index,
# the handler), each with a digest of its spec (drift_marker); so was each apply's answer.
VIEWS_MAX = 2048
_VIEWS: dict[tuple[str, str], ChildView] = {}


@dataclass(frozen=True)
class PodView:
    """One pod of ours: what the status reads of it."""

    name: str
    created: str
    deleting: bool
    n_gpu_layers: int | None
    unschedulable: str | None

    @classmethod
    def from_object(cls, pod: Mapping[str, Any]) -> PodView:
        meta = pod.get("metadata") or {}
        return cls(
            name=str(meta.get("name")),
            created=str(meta.get("creationTimestamp") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            n_gpu_layers=n_gpu_layers([pod]),
            unschedulable=unschedulable([pod]),
        )


def pods_n_gpu_layers(pods: Iterable[PodView]) -> int | None:
    """The auto-NGL decision of the newest live pod that reported one."""
    found = [(p.created, p.n_gpu_layers) for p in pods if not p.deleting and p.n_gpu_layers is not None]
    return max(found)[1] if found else None


def pods_unschedulable(pods: Iterable[PodView]) -> str | None:
    """The scheduler's message for a live pod it could not place."""
    for pod in sorted(pods, key=lambda p: p.name):
        if not pod.deleting and pod.unschedulable:
            return pod.unschedulable
    return None


def shared(value: Any) -> Any:
    """A JSON value rebuilt with its strings interned (sys.intern), so equal strings are one object.

    A thousand ModelDeployments made from a few templates carry the same keys, reasons, messages and
    node lists in their spec and status; decoded from the watch, each had its own copies (the
    ModelDeployment index was the largest part of the operator's memory, docs/operator-at-scale.md).
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shared(v) for v in value]
    return value


def md_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelDeployment as the reconcile reads it: no managedFields, no Kopf bookkeeping (status.kopf),
    strings shared with the other ModelDeployments' views.

    Status keys other modules own (they are merged into the status patch by their own code) are kept.
    """
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": shared(meta),
        "spec": shared(body.get("spec")),
        "status": shared(status),
    }


def rv_int(value: str | None) -> int | None:
    """A resourceVersion as a number, when it is one (etcd's are; the API calls them opaque)."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def newer_status(body: Mapping[str, Any], written: tuple[str, Mapping[str, Any]] | None) -> Mapping[str, Any]:
    """The status to compare against: the one we wrote last, when the watch has not delivered it yet.

    A reconcile reads the ModelDeployment from the watch, which may lag behind our own status write by
    a few milliseconds; comparing against that older status would write again (and move timestamps).
    """
    status = body.get("status") or {}
    if written is None:
        return status
    seen, ours = rv_int((body.get("metadata") or {}).get("resourceVersion")), rv_int(written[0])
    if seen is not None and ours is not None and ours > seen:
        return written[1]
    return status
