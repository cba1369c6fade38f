"""Node churn inside a pool (nodes joining, losing their not-ready taint) changes no status and sweeps no
ModelDeployment; a new kind of node, or a spec that reads individual nodes, is re-judged
(docs/operator-at-scale.md, "Node churn")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import retries, tuning
from modeldeploy.controller.kube import LIMIT
from modeldeploy.controller.plan import World, decide
from modeldeploy.controller.state import State
from modeldeploy.controller.status import Observation, compute_status
from modeldeploy.controller.sweep import stale_plans
from modeldeploy.selection import facts_from_document, select_engine
from modeldeploy.selection.types import NodeFacts, Taint

CONFIG = OperatorConfig()
NOT_READY = Taint("node.kubernetes.io/not-ready", None, "NoSchedule")
EXAMPLES = sorted(p.stem for p in (Path(__file__).resolve().parents[3] / "examples/modeldeployments").glob("*.yaml"))
T = "2026-01-01T00:00:00Z"


def doc(repo_root: Path, example: str, **spec: Any) -> dict[str, Any]:
    body = yaml.safe_load((repo_root / "examples/modeldeployments" / f"{example}.yaml").read_text())
    body["metadata"].update(namespace="team", uid=f"u-{example}", generation=1)
    body["spec"].update(spec)
    return dict(body)


def pools(repo_root: Path, copies: int = 6, tainted_from: int = 3) -> list[NodeFacts]:
    """Each node of the demo cluster as a pool of `copies`; the later ones still carry the not-ready taint."""
    demo = facts_from_document((repo_root / "examples/nodes/demo-cluster.yaml").read_text(), CONFIG.label_mappings)
    nodes = []
    for node in demo:
        for i in range(copies):
            taints = (*node.taints, NOT_READY) if i >= tainted_from else node.taints
            nodes.append(dataclasses.replace(node, name=f"{node.name}-{i}", taints=taints))
    return sorted(nodes, key=lambda n: n.name)


def untaint(nodes: list[NodeFacts], name: str) -> list[NodeFacts]:
    return [
        dataclasses.replace(n, taints=tuple(t for t in n.taints if t != NOT_READY)) if n.name == name else n
        for n in nodes
    ]


def status_of(spec: Any, nodes: list[NodeFacts], counts: bool = False) -> dict[str, Any]:
    decision = select_engine(spec, nodes, CONFIG, counts=counts)
    return compute_status(Observation(generation=1, decision=decision, deployment=None), None, T)


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_node_of_a_pool_losing_its_not_ready_taint_rewrites_no_status(repo_root: Path, example: str) -> None:
    spec = ModelDeployment.model_validate(doc(repo_root, example)).spec
    before = pools(repo_root)
    after = untaint(before, "gpu-l4-1-4")  # one more node of the L4 pool becomes schedulable
    assert status_of(spec, before) == status_of(spec, after)
    # What `modeldeploy select` prints still counts (and `select_engine` always did, in the status too).
    counted = (status_of(spec, before, counts=True), status_of(spec, after, counts=True))
    if example.startswith(("vllm", "sglang")):
        assert counted[0]["selection"] != counted[1]["selection"]


def test_the_status_moves_when_the_decision_does(repo_root: Path) -> None:
    spec = ModelDeployment.model_validate(doc(repo_root, "vllm-qwen2.5-awq")).spec
    gpu_tainted = [
        dataclasses.replace(n, taints=(*n.taints, NOT_READY)) if n.gpus else n for n in pools(repo_root, tainted_from=6)
    ]
    after = untaint(gpu_tainted, "gpu-l4-1-0")  # the first node of a GPU pool becomes schedulable
    assert select_engine(spec, gpu_tainted, CONFIG, counts=False).engine is None
    assert select_engine(spec, after, CONFIG, counts=False).engine == "vllm"
    assert status_of(spec, gpu_tainted)["selection"] != status_of(spec, after)["selection"]


def test_a_decision_on_kinds_of_node_is_the_same_whichever_nodes_each_kind_holds(repo_root: Path) -> None:
    """What plan.still_holds relies on: without counts, the decision reads which kinds exist, not members."""
    everything = pools(repo_root)
    shuffle = random.Random(7)
    for example in EXAMPLES:
        spec = ModelDeployment.model_validate(doc(repo_root, example)).spec
        full = select_engine(spec, everything, CONFIG, counts=False)
        for _ in range(5):
            by_kind: dict[tuple[str, bool], list[NodeFacts]] = {}
            for n in everything:
                by_kind.setdefault((n.name.rsplit("-", 1)[0], NOT_READY in n.taints), []).append(n)
            kept = sorted(
                (
                    n
                    for members in by_kind.values()
                    for n in shuffle.sample(members, 1 + shuffle.randrange(len(members)))
                ),
                key=lambda n: n.name,
            )
            assert select_engine(spec, kept, CONFIG, counts=False) == full, example


def churned_state(nodes: list[NodeFacts]) -> State:
    state = State(config=CONFIG)
    for node in nodes:
        state.facts.observe(node.name, node)
    return state


def world(state: State) -> World:
    classes = state.facts.classes(CONFIG.label_mappings)
    return World(
        body=None,
        deployment=None,
        service=None,
        pods=(),
        nodes=state.facts.snapshot(),
        facts_version=state.facts.version,
        classes=classes,
        kinds_version=state.facts.kinds_version,
    )


def decide_all(repo_root: Path, state: State, **spec: Any) -> list[Any]:
    made = []
    for example in EXAMPLES:
        key = ("team", example)
        planned, rendering = decide(doc(repo_root, example, **spec), {}, world(state), CONFIG, state.memory, key)
        made.append((planned, rendering))
    return made


def test_a_plan_decided_before_churn_inside_a_pool_holds_and_is_not_swept(repo_root: Path) -> None:
    nodes = pools(repo_root)
    state = churned_state(nodes)
    first = decide_all(repo_root, state)
    for name in ("gpu-l4-1-3", "gpu-l4-1-4", "cpu-1-5"):  # nodes of existing pools become schedulable
        nodes = untaint(nodes, name)
        state.facts.observe(name, next(n for n in nodes if n.name == name))
    assert stale_plans(state) == []
    again = decide_all(repo_root, state)
    assert all(rendering is None for _, rendering in again)  # not selected or rendered again
    assert [p.decision for p, _ in again] == [p.decision for p, _ in first]
    fresh = decide_all(repo_root, churned_state(nodes))  # what a fresh operator decides on the new facts
    assert [p.decision for p, _ in fresh] == [p.decision for p, _ in again]


def test_a_new_kind_of_node_sweeps_every_plan(repo_root: Path) -> None:
    nodes = pools(repo_root)
    state = churned_state(nodes)
    decide_all(repo_root, state)
    cordoned = dataclasses.replace(next(n for n in nodes if n.name == "gpu-l4-1-0"), unschedulable=True)
    state.facts.observe(cordoned.name, cordoned)
    assert stale_plans(state) == sorted(("team", e) for e in EXAMPLES)


def test_a_spec_that_reads_individual_nodes_is_swept_on_any_change_of_them(repo_root: Path) -> None:
    nodes = pools(repo_root)
    state = churned_state(nodes)
    decide_all(repo_root, state, nodeSelector={"kubernetes.io/os": "linux"})
    state.facts.observe("gpu-l4-1-4", untaint(nodes, "gpu-l4-1-4")[[n.name for n in nodes].index("gpu-l4-1-4")])
    assert stale_plans(state) == sorted(("team", e) for e in EXAMPLES)


def test_candidates_kept_for_sharing_do_not_grow_with_node_churn(repo_root: Path) -> None:
    """Candidates with node names were new objects for every version of the facts, kept until 20,000."""
    nodes = pools(repo_root, copies=12, tainted_from=0)
    state = churned_state(nodes)
    decide_all(repo_root, state)
    shared = len(state.memory.interned)
    for node in [n for n in nodes if n.gpus][:10]:
        nodes = untaint(nodes, node.name)
        state.facts.observe(node.name, next(n for n in nodes if n.name == node.name))
        for key in stale_plans(state):
            state.memory.plans.pop(key)  # decided again, as the sweep would
        decide_all(repo_root, state)
    assert len(state.memory.interned) <= 2 * shared


def test_a_status_write_does_not_queue_behind_the_applies_of_later_objects(monkeypatch: Any) -> None:
    """A burst: each reconcile applies, then writes its status, through a client of LIMIT connections."""
    order: list[tuple[str, int]] = []
    connections = asyncio.Semaphore(LIMIT)  # FIFO, like aiohttp's connector

    async def request(verb: str, i: int) -> None:
        async with connections:
            order.append((verb, i))
            await asyncio.sleep(0)

    async def reconcile(kube: Any, namespace: str, name: str, *args: Any) -> Any:
        i = int(name)
        await request("apply", i)
        await request("status", i)
        return retries_result()

    state = State(config=CONFIG, kube=object())  # type: ignore[arg-type]
    monkeypatch.setattr(retries, "reconcile", reconcile)
    monkeypatch.setattr(retries, "world_of", lambda *args: None)

    async def burst() -> None:
        memo = {"modeldeploy": state}
        log = logging.getLogger("test")
        await asyncio.gather(
            *(retries.run_reconcile(memo, "ns", str(i), {}, log, trigger="create", coalesce=True) for i in range(200))
        )

    asyncio.run(burst())
    for i in range(200):
        between = order.index(("status", i)) - order.index(("apply", i))
        assert between <= LIMIT, (i, between)


async def burst_of(state: State, count: int) -> None:
    memo = {"modeldeploy": state}
    log = logging.getLogger("test")
    await asyncio.gather(
        *(retries.run_reconcile(memo, "ns", str(i), {}, log, trigger="create", coalesce=True) for i in range(count))
    )
    if state.release is not None:
        await state.release


def retries_result() -> Any:
    fields = {"outcome": "applied", "engine": None, "status_written": True, "children_changed": [], "requests": 2}
    return SimpleNamespace(**fields, events=[], failed=None, decision=None, applied=[])


def test_memory_is_given_back_once_a_burst_is_over(monkeypatch: Any) -> None:
    released: list[int] = []
    monkeypatch.setattr(retries, "QUIET_S", 0.01)
    monkeypatch.setattr(retries.tuning, "release_memory", lambda: released.append(1))
    state = State(config=CONFIG, kube=object())  # type: ignore[arg-type]

    async def reconcile(kube: Any, namespace: str, name: str, *args: Any) -> Any:
        await asyncio.sleep(0)
        return retries_result()

    monkeypatch.setattr(retries, "reconcile", reconcile)
    monkeypatch.setattr(retries, "world_of", lambda *args: None)

    async def bursts() -> None:
        await burst_of(state, retries.BURST - 1)
        assert released == []  # a few reconciles are no burst
        await burst_of(state, 51)
        assert released == [1] and state.since_release == 0

    asyncio.run(bursts())


def test_release_memory_trims_the_heaps() -> None:
    calls: list[int] = []
    tuning.release_memory(lambda pad: calls.append(pad) or 1)
    assert calls == [0]


def test_objects_with_one_spec_share_one_selection_and_a_sweep_renders_nothing_it_leaves_alone(
    repo_root: Path, monkeypatch: Any
) -> None:
    """A platform's copies of one model (one per team): judged once per version of the node kinds, and an
    object whose decision a change of kinds leaves as it was keeps its plan without rendering again."""
    from modeldeploy.controller import plan as plan_mod

    calls: list[str] = []
    real = plan_mod.select_engine
    monkeypatch.setattr(plan_mod, "select_engine", lambda spec, *a, **k: calls.append("select") or real(spec, *a, **k))
    nodes = pools(repo_root)
    state = churned_state(nodes)

    def decide_copies(example: str, copies: int) -> list[Any]:
        out = []
        for i in range(copies):
            body = doc(repo_root, example)
            body["metadata"].update(name=f"copy-{i}", namespace=f"team-{i}", uid=f"u-{i}")
            out.append(decide(body, {}, world(state), CONFIG, state.memory, (f"team-{i}", f"copy-{i}")))
        return out

    first = decide_copies("llamacpp-smollm2", 5)
    assert calls == ["select"]  # one selection for the five
    assert all(rendering is not None for _, rendering in first)  # each object renders its own children
    assert len({id(planned.decision) for planned, _ in first}) == 1
    # The last tainted node of a pool becomes schedulable: a kind of node goes, every plan is swept.
    for node in [n for n in nodes if n.name.startswith("cpu-1-")]:
        nodes = untaint(nodes, node.name)
        state.facts.observe(node.name, next(n for n in nodes if n.name == node.name))
    assert len(stale_plans(state)) == 5
    calls.clear()
    again = decide_copies("llamacpp-smollm2", 5)
    assert calls == ["select"]
    assert all(rendering is None for _, rendering in again)  # decided as before: nothing rendered again
    assert stale_plans(state) == []
    assert [p.decision for p, _ in again] == [p.decision for p, _ in first]
    fresh = decide_all(repo_root, churned_state(nodes))  # a fresh operator on the new facts decides the same
    assert next(p for p, _ in fresh if p.key.uid == "u-llamacpp-smollm2").decision == again[0][0].decision


def test_a_spec_that_differs_is_judged_on_its_own(repo_root: Path, monkeypatch: Any) -> None:
    from modeldeploy.controller import plan as plan_mod

    calls: list[str] = []
    real = plan_mod.select_engine
    monkeypatch.setattr(plan_mod, "select_engine", lambda spec, *a, **k: calls.append("select") or real(spec, *a, **k))
    state = churned_state(pools(repo_root))
    decide(doc(repo_root, "vllm-qwen2.5-awq"), {}, world(state), CONFIG, state.memory, ("a", "m"))
    decide(
        doc(repo_root, "vllm-qwen2.5-awq", resources={"gpus": 2}), {}, world(state), CONFIG, state.memory, ("b", "m")
    )
    assert len(calls) == 2
    assert all(planned.valid and planned.problem is None for planned in state.memory.plans.values())


def test_a_plan_carried_over_a_change_of_kinds_is_what_a_fresh_operator_decides_and_renders(
    repo_root: Path,
) -> None:
    """Every GPU node starts with the not-ready taint, then loses it: the kinds change and every plan is
    judged again. A plan whose engine and placement stay keeps its children without rendering, and both
    its decision (the reasons the status reports) and its children are what an operator started on the new
    facts makes; a plan whose engine moved is rendered again."""
    nodes = [
        dataclasses.replace(n, taints=(*n.taints, NOT_READY)) if n.gpus else n for n in pools(repo_root, tainted_from=6)
    ]
    state = churned_state(nodes)
    first = decide_all(repo_root, state)
    for node in [n for n in nodes if NOT_READY in n.taints]:
        nodes = untaint(nodes, node.name)
        state.facts.observe(node.name, next(n for n in nodes if n.name == node.name))
    assert len(stale_plans(state)) == len(EXAMPLES)
    again = decide_all(repo_root, state)
    fresh = decide_all(repo_root, churned_state(nodes))
    outcomes = set()
    for (before, _), (kept, rendering), (made, made_rendering) in zip(first, again, fresh, strict=True):
        assert kept.decision == made.decision
        assert kept.children == made.children
        assert made_rendering is not None
        engine_moved = (before.decision.engine, before.decision.placement) != (
            kept.decision.engine,
            kept.decision.placement,
        )
        assert (rendering is not None) == (engine_moved and kept.decision.engine is not None)
        outcomes.add(
            "rendered"
            if rendering is not None
            else "carried, reasons moved"
            if before.decision != kept.decision
            else "kept"
        )
    assert {"rendered", "carried, reasons moved"} <= outcomes


def test_an_event_already_handled_when_its_turn_comes_costs_no_reconcile(monkeypatch: Any) -> None:
    """The ADDED event of a Deployment a running reconcile is creating (or the echo of its status write)
    queues behind it; when its turn comes that reconcile has seen it, so it is skipped, unless a request
    of another kind (a node sweep) was folded into it meanwhile."""
    ran: list[str] = []
    gate = asyncio.Event()
    state = State(config=CONFIG, kube=object())  # type: ignore[arg-type]

    async def reconcile(kube: Any, namespace: str, name: str, *args: Any) -> Any:
        ran.append(name)
        await gate.wait()
        return retries_result()

    monkeypatch.setattr(retries, "reconcile", reconcile)
    monkeypatch.setattr(retries, "world_of", lambda *args: None)
    handled = {"now": False}

    async def scenario() -> None:
        memo = {"modeldeploy": state}
        log = logging.getLogger("test")

        def run(trigger: str, unless: Any = None) -> Any:
            return asyncio.create_task(
                retries.run_reconcile(memo, "ns", "m", {}, log, trigger=trigger, coalesce=True, unless=unless)
            )

        first = run("create")
        await asyncio.sleep(0)
        event = run("deployment", unless=lambda: handled["now"])
        await asyncio.sleep(0)
        handled["now"] = True  # the running reconcile saw the event's view
        gate.set()
        await asyncio.gather(first, event)
        assert ran == ["m"]
        gate.clear()
        first = run("create")
        await asyncio.sleep(0)
        event = run("deployment", unless=lambda: handled["now"])
        sweep = run("node")  # folded into the queued one: it must run
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, event, sweep)
        assert ran == ["m", "m", "m"]

    asyncio.run(scenario())
    assert state.metrics.reconciles[("deployment", "skipped")] == 1
    assert state.metrics.reconciles[("node", "skipped")] == 1  # folded, and served by the one that ran
