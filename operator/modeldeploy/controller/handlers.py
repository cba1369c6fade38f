"""The Kopf handlers: thin. They keep the watch views (indexes), call the reconcile, post Events, count.

What wakes a ModelDeployment's reconcile (all converge through the same level-triggered `reconcile`):
- any event of its own that brings a resourceVersion not handled yet (created, edited, listed at a
  restart); the echo of our own status write is dropped before any work;
- a node whose *facts* changed (joined, left, NotReady, cordoned, relabelled): every ModelDeployment is
  re-evaluated, since any decision may depend on any node (status.selection counts nodes per engine);
  decisions are cheap and pure, and writes only happen where something differs;
- its Deployment's events, only when what the status is computed from changed (replicas, rollout,
  generation, engine); a deleted Deployment or Service is re-created; pods that say something new
  (a placement failure, an auto-NGL decision).

Reads come from Kopf's watches (indexes of compact views, views.py), never from GET or LIST; the
watches of our children and pods are filtered by label on the apiserver (settings.py). Writes go
through an async client with a bounded number of requests in flight (kube.py).

Node changes reach ModelDeployments through in-process calls, not writes (an annotation per object
would be churn for GitOps tools; Kopf daemons and timers would put a finalizer on every object);
reconciles of one object are serialised and coalesced (serializer.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from modeldeploy.config import OperatorConfig, load_config
from modeldeploy.controller import liveness, login, nodes_index, relist
from modeldeploy.controller import metrics as metrics_mod
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.children import Children
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy.controller.plan import Memory, World
from modeldeploy.controller.pod_report import worth_a_reconcile
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.serializer import Serializer
from modeldeploy.controller.settings import configure
from modeldeploy.controller.views import ChildView, PodView, md_view, rv_int
from modeldeploy.engines import registry
from modeldeploy.render.labels import INSTANCE, MANAGED_BY, MANAGER
from modeldeploy.scaling.conflicts import Claimant, served_name

MD = (GROUP, VERSION, PLURAL)
OURS = {MANAGED_BY: MANAGER}


@dataclass
class State:
    """What the handlers share, kept in Kopf's memo (so tests and `run.main` can inject it)."""

    config: OperatorConfig
    kube: AsyncKube | None = None
    metrics: metrics_mod.Metrics = field(default_factory=metrics_mod.Metrics)
    serializer: Serializer = field(default_factory=Serializer)
    facts: nodes_index.FactsMemory = field(default_factory=nodes_index.FactsMemory)
    memory: Memory = field(default_factory=Memory)
    children: Children = field(default_factory=Children)  # autoscaling/routing children (child_handlers.py)
    served: dict[tuple[str, str], str] = field(default_factory=dict)  # model name each routes (child_handlers.py)
    watch: liveness.WatchClock = field(default_factory=liveness.WatchClock)
    node_changes: set[str] = field(default_factory=set)  # nodes whose facts the index saw change
    sweep: asyncio.Task[None] | None = None  # re-evaluation after a re-list of nodes (node_event)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # consecutive failed reconciles
    retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)  # pending retries
    metrics_runner: Any = None


