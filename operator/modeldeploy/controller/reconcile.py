"""One reconcile of one ModelDeployment: decide, apply what differs, write status when it differs.

Level-triggered: whatever woke it (a spec change, a node change, a Deployment's status), it reads the
world from the watches (`World`: the ModelDeployment, its Deployment and Service, its pods, the node
facts) and converges. Reads cost no API call; writes are server-side applies of children whose watch
view differs from what would be applied (apply.needs_apply) and one status merge patch when the status
differs. A steady reconcile (nothing changed) makes no request at all.

`Memory` is what one operator process remembers between reconciles: the decision per object (a pure
function of spec, node facts and stability inputs, so it is reused until one of them changes), the
last status written (the watch may not have delivered it yet), the drift markers of applied children,
and the Deployment view each status was computed from (so Deployment events that would not change the
status are dropped before any work).

The rules that protect running workloads (docs/selection.md):
- a spec only the operator can refuse, or no eligible engine: nothing is applied; the Deployment, when
  there is one, is left exactly as it is (never deleted or replaced);
- the running engine is kept while it stays possible (`current`), unless the spec changed (generation
  moved since the status was written) or `modeldeploy.io/reselect: "true"` asks for a fresh choice;
- the running engine became impossible: the Deployment is kept and the status turns Degraded;
- an apply the apiserver refuses (quota, webhook, 5xx, timeout): the decision and the refusal are
  written to status first (ApplyFailed), then the caller retries with backoff.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import model_cache, scaling
from modeldeploy.controller.apply import (
    Applied,
    AppliedMemory,
    ApplyError,
    ChildConflict,
    any_needs_apply,
    apply_children,
    md_path,
    with_hash,
)
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.children import Child
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy.controller.routing import claimants, older_route, remove_route
from modeldeploy.controller.status import (
    ENGINE_LABEL,
    INVALID_SPEC,
    DeploymentView,
    EventSpec,
    Observation,
    compute_status,
    events_for,
    status_patch,
)
from modeldeploy.controller.views import (
    ChildView,
    PodView,
    digest,
    md_view,
    newer_status,
    pods_n_gpu_layers,
    pods_unschedulable,
    rv_int,
)
from modeldeploy.engines import registry
from modeldeploy.loader import describe_validation_error
from modeldeploy.modelcache.status import CacheState
from modeldeploy.render import RenderError, render
from modeldeploy.scaling.conflicts import Claimant, served_name
from modeldeploy.scaling.keda_status import with_keda_status
from modeldeploy.selection import select_engine
from modeldeploy.selection.node_classes import NodeClass
from modeldeploy.selection.types import Decision, NodeFacts

RESELECT_ANNOTATION = "modeldeploy.io/reselect"
APPLY_FAILED = "ApplyFailed"
PORT = 8000
RUNNING = 3  # the running engine's place in a plan's key (plan)
INTERNED_MAX = 20_000  # distinct candidates kept for sharing between plans (a few per spec shape and node version)

Key = tuple[str, str]  # (namespace, name)


def utc_now() -> str:
    """RFC 3339, second precision (what metav1.Time serialises to)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint(namespace: str, name: str) -> str:
    """The OpenAI-compatible base URL of the Service (docs/api.md)."""
    return f"http://{name}.{namespace}.svc:{PORT}/v1"


