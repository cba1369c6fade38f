"""Kopf handlers for the autoscaling and routing children: a deleted or edited one is applied again.

The children (children.py) are applied by the reconcile and skipped while they hold what it would apply
(apply.needs_apply). Without a watch, someone's `kubectl delete hpa` or `kubectl edit httproute` would
never be noticed: these handlers keep each child's view and reconcile its ModelDeployment when the child
is gone, or when its hash or drift marker is not the one our last apply left (an edit by someone else).
A ScaledObject whose KEDA conditions (Ready, Active) changed is reconciled too: they feed the
`Autoscaling` condition (scaling/keda_status.py).

Watched with our label, filtered on the apiserver (settings.py). Kinds whose CRDs the apiserver does not
serve are not watched until they are: Kopf follows the CRDs (a KEDA installed later is picked up).
Separate from handlers.py so that the autoscaling/routing piece stays one removable module.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modeldeploy.controller.children import Child
from modeldeploy.controller.handlers import OURS, owner_name, run_reconcile, state_of

# (group, version, plural) of every autoscaling/routing kind we may apply beside the Deployment and Service
# (controller/scaling.py MANAGED); the endpoint picker's Deployment and Service come through the same
# watches as the model's own.
WATCHED: tuple[tuple[str, ...], ...] = (
    ("keda.sh", "v1alpha1", "scaledobjects"),
    ("http.keda.sh", "v1alpha1", "httpscaledobjects"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("inference.networking.k8s.io", "v1", "inferencepools"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("apps", "v1", "deployments"),
    ("v1", "services"),
)


async def child_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """Keep the child's view; reconcile its owner when it is gone, edited by someone, or KEDA's word changed."""
    owner = owner_name(body)
    if not owner or (body.get("kind") in ("Deployment", "Service") and name == owner):
        return  # not ours, or the model's own Deployment/Service (handlers.py watches those)
    state = state_of(memo)
    kind = str(body.get("kind") or "")
    if type == "DELETED":
        state.children.drop(kind, namespace, name)
        state.memory.applied.drop(kind, namespace, name)
    else:
        child = Child.from_object(owner, body)
        before = state.children.put(namespace, child)
        if type is None and (namespace, owner) not in state.memory.seen:
            return  # listed at start-up: the resume handler reconciles the owner
        remembered = state.memory.applied.get(kind, namespace, name)
        edited = remembered is not None and (child.view.applied_hash, child.view.marker) != remembered
        reported = child.reported != (before.reported if before is not None else ())
        if not edited and not reported:
            return
    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="child", coalesce=True)


for _resource in WATCHED:
    kopf.on.event(*_resource, labels=OURS, id=f"child_event/{'.'.join(_resource)}")(child_event)
