"""A watch event's handler queues its reconcile and returns: the event's body is not kept alive while the
reconcile waits for its object's lock and a slot (docs/operator-at-scale.md, "Node churn")."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from types import SimpleNamespace
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import handlers, retries
from modeldeploy.controller.state import State

LOG = logging.getLogger("test")


class Raw(dict[str, Any]):
    """A watch event's body that a weak reference can follow."""


def deployment(owner: str) -> Raw:
    return Raw(
        kind="Deployment",
        metadata={"name": owner, "namespace": "ns", "labels": {"app.kubernetes.io/instance": owner}},
        spec={"replicas": 1},
        status={"readyReplicas": 1},
    )


def result() -> Any:
    fields = {"outcome": "kept", "engine": None, "status_written": False, "children_changed": [], "requests": 0}
    return SimpleNamespace(**fields, events=[], failed=None, decision=None)


def test_a_deployment_event_returns_before_its_reconcile_and_leaves_the_body_behind(monkeypatch: Any) -> None:
    gate = asyncio.Event()
    given: list[dict[str, Any]] = []

    async def reconcile(*args: Any) -> Any:
        await gate.wait()  # a reconcile still waiting for its turn, or for the apiserver
        return result()

    def world_of(state: Any, namespace: str, name: str, indexes: Any) -> None:
        given.append(dict(indexes))

    monkeypatch.setattr(retries, "reconcile", reconcile)
    monkeypatch.setattr(retries, "world_of", world_of)
    state = State(config=OperatorConfig(), kube=object())  # type: ignore[arg-type]
    memo = {"modeldeploy": state}

    async def scenario() -> tuple[bool, bool]:
        body = deployment("m")
        gone = weakref.ref(body)
        handled = asyncio.create_task(
            handlers.deployment_event(
                type="MODIFIED", body=body, namespace="ns", name="m", memo=memo, logger=LOG,  # type: ignore[arg-type]
                patch={}, deployments_index={}, pods_index={},
            )
        )  # fmt: skip
        del body
        for _ in range(5):
            await asyncio.sleep(0)
        returned = handled.done()
        del handled
        gc.collect()
        freed = gone() is None  # while the reconcile still waits
        gate.set()
        await asyncio.gather(*state.pending)
        return returned, freed

    returned, freed = asyncio.run(scenario())
    assert returned and freed
    assert given == [{"deployments_index": {}, "pods_index": {}}]  # the indexes only, not the body or patch


def test_a_reconcile_queued_behind_a_running_one_is_not_queued_twice(monkeypatch: Any) -> None:
    gate = asyncio.Event()
    ran: list[str] = []

    async def reconcile(kube: Any, namespace: str, name: str, *args: Any) -> Any:
        ran.append(name)
        await gate.wait()
        return result()

    monkeypatch.setattr(retries, "reconcile", reconcile)
    monkeypatch.setattr(retries, "world_of", lambda *args: None)
    state = State(config=OperatorConfig(), kube=object())  # type: ignore[arg-type]
    memo = {"modeldeploy": state}

    async def scenario() -> int:
        retries.reconcile_soon(memo, "ns", "m", {}, LOG, trigger="deployment")
        for _ in range(5):
            await asyncio.sleep(0)  # the first one runs (and waits on the gate)
        for _ in range(3):  # news while it runs: one more reconcile is queued, the rest add nothing
            retries.reconcile_soon(memo, "ns", "m", {}, LOG, trigger="deployment")
            for _ in range(5):
                await asyncio.sleep(0)
        queued = len(state.pending)
        gate.set()
        while state.pending:
            await asyncio.gather(*state.pending)
        return queued

    assert asyncio.run(scenario()) == 2  # the running one and one queued behind it
    assert ran == ["m", "m"]
