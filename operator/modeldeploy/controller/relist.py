"""Objects deleted while a watch could not see them: reported when Kopf lists the resource again.

Kopf lists a resource when its watch starts, and again whenever the watch lost its place (a 410 Gone
"too old resource version" after an apiserver restart or a long disconnect). An object deleted in
between is simply absent from the new listing, and Kopf does not report it (checked in Kopf 1.45:
`_cogs/clients/watching.py` yields the listing as `type: None` events and then a `LISTED` mark, which
`_core/reactor/queueing.py` only uses for readiness): its index entries stay, and no handler hears of
it. A child deleted during an apiserver outage would then never be re-created, a ModelDeployment
deleted meanwhile would stay in the indexes, and a node removed meanwhile would still count in
decisions.

So the operator wraps Kopf's `continuous_watch` (one resource in one namespace: the listing, then the
watch): it remembers the identity of every object its stream has shown (namespace, name, uid, labels,
owner references), and when a listing ends it emits a `DELETED` event for each remembered object the
listing did not contain, just before Kopf's `LISTED` mark. Kopf then does what a real DELETED does:
the object's index entries go, its event handlers run (handlers.py re-creates a deleted child, forgets
a deleted ModelDeployment, re-evaluates after a node left). The first listing remembers nothing
before it, so it reports nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.controller.views import shared

# What a DELETED event needs of an object, kept compact (one per watched object, for the operator's life):
# (apiVersion, kind, name, namespace, uid, labels as sorted pairs, ownerReferences as sorted pairs each),
# strings shared between objects (views.shared). Dicts of the event's own body held about 2 KiB per object,
# 8 MB at 1,000 ModelDeployments (docs/operator-at-scale.md).
Identity = tuple[Any, ...]

_original = watching.continuous_watch
# (resource, namespace) -> uid -> what the stream last showed of that object (its identity only).
_known: dict[tuple[str, str | None], dict[str, Identity]] = {}


def _pairs(mapping: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(shared(dict(mapping or {})).items()))


def identity(obj: Mapping[str, Any]) -> Identity:
    """What a DELETED event needs of an object: kind, name, namespace, uid, labels, owners (not its spec)."""
    meta = obj.get("metadata") or {}
    owners = tuple(_pairs(ref) for ref in meta.get("ownerReferences") or ())
    texts = shared([obj.get("apiVersion"), obj.get("kind"), meta.get("name"), meta.get("namespace")])
    return (*texts, meta.get("uid"), _pairs(meta.get("labels")), owners)


def body_of(known: Identity) -> dict[str, Any]:
    """The object a DELETED event carries, rebuilt from its identity."""
    api_version, kind, name, namespace, uid, labels, owners = known
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "labels": dict(labels)}
    if owners:
        meta["ownerReferences"] = [dict(ref) for ref in owners]
    if namespace is None:
        del meta["namespace"]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def vanished(known: Mapping[str, Identity], listed: Iterable[str]) -> list[dict[str, Any]]:
    """The remembered objects a complete listing did not contain, as DELETED bodies (sorted). Pure."""
    present = set(listed)
    gone = [body_of(obj) for uid, obj in known.items() if uid not in present]
    return sorted(gone, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"].get("name") or ""))


async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
    """Kopf's continuous_watch, plus a DELETED event for each object a re-listing no longer shows."""
    key = (str(kwargs.get("resource")), kwargs.get("namespace"))
    known = _known.setdefault(key, {})
    listed: set[str] | None = set()  # the uids of this stream's listing; None once the listing is over
    async for event in _original(**kwargs):
        if event is watching.Bookmark.LISTED:
            if listed is not None:
                for obj in vanished(known, listed):
                    known.pop(obj["metadata"]["uid"], None)
                    yield {"type": "DELETED", "object": obj}
                listed = None
        elif isinstance(event, dict) and isinstance(event.get("object"), dict):
            kind, changed = event.get("type"), event["object"]
            uid = (changed.get("metadata") or {}).get("uid")
            if uid and kind == "DELETED":
                known.pop(uid, None)
            elif uid and kind in (None, "ADDED", "MODIFIED"):
                known[uid] = identity(changed)
                if kind is None and listed is not None:
                    listed.add(uid)
        yield event


def install() -> None:
    """Route Kopf's watches through `continuous_watch` (idempotent; before the watches start)."""
    watching.continuous_watch = continuous_watch
