"""Objects deleted while Kopf's watch could not see them are reported as DELETED at the next listing."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.clients import watching

from modeldeploy.controller import relist


def _obj(name: str, uid: str, **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": uid, "labels": labels, "resourceVersion": "1"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": 1}}


def _run(streams: list[list[Any]], monkeypatch: Any) -> list[list[Any]]:
    """Feed each stream (one call of Kopf's continuous_watch) through the wrapper; what came out of each."""
    calls = iter(streams)

    async def original(**_: Any):
        for event in next(calls):
            yield event

    monkeypatch.setattr(relist, "_original", original)
    monkeypatch.setattr(relist, "_known", {})

    async def collect() -> list[list[Any]]:
        out = []
        for _ in streams:
            out.append([e async for e in relist.continuous_watch(resource="deployments.v1.apps", namespace=None)])
        return out

    return asyncio.run(collect())


def test_the_first_listing_reports_nothing_and_passes_everything_through(monkeypatch: Any) -> None:
    a = _obj("a", "u1")
    stream = [{"type": None, "object": a}, watching.Bookmark.LISTED, {"type": "MODIFIED", "object": a}]
    (out,) = _run([stream], monkeypatch)
    assert out == stream


def test_an_object_missing_from_a_re_listing_is_deleted_before_the_listed_mark(monkeypatch: Any) -> None:
    a, b, c = _obj("a", "u1", app="x"), _obj("b", "u2"), _obj("c", "u3")
    first = [{"type": None, "object": a}, {"type": None, "object": b}, watching.Bookmark.LISTED,
             {"type": "ADDED", "object": c}]  # fmt: skip
    again = [{"type": None, "object": b}, watching.Bookmark.LISTED]  # a and c went while nobody watched
    _, out = _run([first, again], monkeypatch)
    assert out[0] == {"type": None, "object": b}
    assert [e["type"] for e in out[1:3]] == ["DELETED", "DELETED"]
    assert [e["object"]["metadata"]["name"] for e in out[1:3]] == ["a", "c"]
    assert out[1]["object"]["metadata"]["labels"] == {"app": "x"}  # handlers find the owner by labels
    assert "spec" not in out[1]["object"]  # identity only
    assert out[3] is watching.Bookmark.LISTED


def test_a_deletion_the_watch_saw_is_not_reported_again(monkeypatch: Any) -> None:
    a = _obj("a", "u1")
    first = [{"type": None, "object": a}, watching.Bookmark.LISTED, {"type": "DELETED", "object": a}]
    again = [watching.Bookmark.LISTED]
    _, out = _run([first, again], monkeypatch)
    assert out == [watching.Bookmark.LISTED]


def test_a_listing_cut_short_reports_nothing(monkeypatch: Any) -> None:
    a, b = _obj("a", "u1"), _obj("b", "u2")
    first = [{"type": None, "object": a}, {"type": None, "object": b}, watching.Bookmark.LISTED]
    cut = [{"type": None, "object": b}]  # the connection broke before the listing ended
    _, out = _run([first, cut], monkeypatch)
    assert out == cut


def test_vanished_is_sorted_and_pure() -> None:
    known = {"u2": relist.identity(_obj("b", "u2")), "u1": relist.identity(_obj("a", "u1"))}
    assert [o["metadata"]["name"] for o in relist.vanished(known, [])] == ["a", "b"]
    assert relist.vanished(known, ["u1", "u2"]) == []
    assert len(known) == 2


def test_install_routes_kopfs_watch_through_the_wrapper(monkeypatch: Any) -> None:
    monkeypatch.setattr(watching, "continuous_watch", relist._original)
    relist.install()
    assert watching.continuous_watch is relist.continuous_watch


def test_identities_are_compact_and_rebuild_what_a_deleted_event_needs() -> None:
    owner = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "m", "controller": True}
    a, b = _obj("a", "u1", app="model"), _obj("b", "u2", app="model")
    a["metadata"]["ownerReferences"] = [owner]
    ida, idb = relist.identity(a), relist.identity(b)
    assert relist.body_of(ida) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u1",
            "labels": {"app": "model"},
            "ownerReferences": [owner],
        },
    }
    assert "ownerReferences" not in relist.body_of(idb)["metadata"]
    assert relist.body_of(ida)["metadata"]["labels"] is not a["metadata"]["labels"]  # the event's body is not kept
    assert ida[5][0][1] is idb[5][0][1]  # equal label values are one string
