"""What the operator keeps from its watches, when it skips an apply, and how the liveness probe judges a
silent watch: the pure parts behind "no GET, no LIST, no write when nothing changed"."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from modeldeploy.config import LabelMappings
from modeldeploy.controller import nodes_index, views
from modeldeploy.controller.apply import AppliedMemory, needs_apply, with_hash
from modeldeploy.controller.liveness import WatchClock, WatchSilent, behind
from modeldeploy.controller.nodes_index import FactsMemory, index_entry
from modeldeploy.controller.views import (
    HASH_ANNOTATION,
    ChildView,
    PodView,
    md_view,
    newer_status,
    pods_n_gpu_layers,
    pods_unschedulable,
)
from modeldeploy.selection.node_classes import group_nodes, shape
from modeldeploy.selection.types import NodeFacts

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "modeldeploy"}},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "engine", "image": "vllm:1"}]}}},
}


VERSIONS = itertools.count(10)


def live(desired: dict[str, Any], *, generation: int = 1, **meta: Any) -> dict[str, Any]:
    """`desired` as the apiserver would store it (each write a new resourceVersion)."""
    obj = copy.deepcopy(desired)
    version = str(next(VERSIONS))
    obj["metadata"] |= {"uid": "d1", "resourceVersion": version, "generation": generation, **meta}
    obj["status"] = {"observedGeneration": generation, "replicas": 1, "readyReplicas": 1}
    return obj


def test_an_unchanged_child_is_not_applied_again() -> None:
    body, value = with_hash(DEPLOYMENT)
    assert body["metadata"]["annotations"][HASH_ANNOTATION] == value
    assert with_hash(copy.deepcopy(DEPLOYMENT))[1] == value  # same content, same hash
    view = ChildView.from_object(live(body))
    assert view.applied_hash == value and view.marker == "g1"
    assert not needs_apply(body, value, view, (value, "g1"))
    # Someone edited the spec (generation moved): our intent is applied again.
    assert needs_apply(body, value, ChildView.from_object(live(body, generation=2)), (value, "g1"))
    # What we render changed.
    changed, other = with_hash({**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 2}})
    assert other != value and needs_apply(changed, other, view, (value, "g1"))
    # Our label was removed: applied again.
    stripped = live(body)
    stripped["metadata"]["labels"] = {}
    assert needs_apply(body, value, ChildView.from_object(stripped), (value, "g1"))
    # This process never applied it (a restart): one apply, then the marker is known.
    assert needs_apply(body, value, view, None)


def test_a_child_not_yet_in_the_watch() -> None:
    body, value = with_hash(DEPLOYMENT)
    assert needs_apply(body, value, None, None)  # never applied: create it
    assert not needs_apply(body, value, None, (value, "g1"))  # just applied; the watch is behind
    assert needs_apply(body, value, None, ("older", "g1"))
    memory = AppliedMemory({("Deployment", "ns", "m"): (value, "g1"), ("Service", "ns", "m"): (value, "s")})
    memory.drop("Deployment", "ns", "m")  # its DELETED event: re-created on the next reconcile
    assert memory.get("Deployment", "ns", "m") is None and memory.get("Service", "ns", "m")
    memory.forget("ns", "m")
    assert memory.entries == {}


def test_service_drift_is_seen_by_its_spec() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"}, "spec": {"ports": [{"port": 8000}]}}
    a = ChildView.from_object(live(svc))
    b = ChildView.from_object(live({**svc, "spec": {"ports": [{"port": 9000}]}}))
    assert a.marker != b.marker and a.deployment is None


def test_replicas_another_manager_owns_are_yielded() -> None:
    hpa = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale"}
    hpa["fieldsV1"] = {"f:spec": {"f:replicas": {}}}
    view = ChildView.from_object(live(DEPLOYMENT, managedFields=[hpa]))
    assert view.yielded == ("spec.replicas",)


def test_pods_say_what_only_they_know() -> None:
    ngl = {"name": "auto-ngl", "state": {"terminated": {"exitCode": 0, "message": '{"n_gpu_layers": 12}'}}}

    def pod(name: str, created: str, **status: Any) -> PodView:
        return PodView.from_object({"metadata": {"name": name, "creationTimestamp": created}, "status": status})

    old = pod("a", "2025-01-01T00:00:00Z", initContainerStatuses=[ngl])
    newer_ngl = copy.deepcopy(ngl)
    newer_ngl["state"]["terminated"]["message"] = '{"n_gpu_layers": 20}'
    new = pod("b", "2025-01-01T00:01:00Z", initContainerStatuses=[newer_ngl])
    waiting = pod(
        "c",
        "2025-01-01T00:02:00Z",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
    )
    assert pods_n_gpu_layers([old, new, waiting]) == 20
    assert pods_unschedulable([old, waiting]) == "0/3 nodes" and pods_unschedulable([old]) is None


def test_the_model_deployment_view_drops_bookkeeping() -> None:
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "resourceVersion": "5", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"model": {}},
        "status": {"engine": "vllm", "kopf": {"progress": {}}, "model": {"phase": "Ready"}},
    }
    view = md_view(body)
    assert "managedFields" not in view["metadata"] and view["status"] == {"engine": "vllm", "model": {"phase": "Ready"}}


def test_model_deployment_views_share_their_strings() -> None:
    import json

    def decoded() -> dict[str, Any]:  # each watch event decodes its own copies
        reason = "10 of 500 nodes can host it (Linux with a CUDA GPU): " + ", ".join(f"gpu-{i}" for i in range(10))
        status = {"selection": [{"engine": "vllm", "reasons": [reason]}], "conditions": [{"type": "Ready"}]}
        return json.loads(
            json.dumps({"metadata": {"name": "m"}, "spec": {"model": {"uri": "hf://a/b"}}, "status": status})
        )

    one, two = md_view(decoded()), md_view(decoded())
    assert one == two
    assert one["status"]["selection"][0]["reasons"][0] is two["status"]["selection"][0]["reasons"][0]
    assert one["spec"]["model"]["uri"] is two["spec"]["model"]["uri"]
    assert isinstance(one["status"]["selection"], list)  # compared with the status a reconcile computes


def test_a_child_at_one_version_is_viewed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "VIEWS_MAX", 2)
    stored = copy.deepcopy(DEPLOYMENT)
    stored["metadata"] |= {"uid": "u1", "resourceVersion": "7", "generation": 1}
    first = ChildView.from_object(stored)
    assert ChildView.from_object(copy.deepcopy(stored)) is first  # the same version from another event
    newer = copy.deepcopy(stored)
    newer["metadata"] |= {"resourceVersion": "8", "generation": 2}
    assert ChildView.from_object(newer).marker == "g2" and first.marker == "g1"
    unversioned = copy.deepcopy(DEPLOYMENT)  # rendered, not stored: never kept
    assert ChildView.from_object(unversioned) is not ChildView.from_object(unversioned)
    third = copy.deepcopy(stored)
    third["metadata"]["resourceVersion"] = "9"
    ChildView.from_object(third)
    assert list(views._VIEWS) == [("u1", "8"), ("u1", "9")]  # bounded: the oldest went


def test_our_own_status_write_counts_until_the_watch_delivers_it() -> None:
    body = {"metadata": {"resourceVersion": "5"}, "status": {"ready": "0/1"}}
    assert newer_status(body, ("7", {"ready": "1/1"})) == {"ready": "1/1"}  # the watch is behind
    assert newer_status(body, ("4", {"ready": "1/1"})) == {"ready": "0/1"}  # someone wrote after us
    assert newer_status(body, None) == {"ready": "0/1"}


def test_node_facts_have_a_version_and_one_snapshot_per_version() -> None:
    memory, mappings = FactsMemory(), LabelMappings()

    def facts(name: str, **labels: str) -> Any:
        node = {"metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", **labels}}, "status": {}}
        return index_entry(node, mappings)["all"]

    assert memory.observe("b", facts("b")) and memory.observe("a", facts("a"))
    first = memory.snapshot()
    assert [f.name for f in first] == ["a", "b"] and memory.snapshot() is first and memory.version == 2
    assert not memory.observe("a", facts("a"))  # a heartbeat: same facts, same version
    assert memory.version == 2 and memory.snapshot() is first
    assert memory.observe("a", facts("a", team="x")) and memory.version == 3 and memory.snapshot() is not first
    assert memory.observe("b", None) and [f.name for f in memory.snapshot()] == ["a"]


def test_node_classes_are_regrouped_shaping_only_the_nodes_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    memory, mappings = FactsMemory(), LabelMappings()
    shaped: list[str] = []

    def counting_shape(node: NodeFacts, mapped: LabelMappings, by_host: bool = False) -> tuple[object, ...]:
        shaped.append(node.name)
        return shape(node, mapped, by_host)

    monkeypatch.setattr(nodes_index, "shape", counting_shape)

    def facts(name: str, gpus: int = 0, ready: str = "True") -> Any:
        node = {
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
            "status": {
                "allocatable": {"nvidia.com/gpu": str(gpus)} if gpus else {},
                "conditions": [{"type": "Ready", "status": ready}],
            },
        }
        return index_entry(node, mappings)["all"]

    for i in range(6):
        memory.observe(f"n{i}", facts(f"n{i}", gpus=1 if i % 2 else 0))
    assert memory.classes(mappings) == group_nodes(memory.snapshot(), mappings)
    assert len(memory.classes(mappings)) == 2 and sorted(shaped) == [f"n{i}" for i in range(6)]
    shaped.clear()
    memory.observe("n3", facts("n3", gpus=1, ready="False"))  # one node went NotReady: a class of its own
    memory.observe("n4", facts("n4"))  # a heartbeat: equal facts
    classes = memory.classes(mappings)
    assert classes == group_nodes(memory.snapshot(), mappings) and len(classes) == 3
    assert shaped == ["n3"]
    memory.observe("n0", None)  # a node left: positions move, shapes do not
    memory.observe("n9", facts("n9", gpus=1))
    shaped.clear()
    assert memory.classes(mappings) == group_nodes(memory.snapshot(), mappings) and shaped == ["n9"]
    other = LabelMappings(gpu_present="example.com/gpu")  # another mapping: every node is shaped again
    shaped.clear()
    assert memory.classes(other) == group_nodes(memory.snapshot(), other) and len(shaped) == 6


def test_a_silent_watch_is_told_from_a_quiet_cluster() -> None:
    seen = {("ns", "a"): "10", ("ns", "b"): "11"}
    assert behind({("ns", "a"): "10", ("ns", "b"): "11", ("other", "c"): "99"}, seen) == {}
    assert behind({("ns", "a"): "12", ("ns", "b"): "11"}, seen) == {("ns", "a"): 12}
    now = [1000.0]
    clock = WatchClock(silence_s=300, grace_s=10, clock=lambda: now[0], last_event=0.0)
    clock.judge({("ns", "a"): "12"}, seen)  # first sight: a suspect (its event may be in flight)
    assert clock.suspects == {("ns", "a"): 12}
    clock.saw("modeldeployments", ("ns", "a"), "12")  # it arrived: no longer a suspect
    assert clock.suspects == {}
    clock.judge({("ns", "a"): "12"}, seen)
    with pytest.raises(WatchSilent, match="ns/a"):
        clock.judge({("ns", "a"): "13"}, seen)  # still behind at the next look: the watch is dead
