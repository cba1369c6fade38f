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
controller; execute.py tells a change by the applied hash and drift marker instead), and every field no
view reads. A download or listing Job's pod is never gated: the model cache's handlers read its whole
status (cache_handlers.py).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.config import LabelMappings
from modeldeploy.controller.views import ChildView, PodView
from modeldeploy.modelcache.listing import LISTING_LABEL
from modeldeploy.modelcache.plan import CACHE_LABEL
from modeldeploy.render.labels import INSTANCE
from modeldeploy.selection.nodes import node_facts

Key = Callable[[Mapping[str, Any]], Hashable]
UNGATED = object()  # a key never equal to the one before: the event always passes

# Events of the gated resources, by (resource "group/plural", "passed" or "skipped"), for the metrics endpoint.
counted: collections.Counter[tuple[str, str]] = collections.Counter()


def child_key(obj: Mapping[str, Any]) -> Hashable:
    """A Deployment's or Service's view without its resourceVersion, and the owner that indexes it."""
    meta = obj.get("metadata") or {}
    owners = tuple(
        (ref.get("kind"), ref.get("name"), bool(ref.get("controller"))) for ref in meta.get("ownerReferences") or ()
    )
    return dataclasses.replace(ChildView.from_object(obj), resource_version=None), owners


def pod_key(obj: Mapping[str, Any]) -> Hashable:
    """What pods_index and pod_event read of a model's pod: its view and its owner label."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if CACHE_LABEL in labels or LISTING_LABEL in labels:
        return UNGATED
    return PodView.from_object(obj), labels.get(INSTANCE)


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


async def gated(events: AsyncIterator[Any], key: Key, name: str) -> AsyncIterator[Any]:
    """The stream without the MODIFIED events whose object's key did not change since it last passed."""
    last: dict[str, Hashable] = {}
    async for event in events:
        if isinstance(event, dict) and isinstance(event.get("object"), dict):
            kind, obj = event.get("type"), event["object"]
            uid = (obj.get("metadata") or {}).get("uid")
            if uid and kind == "DELETED":
                last.pop(uid, None)
            elif uid:
                now = key(obj)
                if kind == "MODIFIED" and now is not UNGATED and last.get(uid) == now:
                    counted[(name, "skipped")] += 1
                    continue
                last[uid] = now
            counted[(name, "passed")] += 1
        yield event


_table: dict[tuple[str, str], Key] = {}  # the keys of the running operator's config (install)


def install(mappings: LabelMappings) -> None:
    """Put the gate in front of the watches Kopf reads (after relist.install; before the watches start).

    Called at every start-up: the keys follow that start's label mappings; the wrapper is put in once."""
    _table.clear()
    _table.update(keys(mappings))
    inner = watching.continuous_watch
    if getattr(inner, "gated", False):
        return

    async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
        resource = kwargs.get("resource")
        key = _table.get((getattr(resource, "group", None) or "", getattr(resource, "plural", None) or ""))
        events = inner(**kwargs)
        if key is None:
            async for event in events:
                yield event
            return
        name = f"{resource.group}/{resource.plural}" if resource.group else str(resource.plural)  # type: ignore[union-attr]
        async for event in gated(events, key, name):
            yield event

    continuous_watch.gated = True  # type: ignore[attr-defined]
    continuous_watch.__wrapped_inner__ = inner  # type: ignore[attr-defined]
    watching.continuous_watch = continuous_watch
