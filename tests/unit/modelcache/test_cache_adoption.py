"""Objects with a cache's predictable names are used only when they are ours; otherwise nothing is written.

A fake apiserver (a dict of paths) that answers GET, POST (409 when the name is taken) and records every
request, so each test says exactly what the operator wrote: nothing at all when a claim, Job,
ServiceAccount, Role or RoleBinding of that name was made by someone else (docs/security.md
"Shared model cache").
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import execute
from modeldeploy.controller.kube import KubeError
from modeldeploy.modelcache import listing as lst
from modeldeploy.modelcache import plan as p
from modeldeploy.modelcache.status import FOREIGN_OBJECT
from tests.unit.modelcache.test_cache_plan import md

CONFIG = OperatorConfig()
MD = md("a", shared={"size": "1Gi"})  # a size: no listing Job first
PLAN = p.plan_cache(MD, CONFIG)
assert PLAN is not None
NS = "/namespaces/team-a/"
PATHS = {
    "PersistentVolumeClaim": f"/api/v1{NS}persistentvolumeclaims/{PLAN.name}",
    "Job": f"/apis/batch/v1{NS}jobs/{PLAN.name}",
    "ServiceAccount": f"/api/v1{NS}serviceaccounts/{PLAN.name}",
    "Role": f"/apis/rbac.authorization.k8s.io/v1{NS}roles/{PLAN.name}",
    "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1{NS}rolebindings/{PLAN.name}",
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class FakeApi:
    def __init__(self, objects: dict[str, dict[str, Any]] | None = None) -> None:
        self.objects = dict(objects or {})
        self.calls: list[tuple[str, str]] = []

    async def get(self, path: str) -> Any:
        self.calls.append(("GET", path))
        return copy.deepcopy(self.objects.get(path))

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.objects:
                raise KubeError(409, "AlreadyExists", f"{path} already exists")
            made = copy.deepcopy(body)
            made["metadata"]["uid"] = f"uid-of-{body['kind']}"
            if body["kind"] == "PersistentVolumeClaim":
                made["status"] = {"phase": "Bound"}
            self.objects[path] = made
            return made
        return {}

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] in WRITES]


def _ours(kind: str) -> dict[str, Any]:
    """The object as the operator makes it, as the apiserver returns it (uids, a bound claim)."""
    obj = {
        "PersistentVolumeClaim": lambda: p.claim(PLAN),
        "Job": lambda: p.job(PLAN, MD, CONFIG, "claim-uid"),
        "ServiceAccount": lambda: p.service_account(PLAN, "claim-uid"),
        "Role": lambda: p.role(PLAN, "claim-uid"),
        "RoleBinding": lambda: p.role_binding(PLAN, "claim-uid"),
    }[kind]()
    obj["metadata"]["uid"] = "claim-uid" if kind == "PersistentVolumeClaim" else f"uid-{kind}"
    if kind == "PersistentVolumeClaim":
        obj["status"] = {"phase": "Bound"}
    return obj


def _foreign(kind: str, how: str) -> dict[str, Any]:
    obj = _ours(kind)
    if how == "no labels":
        obj["metadata"]["labels"] = {"app": "someone-elses"}
    else:  # our labels copied, but not owned by the cache's claim
        obj["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "x"}]
    return obj


def _converge(api: FakeApi) -> Any:
    return asyncio.run(execute.converge_cache(api, MD, CONFIG))  # type: ignore[arg-type]


def test_a_new_cache_gets_its_own_identity_and_job_all_owned_by_the_claim() -> None:
    api = FakeApi()
    state = _converge(api)
    assert state is not None and state.model["phase"] != "Failed", state
    assert [c for c in api.writes] == [
        ("POST", f"/api/v1{NS}persistentvolumeclaims"),
        ("POST", f"/api/v1{NS}serviceaccounts"),
        ("POST", f"/apis/rbac.authorization.k8s.io/v1{NS}roles"),
        ("POST", f"/apis/rbac.authorization.k8s.io/v1{NS}rolebindings"),
        ("POST", f"/apis/batch/v1{NS}jobs"),
    ]
    claim_uid = api.objects[PATHS["PersistentVolumeClaim"]]["metadata"]["uid"]
    for kind in ("Job", "ServiceAccount", "Role", "RoleBinding"):
        made = api.objects[PATHS[kind]]
        assert p.not_ours(made, kind, PLAN, claim_uid) is None, kind
    assert api.objects[PATHS["Job"]]["spec"]["template"]["spec"]["serviceAccountName"] == PLAN.name


def test_our_existing_objects_are_used() -> None:
    api = FakeApi({PATHS[k]: _ours(k) for k in PATHS})
    state = _converge(api)
    assert state is not None and state.condition.reason != FOREIGN_OBJECT and api.writes == []


# A Retain claim has no owner to check (it outlives every ModelDeployment): its labels say it is ours.
CASES = [
    (k, h)
    for k in PATHS
    for h in ("no labels", "another owner")
    if (k, h) != ("PersistentVolumeClaim", "another owner")
]


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_a_foreign_object_with_the_predictable_name_stops_everything(kind: str, how: str) -> None:
    objects = {PATHS["PersistentVolumeClaim"]: _ours("PersistentVolumeClaim"), PATHS[kind]: _foreign(kind, how)}
    api = FakeApi(objects)
    before = copy.deepcopy(api.objects)
    state = _converge(api)
    assert state is not None and not state.ready
    assert state.model["phase"] == "Failed" and state.condition.reason == FOREIGN_OBJECT
    assert state.model["message"].startswith(f"{kind} {PLAN.name} exists but ModelDeploy did not make it")
    assert api.writes == [] and api.objects == before  # nothing created, nothing changed


def test_a_foreign_claim_of_a_delete_retention_cache_gets_no_owner_added() -> None:
    m = md("a", shared={"size": "1Gi", "retention": "Delete"})
    plan = p.plan_cache(m, CONFIG)
    assert plan is not None
    claim = {**p.claim(plan), "status": {"phase": "Bound"}}
    claim["metadata"] = {**claim["metadata"], "labels": {}, "uid": "theirs"}
    api = FakeApi({f"/api/v1{NS}persistentvolumeclaims/{plan.name}": claim})
    state = asyncio.run(execute.converge_cache(api, m, CONFIG))  # type: ignore[arg-type]
    assert state is not None and state.condition.reason == FOREIGN_OBJECT and api.writes == []


def test_a_foreign_listing_job_is_not_read_for_the_claim_size() -> None:
    m = md("a")  # no size: the listing Job sizes the claim
    plan = p.plan_cache(m, CONFIG)
    assert plan is not None
    theirs = lst.listing_job(plan, m, CONFIG)
    theirs["metadata"]["labels"] = {"app": "mine"}
    theirs["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    api = FakeApi({f"/apis/batch/v1{NS}jobs/{lst.listing_name(plan)}": theirs})
    state = asyncio.run(execute.converge_cache(api, m, CONFIG))  # type: ignore[arg-type]
    assert state is not None and state.condition.reason == FOREIGN_OBJECT and api.writes == []
    assert state.model["message"].startswith(f"Job {lst.listing_name(plan)} exists but ModelDeploy did not make it")
