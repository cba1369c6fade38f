"""The one module that writes to the apiserver: it carries out a reconcile's plan (plan.py).

Three ways of writing, one per `plan.Mode`:
- APPLY: server-side apply under our field manager of the children whose watch view differs from what
  would be applied (apply.py decides; `apply_children` sends);
- CREATE_ONCE: the shared model cache's objects, created when absent and never updated, a cache another
  ModelDeployment made being used as it is (`converge_cache`);
- DELETE: our objects no longer wanted, after a GET that shows they are ours (`prune`, `remove_route`).
And the status, one merge patch when it differs (`write_status`).

The model cache is the one part that still reads between writes: its listing Job sizes the claim, the
claim's uid owns the RBAC objects and the Job. Reads come from the watches (cache_views.py) when the
operator runs; an object the watch does not show is asked for once before anything is created (the watch
may lag our own create by milliseconds), so a steady reconcile makes no request, and a missing object
costs one GET. Tools and tests that reconcile outside the operator (`seen=None`) read everything from the
API. Nothing here ever deletes a cache: garbage collection does, for a Delete-retention cache, once the
last ModelDeployment owning it is gone (docs/model-cache.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import model_cache
from modeldeploy.controller.apply import (
    QUIET_KINDS,
    Applied,
    AppliedMemory,
    ApplyError,
    ChildConflict,
    any_needs_apply,
    controller_uid,
    md_path,
    needs_apply,
    object_path,
    view_of,
    yield_fields,
)
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.kube import MERGE_PATCH, AsyncKube, KubeError
from modeldeploy.controller.plan import Plan, Problem, rendering
from modeldeploy.controller.scaling import served_crds
from modeldeploy.controller.views import HASH_ANNOTATION, ChildView, drift_marker
from modeldeploy.modelcache import listing as lst
from modeldeploy.modelcache import plan as p
from modeldeploy.modelcache.status import CacheState, StorageFacts, cache_state, foreign_state
from modeldeploy.scaling.epp import epp_name
from modeldeploy.scaling.plan import HTTP_ROUTE, HTTP_SCALED_OBJECT, INFERENCE_POOL, SCALED_OBJECT

APPLY_FAILED = "ApplyFailed"
SECOND_CONTROLLER = "Only one reference can have Controller set to true"
ROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}"


@dataclass
class Executed:
    """What carrying out a plan did: the children applied, a refusal, the cache's state, requests made."""

    applied: list[Applied] = field(default_factory=list)
    failed: ApplyError | None = None  # an apply the apiserver refused: reported, then retried
    problem: Problem | None = None  # ChildConflict or ApplyFailed, for status
    cache: CacheState | None = None
    requests: int = 0


async def execute(kube: AsyncKube, plan: Plan, config: OperatorConfig, memory: AppliedMemory) -> Executed:
    """Carry out `plan`: the cache first (it may hold the Deployment back), deletions, applies, pruning.

    An apply the apiserver refuses (quota, webhook, 5xx, timeout) does not raise: it is returned, to be
    written to status first (ApplyFailed) and then retried with backoff by the caller.
    """
    done = Executed()
    applies = {(s.kind, s.name) for s in plan.applies}
    if not applies and not plan.deletes:
        return done
    namespace, name = plan.key
    children = tuple(c for c in plan.planned.children if (c.kind, c.name) in applies)
    if plan.cache is not None:
        done.cache = await converge_cache(kube, plan.cache, config, plan.cache_seen)
        if done.cache is not None and not done.cache.ready:
            children = tuple(c for c in children if not (c.kind == "Deployment" and c.name == name))
    for step in plan.deletes:
        done.requests += await remove_route(kube, namespace, step.name)
    made = plan.made
    stubs = [(child.stub(), child.hash) for child in children]
    try:
        if any_needs_apply(stubs, plan.live, memory):
            made = made or rendering(plan.body, plan.planned, config, plan.crds)
            wanted = {(c.kind, c.name) for c in children}
            objects = [(o, h) for o, h in made.objects if (o["kind"], o["metadata"]["name"]) in wanted]
            done.applied = await apply_children(kube, objects, plan.live, memory)
        else:
            done.applied = [Applied(c.kind, c.name, None, changed=False, created=False) for c in children]
    except ChildConflict as exc:
        done.problem = ("ChildConflict", str(exc))
    except ApplyError as exc:
        # Said in status first, whatever the cause (quota, webhook, 5xx, timeout), then retried.
        done.failed, done.applied = exc, exc.applied
        done.problem = (APPLY_FAILED, f"the apiserver refused {exc}")
    done.requests += sum(1 for a in done.applied if a.obj is not None) + (1 if done.failed else 0)
    if made is not None and done.failed is None and made.md is not None and plan.prune:
        # A new plan may render fewer autoscaling/routing objects: remove ours it no longer asks for.
        uid = (plan.body.get("metadata") or {}).get("uid")
        await prune(kube, made.md, [obj for obj, _ in made.objects], uid)
    return done