def parse(body: Mapping[str, Any]) -> tuple[ModelDeployment | None, str | None]:
    """The object as the API models read it, or why not (the CRD lets through what only pydantic refuses)."""
    doc = {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec")}
    try:
        return ModelDeployment.model_validate(doc), None
    except ValidationError as exc:
        return None, describe_validation_error(exc)


def current_engine(status: Mapping[str, Any], deployment_engine: str | None) -> str | None:
    """The engine running now: the Deployment's label first (the truth), else what the status says.

    A name no registered engine answers to (an engine removed since) is skipped.
    """
    for value in (deployment_engine, status.get("engine")):
        if value and value in registry.names():
            return str(value)
    return None


def stability_inputs(
    body: Mapping[str, Any], status: Mapping[str, Any], deployment_engine: str | None
) -> tuple[str | None, bool]:
    """(`current`, `reselect`) for select_engine.

    `current` only while the spec is the one the status last described: a spec change re-selects freely,
    as does the reselect annotation. The annotation is not removed afterwards: that would be a write to
    the user's object that GitOps tools report as drift; while it is set, every decision is fresh.
    """
    meta = body.get("metadata") or {}
    reselect = str((meta.get("annotations") or {}).get(RESELECT_ANNOTATION, "")).lower() == "true"
    same_spec = status.get("observedGeneration") is not None and status.get("observedGeneration") == meta.get(
        "generation"
    )
    current = current_engine(status, deployment_engine) if same_spec and not reselect else None
    return current, reselect


@dataclass(frozen=True)
class World:
    """What the watches show for one ModelDeployment, plus the node facts (and their version)."""

    body: Mapping[str, Any] | None
    deployment: ChildView | None
    service: ChildView | None
    pods: tuple[PodView, ...]
    nodes: tuple[NodeFacts, ...]
    facts_version: int
    others: Mapping[tuple[str, str], Child] = field(default_factory=dict)  # autoscaling/routing, by (kind, name)
    classes: tuple[NodeClass, ...] | None = None  # `nodes` grouped (node_classes.py), kept per facts version
    cache: CacheObjects | None = None  # the shared model cache's objects (None: read from the API)
    rivals: tuple[Claimant, ...] = ()  # ModelDeployments serving the same model name (routing.py)


@dataclass(frozen=True, slots=True)
class ChildPlan:
    """What a steady reconcile needs of one rendered child: where it goes, its content's hash, its labels.

    The rendered object itself is not kept (a Deployment is kilobytes of dicts, per object, for a process
    that holds thousands): it is rendered again on the rare reconcile that applies (`rendering`).
    """

    kind: str
    namespace: str
    name: str
    hash: str
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, obj: Mapping[str, Any], value: str) -> ChildPlan:
        meta = obj["metadata"]
        labels = tuple(sorted((meta.get("labels") or {}).items()))
        return cls(str(obj["kind"]), str(meta["namespace"]), str(meta["name"]), value, labels)

    def stub(self) -> dict[str, Any]:
        """As much of the object as apply.needs_apply reads."""
        meta = {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)}
        return {"kind": self.kind, "metadata": meta}


@dataclass(frozen=True)
class Planned:
    """A decision and what it renders to (each child's hash and labels), or why nothing renders.

    Kept per object between reconciles, so it holds only what a steady reconcile reads: the parsed spec
    is kept only when the shared model cache reads it on every reconcile (`md`), and identical
    candidates of different objects are one object (`Memory.interned`).
    """

    key: tuple[Any, ...]
    facts_version: int
    valid: bool  # the spec parsed (else `problem` says why)
    decision: Decision | None
    children: tuple[ChildPlan, ...]
    problem: tuple[str, str] | None
    extra_conditions: tuple[tuple[str, str, str, str], ...] = ()  # Autoscaling / Routed (scaling.py)
    spec_replicas: int | None = None
    model: tuple[tuple[str, Any], ...] = ()  # status.model without the shared cache's part
    md: ModelDeployment | None = None  # only when the spec uses a model cache


@dataclass(frozen=True)
class Rendering:
    """The parsed spec and the rendered children (with_hash pairs) of a plan made or re-made now."""

    md: ModelDeployment | None
    objects: tuple[tuple[dict[str, Any], str], ...]