def state_of(memo: Any) -> State:
    return memo["modeldeploy"]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings, the API client, the config file, the metrics endpoint."""
    relist.install()  # objects deleted while a watch could not see them (relist.py)
    options = memo.get("options") or {}
    configure(
        settings,
        peering_name=options.get("peering_name"),
        priority=options.get("priority"),
        instance=os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
    )
    if "modeldeploy" not in memo:
        memo["modeldeploy"] = State(config=load_config(options.get("config"), registry.image_keys()))
    state = state_of(memo)
    if state.kube is None:
        state.kube = AsyncKube(login.credentials_of(memo))  # the credentials Kopf's login uses (login.py)
    state.metrics.client_requests = lambda: dict(state.kube.by_verb) if state.kube else {}
    state.watch.silence_s = float(options.get("watch_silence_s") or liveness.SILENCE_S)
    port = options.get("metrics_port", 9090)
    if port:
        state.metrics_runner = await metrics_mod.serve(state.metrics, int(port))
        logger.info("metrics on :%s/metrics", port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state = memo.get("modeldeploy")
    if state is None:
        return
    if state.metrics_runner is not None:
        await state.metrics_runner.cleanup()
        state.metrics_runner = None
    if state.kube is not None:
        await state.kube.close()
        state.kube = None


@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)  # one failure fails the probe
async def probe_watches(memo: kopf.Memo, modeldeployments_index: kopf.Index[Any, Any], **_: Any) -> dict[str, Any]:
    """Liveness: fails when the ModelDeployment watch went silent while objects changed (liveness.py)."""
    state = state_of(memo)
    assert state.kube is not None
    seen = {key: body["metadata"].get("resourceVersion") for key, store in modeldeployments_index.items()
            for body in store}  # fmt: skip
    return await state.watch.check(state.kube, seen, nodes=len(state.facts))


# --- indexes: what the watches keep -------------------------------------------------------------------------


@kopf.index("v1", "nodes")  # core nodes, not metrics.k8s.io's NodeMetrics
async def node_facts_index(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """{ALL: NodeFacts} per Node; see nodes_index.py for why facts, not bodies."""
    state = state_of(memo)
    entry = nodes_index.index_entry(body, state.config.label_mappings)
    if state.facts.observe(name, entry[nodes_index.ALL]):
        state.node_changes.add(name)
    state.watch.saw("nodes")
    return entry


@kopf.index(*MD)
async def modeldeployments_index(
    body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> dict[Any, Any]:
    """{(namespace, name): the ModelDeployment as the reconcile reads it}."""
    state = state_of(memo)
    view = md_view(body)
    key = (namespace, name)
    written = state.memory.written.get(key)
    if written is not None:  # the watch caught up with our own status write: forget our copy
        seen, ours = rv_int(view["metadata"].get("resourceVersion")), rv_int(written[0])
        if seen is None or ours is None or seen >= ours:
            state.memory.written.pop(key, None)
    state.watch.saw("modeldeployments", key, view["metadata"].get("resourceVersion"))
    return {key: view}


@kopf.index("apps", "v1", "deployments", labels=OURS)
async def deployments_index(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, ChildView]:
    owner = workload_owner(body)
    return {(namespace, owner): ChildView.from_object(body)} if owner else {}


@kopf.index("v1", "services", labels=OURS)
async def services_index(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, ChildView]:
    owner = workload_owner(body)
    return {(namespace, owner): ChildView.from_object(body)} if owner else {}


@kopf.index("v1", "pods", labels=OURS)
async def pods_index(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, PodView]:
    owner = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    return {(namespace, owner): PodView.from_object(body)} if owner else {}


def _one(index: Mapping[Any, Any] | None, key: Any) -> Any:
    """The single value an index holds under `key` (None when there is none)."""
    if not index:
        return None
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def rivals_of(body: Mapping[str, Any] | None, names: Mapping[Any, Any] | None) -> tuple[Claimant, ...]:
    """The ModelDeployments serving the same model name as `body` (the served-names index; empty without a gateway)."""
    served = served_name(body) if body else None
    return tuple((names or {}).get(served) or ()) if served else ()


def world_of(state: State, namespace: str, name: str, indexes: Mapping[str, Any]) -> World:
    """The ModelDeployment's world as the watches show it now (read on the loop: consistent)."""
    key = (namespace, name)
    pods = indexes.get("pods_index") or {}
    body = _one(indexes.get("modeldeployments_index"), key)
    return World(
        body=body,
        deployment=_one(indexes.get("deployments_index"), key),
        service=_one(indexes.get("services_index"), key),
        pods=tuple(pods.get(key) or ()) if pods else (),
        nodes=state.facts.snapshot(),
        facts_version=state.facts.version,
        others=state.children.for_owner(namespace, name),
        classes=state.facts.classes(state.config.label_mappings),
        cache=CacheObjects.from_indexes(indexes),
        rivals=rivals_of(body, indexes.get("served_names_index")),
    )


# --- the reconcile, as every handler runs it -------------------------------------------------------------


async def run_reconcile(
    memo: Any,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    logger: logging.Logger,
    *,
    trigger: str,
    coalesce: bool,
    retry: int = 0,
) -> None:
    """Serialised, measured reconcile of one ModelDeployment, with its Events posted.

    On apiserver trouble (a status that cannot be written, an apply refused: the status says so when it
    can), a retry is scheduled with backoff (every trigger is a Kopf event handler, which Kopf never
    retries), so no failure is left to the next event that may never come. `coalesce=False` waits for
    its turn even when another reconcile of the object is already queued.
    """
    state = state_of(memo)
    assert state.kube is not None
    key = (namespace, name)
    async with state.serializer.turn(key, coalesce=coalesce) as go:
        if not go:
            state.metrics.reconciled(trigger, "skipped", 0.0, None)
            return
        world = world_of(state, namespace, name, indexes)  # inside the lock: the newest views
        started = time.monotonic()
        failure: str | None = None
        try:
            result = await reconcile(state.kube, namespace, name, world, state.config, state.memory)
        except KubeError as exc:
            state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
            failure = f"apiserver: {exc}"
        except Exception:
            state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
            raise
        else:
            state.metrics.reconciled(trigger, result.outcome, time.monotonic() - started, result.engine)
            state.metrics.wrote([*(["status"] if result.status_written else []), *result.children_changed])
            state.metrics.requested(result.requests)
            _post_events(result)
            if result.failed is not None:
                failure = f"apply failed: {result.failed}"
            elif result.status_written or result.events:
                summary = f", {result.decision.summary}" if result.decision else ""
                logger.info("%s/%s (%s): %s%s", namespace, name, trigger, result.outcome, summary)
    if failure is None:
        state.failures.pop(key, None)
        return
    attempt = max(retry, state.failures.get(key, 0))
    state.failures[key] = attempt + 1
    delay = retry_delay(attempt)
    logger.warning("%s/%s (%s): %s; retrying in %.0f s", namespace, name, trigger, failure, delay)
    schedule_retry(memo, key, indexes, logger, delay)


