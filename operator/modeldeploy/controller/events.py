"""The Events a reconcile posts on its ModelDeployment: what changed between two statuses (decisions and
failures, once each, never on a no-op), and the children it created or updated. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from modeldeploy.controller.apply import Applied
from modeldeploy.controller.status import DEGRADED, ENGINE_SELECTED, READY


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to post on the ModelDeployment."""

    type: str  # Normal or Warning
    reason: str
    message: str


def events_for(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[EventSpec]:
    """Events for what changed between two statuses: decisions and failures, once each, never on a no-op."""
    old = old or {}
    before = {c.get("type"): c for c in old.get("conditions") or ()}
    after = {c["type"]: c for c in new.get("conditions") or ()}

    def changed(kind: str) -> Mapping[str, Any] | None:
        now_c, was = after.get(kind), before.get(kind)
        if now_c is None:
            return None
        if was is None or (was.get("status"), was.get("reason")) != (now_c["status"], now_c["reason"]):
            return cast(Mapping[str, Any], now_c)
        return None

    events: list[EventSpec] = []
    selected = changed(ENGINE_SELECTED)
    if selected is not None:
        if selected["status"] == "True":
            events.append(EventSpec("Normal", "EngineSelected", selected["message"]))
        else:
            events.append(EventSpec("Warning", selected["reason"], selected["message"]))
    if old.get("engine") and new.get("engine") and old["engine"] != new["engine"]:
        events.append(EventSpec("Normal", "EngineChanged", f"engine changed from {old['engine']} to {new['engine']}"))
    degraded = changed(DEGRADED)
    if degraded is not None:
        if degraded["status"] == "True":
            if selected is None or selected["reason"] != degraded["reason"]:  # not the same news twice
                events.append(EventSpec("Warning", degraded["reason"], degraded["message"]))
        elif degraded["status"] == "False" and before.get(DEGRADED, {}).get("status") == "True":
            events.append(EventSpec("Normal", "Recovered", "no longer degraded"))
    ready = changed(READY)
    if ready is not None:
        if ready["status"] == "True":
            events.append(EventSpec("Normal", "Ready", ready["message"]))
        elif before.get(READY, {}).get("status") == "True":
            events.append(EventSpec("Warning", "NotReady", f"{ready['reason']}: {ready['message']}"))
    return events


def child_events(applied: Sequence[Applied], engine: str) -> list[EventSpec]:
    """One Event per verb for the children one reconcile created or updated, naming them all.

    One per child (a new ModelDeployment has a Deployment and a Service, more with autoscaling or routing)
    tripled the Events a burst posts, and Kopf posts them a few at a time: 1,000 new objects left 2,000
    Events queued after the last Deployment was applied (docs/operator-at-scale.md).
    """
    events = []
    for verb, created in (("Created", True), ("Updated", False)):
        names = [f"{child.kind} {child.name}" for child in applied if child.changed and child.created == created]
        if names:
            events.append(EventSpec("Normal", verb, f"{verb.lower()} {', '.join(names)} ({engine})"))
    return events
