"""Watch events that change nothing the handlers read are stopped before Kopf handles them (event_gate.py)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.config import load_config
from modeldeploy.controller import event_gate
from modeldeploy.controller.apply import ECHOES_MAX, Applied, AppliedMemory, with_hash
from modeldeploy.controller.execute import applied_change, apply_children
from modeldeploy.controller.indexes import keep_created_children, own_create_echo, own_status_echo
from modeldeploy.controller.state import State
from modeldeploy.controller.status import Observation, compute_status, reconcile_inputs
from modeldeploy.controller.views import ChildView, DeploymentView
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


def _gate(events: list[Any], key: Any, echo: Any = None, created: Any = None) -> list[Any]:
    async def source():
        for event in events:
            yield event

    async def collect() -> list[Any]:
        echoes = {kind: test for kind, test in (("MODIFIED", echo), ("ADDED", created)) if test is not None}
        return [e async for e in event_gate.gated(source(), key, "test", echoes)]

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


def test_a_pod_that_says_nothing_never_reaches_kopf_until_it_does() -> None:
    """No index entry or handler reads a pod with no placement failure and no auto-NGL decision."""
    events = [
        {"type": "ADDED", "object": _pod("1", "Pending")},  # says nothing: Kopf never hears of it
        {"type": "MODIFIED", "object": _pod("2", "Running")},
        {"type": "MODIFIED", "object": _unschedulable(_pod("3", "Pending"))},  # passes: now it says something
        {"type": "MODIFIED", "object": _unschedulable(_pod("4", "Pending"))},  # the same: stopped
        {"type": "MODIFIED", "object": _pod("5", "Running")},  # placed: passes, the index entry must go quiet
        {"type": "MODIFIED", "object": _pod("6", "Running")},
        {"type": "DELETED", "object": _pod("7", "Running")},  # Kopf knows it: the deletion passes
        {"type": "ADDED", "object": _pod("8", "Running")},  # the same uid again: forgotten, says nothing
        {"type": "DELETED", "object": _pod("9", "Running")},  # never passed: Kopf has nothing to forget
    ]
    out = _gate(events, event_gate.pod_key)
    assert [e["object"]["metadata"]["resourceVersion"] for e in out] == ["3", "5", "7"]


def test_a_listed_pod_always_passes() -> None:
    events = [{"type": None, "object": _pod("1", "Running")}, {"type": "MODIFIED", "object": _pod("2", "Running")}]
    assert [e["object"]["metadata"]["resourceVersion"] for e in _gate(events, event_gate.pod_key)] == ["1"]


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


def _bookkeeping(rv: str, **status: int) -> dict[str, Any]:
    deployment = _deployment(rv)
    deployment["status"] = {k: v for k, v in status.items() if v is not None}
    return deployment


def test_the_deployment_controllers_bookkeeping_is_stopped_a_replica_becoming_available_passes() -> None:
    """A new Deployment is observed, then its pod counted as updated: the status says "0 of 1 replicas
    available" throughout, so only the replica becoming available wakes the reconcile."""
    events = [
        {"type": "ADDED", "object": _bookkeeping("1")},
        {"type": "MODIFIED", "object": _bookkeeping("2", observedGeneration=1)},
        {"type": "MODIFIED", "object": _bookkeeping("3", observedGeneration=1, replicas=1, updatedReplicas=1)},
        {
            "type": "MODIFIED",
            "object": _bookkeeping(
                "4", observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1
            ),
        },  # fmt: skip
    ]
    assert [e["object"]["metadata"]["resourceVersion"] for e in _gate(events, event_gate.child_key)] == ["1", "4"]


def _status_of(deployment: dict[str, Any]) -> dict[str, Any]:
    observation = Observation(generation=1, decision=None, deployment=DeploymentView.from_object(deployment),
                              endpoint="http://m.ns:8080", problem=None, spec_replicas=1)  # fmt: skip
    return compute_status(observation, {}, "2026-12-07T00:00:00Z")