@dataclass
class Memory:
    """What one operator process remembers between reconciles (see the module docstring)."""

    applied: AppliedMemory = field(default_factory=AppliedMemory)
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # (resourceVersion, status)
    plans: dict[Key, Planned] = field(default_factory=dict)
    seen: dict[Key, DeploymentView | None] = field(default_factory=dict)
    interned: dict[Any, Any] = field(default_factory=dict)  # one copy of equal candidates across objects
    # The ModelDeployment's resourceVersion each object's last reconcile left (its own status write, or
    # the version it read): an event for that version brings nothing new and is dropped unhandled.
    handled: dict[Key, str] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.written.pop(key, None)
        self.handled.pop(key, None)
        self.plans.pop(key, None)
        self.seen.pop(key, None)
        self.applied.forget(*key)


@dataclass
class Result:
    """What a reconcile did, for events, metrics and logs."""

    outcome: str  # applied, kept, pending, invalid, gone
    engine: str | None = None
    decision: Decision | None = None
    status_written: bool = False
    children_changed: list[str] = field(default_factory=list)  # kinds whose object the apply changed
    events: list[EventSpec] = field(default_factory=list)
    owner: dict[str, Any] = field(default_factory=dict)  # a body reference for posting Events
    failed: ApplyError | None = None  # an apply the apiserver refused: in status already, to be retried
    requests: int = 0  # API requests this reconcile made


def render_children(
    md: ModelDeployment, decision: Decision, config: OperatorConfig, crds: frozenset[str]
) -> tuple[tuple[tuple[dict[str, Any], str], ...], tuple[tuple[str, str, str, str], ...]]:
    """The rendered children with their hashes, and the autoscaling/routing conditions. Raises RenderError."""
    assert decision.engine is not None
    rendered, scaling_plan = scaling.add_scaling(md, decision.engine, render(md, decision, config), config, crds)
    return tuple(with_hash(obj) for obj in rendered), scaling.conditions(scaling_plan)


def intern_decision(decision: Decision, interned: dict[Any, Any]) -> Decision:
    """The decision with candidates equal to another object's replaced by that one (node name tuples
    of hundreds of names per engine would otherwise be kept once per ModelDeployment)."""
    candidates = tuple(interned.setdefault(c, c) for c in decision.candidates)
    return replace(decision, candidates=candidates)


def departs_from_fresh(decision: Decision | None) -> bool:
    """Whether a running engine made this decision differ from a fresh selection's.

    select_engine only departs from its fresh choice when the running engine is another one (kept, or no
    longer possible). A plan that did not depart holds for any running engine equal to its choice, so its
    key records no running engine: without that, every ModelDeployment was selected and rendered twice,
    the second time (its engine now running) for the same bytes (docs/operator-at-scale.md).
    """
    return decision is not None and (decision.kept_current or decision.current_impossible)


def fresh_key(cache_key: tuple[Any, ...], cached: Planned | None) -> tuple[Any, ...]:
    """`cache_key` as a plan that did not depart from the fresh choice records it: no running engine (when
    `cached` is given: only when the running engine is the one that plan chose)."""
    if cached is None:
        return (*cache_key[:RUNNING], None, *cache_key[RUNNING + 1 :])
    engine = cached.decision.engine if cached.decision is not None else None
    return fresh_key(cache_key, None) if engine is not None and cache_key[RUNNING] == engine else cache_key


