"""The small pure parts around the reconcile: field yielding, node-change detection, metrics, coalescing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

from modeldeploy.config import LabelMappings
from modeldeploy.controller.apply import controller_uid, object_path, owned_by_others, yield_fields
from modeldeploy.controller.indexes import owner_name, workload_owner
from modeldeploy.controller.metrics import Metrics
from modeldeploy.controller.nodes_index import FactsMemory, index_entry, snapshot
from modeldeploy.controller.plan import current_engine, parse, stability_inputs
from modeldeploy.controller.serializer import Serializer
from modeldeploy.controller.views import ChildView

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m", "namespace": "ns"},
    "spec": {"replicas": 2, "template": {}},
}


def live_with_manager(manager: str, subresource: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    if subresource:
        entry["subresource"] = subresource
    return {"metadata": {"managedFields": [entry]}}


def test_replicas_yielded_only_when_someone_else_owns_them() -> None:
    ours = ChildView.from_object({**DEPLOYMENT, **live_with_manager("modeldeploy")})
    assert ours.yielded == () and yield_fields(DEPLOYMENT, ours.yielded)["spec"]["replicas"] == 2
    hpa = live_with_manager("kube-controller-manager", subresource="scale")
    assert owned_by_others(hpa, ("spec", "replicas"))
    view = ChildView.from_object({**DEPLOYMENT, **hpa})
    assert view.yielded == ("spec.replicas",)
    assert "replicas" not in yield_fields(DEPLOYMENT, view.yielded)["spec"]
    assert DEPLOYMENT["spec"]["replicas"] == 2  # the input is not mutated


def test_yielding_copies_only_the_path_to_each_yielded_field() -> None:
    desired = {
        "metadata": {"name": "d", "labels": {"a": "b"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "engine"}]}}, "paused": "no"},
    }
    same = yield_fields(desired, ())
    assert same == desired and same["spec"] is desired["spec"]  # nothing yielded: nothing copied
    out = yield_fields(desired, ("spec.replicas", "spec.template.spec.containers", "spec.x.y", "spec.paused.z"))
    assert out == {"metadata": desired["metadata"], "spec": {"template": {"spec": {}}, "paused": "no"}}
    assert out["metadata"] is desired["metadata"]  # off every yielded path: shared
    assert desired["spec"]["replicas"] == 2 and desired["spec"]["template"]["spec"]["containers"]  # not mutated


def test_paths_and_owners() -> None:
    assert object_path(DEPLOYMENT) == "/apis/apps/v1/namespaces/ns/deployments/m"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m", "namespace": "ns"}}
    assert object_path(svc) == "/api/v1/namespaces/ns/services/m"
    owned = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}], "labels": {}}}
    assert controller_uid(owned) == "u1" and controller_uid({"metadata": {}}) is None
    ref = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "md", "controller": True}
    assert owner_name({"metadata": {"ownerReferences": [ref]}}) == "md"
    assert owner_name({"metadata": {"labels": {"app.kubernetes.io/instance": "x"}}}) == "x"
    # the world's one Deployment/Service view is the model's own, never the endpoint picker's beside it
    assert workload_owner({"metadata": {"name": "md", "ownerReferences": [ref]}}) == "md"
    assert workload_owner({"metadata": {"name": "md-epp", "ownerReferences": [ref]}}) is None


def node(name: str, gpus: int = 0, ready: str = "True", heartbeat: str = "t1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)} if gpus else {},
            "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}],
        },
    }


def test_heartbeats_are_not_changes_but_facts_are() -> None:
    memory, mappings = FactsMemory(), LabelMappings()
    facts = index_entry(node("a"), mappings)["all"]
    assert memory.observe("a", facts)
    assert not memory.observe("a", index_entry(node("a", heartbeat="t2"), mappings)["all"])
    assert memory.observe("a", index_entry(node("a", ready="False"), mappings)["all"])
    assert memory.observe("a", index_entry(node("a", gpus=1), mappings)["all"])
    assert memory.observe("a", None) and not memory.observe("a", None)
    both = {"all": [index_entry(node("b"), mappings)["all"], facts]}
    assert [f.name for f in snapshot(both)] == ["a", "b"] and snapshot(None) == ()


def test_metrics_exposition() -> None:
    m = Metrics(buckets=(0.1, 1.0))
    m.reconciled("create", "applied", 0.05, "vllm")
    m.reconciled("node", "pending", 0.5, None)
    m.reconciled("node", "skipped", 0.0, None)
    m.wrote(["status", "Deployment"])
    m.wrote([])
    m.watch_events = lambda: {("apps/deployments", "skipped"): 4, ("pods", "passed"): 2}
    assert "modeldeploy_events_total{" not in m.exposition()
    m.events = lambda: {"posted": 7, "refused": 1}
    text = m.exposition()
    assert 'modeldeploy_events_total{result="posted"} 7' in text
    assert 'modeldeploy_events_total{result="refused"} 1' in text
    assert 'modeldeploy_watch_events_total{resource="apps/deployments",outcome="skipped"} 4' in text
    assert 'modeldeploy_watch_events_total{resource="pods",outcome="passed"} 2' in text
    assert 'modeldeploy_writes_total{kind="status"} 1' in text
    assert 'modeldeploy_reconciles_total{trigger="create",result="applied"} 1' in text
    assert 'modeldeploy_decisions_total{engine="vllm"} 1' in text
    assert 'modeldeploy_decisions_total{engine="none"} 1' in text
    assert 'modeldeploy_reconcile_duration_seconds_bucket{le="0.1"} 2' in text
    assert 'modeldeploy_reconcile_duration_seconds_bucket{le="1"} 3' in text
    assert 'modeldeploy_reconcile_duration_seconds_bucket{le="+Inf"} 3' in text
    assert "modeldeploy_reconcile_duration_seconds_count 3" in text
    assert "# TYPE modeldeploy_reconcile_duration_seconds histogram" in text
    gc.collect()
    collected = dict(
        line.rsplit(" ", 1) for line in Metrics().exposition().splitlines() if line.startswith("python_gc")
    )
    assert int(collected['python_gc_collections_total{generation="2"}']) >= 1
    assert set(collected) == {
        f'python_gc_{family}_total{{generation="{g}"}}'
        for family in ("collections", "objects_collected")
        for g in "012"
    }


def _job(s: Serializer, gate: asyncio.Event, record: Callable[[str], None]) -> Callable[[str, bool], Awaitable[None]]:
    """A reconcile of object "k" under `s`: records its tag when its turn comes; "first" holds its turn
    until `gate` is set."""

    async def job(tag: str, coalesce: bool) -> None:
        async with s.turn("k", coalesce=coalesce) as go:
            if go:
                record(tag)
                if tag == "first":
                    await gate.wait()

    return job


def test_serializer_coalesces_queued_requests() -> None:
    async def scenario() -> list[str]:
        s, ran = Serializer(), []
        gate = asyncio.Event()
        job = _job(s, gate, ran.append)

        first = asyncio.create_task(job("first", False))
        await asyncio.sleep(0)
        queued = asyncio.create_task(job("queued", True))
        await asyncio.sleep(0)
        dropped = asyncio.create_task(job("dropped", True))  # one is queued already: redundant
        forced = asyncio.create_task(job("forced", False))  # change handlers never coalesce
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, queued, dropped, forced)
        s.forget("k")
        return ran

    assert asyncio.run(scenario()) == ["first", "queued", "forced"]


def test_serializer_tells_a_turn_whether_requests_were_folded_into_it() -> None:
    """A reconcile that finds nothing left to do when its turn comes may be skipped only when it stands for
    no one else (retries.run_reconcile's `unless`)."""

    async def scenario() -> list[tuple[str, bool]]:
        s, seen = Serializer(), []
        gate = asyncio.Event()
        job = _job(s, gate, lambda tag: seen.append((tag, s.joined("k"))))

        first = asyncio.create_task(job("first", False))
        await asyncio.sleep(0)
        alone = asyncio.create_task(job("alone", True))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, alone)
        gate.clear()
        first = asyncio.create_task(job("first", False))
        await asyncio.sleep(0)
        queued = asyncio.create_task(job("queued", True))
        await asyncio.sleep(0)
        folded = asyncio.create_task(job("folded", True))  # dropped: the queued one stands for it
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, queued, folded)
        return seen

    assert asyncio.run(scenario()) == [("first", False), ("alone", False), ("first", False), ("queued", True)]


