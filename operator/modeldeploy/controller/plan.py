"""The plan of one reconcile: the decision, every object it wants and how, and the conditions to report.

Pure but for its memo: `decide` makes the decision and renders the children once per change of what
they depend on (spec, metadata, node facts, the running engine when it was kept, the add-on CRDs the
cluster serves) and keeps the result per object in `Memory.plans`; `plan` turns it and the world the
watches show into a `Plan` for execute.py, the one module that writes. Rendered objects are not read
back: what the plan needs of them (kind, name, hash, labels) is kept beside them (`ChildPlan`).

The rules that protect running workloads (docs/selection.md):
- a spec only the operator can refuse (its pod policy included), or no eligible engine: nothing is
  applied; the Deployment, when there is one, is left exactly as it is (never deleted or replaced);
- the running engine is kept while it stays possible (`current`), unless the spec changed (generation
  moved since the status was written) or `modeldeploy.io/reselect: "true"` asks for a fresh choice;
- the running engine became impossible: the Deployment is kept and the status turns Degraded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from modeldeploy.api.conditions import Condition
from modeldeploy.api.policy import refusal
from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import model_cache, scaling
from modeldeploy.controller.apply import AppliedMemory, with_hash
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.children import Child
from modeldeploy.controller.routing import refused_route
from modeldeploy.controller.status import INVALID_SPEC, REFUSED_BY_POLICY
from modeldeploy.controller.views import ChildView, DeploymentView, PodView, digest
from modeldeploy.engines import registry
from modeldeploy.loader import describe_validation_error
from modeldeploy.render import RenderError, render
from modeldeploy.scaling.conflicts import Claimant
from modeldeploy.scaling.keda_status import with_keda_status
from modeldeploy.selection import select_engine
from modeldeploy.selection.node_classes import NodeClass
from modeldeploy.selection.types import Decision, NodeFacts

RESELECT_ANNOTATION = "modeldeploy.io/reselect"
INTERNED_MAX = 20_000  # distinct candidates kept for sharing between plans (a few per spec shape and node version)
SELECTIONS_MAX = 4_096  # selections kept for sharing between objects (one per distinct spec and stability inputs)

Key = tuple[str, str]  # (namespace, name)
Problem = tuple[str, str]  # (reason, message) of a spec or apply that cannot go through


@dataclass(frozen=True)
class PlanKey:
    """What a kept decision depends on: while a new reconcile's key equals it, the decision and rendering hold.

    `running` is the engine running now, recorded only when the decision departed from a fresh selection
    because of it (see `departs_from_fresh`); `config` is the operator config's identity (a reload makes
    a new object). The node facts are not part of it: `still_holds` says whether they moved in a way the
    decision reads.
    """

    uid: str | None
    generation: int | None
    metadata: str  # digest of labels and annotations
    running: str | None
    reselect: bool
    config: int
    crds: frozenset[str]
    listed_bytes: int | None = None  # the shared cache's listing total (status.model.bytesTotal), once known

    def fresh(self) -> PlanKey:
        """This key as a decision that did not depart from the fresh choice records it: no running engine."""
        return replace(self, running=None)


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


def listed_bytes(status: Mapping[str, Any]) -> int | None:
    """The model's files' total from the shared cache's listing, which sizes a model of unknown size for
    memory placement (docs/memory-placement.md); None until the listing has run."""
    total = (status.get("model") or {}).get("bytesTotal")
    return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None


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
    # The version of the set of node kinds (nodes_index.FactsMemory.kinds_version); None: unknown, so a
    # decision holds only for the very facts it was made on.
    kinds_version: int | None = None
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

    key: PlanKey
    facts_version: int
    valid: bool  # the spec parsed (else `problem` says why)
    decision: Decision | None
    children: tuple[ChildPlan, ...]
    problem: Problem | None
    extra_conditions: tuple[Condition, ...] = ()  # Autoscaling / Routed (scaling.py)
    spec_replicas: int | None = None
    model: tuple[tuple[str, Any], ...] = ()  # status.model without the shared cache's part
    md: ModelDeployment | None = None  # only when the spec uses a model cache
    kinds_version: int | None = None  # World.kinds_version when decided
    by_node: bool = True  # the decision reads individual nodes, not only which kinds of node exist


@dataclass(frozen=True)
class Selection:
    """A selection made for one spec on the node facts of one version, shared by every object whose spec
    and stability inputs are the same (`Memory.selections`).

    Platforms deploy the same model many times (a copy per team or namespace), and a change in the kinds
    of node re-judges every object: one selection per distinct spec then serves them all, and an object
    whose decision it leaves as it was keeps its plan without rendering again (`decide`).
    """

    facts_version: int
    kinds_version: int | None
    by_node: bool
    decision: Decision

    def holds(self, facts_version: int, kinds_version: int | None) -> bool:
        """Whether the node facts now give this selection (the rule of `still_holds`)."""
        if self.facts_version == facts_version:
            return True
        return not self.by_node and kinds_version is not None and self.kinds_version == kinds_version


def reads_nodes(md: ModelDeployment | None, decision: Decision | None) -> bool:
    """Whether a decision depends on individual nodes rather than on the set of node kinds.

    A spec with a nodeSelector or affinity is judged node by node (node_rules._by_host), and a placement
    pinned by host names (memory_fit._pinning, where no label tells the fitting nodes apart) lists them.
    Every other decision is made on node classes with reasons that name kinds of node only
    (`select_engine(counts=False)`), so it is the same for any membership of the same classes.
    """
    if md is None:
        return False
    if md.spec.node_selector or md.spec.affinity is not None:
        return True
    placement = decision.placement if decision is not None else None
    return placement is not None and any("matchFields" in term for term in placement.node_selector_terms)


def still_holds(planned: Planned, facts_version: int, kinds_version: int | None) -> bool:
    """Whether a decision made earlier is the one the node facts now give.

    Node churn inside a pool (a node joining, losing its not-ready taint, leaving while others of its kind
    stay) leaves the set of node kinds as it was: a decision that reads only kinds holds, so it is neither
    made again nor swept (docs/operator-at-scale.md, "Node churn").
    """
    if planned.facts_version == facts_version:
        return True
    return not planned.by_node and kinds_version is not None and planned.kinds_version == kinds_version


@dataclass(frozen=True)
class Rendering:
    """The parsed spec and the rendered children (with_hash pairs) of a plan made or re-made now."""

    md: ModelDeployment | None
    objects: tuple[tuple[dict[str, Any], str], ...]


@dataclass
class Memory:
    """What one operator process remembers between reconciles.

    The decision per object (`plans`: a pure function of spec, node facts and stability inputs, so it is
    reused until one of them changes), the last status written (`written`: the watch may not have
    delivered it yet), the drift markers of applied children (`applied`), and the Deployment view each
    status was computed from (`seen`: Deployment events that would not change the status are dropped
    before any work).
    """

    applied: AppliedMemory = field(default_factory=AppliedMemory)
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # (resourceVersion, status)
    plans: dict[Key, Planned] = field(default_factory=dict)
    seen: dict[Key, DeploymentView | None] = field(default_factory=dict)
    interned: dict[Any, Any] = field(default_factory=dict)  # one copy of equal candidates across objects
    selections: dict[tuple[Any, ...], Selection] = field(default_factory=dict)  # by spec and stability inputs
    # The ModelDeployment's resourceVersion each object's last reconcile left (its own status write, or
    # the version it read): an event for that version brings nothing new and is dropped unhandled.
    handled: dict[Key, str] = field(default_factory=dict)
    # Status writes under way: what the reconcile read of the object (status.reconcile_inputs) and the
    # status it writes, so that the write's echo is known before its answer is (indexes.own_status_echo).
    writing: dict[Key, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.written.pop(key, None)
        self.handled.pop(key, None)
        self.plans.pop(key, None)
        self.seen.pop(key, None)
        self.writing.pop(key, None)
        self.applied.forget(*key)


def render_children(
    md: ModelDeployment, decision: Decision, config: OperatorConfig, crds: frozenset[str]
) -> tuple[tuple[tuple[dict[str, Any], str], ...], tuple[Condition, ...]]:
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


def fresh_key(key: PlanKey, cached: Planned | None) -> PlanKey:
    """`key` as a plan that did not depart from the fresh choice records it: no running engine (when
    `cached` is given: only when the running engine is the one that plan chose)."""
    if cached is None:
        return key.fresh()
    engine = cached.decision.engine if cached.decision is not None else None
    return key.fresh() if engine is not None and key.running == engine else key


def carried(cached: Planned, decision: Decision | None, by_node: bool, key: PlanKey, world: World) -> Planned | None:
    """The plan of the same spec and inputs carried over to a decision judged again, when it renders the
    same children (rendering reads the engine and the placement only: render/__init__.py), else None.

    A change in the kinds of node re-judges every object; what it moves is mostly a reason of an engine
    not chosen ("tainted ..." gone from a failure), so the children are kept and only the decision, which
    the status reports, is new.
    """
    if not cached.valid or cached.problem is not None or cached.decision is None or decision is None:
        return None
    version, kinds = world.facts_version, world.kinds_version
    if cached.decision == decision:
        return replace(cached, facts_version=version, kinds_version=kinds)
    if decision.engine is None or (decision.engine, decision.placement) != (
        cached.decision.engine,
        cached.decision.placement,
    ):
        return None
    key = key if departs_from_fresh(decision) else fresh_key(key, None)
    return replace(cached, key=key, decision=decision, by_node=by_node, facts_version=version, kinds_version=kinds)


def decide(
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
    cache_key = PlanKey(
        uid=meta.get("uid"),
        generation=meta.get("generation"),
        metadata=digest([meta.get("labels"), meta.get("annotations")]),
        running=current,
        reselect=reselect,
        config=id(config),
        crds=crds,
        listed_bytes=listed_bytes(status),
    )
    same_key = cached is not None and cached.key in (cache_key, fresh_key(cache_key, cached))
    if cached is not None and same_key:
        if cached.facts_version == world.facts_version:
            return cached, None
        if still_holds(cached, world.facts_version, world.kinds_version):
            held = replace(cached, facts_version=world.facts_version)  # the sweep sees it current
            memory.plans[key] = held
            return held, None
    selection_key = (digest(body.get("spec")), id(config), current, reselect, cache_key.listed_bytes)
    shared = memory.selections.get(selection_key)
    if shared is not None and not shared.holds(world.facts_version, world.kinds_version):
        shared = None
    if cached is not None and same_key and shared is not None:
        kept = carried(cached, shared.decision, shared.by_node, cache_key, world)
        if kept is not None:  # another object with this spec was judged on these facts already
            memory.plans[key] = kept
            return kept, None
    md, invalid = parse(body)
    decision: Decision | None = None
    objects: tuple[tuple[dict[str, Any], str], ...] = ()
    extra: tuple[Condition, ...] = ()
    problem: Problem | None = (INVALID_SPEC, invalid) if invalid else None
    refused = refusal(md.spec, config) if md is not None else None
    if refused is not None:
        problem = (REFUSED_BY_POLICY, refused)  # docs/security.md, "Pod policy": nothing is selected or applied
    elif md is not None:
        if shared is not None:
            decision, by_node = shared.decision, shared.by_node
        else:
            decision = select_engine(
                md.spec,
                world.nodes,
                config,
                current=current,
                reselect=reselect,
                classes=world.classes,
                listed_bytes=cache_key.listed_bytes,
                counts=False,
            )
            if len(memory.interned) > INTERNED_MAX:
                memory.interned.clear()  # candidates of node facts long gone; the plans keep their own
            decision = intern_decision(decision, memory.interned)
            if len(memory.selections) >= SELECTIONS_MAX:
                memory.selections.clear()
            by_node = reads_nodes(md, decision)
            memory.selections[selection_key] = Selection(world.facts_version, world.kinds_version, by_node, decision)
        if cached is not None and same_key:
            kept = carried(cached, decision, by_node, cache_key, world)
            if kept is not None:  # judged again; the same children: nothing to render
                memory.plans[key] = kept
                return kept, None
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
        kinds_version=world.kinds_version,
        by_node=reads_nodes(md, decision),
    )
    memory.plans[key] = planned
    return planned, Rendering(md, objects)


def rendering(body: Mapping[str, Any], planned: Planned, config: OperatorConfig, crds: frozenset[str]) -> Rendering:
    """The children of a kept plan rendered again (the same spec, decision and CRDs: the same bytes)."""
    md = planned.md or parse(body)[0]
    if md is None or planned.decision is None or planned.decision.engine is None:
        return Rendering(md, ())
    return Rendering(md, render_children(md, planned.decision, config, crds)[0])


class Mode(StrEnum):
    """How execute.py brings one object about."""

    APPLY = "apply"  # server-side apply, not sent while the watch shows it applied and unedited (apply.py)
    CREATE_ONCE = "create"  # created when absent, never updated: the shared model cache's objects
    DELETE = "delete"  # ours and no longer wanted


@dataclass(frozen=True)
class Step:
    """One object the plan wants brought about, and how."""

    mode: Mode
    kind: str
    name: str
    hash: str = ""  # APPLY: the hash of the rendered object


@dataclass(frozen=True)
class Plan:
    """Everything one reconcile decided, for execute.py to carry out and report.py to describe.

    `steps`: the children to apply and the objects to delete, in order. `cache`: the parsed spec when it
    uses the shared model cache, whose objects execute.py creates once (its claim, ServiceAccount, Role,
    RoleBinding and Jobs, modelcache/plan.py) and whose state holds the Deployment back until the
    weights are ready. `prune`: remove our autoscaling/routing objects and NetworkPolicies this rendering
    no longer has.
    """

    key: Key
    body: Mapping[str, Any]
    status: Mapping[str, Any]  # the last status, ours if the watch has not shown it yet
    planned: Planned
    made: Rendering | None  # the rendering when the decision was made now (None: kept)
    steps: tuple[Step, ...]
    conditions: tuple[Condition, ...]  # autoscaling and routing, as the add-ons and rivals leave them
    cache: ModelDeployment | None
    prune: bool
    crds: frozenset[str]
    live: Mapping[Any, ChildView | None]  # the watch's view of each child, by kind or (kind, name)
    cache_seen: CacheObjects | None  # the watches' view of the cache's objects (None: read from the API)

    @property
    def applies(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.mode == Mode.APPLY)

    @property
    def deletes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.mode == Mode.DELETE)


def stale_policies(world: World, planned: Planned) -> bool:
    """Whether the watches show a NetworkPolicy of ours this plan does not render (the operator config
    switched them off, or the picker went): execute.py's prune removes it."""
    rendered = {(c.kind, c.name) for c in planned.children}
    return any(kind == "NetworkPolicy" and (kind, name) not in rendered for kind, name in world.others)


