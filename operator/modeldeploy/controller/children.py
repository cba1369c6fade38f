"""The autoscaling and routing children as the watches show them (docs/autoscaling.md, docs/gateway.md).

Beside its Deployment and Service, a ModelDeployment may own a KEDA ScaledObject or an HPA, an
HTTPScaledObject, an InferencePool and an HTTPRoute, and the endpoint picker `<name>-epp` (Deployment,
Service, ServiceAccount, Role, RoleBinding). They are watched (child_handlers.py) so that a deletion or
an edit by someone else is repaired like the Deployment's: the reconcile reads their `ChildView`s from
here (`for_owner`), and apply.needs_apply re-applies one whose hash or drift marker moved, or that is gone.

Kept in the operator's own store rather than a Kopf index: one store serves many kinds, and a ScaledObject's
KEDA conditions (Ready, Active) ride along, for the `Autoscaling` condition (scaling/keda_status.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.controller.views import ChildView

KEDA_CONDITIONS = ("Ready", "Active")


def keda_conditions(obj: Mapping[str, Any]) -> tuple[Condition, ...]:
    """A ScaledObject's Ready and Active conditions as KEDA reports them (empty before KEDA looked at it)."""
    if obj.get("kind") != "ScaledObject":
        return ()
    found = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or () if isinstance(c, dict)}
    return tuple(
        Condition(kind, str(c.get("status") or "Unknown"), str(c.get("reason") or ""), str(c.get("message") or ""))
        for kind in KEDA_CONDITIONS
        if (c := found.get(kind)) is not None
    )


@dataclass(frozen=True)
class Child:
    """One autoscaling/routing child: its view, and what its controller reports (KEDA's conditions)."""

    owner: str
    view: ChildView
    reported: tuple[Condition, ...] = ()

    @classmethod
    def from_object(cls, owner: str, obj: Mapping[str, Any]) -> Child:
        return cls(owner, ChildView.from_object(obj), keda_conditions(obj))


@dataclass
class Children:
    """(kind, namespace, name) -> Child, for the kinds child_handlers.py watches, and the same children by
    owner: every reconcile reads its own (`for_owner`), and a scan of every child per reconcile made a
    burst of N ModelDeployments cost N x N (docs/operator-at-scale.md)."""

    entries: dict[tuple[str, str, str], Child] = field(default_factory=dict)
    by_owner: dict[tuple[str, str], dict[tuple[str, str], Child]] = field(default_factory=dict)

    def put(self, namespace: str, child: Child) -> Child | None:
        """Store a child; return what was stored before."""
        key = (child.view.kind, namespace, child.view.name)
        before = self.entries.get(key)
        if before is not None and before.owner != child.owner:
            self._unlink(namespace, before)
        self.entries[key] = child
        self.by_owner.setdefault((namespace, child.owner), {})[(child.view.kind, child.view.name)] = child
        return before

    def drop(self, kind: str, namespace: str, name: str) -> None:
        before = self.entries.pop((kind, namespace, name), None)
        if before is not None:
            self._unlink(namespace, before)

    def _unlink(self, namespace: str, child: Child) -> None:
        owned = self.by_owner.get((namespace, child.owner))
        if owned is not None:
            owned.pop((child.view.kind, child.view.name), None)
            if not owned:
                del self.by_owner[(namespace, child.owner)]

    def for_owner(self, namespace: str, owner: str) -> dict[tuple[str, str], Child]:
        """The children of one ModelDeployment, by (kind, name) (a copy: the reconcile reads it later)."""
        return dict(self.by_owner.get((namespace, owner)) or {})