def plan(
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    world: World,
    config: OperatorConfig,
    memory: Memory,
    key: Key,
    crds: frozenset[str] = frozenset(),
) -> tuple[Planned, Rendering | None]:
    """The decision and rendered children, reused while spec, metadata, nodes, stability inputs and the
    served add-on CRDs hold; and the rendering when the plan was made now (None: reused)."""
    meta = body.get("metadata") or {}
    dep_engine = world.deployment.deployment.engine if world.deployment and world.deployment.deployment else None
    current, reselect = stability_inputs(body, status, dep_engine)
    cached = memory.plans.get(key)
    cache_key = (
        meta.get("uid"),
        meta.get("generation"),
        digest([meta.get("labels"), meta.get("annotations")]),
        current,
        reselect,
        world.facts_version,
        id(config),
        crds,
    )
    if cached is not None and cached.key in (cache_key, fresh_key(cache_key, cached)):
        return cached, None
    md, invalid = parse(body)
    decision: Decision | None = None
    objects: tuple[tuple[dict[str, Any], str], ...] = ()
    extra: tuple[tuple[str, str, str, str], ...] = ()
    problem: tuple[str, str] | None = (INVALID_SPEC, invalid) if invalid else None
    if md is not None:
        decision = select_engine(
            md.spec, world.nodes, config, current=current, reselect=reselect, classes=world.classes
        )
        if len(memory.interned) > INTERNED_MAX:
            memory.interned.clear()  # candidates of node facts long gone; the plans keep their own
        decision = intern_decision(decision, memory.interned)
        if decision.engine is not None:
            try:
                objects, extra = render_children(md, decision, config, crds)
            except RenderError as exc:
                problem = (INVALID_SPEC, str(exc))
    if not departs_from_fresh(decision):
        cache_key = fresh_key(cache_key, None)  # holds whatever engine runs, as long as it is this one
    planned = Planned(
        cache_key,
        world.facts_version,
        valid=md is not None,
        decision=decision,
        children=tuple(ChildPlan.of(obj, value) for obj, value in objects),
        problem=problem,
        extra_conditions=extra,
        spec_replicas=md.spec.replicas if md is not None else None,
        model=tuple(model_cache.model_status(md, None).items()) if md is not None else (),
        md=md if md is not None and md.spec.cache is not None else None,
    )
    memory.plans[key] = planned
    return planned, Rendering(md, objects)


def rendering(body: Mapping[str, Any], planned: Planned, config: OperatorConfig, crds: frozenset[str]) -> Rendering:
    """The children of a kept plan rendered again (the same spec, decision and CRDs: the same bytes)."""
    md = planned.md or parse(body)[0]
    if md is None or planned.decision is None or planned.decision.engine is None:
        return Rendering(md, ())
    return Rendering(md, render_children(md, planned.decision, config, crds)[0])


