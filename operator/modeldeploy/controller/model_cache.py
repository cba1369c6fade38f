"""The shared model cache in a reconcile: create what is missing, read what the download says.

Kept out of reconcile.py on purpose: the reconcile calls `converge` once and uses two answers, the
`status.model` + ModelReady condition to write and whether the weights are ready (the Deployment is
applied only then; docs/model-cache.md explains why it waits rather than starting pods that wait).

Reads come from the watches (cache_views.py: the claim, the Jobs, their pods) when the operator runs;
an object the watch does not show is asked for once before anything is created (the watch may lag our
own create by milliseconds), so a steady reconcile makes no request, and a missing object costs one GET.
Tools and tests that reconcile outside the operator (`seen=None`) read everything from the API.

Creation is create-if-absent, never update: a cache another ModelDeployment already made is used as it
is (its size, class and Job are fixed when it is created), and nothing here ever deletes a cache —
garbage collection does, for a Delete-retention cache, once the last ModelDeployment owning it is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.kube import MERGE_PATCH, AsyncKube, KubeError
from modeldeploy.modelcache import listing as lst
from modeldeploy.modelcache import plan as p
from modeldeploy.modelcache.status import CacheState, StorageFacts, cache_state

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def _ns_path(namespace: str, kind: str, name: str = "") -> str:
    group = {
        "persistentvolumeclaims": "/api/v1",
        "serviceaccounts": "/api/v1",
        "pods": "/api/v1",
        "jobs": "/apis/batch/v1",
        "roles": "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings": "/apis/rbac.authorization.k8s.io/v1",
    }[kind]
    return f"{group}/namespaces/{namespace}/{kind}" + (f"/{name}" if name else "")


async def _create_if_absent(kube: AsyncKube, namespace: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    try:
        return await kube.request("POST", _ns_path(namespace, kind), body=obj)
    except KubeError as exc:
        if exc.status != 409:
            raise
    found = await kube.get(_ns_path(namespace, kind, obj["metadata"]["name"]))
    return found or obj


async def _storage_facts(kube: AsyncKube, claim: Mapping[str, Any]) -> StorageFacts:
    """Only asked while the claim is not Bound; a missing permission leaves the facts unknown."""
    name = (claim.get("spec") or {}).get("storageClassName")
    try:
        if name:
            found = await kube.get(f"/apis/storage.k8s.io/v1/storageclasses/{name}")
            return StorageFacts(class_exists=found is not None)
        classes = (await kube.request("GET", "/apis/storage.k8s.io/v1/storageclasses")).get("items") or []
    except KubeError as exc:
        if exc.transient:
            raise
        return StorageFacts()
    default = any(((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS) == "true" for c in classes)
    return StorageFacts(default_exists=default)


async def _adopt_owner(kube: AsyncKube, claim: dict[str, Any], owner: dict[str, Any]) -> None:
    """A Delete-retention cache lists every ModelDeployment using it as an owner (GC needs them all gone)."""
    refs = (claim.get("metadata") or {}).get("ownerReferences") or []
    if any(r.get("uid") == owner["uid"] for r in refs):
        return
    path = _ns_path(claim["metadata"]["namespace"], "persistentvolumeclaims", claim["metadata"]["name"])
    body = {
        "metadata": {"ownerReferences": [*refs, owner], "resourceVersion": claim["metadata"].get("resourceVersion")}
    }
    await kube.request("PATCH", path, body=body, content_type=MERGE_PATCH)


def _retry_after_edit(job: Mapping[str, Any], md: ModelDeployment) -> bool:
    """A failed download Job is made again when the ModelDeployment it was made for has been edited since.

    Only that one: two ModelDeployments that disagree (say, different credentialsSecrets) must not take
    turns re-creating the Job. Anyone can also retry by deleting the failed Job.
    """
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or ()
    )
    notes = (job.get("metadata") or {}).get("annotations") or {}
    if not failed or notes.get(p.REQUESTED_BY) != md.metadata.name:
        return False
    try:
        return (md.metadata.generation or 0) > int(notes.get(p.REQUESTED_GENERATION, "0"))
    except ValueError:
        return False


async def _get(kube: AsyncKube, seen: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """The watch's view when it shows the object; else the apiserver's answer (absent, or not seen yet)."""
    return seen if seen is not None else await kube.get(path)


async def _pods(
    kube: AsyncKube, namespace: str, label: str, value: str, seen: CacheObjects | None
) -> list[dict[str, Any]]:
    if seen is not None:
        return seen.job_pods(namespace, label, value)
    selector = f"{label}={value}"
    try:
        found = await kube.request("GET", _ns_path(namespace, "pods"), query=[("labelSelector", selector)])
    except KubeError as exc:
        if exc.transient:
            raise
        return []
    return list(found.get("items") or [])


async def _size_from_listing(
    kube: AsyncKube, md: ModelDeployment, config: OperatorConfig, plan: p.CachePlan, seen: CacheObjects | None
) -> str | CacheState:
    """Before the claim exists: run the listing Job, and once it completed, the size to make the claim with
    (modelcache/listing.py); until then, or when it failed, the state to report instead."""
    ns, name = plan.namespace, lst.listing_name(plan)
    job = await _get(kube, seen.listing_job(ns, name) if seen else None, _ns_path(ns, "jobs", name))
    if job is not None and _retry_after_edit(job, md):
        await kube.request("DELETE", _ns_path(ns, "jobs", name), query=[("propagationPolicy", "Background")])
        job = None
    if job is None:
        await _create_if_absent(kube, ns, "serviceaccounts", p.service_account(ns))
        job = await _create_if_absent(kube, ns, "jobs", lst.listing_job(plan, md, config))
    pods = await _pods(kube, ns, lst.LISTING_LABEL, plan.name, seen)
    total = lst.listed_total(job, pods)
    if total is None:
        return lst.listing_state(plan, job, pods)
    return lst.claim_size(plan, total, config)


async def _delete_listing(kube: AsyncKube, plan: p.CachePlan) -> None:
    """The listing Job has done its part once the claim exists; a missing one is fine."""
    try:
        path = _ns_path(plan.namespace, "jobs", lst.listing_name(plan))
        await kube.request("DELETE", path, query=[("propagationPolicy", "Background")])
    except KubeError as exc:
        if exc.transient:
            raise


async def converge(
    kube: AsyncKube, md: ModelDeployment, config: OperatorConfig, seen: CacheObjects | None = None
) -> CacheState | None:
    """Ensure the cache's objects exist and read its state; None when `md` uses no shared cache.

    `seen`: the watches' views of the cache objects (None: read them from the API)."""
    plan = p.plan_cache(md, config)
    if plan is None:
        return None
    ns = plan.namespace
    owner = p.owner_reference(md)
    claim_path = _ns_path(ns, "persistentvolumeclaims", plan.name)
    claim = await _get(kube, seen.claim(ns, plan.name) if seen else None, claim_path)
    if claim is None:
        listed = not plan.size_given
        if listed:  # no size in the spec: the listing Job sizes the claim first
            sized = await _size_from_listing(kube, md, config, plan, seen)
            if isinstance(sized, CacheState):
                return sized
            plan = p.with_size(plan, sized)
        claim = await _create_if_absent(kube, ns, "persistentvolumeclaims", p.claim(plan, owner))
        if listed:
            await _delete_listing(kube, plan)
    elif plan.retention == "Delete" and md.metadata.uid:
        await _adopt_owner(kube, claim, owner)
    size = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    plan = p.with_size(plan, size) if size else plan  # the Job refuses a model larger than the claim as it is
    uid = claim["metadata"].get("uid", "")
    phase = (claim.get("status") or {}).get("phase")
    storage = await _storage_facts(kube, claim) if phase != "Bound" else StorageFacts()
    hopeless = storage.class_exists is False or storage.default_exists is False
    job = await _get(kube, seen.job(ns, plan.name) if seen else None, _ns_path(ns, "jobs", plan.name))
    if job is not None and _retry_after_edit(job, md):
        await kube.request("DELETE", _ns_path(ns, "jobs", plan.name), query=[("propagationPolicy", "Background")])
        job = None
    if job is None and not hopeless:
        # Created before the claim binds: under WaitForFirstConsumer the Job's pod is what binds it.
        await _create_if_absent(kube, ns, "serviceaccounts", p.service_account(ns))
        await _create_if_absent(kube, ns, "roles", p.role(plan, uid))
        await _create_if_absent(kube, ns, "rolebindings", p.role_binding(plan, uid))
        job = await _create_if_absent(kube, ns, "jobs", p.job(plan, md, config, uid))
    pods: list[dict[str, Any]] = []
    if job is not None and phase == "Bound":
        pods = await _pods(kube, ns, p.CACHE_LABEL, plan.name, seen)
    return cache_state(plan, claim, job, pods, storage)


def model_status(md: ModelDeployment, cache: CacheState | None) -> dict[str, Any]:
    """`status.model`: the normalised quantization, and the shared cache's download when there is one."""
    out: dict[str, Any] = {}
    if md.spec.model.quantization:
        out["quantization"] = md.spec.model.quantization
    if cache is not None:
        out.update(cache.model)
    return out


def fix_model_patch(old: Mapping[str, Any], patch: dict[str, Any] | None) -> dict[str, Any] | None:
    """A merge patch keeps keys it does not mention: null the `status.model` keys that went away."""
    if not patch or not isinstance(patch.get("model"), dict):
        return patch
    before = old.get("model") or {}
    patch["model"] = {**{k: None for k in before if k not in patch["model"]}, **patch["model"]}
    return patch
