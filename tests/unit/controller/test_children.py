"""The autoscaling/routing children as watched: views by owner, KEDA's conditions, edits seen, applies by name."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modeldeploy.controller.apply import AppliedMemory, ApplyError, needs_apply, with_hash
from modeldeploy.controller.children import Child, Children, keda_conditions
from modeldeploy.controller.execute import apply_children
from modeldeploy.controller.kube import KubeError
from modeldeploy.controller.views import ChildView, drift_marker

OWNER_REF = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "m", "controller": True}


def _hpa(max_replicas: int = 3, name: str = "m") -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": [OWNER_REF], "labels": {"a": "b"}},
        "spec": {"minReplicas": 1, "maxReplicas": max_replicas},
    }


def _role(verbs: list[str]) -> dict[str, Any]:
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "m-epp"}, "rules": rules}


def test_an_edit_of_a_role_moves_its_drift_marker() -> None:
    """Roles have no spec: their rules are what someone edits."""
    assert drift_marker(_role(["get"])) != drift_marker(_role(["get", "list"]))
    role = _role(["get"])
    assert drift_marker(role) == drift_marker({**role, "metadata": {"name": "m-epp", "resourceVersion": "9"}})


def test_an_hpa_edited_by_someone_needs_our_apply_again() -> None:
    body, value = with_hash(_hpa())
    stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "5"}}
    remembered = (value, drift_marker(stored))
    assert not needs_apply(body, value, ChildView.from_object(stored), remembered)
    edited = {**stored, "spec": {"minReplicas": 1, "maxReplicas": 10}}
    assert needs_apply(body, value, ChildView.from_object(edited), remembered)


def test_children_are_found_by_owner() -> None:
    store = Children()
    assert store.put("ns", Child.from_object("m", _hpa())) is None
    store.put("ns", Child.from_object("m", _role(["get"])))
    store.put("other", Child.from_object("m", _hpa()))
    assert set(store.for_owner("ns", "m")) == {("HorizontalPodAutoscaler", "m"), ("Role", "m-epp")}
    before = store.put("ns", Child.from_object("m", _hpa(5)))
    assert (
        before is not None
        and before.view.marker != store.for_owner("ns", "m")[("HorizontalPodAutoscaler", "m")].view.marker
    )
    store.drop("HorizontalPodAutoscaler", "ns", "m")
    assert set(store.for_owner("ns", "m")) == {("Role", "m-epp")}


def test_a_child_that_changed_owner_is_found_under_its_new_owner_only() -> None:
    store = Children()
    store.put("ns", Child.from_object("m", _role(["get"])))
    store.put("ns", Child.from_object("n", _role(["get"])))  # the same Role, now labelled for another owner
    assert store.for_owner("ns", "m") == {}
    assert set(store.for_owner("ns", "n")) == {("Role", "m-epp")}
    store.drop("Role", "ns", "m-epp")
    assert store.for_owner("ns", "n") == {} and store.by_owner == {}


def test_keda_conditions_are_read_from_a_scaled_object_only() -> None:
    so = {
        "kind": "ScaledObject",
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed", "message": "bad query"},
                {"type": "Active", "status": "False"},
                {"type": "Fallback", "status": "False"},
            ]
        },
    }
    assert keda_conditions(so) == (
        ("Ready", "False", "ScaledObjectCheckFailed", "bad query"),
        ("Active", "False", "", ""),
    )
    assert keda_conditions({"kind": "ScaledObject"}) == ()
    assert keda_conditions(_hpa()) == ()


class _Recorder:
    """Stands in for the API client: records applies, answers with the object as stored."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def apply(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        self.applied.append(path)
        meta = obj["metadata"]
        return {**obj, "metadata": {**meta, "uid": f"u-{meta['name']}", "resourceVersion": str(len(self.applied))}}