async def write_status(kube: AsyncKube, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
    """Merge-patch the status; the stored object, or None when the ModelDeployment is gone (deleted while
    we worked: its children go with it). Any other refusal raises KubeError (the caller retries)."""
    try:
        return await kube.merge_patch_status(md_path(namespace, name), patch)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


# Kinds whose admission reads another child (apply_children): RBAC checks a RoleBinding against its Role,
# KEDA's admission webhook reads a ScaledObject's target workload (and an HPA targets one too).
APPLIED_AFTER = frozenset({"RoleBinding", "ScaledObject", "HTTPScaledObject", "HorizontalPodAutoscaler"})


async def apply_children(
    kube: AsyncKube,
    objects: Iterable[tuple[Mapping[str, Any], str]],
    live: Mapping[Any, ChildView | None],
    memory: AppliedMemory,
) -> list[Applied]:
    """Apply each rendered child (with_hash's pairs) that needs it (`live`: the watch's view by (kind, name),
    or by kind for the model's own Deployment and Service).

    The children are sent at once, not one after another, so a new ModelDeployment's Deployment, Service and
    status cost two round trips, not three, which is what a burst waits on (docs/operator-at-scale.md).
    Admission reads no child from another, except RBAC (a RoleBinding is checked against the Role it
    names: the binder must hold that Role's permissions) and KEDA's webhook (a ScaledObject's target
    workload must exist): those kinds (APPLIED_AFTER) go once the rest is applied.

    Raises ChildConflict for a child another controller owns, ApplyError for any other refusal (the first
    in render order; it holds the children that were applied).
    """
    results: list[Applied | None] = []  # in render order; None where an apply is on its way
    # (slot, key, hash, view, body, new): `new` when neither the watch nor this process knows the child (a
    # Service or NetworkPolicy it created is never in the watch's view: its ADDED event stops at the gate).
    wanted: list[tuple[int, tuple[str, str, str], str, ChildView | None, Mapping[str, Any], bool]] = []
    for body, value in objects:
        kind, meta = str(body["kind"]), body["metadata"]
        key = (kind, str(meta["namespace"]), str(meta["name"]))
        view = view_of(kind, key[2], live)
        remembered = memory.get(*key)
        if needs_apply(body, value, view, remembered):
            wanted.append((len(results), key, value, view, body, view is None and remembered is None))
            results.append(None)
        else:
            results.append(Applied(kind, key[2], None, changed=False, created=False))

    async def send(
        key: tuple[str, str, str], view: ChildView | None, body: Mapping[str, Any], new: bool
    ) -> dict[str, Any]:
        payload, path = yield_fields(body, view.yielded if view else ()), object_path(body)
        if not (new and key[0] in QUIET_KINDS):
            return await kube.apply(payload, path)
        # A create: its ADDED event is its echo (event_gate.py), whether it comes before the answer or after.
        memory.creating[key] = str(((body.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION))
        try:
            stored = await kube.apply(payload, path)
        finally:
            echoed = memory.creating.pop(key, None) == ""
        if not echoed:
            memory.await_echo(stored)
        return stored

    answers: list[Any] = [None] * len(wanted)
    for later in (False, True):
        wave = [i for i, (_, key, *_) in enumerate(wanted) if (key[0] in APPLIED_AFTER) == later]
        got = await asyncio.gather(
            *(send(wanted[i][1], wanted[i][3], wanted[i][4], wanted[i][5]) for i in wave), return_exceptions=True
        )
        for i, answer in zip(wave, got, strict=True):
            answers[i] = answer
    failure: tuple[str, str, KubeError] | None = None
    for (slot, key, value, view, _, new), stored in zip(wanted, answers, strict=True):
        kind, name = key[0], key[2]
        if isinstance(stored, KubeError):
            if stored.status == 422 and SECOND_CONTROLLER in stored.message:
                raise ChildConflict(f"{kind} {name} already exists and is controlled by another object") from stored
            failure = failure or (kind, name, stored)
            continue
        if isinstance(stored, BaseException):
            raise stored
        created = new and (stored.get("metadata") or {}).get("generation") in (None, 1)
        memory.entries[key] = (value, drift_marker(stored))
        changed = view is None or applied_change(view, stored)
        results[slot] = Applied(kind, name, stored, changed=changed, created=created)
    done = [result for result in results if result is not None]
    if failure is not None:
        raise ApplyError(failure[0], failure[1], failure[2], done) from failure[2]
    return done


def applied_change(view: ChildView, stored: Mapping[str, Any]) -> bool:
    """Whether an apply changed what the child says: our applied hash, its spec (drift marker) or labels.

    Not its resourceVersion: the watch's view may be older than the child's last status write by its own
    controller (event_gate.py passes no event that changes nothing the views read), and an apply that
    changed nothing returns that newer version.
    """
    now = ChildView.from_object(stored)
    return (now.applied_hash, now.marker, now.labels) != (view.applied_hash, view.marker, view.labels)


async def remove_route(kube: AsyncKube, namespace: str, name: str) -> int:
    """Delete our HTTPRoute `name` (an older ModelDeployment holds its model name, routing.py); the number
    of requests made."""
    try:
        await kube.request("DELETE", ROUTE_PATH.format(namespace=namespace, name=name))
    except KubeError as exc:
        if exc.status != 404:
            raise
    return 1


def _suffixed(suffix: str) -> Callable[[str], str]:
    return lambda name: name + suffix


# (apiVersion, kind, the object's name from the ModelDeployment's, CRD or None for built-in) of every object
# we may render beside the Deployment.
MANAGED: tuple[tuple[str, str, Callable[[str], str], str | None], ...] = (
    ("keda.sh/v1alpha1", "ScaledObject", _suffixed(""), SCALED_OBJECT),
    ("http.keda.sh/v1alpha1", "HTTPScaledObject", _suffixed("-http"), HTTP_SCALED_OBJECT),
    ("autoscaling/v2", "HorizontalPodAutoscaler", _suffixed(""), None),
    ("inference.networking.k8s.io/v1", "InferencePool", _suffixed(""), INFERENCE_POOL),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", _suffixed(""), HTTP_ROUTE),
    # The NetworkPolicies of the model and of its picker (render/network.py), while the config asks for them.
    ("networking.k8s.io/v1", "NetworkPolicy", _suffixed(""), None),
    ("networking.k8s.io/v1", "NetworkPolicy", epp_name, None),
    # The pool's endpoint picker (scaling/epp.py); built-in kinds, looked up only while routing was on.
    ("apps/v1", "Deployment", epp_name, None),
    ("v1", "Service", epp_name, None),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", epp_name, None),
    ("rbac.authorization.k8s.io/v1", "Role", epp_name, None),
    ("v1", "ServiceAccount", epp_name, None),
)


async def prune(
    kube: AsyncKube, md: ModelDeployment, rendered: Sequence[Mapping[str, Any]], owner_uid: str | None
) -> list[str]:
    """Delete our autoscaling/routing objects and NetworkPolicies the current plan no longer renders;
    return 'Kind/name's."""
    if not owner_uid:
        return []
    keep = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    crds = await served_crds(kube)
    removed: list[str] = []
    for api_version, kind, name_of, crd in MANAGED:
        name = name_of(md.metadata.name)
        if (kind, name) in keep or (crd is not None and crd not in crds):
            continue
        ref = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": md.metadata.namespace}}
        path = object_path(ref)
        live = await kube.get(path)
        if live is None or controller_uid(live) != owner_uid:
            continue
        try:
            await kube.request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise
        removed.append(f"{kind}/{name}")
    return removed


# --- the shared model cache (CREATE_ONCE) ------------------------------------------------------------

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
    if job is None:
        job = await _create_if_absent(kube, ns, "jobs", lst.listing_job(plan, md, config))
    if why := p.not_ours(job, "Job", plan, label=lst.LISTING_LABEL):
        return foreign_state(plan, why)
    if model_cache.retry_after_edit(job, md):
        await kube.request("DELETE", _ns_path(ns, "jobs", name), query=[("propagationPolicy", "Background")])
        job = await _create_if_absent(kube, ns, "jobs", lst.listing_job(plan, md, config))
    pods = await _pods(kube, ns, lst.LISTING_LABEL, plan.name, seen)
    total = lst.listed_total(job, pods)
    if total is None:
        return lst.listing_state(plan, job, pods)
    return lst.claim_size(plan, total, config)


async def _make_job_identity(kube: AsyncKube, plan: p.CachePlan, claim_uid: str) -> str | None:
    """The download Job's ServiceAccount, Role and RoleBinding: all looked at before any is made, so an
    object of one of those names that is not ours leaves everything as it was (the sentence why)."""
    wanted = {
        "serviceaccounts": ("ServiceAccount", p.service_account(plan, claim_uid)),
        "roles": ("Role", p.role(plan, claim_uid)),
        "rolebindings": ("RoleBinding", p.role_binding(plan, claim_uid)),
    }
    found = {kind: await kube.get(_ns_path(plan.namespace, kind, plan.name)) for kind in wanted}
    for kind, (title, _) in wanted.items():
        existing = found[kind]
        if existing is not None and (why := p.not_ours(existing, title, plan, claim_uid)):
            return why
    for kind, (title, obj) in wanted.items():
        if found[kind] is None:
            made = await _create_if_absent(kube, plan.namespace, kind, obj)
            if why := p.not_ours(made, title, plan, claim_uid):  # made by someone else since we looked
                return why
    return None


async def _delete_listing(kube: AsyncKube, plan: p.CachePlan) -> None:
    """The listing Job has done its part once the claim exists; a missing one is fine."""
    try:
        path = _ns_path(plan.namespace, "jobs", lst.listing_name(plan))
        await kube.request("DELETE", path, query=[("propagationPolicy", "Background")])
    except KubeError as exc:
        if exc.transient:
            raise


async def converge_cache(
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
        if listed and not p.not_ours(claim, "PersistentVolumeClaim", plan):
            await _delete_listing(kube, plan)
    if why := p.not_ours(claim, "PersistentVolumeClaim", plan):
        return foreign_state(plan, why)
    if plan.retention == "Delete" and md.metadata.uid:
        await _adopt_owner(kube, claim, owner)
    size = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    plan = p.with_size(plan, size) if size else plan  # the Job refuses a model larger than the claim as it is
    uid = claim["metadata"].get("uid", "")
    phase = (claim.get("status") or {}).get("phase")
    storage = await _storage_facts(kube, claim) if phase != "Bound" else StorageFacts()
    hopeless = storage.class_exists is False or storage.default_exists is False
    job = await _get(kube, seen.job(ns, plan.name) if seen else None, _ns_path(ns, "jobs", plan.name))
    if job is not None and (why := p.not_ours(job, "Job", plan, uid)):
        return foreign_state(plan, why)
    if job is not None and model_cache.retry_after_edit(job, md):
        await kube.request("DELETE", _ns_path(ns, "jobs", plan.name), query=[("propagationPolicy", "Background")])
        job = None
    if job is None and not hopeless:
        # Created before the claim binds: under WaitForFirstConsumer the Job's pod is what binds it.
        why = await _make_job_identity(kube, plan, uid)
        if why:
            return foreign_state(plan, why)
        job = await _create_if_absent(kube, ns, "jobs", p.job(plan, md, config, uid))
        if why := p.not_ours(job, "Job", plan, uid):  # made by someone else since we looked
            return foreign_state(plan, why)
    pods: list[dict[str, Any]] = []
    if job is not None and phase == "Bound":
        pods = await _pods(kube, ns, p.CACHE_LABEL, plan.name, seen)
    return cache_state(plan, claim, job, pods, storage)
