"""Autoscaling and routing in a reconcile: which CRDs the cluster serves, and what to add.

The decision stays in modeldeploy.scaling (pure); this module reads API discovery (cached for a minute:
a CRD installed later is picked up without a restart, and a reconcile does not pay four GETs; the
discovered set is part of the plan's key, so a CRD appearing re-plans). Deleting the objects a spec
stopped asking for (an autoscaling block removed must not leave a ScaledObject fighting `replicas`) is
execute.py's `prune`, limited to our own objects (docs/autoscaling.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.kube import AsyncKube
from modeldeploy.scaling.attach import with_scaling
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


def conditions(plan: ScalingPlan) -> tuple[Condition, ...]:
    """The plan's notes as conditions for status."""
    return tuple(Condition(n.type, n.status, n.reason, n.message) for n in plan.notes)


def had_scaling(status: Mapping[str, Any]) -> bool:
    """Whether the last status reported autoscaling or routing (so there may be objects to remove)."""
    return any(c.get("type") in ("Autoscaling", "Routed") for c in status.get("conditions") or ())
