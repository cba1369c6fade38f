"""Two ModelDeployments serving the same model name on one Gateway: the older keeps the route. Pure.

The HTTPRoutes match the request's model name (docs/gateway.md). Two routes on one Gateway for the same
name are a conflict Gateway API resolves by giving the older route precedence, silently: the newer
model would never get a request, and nothing would say so. The operator decides the same way, and says
it: the newer ModelDeployment gets `Routed=False`, reason `ModelNameConflict`, and its HTTPRoute is
not applied (an earlier one of ours is removed); the older keeps routing. Once the older goes (or is
renamed), the newer gets its route. The message names the older only when it is in the same namespace:
who else serves what on a shared Gateway is not for another tenant to read (docs/security.md).

Which namespaces may route which names at all is the operator's config (`gateway.modelNames`): a
ModelDeployment whose namespace is not granted its name gets `Routed=False`, reason `ModelNameNotAllowed`,
and no HTTPRoute; it holds the name for no one, so it never keeps a granted one from its route.

"One Gateway": with `gateway.namespace` set, every route attaches to that Gateway, so the name is
compared across namespaces; without it each route attaches to the Gateway of that name in its own
namespace, so only ModelDeployments of one namespace can collide. "Older": earlier creationTimestamp,
then namespace and name (a stable order for objects created within one second).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.conditions import Condition

CONFLICT = "ModelNameConflict"
NOT_ALLOWED = "ModelNameNotAllowed"


@dataclass(frozen=True, order=True)
class Claimant:
    """A ModelDeployment that asks for a route for its served model name (ordered: oldest first)."""

    created: str  # creationTimestamp, RFC 3339 (sorts as time)
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Claimant:
        meta = body.get("metadata") or {}
        return cls(
            str(meta.get("creationTimestamp") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )


def served_name(body: Mapping[str, Any]) -> str | None:
    """The model name a route matches (`spec.model.name`), if any."""
    name = (((body.get("spec") or {}).get("model")) or {}).get("name")
    return str(name) if name else None


def older_claimant(me: Claimant, rivals: Iterable[Claimant], shared_gateway: bool) -> Claimant | None:
    """The oldest other ModelDeployment with the same served name on the same Gateway, if it is older than me."""
    same = [r for r in rivals if r.uid != me.uid and (shared_gateway or r.namespace == me.namespace)]
    first = min(same, default=None)
    return first if first is not None and first < me else None


def _not_routed(extra: Sequence[Condition], reason: str, message: str) -> tuple[Condition, ...]:
    kept = tuple(c for c in extra if c.type != "Routed")
    return (*kept, Condition("Routed", "False", reason, message))


def conflict_conditions(
    extra: Sequence[Condition], served: str, gateway: str, older: Claimant, me: Claimant
) -> tuple[Condition, ...]:
    """The plan's conditions with `Routed` saying the name is held (replacing the plan's Routed=True).

    The holder is named only when it is of `me`'s namespace; one of another namespace stays anonymous."""
    holder = f"ModelDeployment {older.name}" if older.namespace == me.namespace else "a ModelDeployment"
    message = (
        f"the model name {served!r} is already routed on gateway {gateway} by {holder}, created earlier; "
        "this one's HTTPRoute is not applied (give it a distinct spec.model.name)"
    )
    return _not_routed(extra, CONFLICT, message)


def not_allowed_conditions(
    extra: Sequence[Condition], served: str, gateway: str, namespace: str
) -> tuple[Condition, ...]:
    """The plan's conditions with `Routed` saying the operator's config does not grant this namespace the name."""
    message = (
        f"namespace {namespace} may not route the model name {served!r} on gateway {gateway} (the operator "
        "config's gateway.modelNames does not grant it); this one's HTTPRoute is not applied"
    )
    return _not_routed(extra, NOT_ALLOWED, message)
