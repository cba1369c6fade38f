"""The Events a reconcile posts for the children it applied."""

from __future__ import annotations

from modeldeploy.controller.apply import Applied
from modeldeploy.controller.events import child_events


def test_children_changed_by_one_reconcile_make_one_event_per_verb() -> None:
    applied = [
        Applied("Deployment", "m", {}, changed=True, created=True),
        Applied("Service", "m", {}, changed=True, created=True),
        Applied("HorizontalPodAutoscaler", "m", {}, changed=True, created=False),
        Applied("HTTPRoute", "m", None, changed=False, created=False),
    ]
    events = [(e.reason, e.message) for e in child_events(applied, "vllm")]
    assert events == [
        ("Created", "created Deployment m, Service m (vllm)"),
        ("Updated", "updated HorizontalPodAutoscaler m (vllm)"),
    ]
    assert child_events(applied[3:], "vllm") == []