def test_every_key_covers_what_the_reconcile_reads() -> None:
    """Two objects with one key must give the reconcile the same outcome (a stopped event leaves the index
    entry as it was): the same children view and the same status."""
    pairs = [
        (_deployment("1"), _deployment("2")),
        (_bookkeeping("5"), _bookkeeping("6", observedGeneration=1, replicas=1, updatedReplicas=1)),
    ]  # one version of an object, one content (views.ChildView.from_object keeps a view per version)
    for a, b in pairs:
        assert event_gate.child_key(a) == event_gate.child_key(b)
        view_a, view_b = ChildView.from_object(a), ChildView.from_object(b)
        assert dataclasses.replace(view_a, resource_version=None, deployment=None) == dataclasses.replace(
            view_b, resource_version=None, deployment=None
        )
        assert _status_of(a) == _status_of(b)
    ready = _bookkeeping("4", observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1)
    assert event_gate.child_key(ready) != event_gate.child_key(_bookkeeping("5"))
    assert _status_of(ready) != _status_of(_bookkeeping("5"))


def _md(rv: str) -> dict[str, Any]:
    meta = {"name": "m", "namespace": "ns", "uid": "md1", "resourceVersion": rv, "generation": 1}
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": meta, "spec": {}}


def test_the_echo_of_our_own_status_write_stops_and_counts_as_delivered() -> None:
    state = State(config=load_config(None, registry.image_keys()))
    echo = own_status_echo(state)
    state.memory.written[("ns", "m")] = ("3", {"engine": "llama.cpp"})
    events = [
        {"type": None, "object": _md("1")},
        {"type": "MODIFIED", "object": _md("2")},  # someone else's change: passes
        {"type": "MODIFIED", "object": _md("3")},  # the version our write returned: its echo
        {"type": "MODIFIED", "object": _md("4")},
    ]
    out = _gate(events, lambda obj: event_gate.UNGATED, echo)
    assert [e["object"]["metadata"]["resourceVersion"] for e in out] == ["1", "2", "4"]
    assert state.watch.delivered(("ns", "m"), "2") == "3"  # the probe counts the echo as delivered
    assert state.watch.delivered(("ns", "m"), "4") == "4"
    state.watch.forget(("ns", "m"))
    assert state.watch.delivered(("ns", "m"), "2") == "2"


def test_an_echo_ahead_of_its_write_answer_stops_only_if_it_shows_just_that_write() -> None:
    """The write's resourceVersion is not known until its answer comes, and the echo may come first: it is
    known by showing what the write leaves, with everything else the reconcile read unchanged."""
    state = State(config=load_config(None, registry.image_keys()))
    echo = own_status_echo(state)
    read = _md("5")
    written = {"observedGeneration": 1, "engine": "vllm", "ready": "0/1"}

    def stored(rv: str, status: dict[str, Any], **meta: Any) -> dict[str, Any]:
        obj = _md(rv)
        obj["metadata"].update(meta)
        obj["status"] = {**status, "kopf": {"progress": {}}}  # a key others own: never compared
        return obj

    state.memory.writing[("ns", "m")] = (reconcile_inputs(read), written)
    assert echo(stored("6", written))  # the write's echo, ahead of its answer
    assert state.watch.delivered(("ns", "m"), "5") == "6"
    assert not echo(stored("7", {**written, "ready": "1/1"}))  # a status the write does not leave
    assert not echo(stored("7", written, generation=2))  # the spec changed meanwhile
    assert not echo(stored("7", written, labels={"team": "b"}))  # so did the labels
    assert not echo(stored("7", written, annotations={"modeldeploy.io/reselect": "1"}))
    assert not echo(stored("7", written, deletionTimestamp="2026-12-07T21:00:00Z"))
    assert not echo(stored("7", {k: v for k, v in written.items() if k != "ready"}))  # a key it writes, missing
    del state.memory.writing[("ns", "m")]
    assert not echo(stored("6", written))  # no write under way: only the version it returned is an echo


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

    assert len(asyncio.run(collect(Other()))) == 2  # no key, no echo test: everything passes

    event_gate.install(config.label_mappings, {("modeldeploy.io", "modeldeployments", "MODIFIED"): lambda obj: True})
    assert len(asyncio.run(collect(Other()))) == 0  # every MODIFIED one an echo (as told)
    event_gate.install(config.label_mappings, {("modeldeploy.io", "modeldeployments", "ADDED"): lambda obj: True})
    assert len(asyncio.run(collect(Other()))) == 2  # a test of ADDED events: MODIFIED ones pass
    event_gate.install(config.label_mappings)