def schedule_retry(
    memo: Any, key: tuple[str, str], indexes: Mapping[str, Any], logger: logging.Logger, delay: float
) -> None:
    """Reconcile `key` again after `delay` (one pending retry per object)."""
    state = state_of(memo)
    pending = state.retries.get(key)
    if pending is not None and not pending.done():
        return

    async def later() -> None:
        await asyncio.sleep(delay)
        state.retries.pop(key, None)
        await run_reconcile(memo, key[0], key[1], indexes, logger, trigger="retry", coalesce=True)

    state.retries[key] = asyncio.create_task(later())


def _post_events(result: Any) -> None:
    for event in result.events:
        kopf.event(result.owner, type=event.type, reason=event.reason, message=event.message)
    result.events = []  # posted once, even when the reconcile is retried


def retry_delay(retry: int) -> float:
    """Backoff of a failed reconcile: 2 s, 4 s, 8 s, ... at most a minute.

    Capped at a minute, not more: under a storm of transient refusals (a loaded apiserver, a CRD's
    RESTMapping not yet known) a five-minute cap left objects waiting minutes after the cause had passed
    (measured: p99 create -> Deployment 545 s at 500 x 1,000 on the loaded machine).
    """
    return float(min(60, 2 * 2 ** min(retry, 5)))


# --- ModelDeployments ------------------------------------------------------------------------------------


TRIGGERS = {None: "resume", "ADDED": "create", "MODIFIED": "update"}  # the metrics' names (None: listed at start-up)


@kopf.on.event(*MD)
async def modeldeployment_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """Level-triggered: any news about a ModelDeployment reconciles it; a version already handled is dropped.

    No Kopf change handlers (create/update/resume): they keep a diff base and handler progress in
    `status.kopf`, which costs a deep copy of the body per event and a status write per change, and make
    Kopf wait for the echo of its own write before the next change is handled. The reconcile needs none
    of it: it compares the world with the status itself. What is dropped before any work is an event
    for a resourceVersion the last reconcile already handled: the echo of our own status write, or an
    object listed again after a watch reconnect. A listing at start-up (type None) finds nothing
    handled, so every object is reconciled once (what Kopf's resume handlers did). Failures are retried
    with backoff by `run_reconcile` (Kopf never retries event handlers).
    """
    state = state_of(memo)
    key = (namespace, name)
    if type == "DELETED":
        state.serializer.forget(key)
        state.memory.forget(key)
        state.watch.forget(key)
        state.failures.pop(key, None)
        pending = state.retries.pop(key, None)
        if pending is not None:
            pending.cancel()
        return
    version = (body.get("metadata") or {}).get("resourceVersion")
    if version is not None and state.memory.handled.get(key) == version:
        return
    trigger = TRIGGERS.get(type, "update")
    if type is None and not (body.get("status") or {}).get("observedGeneration"):
        trigger = "create"  # listed, but never handled by any operator: new while none was watching
    await run_reconcile(memo, namespace, name, kwargs, logger, trigger=trigger, coalesce=True)


# --- Nodes ------------------------------------------------------------------------------------------------


