"""Watch events that change nothing the handlers read are stopped before Kopf handles them (event_gate.py)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.config import load_config
from modeldeploy.controller import event_gate
from modeldeploy.controller.execute import applied_change
from modeldeploy.controller.views import ChildView
from modeldeploy.engines import registry
from modeldeploy.render.labels import INSTANCE

OWNER = [{"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "m", "controller": True}]


def _deployment(rv: str, ready: int = 0, generation: int = 1, **annotations: str) -> dict[str, Any]:
    meta = {"name": "m", "namespace": "ns", "uid": "d1", "resourceVersion": rv, "generation": generation,
            "labels": {INSTANCE: "m"}, "ownerReferences": OWNER, "annotations": annotations}  # fmt: skip
    status = {"observedGeneration": 1, "replicas": 1, "readyReplicas": ready,
              "conditions": [{"type": "Progressing", "status": "True", "lastUpdateTime": f"t{rv}"}]}  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": 1}, "status": status}


def _pod(rv: str, phase: str, **labels: str) -> dict[str, Any]:
    meta = {"name": "m-1", "namespace": "ns", "uid": "p1", "resourceVersion": rv,
            "creationTimestamp": "2026-12-07T00:00:00Z", "labels": {INSTANCE: "m", **labels}}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": phase}}


def _unschedulable(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes fit"}
    ]
    return pod


def _gate(events: list[Any], key: Any) -> list[Any]:
    async def source():
        for event in events:
            yield event

    async def collect() -> list[Any]:
        return [e async for e in event_gate.gated(source(), key, "test")]

    return asyncio.run(collect())


def test_a_deployment_status_write_that_moves_no_view_field_is_stopped() -> None:
    events = [
        {"type": None, "object": _deployment("1")},
        watching.Bookmark.LISTED,
        {"type": "MODIFIED", "object": _deployment("2")},  # a condition's timestamp only
        {"type": "MODIFIED", "object": _deployment("3", ready=1)},  # readyReplicas: the status reads it
        {"type": "MODIFIED", "object": _deployment("4", ready=1, **{"deployment.kubernetes.io/revision": "1"})},
        {"type": "MODIFIED", "object": _deployment("5", ready=1, generation=2)},  # someone edited the spec
    ]
    before = event_gate.counted[("test", "skipped")], event_gate.counted[("test", "passed")]
    out = _gate(events, event_gate.child_key)
    assert [e if e is watching.Bookmark.LISTED else e["object"]["metadata"]["resourceVersion"] for e in out] == [
        "1", watching.Bookmark.LISTED, "3", "5"]  # fmt: skip
    assert event_gate.counted[("test", "skipped")] - before[0] == 2
    assert event_gate.counted[("test", "passed")] - before[1] == 3  # objects only: the LISTED mark is no event of one


def test_a_pod_moving_to_running_is_stopped_but_a_placement_failure_passes() -> None:
    pending = _pod("1", "Pending")
    events = [
        {"type": "ADDED", "object": pending},
        {"type": "MODIFIED", "object": _pod("2", "Running")},
        {"type": "MODIFIED", "object": _unschedulable(_pod("3", "Pending"))},
        {"type": "MODIFIED", "object": _unschedulable(_pod("4", "Pending"))},
        {"type": "DELETED", "object": _pod("5", "Running")},
        {"type": "ADDED", "object": _pod("6", "Running")},  # the same uid again: the key was forgotten
    ]
    out = _gate(events, event_gate.pod_key)
    assert [e["object"]["metadata"]["resourceVersion"] for e in out] == ["1", "3", "5", "6"]


def test_a_model_cache_jobs_pod_is_never_stopped() -> None:
    """The cache's handlers read the pod's whole status (its containers' termination messages)."""
    events = [{"type": "MODIFIED", "object": _pod(str(i), "Running", **{"modeldeploy.io/model-cache": "c"})}
              for i in range(3)]  # fmt: skip
    assert len(_gate(events, event_gate.pod_key)) == 3


def test_a_node_heartbeat_is_stopped_a_cordon_passes() -> None:
    config = load_config(None, registry.image_keys())
    key = event_gate.node_key(config.label_mappings)
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "uid": "n1", "resourceVersion": "1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "a"}],
                                   "allocatable": {"cpu": "8", "memory": "32Gi"}, "images": []}}  # fmt: skip
    beat = copy.deepcopy(node)
    beat["metadata"]["resourceVersion"] = "2"
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "b"
    beat["status"]["images"] = [{"names": ["x"], "sizeBytes": 1}]
    cordoned = copy.deepcopy(beat)
    cordoned["metadata"]["resourceVersion"] = "3"
    cordoned["spec"]["unschedulable"] = True
    events = [{"type": "ADDED", "object": node}, {"type": "MODIFIED", "object": beat},
              {"type": "MODIFIED", "object": cordoned}]  # fmt: skip
    assert [e["object"]["metadata"]["resourceVersion"] for e in _gate(events, key)] == ["1", "3"]


def test_every_key_covers_what_the_indexes_read() -> None:
    """Two objects with one key must give the index functions the same values (else a stopped event would
    leave an index entry stale)."""
    a, b = _deployment("1"), _deployment("2")
    assert event_gate.child_key(a) == event_gate.child_key(b)
    assert ChildView.from_object(a).deployment == ChildView.from_object(b).deployment


def test_an_apply_that_changed_nothing_is_not_a_change_though_the_version_moved() -> None:
    """The view may be older than the child's last status write: the version tells nothing."""
    view = ChildView.from_object(_deployment("1", **{"modeldeploy.io/applied-hash": "h1"}))
    assert not applied_change(view, _deployment("7", ready=1, **{"modeldeploy.io/applied-hash": "h1"}))
    assert applied_change(view, _deployment("8", **{"modeldeploy.io/applied-hash": "h2"}))
    assert applied_change(view, _deployment("9", generation=2, **{"modeldeploy.io/applied-hash": "h1"}))


def test_the_gate_wraps_kopfs_watch_once_and_follows_the_last_start(monkeypatch: Any) -> None:
    async def original(**_: Any):
        for rv in ("1", "2"):
            yield {"type": "MODIFIED", "object": _deployment(rv)}

    monkeypatch.setattr(watching, "continuous_watch", original)
    config = load_config(None, registry.image_keys())
    event_gate.install(config.label_mappings)
    event_gate.install(config.label_mappings)
    assert watching.continuous_watch.__wrapped_inner__ is original  # type: ignore[attr-defined]

    class Resource:
        group, plural = "apps", "deployments"

    async def collect(resource: Any) -> list[Any]:
        return [e async for e in watching.continuous_watch(resource=resource, namespace=None)]

    assert len(asyncio.run(collect(Resource()))) == 1

    class Other:
        group, plural = "modeldeploy.io", "modeldeployments"

    assert len(asyncio.run(collect(Other()))) == 2  # no key: everything passes
