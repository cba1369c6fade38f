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

Identity = dict[str, Any]

_original = watching.continuous_watch
# (resource, namespace) -> uid -> what the stream last showed of that object (its identity only).
_known: dict[tuple[str, str | None], dict[str, Identity]] = {}


def identity(obj: Mapping[str, Any]) -> Identity:
    """What a DELETED event needs of an object: kind, name, namespace, uid, labels, owners (not its spec)."""
    meta = obj.get("metadata") or {}
    kept = ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion")
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in kept if k in meta},
    }


def vanished(known: Mapping[str, Identity], listed: Iterable[str]) -> list[Identity]:
    """The remembered objects a complete listing did not contain (sorted: a stable order). Pure."""
    present = set(listed)
    gone = [obj for uid, obj in known.items() if uid not in present]
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
            kind, obj = event.get("type"), event["object"]
            uid = (obj.get("metadata") or {}).get("uid")
            if uid and kind == "DELETED":
                known.pop(uid, None)
            elif uid and kind in (None, "ADDED", "MODIFIED"):
                known[uid] = identity(obj)
                if kind is None and listed is not None:
                    listed.add(uid)
        yield event


def install() -> None:
    """Route Kopf's watches through `continuous_watch` (idempotent; before the watches start)."""
    watching.continuous_watch = continuous_watch  # type: ignore[assignment]
