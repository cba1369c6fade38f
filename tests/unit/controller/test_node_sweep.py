"""Node changes re-evaluate each ModelDeployment decided on older facts once per burst, a few at a time."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import sweep
from modeldeploy.controller.state import State
from modeldeploy.selection.types import NodeFacts

LOG = logging.getLogger("test")


def facts(name: str, ready: bool = True) -> NodeFacts:
    return NodeFacts(name, "linux", "amd64", 0, None, None, None, False, ready, False)


def run_sweep(monkeypatch: Any, objects: int, changes: int, change_while_sweeping: bool = False) -> dict[str, Any]:
    state = State(config=OperatorConfig())
    memo = {"modeldeploy": state}
    for i in range(changes):
        state.facts.observe(f"n{i}", facts(f"n{i}"))
    keys = [("ns", f"md-{i:03d}") for i in range(objects)]
    for key in keys:
        state.memory.plans[key] = SimpleNamespace(facts_version=state.facts.version, by_node=True)  # type: ignore[assignment]
    seen: dict[str, Any] = {"calls": [], "running": 0, "most": 0}

    async def reconcile(memo: Any, namespace: str, name: str, indexes: Any, logger: Any, **kw: Any) -> None:
        seen["calls"].append(name)
        seen["running"] += 1
        seen["most"] = max(seen["most"], seen["running"])
        if change_while_sweeping and len(seen["calls"]) == 20:
            state.facts.observe("late", facts("late"))  # a node changes while the sweep runs
        await asyncio.sleep(0.001)
        state.memory.plans[(namespace, name)] = SimpleNamespace(facts_version=state.facts.version, by_node=True)  # type: ignore[assignment]
        seen["running"] -= 1

    monkeypatch.setattr(sweep, "run_reconcile", reconcile)
    monkeypatch.setattr(sweep, "SWEEP_DELAY_S", 0.05)

    async def burst() -> None:
        for i in range(changes):  # every node goes NotReady, one event each
            state.facts.observe(f"n{i}", facts(f"n{i}", ready=False))
            sweep.schedule_sweep(memo, {}, LOG)
            await asyncio.sleep(0)
        if not changes:
            sweep.schedule_sweep(memo, {}, LOG)  # a re-listing that changed nothing
        assert state.sweep is not None
        await state.sweep

    asyncio.run(burst())
    seen["stale"] = [k for k, plan in state.memory.plans.items() if plan.facts_version != state.facts.version]
    return seen


def test_a_burst_of_node_changes_is_one_reevaluation_per_modeldeployment(monkeypatch: Any) -> None:
    seen = run_sweep(monkeypatch, objects=200, changes=50)
    assert sorted(seen["calls"]) == [f"md-{i:03d}" for i in range(200)]  # 50 changes, each object once
    assert seen["most"] == sweep.SWEEP_WORKERS
    assert seen["stale"] == []


def test_a_change_during_the_sweep_gets_another_pass(monkeypatch: Any) -> None:
    seen = run_sweep(monkeypatch, objects=40, changes=3, change_while_sweeping=True)
    assert seen["stale"] == []  # every plan is on the newest facts
    # objects decided before the change were swept again, the rest once
    assert 40 < len(seen["calls"]) < 80


def test_objects_decided_on_the_newest_facts_are_left_alone(monkeypatch: Any) -> None:
    seen = run_sweep(monkeypatch, objects=10, changes=0)
    assert seen["calls"] == []


def churn(monkeypatch: Any, *, changes: int, every_s: float, max_delay_s: float) -> tuple[list[float], float]:
    """Nodes change one by one, `every_s` apart; when each sweep pass began, and when the churn ended."""
    state = State(config=OperatorConfig())
    memo = {"modeldeploy": state}
    state.memory.plans[("ns", "md")] = SimpleNamespace(facts_version=state.facts.version, by_node=True)  # type: ignore[assignment]
    passes: list[float] = []

    async def reconcile(memo: Any, namespace: str, name: str, indexes: Any, logger: Any, **kw: Any) -> None:
        passes.append(asyncio.get_running_loop().time())
        state.memory.plans[(namespace, name)] = SimpleNamespace(facts_version=state.facts.version, by_node=True)  # type: ignore[assignment]

    monkeypatch.setattr(sweep, "run_reconcile", reconcile)
    monkeypatch.setattr(sweep, "SWEEP_DELAY_S", 0.05)
    monkeypatch.setattr(sweep, "SWEEP_MAX_DELAY_S", max_delay_s)

    async def nodes_joining() -> float:
        loop = asyncio.get_running_loop()
        for i in range(changes):
            state.facts.observe(f"n{i}", facts(f"n{i}"))
            sweep.schedule_sweep(memo, {}, LOG)
            await asyncio.sleep(every_s)
        ended = loop.time()
        while state.sweep is not None and not state.sweep.done():
            await state.sweep
        return ended

    ended = asyncio.run(nodes_joining())
    return passes, ended


def test_while_nodes_keep_joining_the_sweep_waits_for_a_quiet_moment(monkeypatch: Any) -> None:
    passes, ended = churn(monkeypatch, changes=20, every_s=0.02, max_delay_s=5.0)
    assert len(passes) == 1 and passes[0] >= ended  # one re-evaluation, after the last node joined


def test_churn_longer_than_the_longest_wait_still_reevaluates_on_the_way(monkeypatch: Any) -> None:
    passes, ended = churn(monkeypatch, changes=40, every_s=0.02, max_delay_s=0.2)
    assert len(passes) >= 2 and passes[0] < ended  # not held back until the churn is over