def test_children_are_judged_by_their_own_view_not_the_workloads() -> None:
    hpa, hpa_hash = with_hash(_hpa())
    hpa["metadata"]["namespace"] = "ns"
    memory = AppliedMemory()
    kube = _Recorder()
    live: dict[Any, Any] = {"Deployment": None}
    asyncio.run(apply_children(kube, [(hpa, hpa_hash)], live, memory))  # type: ignore[arg-type]
    assert len(kube.applied) == 1
    stored = {**hpa, "metadata": {**hpa["metadata"], "resourceVersion": "1"}}
    live[("HorizontalPodAutoscaler", "m")] = ChildView.from_object(stored)
    asyncio.run(apply_children(kube, [(hpa, hpa_hash)], live, memory))  # type: ignore[arg-type]
    assert len(kube.applied) == 1  # unchanged: skipped
    edited = {**stored, "spec": {"minReplicas": 1, "maxReplicas": 10}}
    live[("HorizontalPodAutoscaler", "m")] = ChildView.from_object(edited)
    asyncio.run(apply_children(kube, [(hpa, hpa_hash)], live, memory))  # type: ignore[arg-type]
    assert len(kube.applied) == 2  # edited by someone: applied again


def test_a_child_is_created_once_whether_or_not_the_watch_showed_it() -> None:
    """A Service the operator created never reaches the watch's view (its ADDED event is the create's echo,
    event_gate.py): applied again after a change, it is updated, not created (its Event says so)."""
    service, first = with_hash(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m", "namespace": "ns"}, "spec": {"ports": []}}
    )
    memory, kube, live = AppliedMemory(), _Recorder(), {"Service": None}
    [made] = asyncio.run(apply_children(kube, [(service, first)], live, memory))  # type: ignore[arg-type]
    assert made.created and made.changed
    assert memory.created == {"u-m": "1"}  # its ADDED event, when it comes, is this create's echo
    changed, second = with_hash({**service, "spec": {"ports": [{"port": 8080}]}})
    [again] = asyncio.run(apply_children(kube, [(changed, second)], live, memory))  # type: ignore[arg-type]
    assert again.changed and not again.created and len(kube.applied) == 2
    assert memory.created == {"u-m": "1"}  # an update awaits no ADDED event
    memory.drop("Service", "ns", "m")  # deleted by someone (its DELETED event): created anew
    [anew] = asyncio.run(apply_children(kube, [(changed, second)], live, memory))  # type: ignore[arg-type]
    assert anew.created


class _Slow(_Recorder):
    """Answers after a round trip; refuses the paths in `refuse` with the apiserver's error."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.refuse, self.in_flight, self.most = refuse, 0, 0

    async def apply(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if any(part in path for part in self.refuse):
            raise KubeError(500, "InternalError", "failed calling webhook")
        return await super().apply(obj, path)


def _children() -> list[tuple[dict[str, Any], str]]:
    objects = [_hpa(name="m"), _hpa(name="m2"), _hpa(name="m3")]
    return [with_hash(obj) for obj in objects]


def test_children_are_applied_at_once() -> None:
    kube = _Slow()
    applied = asyncio.run(apply_children(kube, _children(), {}, AppliedMemory()))  # type: ignore[arg-type]
    assert kube.most == 3 and [a.name for a in applied] == ["m", "m2", "m3"]
    assert all(a.created and a.changed for a in applied)


def test_a_refused_child_is_named_and_the_others_are_kept() -> None:
    kube, memory = _Slow(refuse=("/m2",)), AppliedMemory()
    with pytest.raises(ApplyError) as caught:
        asyncio.run(apply_children(kube, _children(), {}, memory))  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.name, caught.value.error.status) == ("HorizontalPodAutoscaler", "m2", 500)
    assert [a.name for a in caught.value.applied] == ["m", "m3"]  # applied, and remembered as applied
    assert {key[2] for key in memory.entries} == {"m", "m3"}


def test_a_rolebinding_is_applied_once_its_role_is() -> None:
    """RBAC checks a RoleBinding against the Role it names: the Role must exist first."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "m-epp", "namespace": "ns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "m-epp"},
    }
    role = {**_role(["get"]), "metadata": {"name": "m-epp", "namespace": "ns"}}
    kube = _Slow()
    objects = [with_hash(binding), with_hash(role), with_hash(_hpa())]
    applied = asyncio.run(apply_children(kube, objects, {}, AppliedMemory()))  # type: ignore[arg-type]
    assert [a.kind for a in applied] == ["RoleBinding", "Role", "HorizontalPodAutoscaler"]  # render order kept
    paths = [path.split("/")[-2] for path in kube.applied]
    assert paths.index("roles") < paths.index("rolebindings")  # the binding and the HPA after the Role
    assert kube.most == 2
