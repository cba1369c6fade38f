"""Autoscaling and routing in a reconcile: which CRDs the cluster serves, what to add, what to remove.

Kept apart from reconcile.py so the decision stays in modeldeploy.scaling (pure) and this module only
does the I/O around it: API discovery (cached for a minute: a CRD installed later is picked up without
a restart, and a reconcile does not pay four GETs; the discovered set is part of the reconcile's plan
key, so a CRD appearing re-plans), and deleting the objects a spec stopped asking for
(an autoscaling block removed must not leave a ScaledObject fighting `replicas`). Deletion is limited
to our own objects: same name, controlled by this ModelDeployment (docs/autoscaling.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.apply import controller_uid, object_path
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy.scaling.attach import with_scaling
from modeldeploy.scaling.epp import EPP_SUFFIX
from modeldeploy.scaling.plan import (
    HTTP_ROUTE,
    HTTP_SCALED_OBJECT,
    INFERENCE_POOL,
    SCALED_OBJECT,
    ScalingPlan,
)

DISCOVERY_TTL_S = 60.0
# CRD name -> (group/version path, resource) as served by the releases pinned in localcluster/addon_crds.py.
DISCOVERED: dict[str, tuple[str, str]] = {
    SCALED_OBJECT: ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    HTTP_SCALED_OBJECT: ("/apis/http.keda.sh/v1alpha1", "httpscaledobjects"),
    HTTP_ROUTE: ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    INFERENCE_POOL: ("/apis/inference.networking.k8s.io/v1", "inferencepools"),
}
# (apiVersion, kind, name suffix, CRD or None for built-in) of every object we may render beside the Deployment.
MANAGED: tuple[tuple[str, str, str, str | None], ...] = (
    ("keda.sh/v1alpha1", "ScaledObject", "", SCALED_OBJECT),
    ("http.keda.sh/v1alpha1", "HTTPScaledObject", "-http", HTTP_SCALED_OBJECT),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "", None),
    ("inference.networking.k8s.io/v1", "InferencePool", "", INFERENCE_POOL),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "", HTTP_ROUTE),
    # The pool's endpoint picker (scaling/epp.py); built-in kinds, looked up only while routing was on.
    ("apps/v1", "Deployment", EPP_SUFFIX, None),
    ("v1", "Service", EPP_SUFFIX, None),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", EPP_SUFFIX, None),
    ("rbac.authorization.k8s.io/v1", "Role", EPP_SUFFIX, None),
    ("v1", "ServiceAccount", EPP_SUFFIX, None),
)

_cache: dict[str, tuple[float, frozenset[str]]] = {}  # per apiserver; used on the event loop only


async def served_crds(kube: AsyncKube, now: float | None = None) -> frozenset[str]:
    """The CRDs of DISCOVERED the apiserver serves (API discovery; no RBAC on CRDs needed)."""
    now = time.monotonic() if now is None else now
    hit = _cache.get(kube.host)
    if hit and now - hit[0] < DISCOVERY_TTL_S:
        return hit[1]
    found = set()
    for crd, (path, resource) in DISCOVERED.items():
        doc = await kube.get(path)
        if doc and any(r.get("name") == resource for r in doc.get("resources") or ()):
            found.add(crd)
    result = frozenset(found)
    _cache[kube.host] = (now, result)
    return result


def forget_discovery() -> None:
    """Drop the cached discovery (tests that install CRDs mid-run)."""
    _cache.clear()


def wanted(spec: Mapping[str, Any] | None, config: OperatorConfig) -> bool:
    """Whether the spec (or the operator's gateway setting) asks for autoscaling or routing objects."""
    return bool((spec or {}).get("autoscaling")) or config.gateway.enabled


def add_scaling(
    md: ModelDeployment, engine: str, objects: list[dict[str, Any]], config: OperatorConfig, crds: frozenset[str]
) -> tuple[list[dict[str, Any]], ScalingPlan]:
    """The rendered objects plus the autoscaler and routing objects, and the Deployment's replicas set
    the way the plan says (the autoscaler's minimum on creation; afterwards the autoscaler owns them).
    `crds`: what served_crds found (empty when nothing is asked for).
    """
    return with_scaling(md, engine, objects, config, crds)


async def prune(
    kube: AsyncKube, md: ModelDeployment, rendered: Sequence[Mapping[str, Any]], owner_uid: str | None
) -> list[str]:
    """Delete our autoscaling/routing objects the current plan no longer renders; return 'Kind/name's."""
    if not owner_uid:
        return []
    keep = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    crds = await served_crds(kube)
    removed: list[str] = []
    for api_version, kind, suffix, crd in MANAGED:
        name = md.metadata.name + suffix
        if (kind, name) in keep or (crd is not None and crd not in crds):
            continue
        ref = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": md.metadata.namespace}}
        path = object_path(ref)
        live = await kube.get(path)
        if live is None or controller_uid(live) != owner_uid:
            continue
        try:
            await kube.request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise
        removed.append(f"{kind}/{name}")
    return removed


def conditions(plan: ScalingPlan) -> tuple[tuple[str, str, str, str], ...]:
    """The plan's notes as (type, status, reason, message) for status."""
    return tuple((n.type, n.status, n.reason, n.message) for n in plan.notes)


def had_scaling(status: Mapping[str, Any]) -> bool:
    """Whether the last status reported autoscaling or routing (so there may be objects to remove)."""
    return any(c.get("type") in ("Autoscaling", "Routed") for c in status.get("conditions") or ())
