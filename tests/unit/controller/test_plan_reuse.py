"""A kept plan is reused while its inputs hold; the running engine counts only when it changes the decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.controller import plan as rec
from modeldeploy.controller.plan import Memory, World
from modeldeploy.controller.plan import decide as plan
from modeldeploy.selection import facts_from_document

CONFIG = OperatorConfig()


def world(repo_root: Path, cluster: str) -> World:
    nodes = tuple(facts_from_document((repo_root / "examples/nodes" / f"{cluster}.yaml").read_text(), LabelMappings()))
    return World(body=None, deployment=None, service=None, pods=(), nodes=nodes, facts_version=hash(nodes))


def body(repo_root: Path, example: str, **status: Any) -> dict[str, Any]:
    doc = yaml.safe_load((repo_root / "examples/modeldeployments" / f"{example}.yaml").read_text())
    doc["metadata"].update(namespace="team", uid="u-1", generation=1)
    doc["status"] = status
    return doc


def count_selections(monkeypatch: Any) -> list[str | None]:
    calls: list[str | None] = []
    real = rec.select_engine

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("current"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rec, "select_engine", counted)
    return calls


def test_the_plan_of_the_first_reconcile_holds_once_its_engine_runs(repo_root: Path, monkeypatch: Any) -> None:
    calls = count_selections(monkeypatch)
    memory, key, w = Memory(), ("team", "m"), world(repo_root, "cpu-cluster")
    new = body(repo_root, "llamacpp-smollm2")
    first, made = plan(new, {}, w, CONFIG, memory, key)
    assert made is not None and first.decision is not None and first.decision.engine == "llama.cpp"
    # The status now names the engine for this generation: the running engine is the one chosen.
    running = body(repo_root, "llamacpp-smollm2", observedGeneration=1, engine="llama.cpp")
    again, made = plan(running, running["status"], w, CONFIG, memory, key)
    assert made is None and again is first
    assert calls == [None]


def test_a_running_engine_that_changes_the_decision_is_planned_for(repo_root: Path, monkeypatch: Any) -> None:
    calls = count_selections(monkeypatch)
    memory, key, w = Memory(), ("team", "m"), world(repo_root, "cpu-cluster")
    new = body(repo_root, "llamacpp-smollm2")
    plan(new, {}, w, CONFIG, memory, key)
    # Another engine runs (the status says transformers for this generation), which cannot serve GGUF:
    # the decision departs from the fresh one (nothing is chosen, the Deployment is left as it is).
    other = body(repo_root, "llamacpp-smollm2", observedGeneration=1, engine="transformers")
    kept, made = plan(other, other["status"], w, CONFIG, memory, key)
    assert made is not None and kept.decision is not None
    assert kept.decision.engine is None and kept.decision.current_impossible
    again, made = plan(other, other["status"], w, CONFIG, memory, key)
    assert made is None and again is kept
    assert calls == [None, "transformers"]