def _service(name: str, rv: str, uid: str, kind: str = "Service") -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv, "labels": {INSTANCE: "m"},
            "ownerReferences": [{"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "m",
                                 "uid": "md1", "controller": True}]}  # fmt: skip
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": {"ports": [{"port": 8080}]}}


def test_the_added_event_of_a_quiet_child_we_created_is_its_echo() -> None:
    """A Service or NetworkPolicy this process created: its ADDED event shows what the create answered, so
    it stops; its next event passes (the gate has not heard of it), and so does anyone else's create."""
    state = State(config=load_config(None, registry.image_keys()))
    state.memory.applied.await_echo(_service("m", "11", "s1"))
    echo = own_create_echo(state)
    events = [
        {"type": "ADDED", "object": _service("m", "11", "s1")},  # our create's echo
        {"type": "ADDED", "object": _service("other", "14", "s3")},  # someone else's
        {"type": "MODIFIED", "object": _service("m", "15", "s1")},  # then edited: passes
        {"type": "ADDED", "object": _service("m", "11", "s1")},  # again (a replay): no longer awaited
        {"type": "DELETED", "object": _service("m", "16", "s1")},
    ]
    out = _gate(events, event_gate.child_key, created=echo)
    assert [e["object"]["metadata"]["resourceVersion"] for e in out] == ["14", "15", "11", "16"]
    assert state.memory.applied.created == {}


def test_the_views_of_created_children_come_from_the_creates_answers() -> None:
    """What child_handlers.py would have kept from the stopped ADDED events; not the model's own Service
    (its applied memory holds it) and not a child updated rather than created (its event passes)."""
    state = State(config=load_config(None, registry.image_keys()))
    applied = [
        Applied("Deployment", "m", _service("m", "10", "d1", kind="Deployment"), changed=True, created=True),
        Applied("Service", "m", _service("m", "11", "s1"), changed=True, created=True),
        Applied("NetworkPolicy", "m", _service("m", "12", "p1", kind="NetworkPolicy"), changed=True, created=True),
        Applied("Service", "m-epp", _service("m-epp", "13", "s2"), changed=True, created=False),
    ]
    keep_created_children(state, "ns", "m", applied)
    assert set(state.children.for_owner("ns", "m")) == {("NetworkPolicy", "m")}


def test_the_echo_of_a_create_may_come_before_its_answer() -> None:
    """The ADDED event may come before the create's answer: an object of that name, carrying the hash being
    applied, is the create's (nobody else writes a quiet child); once seen, the answer awaits no echo."""

    class Early:
        def __init__(self, memory: AppliedMemory) -> None:
            self.memory = memory

        async def apply(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
            stored = {**obj, "metadata": {**obj["metadata"], "uid": "s1", "resourceVersion": "11"}}
            assert not self.memory.is_echo({**stored, "metadata": {**stored["metadata"], "name": "other"}})
            assert self.memory.is_echo(stored)  # the ADDED event, ahead of this answer
            assert not self.memory.is_echo(stored)  # a replay of it is not
            return stored

    service, value = with_hash(_service("m", "", ""))
    del service["metadata"]["uid"], service["metadata"]["resourceVersion"]
    memory = AppliedMemory()
    [made] = asyncio.run(apply_children(Early(memory), [(service, value)], {"Service": None}, memory))  # type: ignore[arg-type]
    assert made.created and memory.created == {} and memory.creating == {}


def test_creates_awaited_are_bounded() -> None:
    memory = AppliedMemory()
    for i in range(ECHOES_MAX + 5):
        memory.await_echo(_service("m", str(i), f"u{i}"))
    assert len(memory.created) == ECHOES_MAX and "u0" not in memory.created
    assert memory.is_echo(_service("m", "6", "u6")) and not memory.is_echo(_service("m", "6", "u6"))