def test_serializer_survives_cancellation_while_waiting() -> None:
    async def scenario() -> bool:
        s = Serializer()
        gate = asyncio.Event()

        async def hold() -> None:
            async with s.turn("k", coalesce=False):
                await gate.wait()

        async def wait() -> None:
            async with s.turn("k", coalesce=True):
                pass

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0)
        waiter.cancel()
        gate.set()
        await holder
        async with s.turn("k", coalesce=True) as go:
            return go

    assert asyncio.run(scenario()) is True


MD = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m", "namespace": "ns", "generation": 2, "uid": "u"},
    "spec": {"model": {"name": "qwen2.5-instruct", "format": "pytorch", "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"}},
    "status": {"observedGeneration": 2, "engine": "transformers", "kopf": {"progress": {}}},
}


def test_parse_ignores_status_bookkeeping_and_reports_what_pydantic_refuses() -> None:
    md, problem = parse(MD)
    assert md is not None and problem is None
    long_name = {**MD, "metadata": {**MD["metadata"], "name": "x" * 70}}
    md, problem = parse(long_name)
    assert md is None and problem and problem.startswith("metadata.name")


def test_stability_inputs() -> None:
    status = MD["status"]
    assert stability_inputs(MD, status, "vllm") == ("vllm", False)  # the Deployment's label is the truth
    assert stability_inputs(MD, status, None) == ("transformers", False)
    changed = {**MD, "metadata": {**MD["metadata"], "generation": 3}}
    assert stability_inputs(changed, status, "vllm") == (None, False)  # spec changed: choose freely
    asked = {**MD, "metadata": {**MD["metadata"], "annotations": {"modeldeploy.io/reselect": "true"}}}
    assert stability_inputs(asked, status, "vllm") == (None, True)
    assert current_engine({"engine": "nonsense"}, None) is None


def test_which_apiserver_answers_are_retried() -> None:
    from modeldeploy.controller.apply import KubeError

    lag = (
        'deployments.apps "m" is forbidden: cannot set blockOwnerDeletion in this case because cannot find '
        'RESTMapping for APIVersion modeldeploy.io/v1alpha1 Kind ModelDeployment: no matches for kind "ModelDeployment"'
    )
    assert KubeError(403, "Forbidden", lag).transient  # a CRD installed seconds ago: discovery catches up
    assert not KubeError(403, "Forbidden", 'deployments.apps "m" is forbidden: User "x" cannot patch').transient
    assert KubeError(409, "Conflict", "").transient and KubeError(503, "", "").transient
    assert not KubeError(422, "Invalid", "spec.template: Invalid value").transient
