"""The Kopf handlers: thin. They read the world (indexes), call the reconcile, post Events, count.

What wakes a ModelDeployment's reconcile (all converge through the same level-triggered `reconcile`):
- its own create/update/resume (Kopf's change detection; a spec or annotation change, or a restart);
- a node whose *facts* changed (joined, left, NotReady, cordoned, relabelled): every ModelDeployment is
  re-evaluated, since any decision may depend on any node (status.selection counts nodes per engine);
  decisions are cheap and pure, and writes only happen where something differs;
- its Deployment's events (status flowing back into Ready/Progressing; a deleted child is re-created).

Design: node changes reach ModelDeployments through in-process calls, not through writes. Patching an
annotation on each affected ModelDeployment would be a write to a user's object (a new resourceVersion
and a watch event for every GitOps controller), and Kopf daemons/timers would put a finalizer on every
object. Reconciles of one object are serialised, and a request that finds one already queued (not yet
started) is dropped, since the queued one will read the newer world anyway; bursts of node events thus
cost one reconcile per ModelDeployment, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from modeldeploy.config import OperatorConfig, load_config
from modeldeploy.controller import metrics as metrics_mod
from modeldeploy.controller import nodes_index
from modeldeploy.controller.apply import Kube, KubeError
from modeldeploy.controller.pod_report import worth_a_reconcile
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.settings import configure
from modeldeploy.render.labels import INSTANCE, MANAGED_BY, MANAGER
from modeldeploy.selection.nodes import node_facts

MD = (GROUP, VERSION, PLURAL)
OURS = {MANAGED_BY: MANAGER}
RETRIES = (1.0, 2.0, 5.0)  # event-triggered reconciles: Kopf does not retry on.event handlers, we do


class Serializer:
    """One reconcile at a time per object, and coalescing of requests that would only repeat one queued."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._queued: Counter[Hashable] = Counter()

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable, *, coalesce: bool) -> AsyncIterator[bool]:
        """Yield True when this caller should run now (holding the object's lock), False when redundant."""
        if coalesce and self._queued[key] > 0:
            yield False
            return
        self._queued[key] += 1
        lock = self._locks.setdefault(key, asyncio.Lock())
        acquired = False
        try:
            async with lock:
                acquired = True
                self._dequeue(key)
                yield True
        finally:
            if not acquired:  # cancelled while waiting: do not leave a phantom "queued" behind
                self._dequeue(key)

    def _dequeue(self, key: Hashable) -> None:
        self._queued[key] -= 1
        if self._queued[key] <= 0:
            del self._queued[key]

    def forget(self, key: Hashable) -> None:
        """Drop the lock of a deleted object (unless a reconcile still holds or waits for it)."""
        lock = self._locks.get(key)
        if lock is not None and not lock.locked() and not self._queued.get(key):
            del self._locks[key]


@dataclass
class State:
    """What the handlers share, kept in Kopf's memo (so tests and `run.main` can inject it)."""

    config: OperatorConfig
    kube: Kube
    metrics: metrics_mod.Metrics = field(default_factory=metrics_mod.Metrics)
    serializer: Serializer = field(default_factory=Serializer)
    facts: nodes_index.FactsMemory = field(default_factory=nodes_index.FactsMemory)
    metrics_runner: Any = None


def state_of(memo: Any) -> State:
    return memo["modeldeploy"]


