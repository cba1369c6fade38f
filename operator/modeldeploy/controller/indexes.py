"""What the watches keep: Kopf indexes of compact views (views.py, nodes_index.py), and the world of one
ModelDeployment read from them (`world_of`). Reads come from here, never from GET or LIST; the watches of
our children and pods are filtered by label on the apiserver (settings.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, KIND
from modeldeploy.controller import nodes_index
from modeldeploy.controller.apply import QUIET_KINDS, Applied
from modeldeploy.controller.cache_views import CacheObjects
from modeldeploy.controller.children import Child
from modeldeploy.controller.plan import World
from modeldeploy.controller.state import MD, OURS, State, state_of
from modeldeploy.controller.status import shows_written
from modeldeploy.controller.views import ChildView, PodView, md_view, rv_int
from modeldeploy.render.labels import INSTANCE
from modeldeploy.scaling.conflicts import Claimant, served_name


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


def own_status_echo(state: State) -> Callable[[Mapping[str, Any]], bool]:
    """The event gate's test for the echo of our own status write (event_gate.py): a ModelDeployment whose
    resourceVersion is the one that write returned. The index keeps the version before it, and the
    reconcile keeps the status it wrote (`memory.written`, read through views.newer_status) until a newer
    event passes; the liveness probe counts the version as delivered (liveness.WatchClock). An event that
    arrives while the write is under way, before its answer, is its echo when it shows what the write
    leaves (status.shows_written): about one echo in five came that way in a burst."""

    def echo(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = meta.get("resourceVersion")
        if version is None:
            return False
        written = state.memory.written.get(key)
        if written is None or written[0] != version:
            # The echo may come before the write's answer (another connection): it is the write's when it
            # shows exactly what the write leaves; anything else that moved lets it pass.
            writing = state.memory.writing.get(key)
            if writing is None or not shows_written(obj, *writing):
                return False
        state.watch.saw_echo("modeldeployments", key, str(version))
        return True

    return echo


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


def one(index: Mapping[Any, Any] | None, key: Any) -> Any:
    """The single value an index holds under `key` (None when there is none)."""
    if not index:
        return None
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def rivals_of(body: Mapping[str, Any] | None, names: Mapping[Any, Any] | None) -> tuple[Claimant, ...]:
    """The ModelDeployments serving the same model name as `body` (the served-names index; empty without a gateway)."""
    served = served_name(body) if body else None
    return tuple((names or {}).get(served) or ()) if served else ()


def keep_created_children(state: State, namespace: str, owner: str, applied: Iterable[Applied]) -> None:
    """After a reconcile's applies: the views child_handlers.py would have taken from the ADDED events of the
    quiet children it created, which stop at the event gate (own_create_echo), taken from the creates'
    answers. Not the model's own Service: only its applied memory reads it (apply.needs_apply holds a
    child applied but not yet in the watch)."""
    for child in applied:
        if child.obj is None or not child.created or child.kind not in QUIET_KINDS:
            continue
        if not (child.kind == "Service" and child.name == owner):
            state.children.put(namespace, Child.from_object(owner, child.obj))


def own_create_echo(state: State) -> Callable[[Mapping[str, Any]], bool]:
    """The event gate's test of an ADDED event: the echo of a create this process made (execute.py notes
    each create of a quiet child as its answer comes: AppliedMemory.await_echo)."""
    return state.memory.applied.is_echo


def world_of(state: State, namespace: str, name: str, indexes: Mapping[str, Any]) -> World:
    """The ModelDeployment's world as the watches show it now (read on the loop: consistent)."""
    key = (namespace, name)
    pods = indexes.get("pods_index") or {}
    body = one(indexes.get("modeldeployments_index"), key)
    return World(
        body=body,
        deployment=one(indexes.get("deployments_index"), key),
        service=one(indexes.get("services_index"), key),
        pods=tuple(pods.get(key) or ()) if pods else (),
        nodes=state.facts.snapshot(),
        facts_version=state.facts.version,
        others=state.children.for_owner(namespace, name),
        classes=state.facts.classes(state.config.label_mappings),
        kinds_version=state.facts.kinds_version,  # after classes(): current for this version
        cache=CacheObjects.from_indexes(indexes),
        rivals=rivals_of(body, indexes.get("served_names_index")),
    )
