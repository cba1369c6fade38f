"""Watch events that change nothing the handlers read stop here, before Kopf handles them.

Kopf handles every event of a watched resource the same way: a per-object worker, every index function,
every event handler with its keyword arguments, its logger and its (empty) patch. Under a burst that
machinery was the largest share of the operator's CPU (docs/operator-at-scale.md, "Where the CPU goes"),
and most of the events it handled were dropped by our own handlers at their first line: a pod moving
from Pending to Running (only a placement failure or the auto-NGL decision is read), a Deployment whose
controller rewrote a condition's timestamp, a Node whose kubelet reported new images.

So each of those resources has a *relevance key*: a pure function of an object that covers everything
the index functions and event handlers read of it (the views of views.py, the node facts). A MODIFIED
event whose key equals the key of the last event passed on for the same object cannot change an index
entry or wake a handler, so it is not passed to Kopf at all. Listings, ADDED and DELETED events always
pass (and DELETED forgets the key); a resource without a key passes everything.

What the key deliberately leaves out: a child's resourceVersion (it moves on every status write by its
controller; execute.py tells a change by the applied hash and drift marker instead), every field no
view reads, and a Deployment's bookkeeping counts, which are kept only as the rollout they amount to
(`status.shown`). So an index entry may keep such counts older than the object's: two views with one key
give the same status, so nothing reads the difference. A download or listing Job's pod is never gated:
the model cache's handlers read its whole status (cache_handlers.py).

Three more kinds of event stop here:
- a pod that says nothing (no placement failure, no auto-NGL decision: `pod_key` is None) and has never
  been passed on: no index entry or handler reads such a pod, so Kopf does not hear of it until it says
  something (most of our pods, whose ADDED and DELETED events then never reach Kopf);
- the echo of the operator's own status write (an echo test of `install`, for MODIFIED events): the
  MODIFIED event that carries exactly the resourceVersion that write returned. The reconcile already
  knows that object (it keeps the status it wrote until a newer event passes, views.newer_status) and
  its handler would drop the event at its first line; the liveness probe is told the version was
  delivered (liveness.WatchClock);
- the ADDED event of a Service or NetworkPolicy the operator itself just created (an echo test of
  `install`, for ADDED events): the create's answer showed exactly that object (its uid and
  resourceVersion), nobody but its creator writes those kinds, and what the index and handlers would
  take from the event was taken from the answer (apply.AppliedMemory.await_echo,
  indexes.keep_created_children). The object stays unknown here, so its next event (an edit, a
  deletion) passes.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.config import LabelMappings
from modeldeploy.controller.status import shown
from modeldeploy.controller.views import ChildView, PodView
from modeldeploy.modelcache.listing import LISTING_LABEL
from modeldeploy.modelcache.plan import CACHE_LABEL
from modeldeploy.render.labels import INSTANCE
from modeldeploy.selection.nodes import node_facts

Key = Callable[[Mapping[str, Any]], Hashable]
Echo = Callable[[Mapping[str, Any]], bool]  # whether a MODIFIED object is the echo of our own write
UNGATED = object()  # a key never equal to the one before: the event always passes
# A key of None: the object says nothing any index or handler reads; one never passed on is not passed.

# Events of the gated resources, by (resource "group/plural", "passed" or "skipped"), for the metrics endpoint.
counted: collections.Counter[tuple[str, str]] = collections.Counter()


def child_key(obj: Mapping[str, Any]) -> Hashable:
    """A Deployment's or Service's view without its resourceVersion (a Deployment's status as the
    ModelDeployment's status shows it), and the owner that indexes it."""
    meta = obj.get("metadata") or {}
    owners = tuple(
        (ref.get("kind"), ref.get("name"), bool(ref.get("controller"))) for ref in meta.get("ownerReferences") or ()
    )
    view = ChildView.from_object(obj)
    deployment = shown(view.deployment) if view.deployment is not None else None
    return dataclasses.replace(view, resource_version=None, deployment=None), deployment, owners


def pod_key(obj: Mapping[str, Any]) -> Hashable:
    """What pods_index and pod_event read of a model's pod: its view and its owner label; None while
    the pod says nothing they read (report.py reads a pod's auto-NGL decision and placement failure only)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if CACHE_LABEL in labels or LISTING_LABEL in labels:
        return UNGATED
    view = PodView.from_object(obj)
    if view.n_gpu_layers is None and view.unschedulable is None:
        return None
    return view, labels.get(INSTANCE)


def node_key(mappings: LabelMappings) -> Key:
    """A Node's facts as selection reads them (nodes_index.py): heartbeats and images move none of them."""
    return lambda obj: node_facts(obj, mappings)


def keys(mappings: LabelMappings) -> dict[tuple[str, str], Key]:
    """(group, plural) -> the relevance key, for the resources the operator watches in volume."""
    return {
        ("apps", "deployments"): child_key,
        ("", "services"): child_key,
        ("", "pods"): pod_key,
        ("", "nodes"): node_key(mappings),
    }


def _ungated(obj: Mapping[str, Any]) -> Hashable:
    return UNGATED


def stopped(kind: str | None, now: Hashable, known: bool, before: Hashable) -> bool:
    """Whether an event of `kind` whose object's key is `now` stops here. Pure.

    `known`: an event of the object passed before (`before` is its key). Listings always pass."""
    if kind is None:
        return False
    if not known:
        return now is None  # says nothing, never heard of: ADDED, MODIFIED and DELETED alike
    return kind == "MODIFIED" and now is not UNGATED and before == now


async def gated(
    events: AsyncIterator[Any], key: Key, name: str, echoes: Mapping[str, Echo] | None = None
) -> AsyncIterator[Any]:
    """The stream without the events `stopped` stops and without the echoes of our own writes (`echoes`: by
    event type, the test that an object of that event is one: a status write's MODIFIED, a create's
    ADDED). A stopped ADDED leaves the object unknown here, so its next event passes."""
    echoes = echoes or {}
    last: dict[str, Hashable] = {}
    async for event in events:
        if isinstance(event, dict) and isinstance(event.get("object"), dict):
            kind, obj = event.get("type"), event["object"]
            uid = (obj.get("metadata") or {}).get("uid")
            if uid:
                now = key(obj)
                echo = echoes.get(kind) if kind is not None else None
                if stopped(kind, now, uid in last, last.get(uid)) or (echo is not None and echo(obj)):
                    counted[(name, "skipped")] += 1
                    continue
                if kind == "DELETED":
                    last.pop(uid, None)
                else:
                    last[uid] = now
            counted[(name, "passed")] += 1
        yield event


_table: dict[tuple[str, str], Key] = {}  # the keys of the running operator's config (install)
_echoes: dict[tuple[str, str], dict[str, Echo]] = {}  # (group, plural) -> event type -> the running operator's test


def install(mappings: LabelMappings, echoes: Mapping[tuple[str, str, str], Echo] | None = None) -> None:
    """Put the gate in front of the watches Kopf reads (after relist.install; before the watches start).

    Called at every start-up: the keys follow that start's label mappings, the echo tests (by group,
    plural and event type) that start's state; the wrapper is put in once."""
    _table.clear()
    _table.update(keys(mappings))
    _echoes.clear()
    for (group, plural, kind), echo in (echoes or {}).items():
        _echoes.setdefault((group, plural), {})[kind] = echo
    inner = watching.continuous_watch
    if getattr(inner, "gated", False):
        return

    async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
        resource = kwargs.get("resource")
        which = (getattr(resource, "group", None) or "", getattr(resource, "plural", None) or "")
        key, echoes = _table.get(which), _echoes.get(which)
        events = inner(**kwargs)
        if key is None and echoes is None:
            async for event in events:
                yield event
            return
        name = f"{resource.group}/{resource.plural}" if resource.group else str(resource.plural)  # type: ignore[union-attr]
        async for event in gated(events, key or _ungated, name, echoes):
            yield event

    continuous_watch.gated = True  # type: ignore[attr-defined]
    continuous_watch.__wrapped_inner__ = inner  # type: ignore[attr-defined]
    watching.continuous_watch = continuous_watch
