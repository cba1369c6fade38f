"""The Kopf handlers' registrations: thin. The watch views are kept by indexes.py, the reconcile is run by
retries.py (serialised, measured, retried), node changes are swept by sweep.py, the shared state is
state.py's.

What wakes a ModelDeployment's reconcile (all converge through the same level-triggered `reconcile`):
- any event of its own that brings a resourceVersion not handled yet (created, edited, listed at a
  restart); the echo of our own status write stops before Kopf (event_gate.py);
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

import logging
import os
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, PLURAL
from modeldeploy.config import load_config
from modeldeploy.controller import event_gate, liveness, login, relist
from modeldeploy.controller import metrics as metrics_mod
from modeldeploy.controller.event_poster import EventPoster
from modeldeploy.controller.indexes import one, own_create_echo, own_status_echo, owner_name
from modeldeploy.controller.kube import AsyncKube
from modeldeploy.controller.pod_report import worth_a_reconcile
from modeldeploy.controller.retries import run_reconcile
from modeldeploy.controller.settings import COMPONENT, configure
from modeldeploy.controller.state import MD, OURS, State, state_of
from modeldeploy.controller.sweep import schedule_sweep
from modeldeploy.controller.views import ChildView
from modeldeploy.engines import registry
from modeldeploy.render.labels import INSTANCE


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings, the API client, the config file, the metrics endpoint."""
    relist.install()  # objects deleted while a watch could not see them (relist.py)
    options = memo.get("options") or {}
    configure(settings, peering_name=options.get("peering_name"), priority=options.get("priority"))
    if "modeldeploy" not in memo:
        memo["modeldeploy"] = State(config=load_config(options.get("config"), registry.image_keys()))
    state = state_of(memo)
    # After relist: events no handler reads stop, and so do the echoes of our status writes and of the
    # quiet children we create (event_gate.py, apply.QUIET_KINDS).
    created = own_create_echo(state)
    event_gate.install(
        state.config.label_mappings,
        {
            (GROUP, PLURAL, "MODIFIED"): own_status_echo(state),
            ("", "services", "ADDED"): created,
            ("networking.k8s.io", "networkpolicies", "ADDED"): created,
        },
    )
    if state.kube is None:
        state.kube = AsyncKube(login.credentials_of(memo))  # the credentials Kopf's login uses (login.py)
    if state.events is None:
        instance = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or COMPONENT  # the chart sets POD_NAME
        state.events = EventPoster(state.kube, component=COMPONENT, instance=instance)
    state.metrics.client_requests = lambda: dict(state.kube.by_verb) if state.kube else {}
    state.metrics.watch_events = lambda: dict(event_gate.counted)
    state.metrics.events = lambda: dict(state.events.counts) if state.events else {}
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
    if state.events is not None:
        await state.events.close()  # what the last reconciles queued, for a moment
        state.events = None
    if state.kube is not None:
        await state.kube.close()
        state.kube = None


@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)  # one failure fails the probe
async def probe_watches(memo: kopf.Memo, modeldeployments_index: kopf.Index[Any, Any], **_: Any) -> dict[str, Any]:
    """Liveness: fails when the ModelDeployment watch went silent while objects changed (liveness.py)."""
    state = state_of(memo)
    assert state.kube is not None
    seen = {key: state.watch.delivered(key, body["metadata"].get("resourceVersion"))
            for key, store in modeldeployments_index.items() for body in store}  # fmt: skip
    return await state.watch.check(state.kube, seen, nodes=len(state.facts))


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
    for a resourceVersion the last reconcile already handled: the echo of our own status write (most
    stop before Kopf, at the event gate), or an object listed again after a watch reconnect. A listing
    at start-up (type None) finds nothing handled, so every object is reconciled once (what Kopf's resume
    handlers did). Failures are retried with backoff by `run_reconcile` (Kopf never retries event handlers).
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

    def handled() -> bool:  # now, and again when its turn comes (the echo of a write under way now)
        return version is not None and state.memory.handled.get(key) == version

    if handled():
        return
    trigger = TRIGGERS.get(type, "update")
    if type is None and not (body.get("status") or {}).get("observedGeneration"):
        trigger = "create"  # listed, but never handled by any operator: new while none was watching
    await run_reconcile(memo, namespace, name, kwargs, logger, trigger=trigger, coalesce=True, unless=handled)


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

    def seen(child: ChildView | None) -> bool:  # the last reconcile computed its status from this view
        return child is not None and key in state.memory.seen and state.memory.seen[key] == child.deployment

    if type == "DELETED":
        state.memory.applied.drop("Deployment", namespace, name)
    else:
        if type is None and key not in state.memory.seen:
            return  # listed at start-up: the owner's own listing event reconciles it; after a re-list, only news count
        if seen(one(kwargs.get("deployments_index"), key) or ChildView.from_object(body)):  # this event's view
            return

    def still_seen() -> bool:  # when its turn comes (the ADDED event of a Deployment being created now)
        return type != "DELETED" and seen(one(kwargs.get("deployments_index"), key))

    await run_reconcile(memo, namespace, owner, kwargs, logger, trigger="deployment", coalesce=True, unless=still_seen)


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