@kopf.on.event("v1", "nodes")
async def node_event(type: str | None, name: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    """Re-evaluate the ModelDeployments when a node's facts changed (not on heartbeats), once per burst.

    Every change (a node joining, leaving, going NotReady, cordoned, relabelled; a re-list after the
    watch lost its place) schedules one sweep, which re-evaluates every ModelDeployment decided on older
    facts a moment later. Nodes change in bursts (an autoscaler adding a pool, a zone going NotReady): a
    re-evaluation of every ModelDeployment per node was measured at 210 node changes x 1,000
    ModelDeployments, 30,000 waiting tasks and 1,500 status writes in one burst (docs/operator-at-scale.md).
    """
    state = state_of(memo)
    changed = state.facts.observe(name, None) if type == "DELETED" else name in state.node_changes
    state.node_changes.discard(name)
    if changed:
        schedule_sweep(memo, kwargs, logger)


SWEEP_DELAY_S = 1.0  # a sweep starts once the nodes have not changed for this long...
SWEEP_MAX_DELAY_S = 10.0  # ...or once they have kept changing for this long
SWEEP_WORKERS = 8  # re-evaluations at once (each is a reconcile; most write nothing)


def schedule_sweep(memo: Any, indexes: Mapping[str, Any], logger: logging.Logger) -> None:
    """Once a burst of node changes is over, reconcile the ModelDeployments decided on older facts.

    One sweep at a time; changes that arrive while it runs are picked up by another pass. A ModelDeployment
    not decided yet is not swept: its own reconcile decides on the newest facts. While nodes keep changing
    (a pool joining a few nodes a second), a pass waits for a quiet second, at most SWEEP_MAX_DELAY_S: each
    pass rewrites every status whose selection moved, and one per second of churn was 2.8 status writes
    per ModelDeployment (docs/operator-at-scale.md).
    """
    state = state_of(memo)
    if state.sweep is not None and not state.sweep.done():
        return

    async def reconcile_each(keys: list[tuple[str, str]]) -> None:
        pending = iter(keys)

        async def worker() -> None:
            for namespace, name in pending:
                await run_reconcile(memo, namespace, name, indexes, logger, trigger="node", coalesce=True)

        await asyncio.gather(*(worker() for _ in range(min(SWEEP_WORKERS, len(keys)))))

    async def quiet_nodes() -> None:
        waited = 0.0
        while waited < SWEEP_MAX_DELAY_S:
            version = state.facts.version
            await asyncio.sleep(SWEEP_DELAY_S)
            waited += SWEEP_DELAY_S
            if state.facts.version == version:
                return

    async def sweep() -> None:
        while True:
            await quiet_nodes()
            version = state.facts.version
            stale = sorted(k for k, plan in state.memory.plans.items() if plan.facts_version != version)
            if stale:
                logger.info("nodes changed: re-evaluating %d ModelDeployments", len(stale))
                await reconcile_each(stale)
            if state.facts.version == version:
                return

    state.sweep = asyncio.create_task(sweep())


# --- Children ---------------------------------------------------------------------------------------------


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The ModelDeployment that controls a child (its controller ownerReference, else the instance label)."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(GROUP):
            return ref.get("name")
    return (meta.get("labels") or {}).get(INSTANCE)


def workload_owner(body: Mapping[str, Any]) -> str | None:
    """The owner of the model's own Deployment/Service (named as the ModelDeployment); None for the other
    children of those kinds (the endpoint picker `<name>-epp`, docs/gateway.md), which the world's single
    Deployment/Service view must never pick up."""
    owner = owner_name(body)
    return owner if owner and (body.get("metadata") or {}).get("name") == owner else None


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
async def deployment_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """The Deployment's status flows back into Ready/Progressing; a deleted one is re-created.

    Events that do not change what the status is computed from (the last reconcile saw this very view)
    are dropped here, before any work.
    """
    owner = owner_name(body)
    if not owner:
        return
    state = state_of(memo)
    state.watch.saw("deployments")
    key = (namespace, owner)
    if type == "DELETED":
        state.memory.applied.drop("Deployment", namespace, name)
    else:
        if type is None and key not in state.memory.seen:
            return  # listed at start-up: the owner's own listing event reconciles it; after a re-list, only news count
        child = _one(kwargs.get("deployments_index"), key)  # this event's view, indexed
        view = (child or ChildView.from_object(body)).deployment
        if key in state.memory.seen and state.memory.seen[key] == view:
            return
    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="deployment", coalesce=True)


@kopf.on.event("v1", "pods", labels=OURS)
async def pod_event(
    type: str | None, body: kopf.Body, namespace: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """A pod the scheduler cannot place, or whose auto-NGL init container decided: tell the status.

    Other pod changes reach the status through the Deployment's own status, so they are ignored here.
    """
    owner = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    if type == "DELETED" or not owner or not worth_a_reconcile(body):
        return
    if type is None and (namespace, owner) not in state_of(memo).memory.seen:
        return  # listed at start-up: the owner's own listing event reconciles it, reading the pod index
    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="pod", coalesce=True)


@kopf.on.event("v1", "services", labels=OURS)
async def service_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """A deleted Service is re-created; one edited since our last apply (its spec digest moved) is corrected."""
    owner = owner_name(body)
    if not owner:
        return
    memory = state_of(memo).memory.applied
    if type == "DELETED":
        memory.drop("Service", namespace, name)
    else:
        remembered = memory.get("Service", namespace, name)
        view = ChildView.from_object(body)
        if remembered is None or (view.applied_hash, view.marker) == remembered:
            return  # ours as applied (or not applied by this process: the next reconcile looks at it)
    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="service", coalesce=True)
