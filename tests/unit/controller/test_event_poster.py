"""The operator's Event poster: the bodies `kubectl describe` reads, the order of one reconcile's Events,
bounded concurrency with no per-object hold, and best effort when refused or full (event_poster.py).

The apiserver's side (that it stores these bodies as Events about the ModelDeployment) is checked by the
cluster tier (tests/cluster/test_operator.py, test_spec_changes_are_followed)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from modeldeploy.controller.event_poster import MAX_MESSAGE, EventPoster, cut, event_body
from modeldeploy.controller.events import EventSpec
from modeldeploy.controller.kube import KubeError

AT = dt.datetime(2026, 12, 7, 20, 1, 2, 345678, tzinfo=dt.UTC)
MD = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "m", "namespace": "ns", "uid": "u1"}


def test_an_event_body_is_about_its_object_from_the_operator_with_its_times() -> None:
    body = event_body(MD, EventSpec("Normal", "EngineSelected", "vllm: 2 nodes"), component="modeldeploy",
                      instance="op-0", at=AT)  # fmt: skip
    assert body["metadata"] == {"generateName": "modeldeploy-", "namespace": "ns"}
    assert body["involvedObject"] == MD and body["involvedObject"] is not MD
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "EngineSelected", "vllm: 2 nodes")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-12-07T20:01:02Z"
    assert body["eventTime"] == "2026-12-07T20:01:02.345678Z"
    assert body["source"] == {"component": "modeldeploy"}
    assert (body["reportingComponent"], body["reportingInstance"], body["count"]) == ("modeldeploy", "op-0", 1)


def test_a_long_message_keeps_its_head_and_tail() -> None:
    long = "why: " + "x" * 3000 + " the end"
    short = cut(long)
    assert len(short) == MAX_MESSAGE
    assert short.startswith("why: x") and short.endswith("x the end") and "..." in short
    assert cut("short") == "short"


class RecordingKube:
    """Stands in for the API client: records each POST, lets other tasks run during it, refuses on demand."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.posted: list[tuple[str, str, str]] = []  # (path, involved name, reason)
        self.in_flight = 0
        self.most_in_flight = 0
        self.refuse = refuse

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        assert method == "POST"
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if body["reason"] in self.refuse:
                raise KubeError(403, "Forbidden", "namespace ns is being terminated")
            self.posted.append((path, body["involvedObject"]["name"], body["reason"]))
            return body
        finally:
            self.in_flight -= 1


def involved(name: str) -> dict[str, str]:
    return {**MD, "name": name, "uid": f"uid-{name}"}


SELECTED = EventSpec("Normal", "EngineSelected", "vllm")
CREATED = EventSpec("Normal", "Created", "created Deployment m, Service m (vllm)")


def test_every_object_is_posted_at_once_in_its_own_order_and_bounded() -> None:
    """A burst of new objects: nothing waits for an object's worker to go idle (Kopf's poster held one for a
    second per object, docs/operator-at-scale.md, "Events"); one reconcile's Events keep their order."""

    async def burst() -> tuple[RecordingKube, EventPoster]:
        kube = RecordingKube()
        poster = EventPoster(kube, component="modeldeploy", instance="op", workers=4)  # type: ignore[arg-type]
        for i in range(200):
            poster.post(involved(f"m{i}"), [SELECTED, CREATED])
        poster.post(involved("quiet"), [])  # a reconcile that said nothing posts nothing
        assert poster.waiting == 200
        await asyncio.wait_for(poster.close(timeout_s=30), 60)
        return kube, poster

    kube, poster = asyncio.run(burst())
    assert len(kube.posted) == 400 and poster.counts == {"posted": 400}
    assert {path for path, _, _ in kube.posted} == {"/api/v1/namespaces/ns/events"}
    for i in range(200):
        assert [reason for _, name, reason in kube.posted if name == f"m{i}"] == ["EngineSelected", "Created"]
    assert kube.most_in_flight == 4  # as many at once as there are workers, never more


def test_a_refused_event_is_counted_and_the_rest_go_on() -> None:
    async def refused() -> tuple[RecordingKube, EventPoster]:
        kube = RecordingKube(refuse={"EngineSelected"})
        poster = EventPoster(kube, component="modeldeploy", instance="op", workers=2)  # type: ignore[arg-type]
        poster.post(involved("a"), [SELECTED, CREATED])
        poster.post(involved("b"), [CREATED])
        await poster.close()
        return kube, poster

    kube, poster = asyncio.run(refused())
    assert poster.counts == {"refused": 1, "posted": 2}
    assert sorted(name for _, name, _ in kube.posted) == ["a", "b"]


def test_a_full_queue_drops_and_counts_instead_of_holding_the_reconcile(caplog: pytest.LogCaptureFixture) -> None:
    async def full() -> EventPoster:
        poster = EventPoster(RecordingKube(), component="modeldeploy", instance="op", workers=0, capacity=1)  # type: ignore[arg-type]
        poster.post(involved("a"), [SELECTED])
        poster.post(involved("b"), [SELECTED, CREATED])  # returns at once: the queue holds one reconcile's
        await poster.close(timeout_s=0.01)
        return poster

    poster = asyncio.run(full())
    assert poster.counts == {"dropped": 2}
    assert "2 Events about ns/b dropped" in caplog.text