def _load_kube_client_config() -> None:
    """In-cluster service account when there is one, else the kubeconfig ($KUBECONFIG), like Kopf's login."""
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings, the API client, the config file, the metrics endpoint."""
    options = memo.get("options") or {}
    configure(
        settings,
        peering_name=options.get("peering_name"),
        priority=options.get("priority"),
        instance=os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
    )
    if "modeldeploy" not in memo:
        _load_kube_client_config()
        memo["modeldeploy"] = State(config=load_config(options.get("config")), kube=Kube())
    state = state_of(memo)
    port = options.get("metrics_port", 9090)
    if port:
        state.metrics_runner = await metrics_mod.serve(state.metrics, int(port))
        logger.info("metrics on :%s/metrics", port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state = memo.get("modeldeploy")
    if state is not None and state.metrics_runner is not None:
        await state.metrics_runner.cleanup()
        state.metrics_runner = None


@kopf.on.probe(id="nodes")
def probe_nodes(memo: kopf.Memo, **_: Any) -> int:
    """Liveness payload: how many nodes the operator knows (0 on a cluster without nodes is fine)."""
    return len(state_of(memo).facts)


# --- indexes ---------------------------------------------------------------------------------------------


@kopf.index("v1", "nodes")  # core nodes, not metrics.k8s.io's NodeMetrics
def node_facts_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """{ALL: NodeFacts} per Node; see nodes_index.py for why facts, not bodies."""
    return nodes_index.index_entry(body, state_of(memo).config.label_mappings)


@kopf.index(*MD)
def modeldeployments_index(namespace: str, name: str, **_: Any) -> dict[str, tuple[str, str]]:
    """{ALL: (namespace, name)}: who to re-evaluate when nodes change, without a LIST."""
    return {nodes_index.ALL: (namespace, name)}


# --- the reconcile, as every handler runs it -------------------------------------------------------------


async def run_reconcile(
    memo: Any,
    namespace: str,
    name: str,
    node_index: Mapping[str, Any] | None,
    logger: logging.Logger,
    *,
    trigger: str,
    coalesce: bool,
    retry: int = 0,
) -> None:
    """Serialised, measured reconcile of one ModelDeployment, with its Events posted.

    Change handlers (coalesce=False) raise kopf.TemporaryError on transient apiserver trouble so Kopf
    retries them; event-triggered ones retry here a few times, since Kopf never retries on.event.
    """
    state = state_of(memo)
    async with state.serializer.turn((namespace, name), coalesce=coalesce) as go:
        if not go:
            state.metrics.reconciled(trigger, "skipped", 0.0, None)
            return
        attempts = 1 if not coalesce else len(RETRIES) + 1
        for attempt in range(attempts):
            nodes = nodes_index.snapshot(node_index)  # copied on the loop, inside the lock: the newest facts
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(reconcile, state.kube, namespace, name, nodes, state.config)
            except KubeError as exc:
                state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
                if not coalesce:
                    raise kopf.TemporaryError(f"apiserver: {exc}", delay=retry_delay(retry)) from exc
                if attempt + 1 < attempts:
                    logger.warning("reconcile of %s/%s failed (%s); retrying", namespace, name, exc)
                    await asyncio.sleep(RETRIES[attempt])
                    continue
                logger.error("reconcile of %s/%s failed after %d attempts: %s", namespace, name, attempts, exc)
                return
            except Exception:
                state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
                raise
            state.metrics.reconciled(trigger, result.outcome, time.monotonic() - started, result.engine)
            state.metrics.wrote([*(["status"] if result.status_written else []), *result.children_changed])
            if result.failed is not None and coalesce and attempt + 1 < attempts:
                _post_events(result)
                logger.warning("apply for %s/%s failed (%s); retrying", namespace, name, result.failed)
                await asyncio.sleep(RETRIES[attempt])
                continue
            break
        _post_events(result)
        if result.failed is not None:
            if not coalesce:  # the status already says what failed; Kopf retries with backoff
                raise kopf.TemporaryError(f"apply failed: {result.failed}", delay=retry_delay(retry))
            logger.error("apply for %s/%s failed after %d attempts: %s", namespace, name, attempts, result.failed)
        if result.status_written or result.events:
            logger.info(
                "%s/%s (%s): %s%s",
                namespace,
                name,
                trigger,
                result.outcome,
                f", {result.decision.summary}" if result.decision else "",
            )


def _post_events(result: Any) -> None:
    for event in result.events:
        kopf.event(result.owner, type=event.type, reason=event.reason, message=event.message)
    result.events = []  # posted once, even when the reconcile is retried


def retry_delay(retry: int) -> float:
    """Backoff of a failed change handler: 5 s, 10 s, 20 s, ... at most 5 minutes."""
    return float(min(300, 5 * 2 ** min(retry, 6)))


# --- ModelDeployments ------------------------------------------------------------------------------------


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD)
async def modeldeployment_changed(
    namespace: str,
    name: str,
    reason: str,
    retry: int,
    memo: kopf.Memo,
    node_facts_index: kopf.Index,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """A spec or annotation change, a new object, or the operator (re)starting: reconcile now."""
    trigger = str(getattr(reason, "value", reason))
    await run_reconcile(memo, namespace, name, node_facts_index, logger, trigger=trigger, coalesce=False, retry=retry)


@kopf.on.event(*MD)
async def modeldeployment_event(type: str | None, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Forget per-object bookkeeping once a ModelDeployment is gone."""
    if type == "DELETED":
        state_of(memo).serializer.forget((namespace, name))


# --- Nodes ------------------------------------------------------------------------------------------------


@kopf.on.event("v1", "nodes")
async def node_event(
    type: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    node_facts_index: kopf.Index,
    modeldeployments_index: kopf.Index,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Re-evaluate every ModelDeployment when a node's facts changed (not on heartbeats)."""
    state = state_of(memo)
    facts = None if type == "DELETED" else node_facts(body, state.config.label_mappings)
    changed = state.facts.observe(name, facts)
    if type is None or not changed:
        return  # the initial listing (resume handlers see the full index) or a heartbeat
    keys = sorted(set(modeldeployments_index.get(nodes_index.ALL, ())))
    if not keys:
        return
    logger.info("node %s %s: re-evaluating %d ModelDeployments", name, (type or "").lower(), len(keys))
    await asyncio.gather(
        *(
            run_reconcile(memo, ns, md_name, node_facts_index, logger, trigger="node", coalesce=True)
            for ns, md_name in keys
        )
    )


# --- Children ---------------------------------------------------------------------------------------------


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The ModelDeployment that controls a child (its controller ownerReference, else the instance label)."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(GROUP):
            return ref.get("name")
    return (meta.get("labels") or {}).get(INSTANCE)


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
async def deployment_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    node_facts_index: kopf.Index,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """The Deployment's status flows back into Ready/Progressing; a deleted one is re-created."""
    owner = owner_name(body)
    if type is None or not owner:
        return
    await run_reconcile(memo, namespace, owner, node_facts_index, logger, trigger="deployment", coalesce=True)


@kopf.on.event("v1", "pods", labels=OURS)
async def pod_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    node_facts_index: kopf.Index,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """A pod the scheduler cannot place, or whose auto-NGL init container decided: tell the status.

    Other pod changes reach the status through the Deployment's own status, so they are ignored here.
    Kopf applies the `labels` filter in the operator (the watch streams every pod in scope), so this
    returns before any API call for pods that are not ours or say nothing new.
    """
    owner = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    if type in (None, "DELETED") or not owner or not worth_a_reconcile(body):
        return
    await run_reconcile(memo, namespace, owner, node_facts_index, logger, trigger="pod", coalesce=True)


@kopf.on.event("v1", "services", labels=OURS)
async def service_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    node_facts_index: kopf.Index,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """A deleted Service is re-created (other Service changes are corrected on the next reconcile)."""
    owner = owner_name(body)
    if type != "DELETED" or not owner:
        return
    await run_reconcile(memo, namespace, owner, node_facts_index, logger, trigger="service", coalesce=True)
