"""The model cache read from the watches: compact views that say what the API's objects say, and a steady
reconcile that asks the apiserver nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import execute
from modeldeploy.controller.cache_views import CacheObjects, claim_view, job_view, pod_view
from modeldeploy.fetch.report import ANNOTATION
from modeldeploy.modelcache import plan as p
from modeldeploy.modelcache.status import StorageFacts, cache_state
from tests.unit.modelcache.test_cache_plan import md

CONFIG = OperatorConfig()
MD = md("a")
PLAN = p.plan_cache(MD, CONFIG)
assert PLAN is not None


def _claim(phase: str = "Bound") -> dict[str, Any]:
    owner = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "a", "uid": "uid-a"}
    note = json.dumps({"phase": "Ready", "bytes": 100, "total": 100, "revision": "abc123"})
    return {
        "metadata": {
            "name": PLAN.name,
            "namespace": "team-a",
            "uid": "claim-uid",
            "resourceVersion": "7",
            "ownerReferences": [owner],
            "labels": {**p.MANAGED_BY, p.CACHE_LABEL: PLAN.name, "example.com/other": "x"},
            "annotations": {ANNOTATION: note, "kubectl.kubernetes.io/last-applied-configuration": "x" * 500},
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"storageClassName": "local-path", "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv"},
        "status": {"phase": phase, "capacity": {"storage": "1Gi"}},
    }


def _job(state: str = "Complete") -> dict[str, Any]:
    notes = {p.REQUESTED_BY: "a", p.REQUESTED_GENERATION: "1", "other": "x"}
    conditions = [{"type": state, "status": "True", "lastTransitionTime": "t"}, {"type": "SuccessCriteriaMet"}]
    owner = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": PLAN.name, "uid": "claim-uid"}
    meta = {"name": PLAN.name, "namespace": "team-a", "uid": "job-uid", "annotations": notes,
            "labels": {**p.MANAGED_BY, p.CACHE_LABEL: PLAN.name}, "ownerReferences": [owner]}  # fmt: skip
    return {"metadata": meta, "spec": {"template": {}},
            "status": {"conditions": conditions, "succeeded": 1}}  # fmt: skip


def _pod() -> dict[str, Any]:
    done = {"exitCode": 0, "message": json.dumps({"revision": "abc123", "total": 100}), "finishedAt": "t", "x": 1}
    statuses = [{"name": "fetch", "state": {"terminated": done}, "image": "i"}]
    return {
        "metadata": {"name": "job-pod", "namespace": "team-a", "ownerReferences": [{"kind": "Job", "uid": "job-uid"}]},
        "spec": {},
        "status": {"containerStatuses": statuses},
    }


def test_views_say_what_the_objects_say_to_the_cache_state() -> None:
    full = cache_state(PLAN, _claim(), _job(), [_pod()], StorageFacts())
    viewed = cache_state(PLAN, claim_view(_claim()), job_view(_job()), [pod_view(_pod())], StorageFacts())
    assert viewed == full and full.ready
    pending = _claim("Pending")
    assert cache_state(PLAN, claim_view(pending), None, [], StorageFacts(class_exists=False)) == cache_state(
        PLAN, pending, None, [], StorageFacts(class_exists=False)
    )
    view = claim_view(_claim())
    assert "managedFields" not in view["metadata"] and list(view["metadata"]["annotations"]) == [ANNOTATION]


class _NoCalls:
    """An API client that must not be called."""

    host = "none"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the steady reconcile called the API ({name})")


def _seen(claim: dict[str, Any] | None, job: dict[str, Any] | None) -> CacheObjects:
    indexes = {
        "cache_claims_index": {("team-a", PLAN.name): [claim_view(claim)]} if claim else {},
        "cache_jobs_index": {("team-a", PLAN.name): [job_view(job)]} if job else {},
        "cache_listing_jobs_index": {},
        "cache_pods_index": {("team-a", p.CACHE_LABEL, PLAN.name): [pod_view(_pod())]},
    }
    seen = CacheObjects.from_indexes(indexes)
    assert seen is not None
    return seen


def test_a_steady_cache_is_read_from_the_watches_without_a_request() -> None:
    state = asyncio.run(execute.converge_cache(_NoCalls(), MD, CONFIG, _seen(_claim(), _job())))  # type: ignore[arg-type]
    assert state is not None and state.ready and state.model["revision"] == "abc123"


class _Recorder:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.calls = answers, []

    async def get(self, path: str) -> Any:
        self.calls.append(("GET", path))
        return self.answers.get(path)

    async def request(self, method: str, path: str, **_: Any) -> Any:
        self.calls.append((method, path))
        return {}


def test_an_object_the_watch_does_not_show_is_asked_for_once_before_anything_is_created() -> None:
    path = f"/apis/batch/v1/namespaces/team-a/jobs/{PLAN.name}"
    kube = _Recorder({path: _job()})  # made by another reconcile a moment ago: the watch has not shown it yet
    state = asyncio.run(execute.converge_cache(kube, MD, CONFIG, _seen(_claim(), None)))  # type: ignore[arg-type]
    assert kube.calls == [("GET", path)] and state is not None and state.ready


def test_without_the_watches_everything_is_read_from_the_api() -> None:
    assert CacheObjects.from_indexes({"cache_claims_index": {}}) is None
