"""A model name another ModelDeployment already routes on the Gateway, in a reconcile (scaling/conflicts.py).

The plan asks `older_route` whether an older ModelDeployment holds this one's served name (the rivals
come from a watch index of served names, child_handlers.py, or a LIST for tools), and, when one does,
leaves its HTTPRoute out and has execute.py remove an earlier one of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.config import OperatorConfig
from modeldeploy.scaling.conflicts import Claimant, conflict_conditions, older_claimant, served_name


def older_route(
    body: Mapping[str, Any], rivals: Iterable[Claimant], config: OperatorConfig, extra: Sequence[Condition]
) -> tuple[tuple[Condition, ...], Claimant | None]:
    """The conditions to report and the older ModelDeployment holding the name (None: no conflict).

    Only a plan that renders a route (`Routed=True`) can conflict."""
    served = served_name(body)
    if (
        not config.gateway.enabled
        or served is None
        or not any(c.type == "Routed" and c.status == "True" for c in extra)
    ):
        return tuple(extra), None
    older = older_claimant(Claimant.of(body), rivals, shared_gateway=bool(config.gateway.namespace))
    if older is None:
        return tuple(extra), None
    return conflict_conditions(extra, served, config.gateway.name, older), older


def claimants(items: Iterable[Mapping[str, Any]], served: str | None) -> tuple[Claimant, ...]:
    """The ModelDeployments (whole bodies, e.g. from a LIST) serving `served`, not being deleted."""
    return tuple(
        Claimant.of(item)
        for item in items
        if served is not None
        and served_name(item) == served
        and not (item.get("metadata") or {}).get("deletionTimestamp")
    )
