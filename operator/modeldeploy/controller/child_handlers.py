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

import asyncio
import logging
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.controller.children import Child
from modeldeploy.controller.indexes import owner_name
from modeldeploy.controller.retries import run_reconcile
from modeldeploy.controller.settings import SCALING_CHILDREN
from modeldeploy.controller.state import OURS, state_of
from modeldeploy.scaling.conflicts import Claimant, served_name

# Every autoscaling/routing kind we may apply, and the Deployment and Service watches, which carry the
# endpoint picker's (the model's own are handlers.py's business).
WATCHED: tuple[tuple[str, ...], ...] = (*SCALING_CHILDREN, ("apps", "v1", "deployments"), ("v1", "services"))


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
            return  # listed at start-up: the owner's own listing event reconciles it
        remembered = state.memory.applied.get(kind, namespace, name)
        edited = remembered is not None and (child.view.applied_hash, child.view.marker) != remembered
        reported = child.reported != (before.reported if before is not None else ())
        if not edited and not reported:
            return
    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="child", coalesce=True)


for _resource in WATCHED:
    kopf.on.event(*_resource, labels=OURS, id=f"child_event/{'.'.join(_resource)}")(child_event)


# --- the model names routed on the Gateway (scaling/conflicts.py) ----------------------------------------


@kopf.index(GROUP, VERSION, PLURAL)
async def served_names_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, Claimant]:
    """{served model name: the ModelDeployment}, with a gateway configured (who holds a name is decided
    from this: the oldest of them)."""
    served = served_name(body)
    if not state_of(memo).config.gateway.enabled or not served or body.get("metadata", {}).get("deletionTimestamp"):
        return {}
    return {served: Claimant.of(body)}


@kopf.on.event(GROUP, VERSION, PLURAL, id="route_rivals_event")
async def route_rivals_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    served_names_index: kopf.Index[Any, Any],
    **kwargs: Any,
) -> None:
    """A ModelDeployment went, or changed its model name: the ones sharing its old or new name are decided
    again (the next oldest may now hold the route; a renamed older one takes it)."""
    state = state_of(memo)
    if not state.config.gateway.enabled:
        return
    key = (namespace, name)
    before = state.served.get(key)
    now = None if type == "DELETED" else served_name(body)
    if now:
        state.served[key] = now
    else:
        state.served.pop(key, None)
    if type is None or before == now:
        return  # listed, or the name did not change
    rivals = {c for served in (before, now) if served for c in served_names_index.get(served) or ()}
    indexes = {**kwargs, "served_names_index": served_names_index}
    await asyncio.gather(
        *(
            run_reconcile(memo, c.namespace, c.name, indexes, logger, trigger="route", coalesce=True)
            for c in sorted(rivals)
            if (c.namespace, c.name) != key
        )
    )