def plan(
    world: World,
    status: Mapping[str, Any],
    config: OperatorConfig,
    memory: Memory,
    key: Key,
    crds: frozenset[str] = frozenset(),
) -> Plan:
    """The plan of this reconcile from the world the watches show (`world.body` is not None): the decision
    (kept or made now), the children to apply, what to delete, the conditions of autoscaling and routing."""
    assert world.body is not None
    body, name = world.body, key[1]
    planned, made = decide(body, status, world, config, memory, key, crds)
    reported = [c.reported for (kind, _), c in world.others.items() if kind == "ScaledObject" and c.view.name == name]
    conditions = with_keda_status(planned.extra_conditions, reported[0] if reported else ())
    conditions, no_route = refused_route(body, world.rivals, config, conditions)  # name not granted, or held
    steps: list[Step] = []
    cache: ModelDeployment | None = None
    live: dict[Any, ChildView | None] = {}
    if planned.children and planned.problem is None:
        deployment = world.deployment
        md = planned.md
        if deployment is not None and md is not None and md.spec.autoscaling is not None:
            # docs/autoscaling.md: created with the minimum, then spec.replicas is the autoscaler's. KEDA's
            # scale to zero takes the field from our apply without an entry of its own in managedFields,
            # so ownership alone cannot tell: a re-apply would set the minimum back (0 -> 1).
            deployment = replace(deployment, yielded=tuple(dict.fromkeys((*deployment.yielded, "spec.replicas"))))
        live = {"Deployment": deployment, "Service": world.service}
        live.update({key: child.view for key, child in world.others.items()})  # by (kind, name)
        children = planned.children
        if planned.md is not None and planned.md.spec.cache is not None and planned.md.spec.cache.shared:
            cache = planned.md  # docs/model-cache.md: the Deployment waits for the weights
        if no_route:
            children = tuple(c for c in children if c.kind != "HTTPRoute")
            if ("HTTPRoute", name) in world.others:
                steps.append(Step(Mode.DELETE, "HTTPRoute", name))
        steps[:0] = [Step(Mode.APPLY, c.kind, c.name, c.hash) for c in children]
    return Plan(
        key=key,
        body=body,
        status=status,
        planned=planned,
        made=made,
        steps=tuple(steps),
        conditions=conditions,
        cache=cache,
        prune=bool(planned.extra_conditions) or scaling.had_scaling(status) or stale_policies(world, planned),
        crds=crds,
        live=live,
        cache_seen=world.cache,
    )
