"""A model name another ModelDeployment already routes on the Gateway, in a reconcile (scaling/conflicts.py).

The plan asks `refused_route` whether the operator config grants this one's namespace its served name
(`gateway.modelNames`) and whether an older ModelDeployment granted it holds the name (the rivals come
from a watch index of served names, child_handlers.py, or a LIST for tools); when either refuses, it
leaves its HTTPRoute out and has execute.py remove an earlier one of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.config import OperatorConfig
from modeldeploy.scaling.conflicts import (
    Claimant,
    conflict_conditions,
    not_allowed_conditions,
    older_claimant,
    served_name,
)


def refused_route(
    body: Mapping[str, Any], rivals: Iterable[Claimant], config: OperatorConfig, extra: Sequence[Condition]
) -> tuple[tuple[Condition, ...], bool]:
    """The conditions to report, and whether this ModelDeployment's HTTPRoute must not be applied: its
    namespace is not granted the name, or an older ModelDeployment granted it holds it.

    Only a plan that renders a route (`Routed=True`) can be refused; rivals whose namespace is not granted
    the name hold nothing."""
    served = served_name(body)
    gateway = config.gateway
    if not gateway.enabled or served is None or not any(c.type == "Routed" and c.status == "True" for c in extra):
        return tuple(extra), False
    me = Claimant.of(body)
    if not gateway.may_route(me.namespace, served):
        return not_allowed_conditions(extra, served, gateway.name, me.namespace), True
    granted = [r for r in rivals if gateway.may_route(r.namespace, served)]
    older = older_claimant(me, granted, shared_gateway=bool(gateway.namespace))
    if older is None:
        return tuple(extra), False
    return conflict_conditions(extra, served, gateway.name, older, me), True


def claimants(items: Iterable[Mapping[str, Any]], served: str | None) -> tuple[Claimant, ...]:
    """The ModelDeployments (whole bodies, e.g. from a LIST) serving `served`, not being deleted."""
    return tuple(
        Claimant.of(item)
        for item in items
        if served is not None
        and served_name(item) == served
        and not (item.get("metadata") or {}).get("deletionTimestamp")
    )
