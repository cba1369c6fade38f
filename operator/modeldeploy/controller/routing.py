"""A model name another ModelDeployment already routes on the Gateway, in a reconcile (scaling/conflicts.py).

Kept apart from reconcile.py: the reconcile asks `older_route` whether an older ModelDeployment holds
this one's served name (the rivals come from a watch index of served names, child_handlers.py, or a
LIST for tools), and, when one does, leaves its HTTPRoute out and removes an earlier one of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy.scaling.conflicts import Claimant, Condition, conflict_conditions, older_claimant, served_name

ROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}"


def older_route(
    body: Mapping[str, Any], rivals: Iterable[Claimant], config: OperatorConfig, extra: Sequence[Condition]
) -> tuple[tuple[Condition, ...], Claimant | None]:
    """The conditions to report and the older ModelDeployment holding the name (None: no conflict).

    Only a plan that renders a route (`Routed=True`) can conflict."""
    served = served_name(body)
    if not config.gateway.enabled or served is None or not any(c[0] == "Routed" and c[1] == "True" for c in extra):
        return tuple(extra), None
    older = older_claimant(Claimant.of(body), rivals, shared_gateway=bool(config.gateway.namespace))
    if older is None:
        return tuple(extra), None
    return conflict_conditions(extra, served, config.gateway.name, older), older


async def remove_route(kube: AsyncKube, namespace: str, name: str, present: bool) -> int:
    """Delete our HTTPRoute `name` when the watch shows one; the number of requests made."""
    if not present:
        return 0
    try:
        await kube.request("DELETE", ROUTE_PATH.format(namespace=namespace, name=name))
    except KubeError as exc:
        if exc.status != 404:
            raise
    return 1


def claimants(items: Iterable[Mapping[str, Any]], served: str | None) -> tuple[Claimant, ...]:
    """The ModelDeployments (whole bodies, e.g. from a LIST) serving `served`, not being deleted."""
    return tuple(
        Claimant.of(item)
        for item in items
        if served is not None
        and served_name(item) == served
        and not (item.get("metadata") or {}).get("deletionTimestamp")
    )