async def reconcile(
    kube: AsyncKube,
    namespace: str,
    name: str,
    world: World,
    config: OperatorConfig,
    memory: Memory,
    now: Callable[[], str] = utc_now,
) -> Result:
    """Converge one ModelDeployment. Raises KubeError when the status cannot be written (the caller retries)."""
    key = (namespace, name)
    body = world.body
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        memory.forget(key)
        return Result("gone")  # garbage collection takes the children; nothing to do
    meta = body["metadata"]
    ref = {k: meta.get(k) for k in ("name", "namespace", "uid")}
    owner = {"apiVersion": API_VERSION, "kind": KIND, "metadata": ref}
    old_status = newer_status(body, memory.written.get(key))
    crds = await scaling.served_crds(kube) if scaling.wanted(body.get("spec"), config) else frozenset()
    planned, made = plan(body, old_status, world, config, memory, key, crds)
    decision, problem = planned.decision, planned.problem
    deployment = world.deployment.deployment if world.deployment and not world.deployment.deleting else None
    auto_ngl = bool(world.deployment and world.deployment.auto_ngl)

    applied: list[Applied] = []
    failed: ApplyError | None = None
    requests = 0
    cache: CacheState | None = None
    reported = [c.reported for (kind, _), c in world.others.items() if kind == "ScaledObject" and c.view.name == name]
    extra = with_keda_status(planned.extra_conditions, reported[0] if reported else ())
    extra, routed_by = older_route(body, world.rivals, config, extra)  # another holds the model name: no route
    if planned.children and problem is None:
        live: dict[Any, ChildView | None] = {"Deployment": world.deployment, "Service": world.service}
        live.update({key: child.view for key, child in world.others.items()})  # by (kind, name)
        children = planned.children
        if planned.md is not None and planned.md.spec.cache is not None and planned.md.spec.cache.shared:
            # The shared model cache (docs/model-cache.md): its state is read from the watches, and the
            # Deployment is held back (a running one left as it is) until the weights are Ready.
            cache = await model_cache.converge(kube, planned.md, config, world.cache)
            if cache is not None:
                extra = (*extra, cache.condition)
                if not cache.ready:
                    children = tuple(c for c in children if not (c.kind == "Deployment" and c.name == name))
        if routed_by is not None:
            children = tuple(c for c in children if c.kind != "HTTPRoute")
            requests += await remove_route(kube, namespace, name, ("HTTPRoute", name) in world.others)
        stubs = [(child.stub(), child.hash) for child in children]
        try:
            if any_needs_apply(stubs, live, memory.applied):
                made = made or rendering(body, planned, config, crds)
                wanted = {(c.kind, c.name) for c in children}
                objects = [(o, h) for o, h in made.objects if (o["kind"], o["metadata"]["name"]) in wanted]
                applied = await apply_children(kube, objects, live, memory.applied)
            else:
                applied = [Applied(c.kind, c.name, None, changed=False, created=False) for c in children]
        except ChildConflict as exc:
            problem = ("ChildConflict", str(exc))
        except ApplyError as exc:
            # Said in status first, whatever the cause (quota, webhook, 5xx, timeout), then retried.
            failed, applied = exc, exc.applied
            problem = (APPLY_FAILED, f"the apiserver refused {exc}")
        requests += sum(1 for a in applied if a.obj is not None) + (1 if failed else 0)
        scaled = planned.extra_conditions or scaling.had_scaling(old_status)
        if made is not None and failed is None and made.md is not None and scaled:
            # A new plan may render fewer autoscaling/routing objects: remove ours it no longer asks for.
            await scaling.prune(kube, made.md, [obj for obj, _ in made.objects], meta.get("uid"))
        for child in applied:
            if child.kind == "Deployment" and child.name == name and child.obj is not None:
                deployment = DeploymentView.from_object(child.obj)
                auto_ngl = ChildView.from_object(child.obj).auto_ngl

    waiting = deployment is not None and deployment.ready_replicas < deployment.replicas
    spec_replicas = planned.spec_replicas if planned.valid else (body.get("spec") or {}).get("replicas")
    observation = Observation(
        generation=meta.get("generation"),
        decision=decision,
        deployment=deployment,
        endpoint=endpoint(namespace, name),
        problem=problem,
        spec_replicas=spec_replicas if isinstance(spec_replicas, int) else None,
        auto_ngl=auto_ngl and deployment is not None and deployment.engine == "llama.cpp",
        n_gpu_layers=pods_n_gpu_layers(world.pods) if auto_ngl else None,
        unschedulable=pods_unschedulable(world.pods) if waiting else None,
        retrying=failed is not None and failed.transient,
        extra_conditions=extra,
    )
    new_status = compute_status(observation, old_status, now())
    weights = model_cache.model_status(planned.md, cache) if planned.md is not None else dict(planned.model)
    if planned.valid and weights:
        new_status["model"] = weights
    patch = model_cache.fix_model_patch(old_status, status_patch(old_status, new_status))
    if patch:
        requests += 1
        try:
            stored = await kube.merge_patch_status(md_path(namespace, name), patch)
        except KubeError as exc:
            if exc.status == 404:
                memory.forget(key)
                return Result("gone", requests=requests)  # deleted while we worked: its children go with it
            raise
        version = (stored.get("metadata") or {}).get("resourceVersion")
        if version:
            written = {k: v for k, v in (stored.get("status") or {}).items() if k != "kopf"}
            memory.written[key] = (str(version), written)
            memory.handled[key] = str(version)
    elif meta.get("resourceVersion"):
        before = rv_int(memory.handled.get(key))
        read = rv_int(str(meta["resourceVersion"]))
        if before is None or read is None or read > before:  # not behind our own write the watch lags on
            memory.handled[key] = str(meta["resourceVersion"])
    memory.seen[key] = deployment

    events = events_for(old_status, new_status)
    if failed is not None and (old_status.get("reason"), failure_message(old_status)) != (APPLY_FAILED, problem[1]):  # type: ignore[index]
        events.append(EventSpec("Warning", APPLY_FAILED, problem[1]))  # type: ignore[index]
    events.extend(child_events(applied, new_status.get("engine") or (decision.engine if decision else None) or ""))

    if problem is not None:
        outcome = "invalid" if failed is None else "failed"
    elif decision is not None and decision.engine is not None:
        outcome = "applied"
    elif deployment is not None:
        outcome = "kept"
    else:
        outcome = "pending"
    return Result(
        outcome=outcome,
        engine=decision.engine if decision is not None else None,
        decision=decision,
        status_written=patch is not None,
        children_changed=[child.kind for child in applied if child.changed],
        events=events,
        owner=owner,
        failed=failed,
        requests=requests,
    )


def child_events(applied: Sequence[Applied], engine: str) -> list[EventSpec]:
    """One Event per verb for the children one reconcile created or updated, naming them all.

    One per child (a new ModelDeployment has a Deployment and a Service, more with autoscaling or routing)
    tripled the Events a burst posts, and Kopf posts them a few at a time: 1,000 new objects left 2,000
    Events queued after the last Deployment was applied (docs/operator-at-scale.md).
    """
    events = []
    for verb, created in (("Created", True), ("Updated", False)):
        names = [f"{child.kind} {child.name}" for child in applied if child.changed and child.created == created]
        if names:
            events.append(EventSpec("Normal", verb, f"{verb.lower()} {', '.join(names)} ({engine})"))
    return events


def failure_message(status: Mapping[str, Any]) -> str | None:
    """The message of the condition that carries an apply failure (Reconciling or Stalled), if any."""
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("Reconciling", "Stalled") and condition.get("reason") == APPLY_FAILED:
            return str(condition.get("message", "")).removesuffix("; retrying")
    return None


def deployment_engine_label(deployment: Mapping[str, Any] | None) -> str | None:
    """The engine label of a Deployment body (for callers holding a whole object)."""
    return ((deployment or {}).get("metadata") or {}).get("labels", {}).get(ENGINE_LABEL)


async def read_world(kube: AsyncKube, namespace: str, name: str, nodes: tuple[NodeFacts, ...]) -> World:
    """The World read from the apiserver (GETs and a LIST) rather than the watches: for tools and tests
    that reconcile one object outside the operator."""
    from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION

    body = await kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    served = served_name(body) if body else None
    every: list[dict[str, Any]] = []
    if served:  # the ModelDeployments that may hold its model name on the Gateway (routing.py)
        every = (await kube.request("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}")).get("items") or []
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    service = await kube.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    pods = await kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", f"app.kubernetes.io/instance={name}")]
    )
    return World(
        body=md_view(body) if body else None,
        deployment=ChildView.from_object(deployment) if deployment else None,
        service=ChildView.from_object(service) if service else None,
        pods=tuple(PodView.from_object(p) for p in pods.get("items") or ()),
        nodes=nodes,
        facts_version=hash(nodes),
        rivals=claimants(every, served),
    )


def reconcile_once(
    configuration: Any, namespace: str, name: str, nodes: Sequence[NodeFacts], config: OperatorConfig
) -> Result:
    """One reconcile outside the operator (blocking): the world read fresh, nothing remembered.

    `configuration` is the `kubernetes` package's client configuration (credentials, TLS). For tools
    and tests that drive one reconcile by hand; the operator itself runs `reconcile` on its watches.
    """
    import asyncio

    async def once() -> Result:
        client = AsyncKube(configuration)
        try:
            world = await read_world(client, namespace, name, tuple(nodes))
            return await reconcile(client, namespace, name, world, config, Memory())
        finally:
            await client.close()

    return asyncio.run(once())
