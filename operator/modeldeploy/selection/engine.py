"""select_engine: a spec, the cluster's node facts and the operator config in, a Decision out. Pure.

The same function backs the operator and `modeldeploy select`, so a decision can be explained offline.
Every engine is judged fully (model rules and node rules) even when it is not tried, so status.selection
tells the user what else could run and what to change.

Decisions taken here (see selection.md):
- Order: `engine.name` alone when named (checked, never replaced); else `engine.preference`; else
  DEFAULT_PREFERENCE. SGLang is judged like the others and `eligible` says whether its rules hold, but
  under the default order it is never chosen; its reasons say to list it in engine.preference.
- Stability: a `current` engine that is in the order and still eligible is kept unless `reselect`; the
  caller passes `current` only while the spec is unchanged. If it became impossible, nothing is chosen
  (`current_impossible`), so the Deployment is left as it is and the operator reports Degraded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import DEFAULT_PREFERENCE, Engine
from modeldeploy.selection.llamacpp_checks import llamacpp_warnings
from modeldeploy.selection.node_rules import NodeVerdict, evaluate_nodes
from modeldeploy.selection.rules import model_rules
from modeldeploy.selection.types import Decision, EngineCandidate, NodeFacts

# Every engine, in the order candidates are listed after the ones actually tried.
ALL_ENGINES: tuple[Engine, ...] = (*DEFAULT_PREFERENCE, Engine.SGLANG)
RESELECT_HINT = 'annotate modeldeploy.io/reselect: "true" to choose again'


@dataclass(frozen=True)
class Judgement:
    """One engine judged: model rules and node rules, with the failures first-class for the summary."""

    engine: Engine
    model_reasons: tuple[str, ...]
    failures: tuple[str, ...]
    nodes: NodeVerdict

    @property
    def eligible(self) -> bool:
        return not self.failures


def judge(engine: Engine, spec: ModelDeploymentSpec, nodes: Sequence[NodeFacts], config: OperatorConfig) -> Judgement:
    """Apply every model rule and the node rules of `engine`."""
    results = model_rules(engine, spec, config)
    verdict = evaluate_nodes(engine, spec, nodes, config.label_mappings)
    failures = [r.reason for r in results if not r.ok]
    if not verdict.ok:
        failures.extend(verdict.reasons)
    return Judgement(engine, tuple(r.reason for r in results), tuple(failures), verdict)


def engine_order(spec: ModelDeploymentSpec) -> tuple[tuple[Engine, ...], str]:
    """The engines tried, in order, and how the order came about (for the summary)."""
    if spec.engine.name != "auto":
        return (Engine(spec.engine.name),), "engine.name"
    if spec.engine.preference:
        return tuple(Engine(e) for e in spec.engine.preference), "engine.preference"
    return DEFAULT_PREFERENCE, "default"


def _not_tried_note(engine: Engine, spec: ModelDeploymentSpec, how: str) -> str:
    if how == "engine.name":
        return f"not tried: engine.name is {spec.engine.name}"
    if how == "engine.preference":
        return "not tried: not listed in engine.preference"
    if engine == Engine.SGLANG:
        return "not chosen automatically: list it in engine.preference or set engine.name"
    return "not tried: not in the default order"  # unreachable with today's table; kept honest


def _order_text(order: Sequence[Engine], how: str) -> str:
    text = ", ".join(e.value for e in order)
    return f"{text} (engine.preference)" if how == "engine.preference" else text


def select_engine(
    spec: ModelDeploymentSpec,
    nodes: Sequence[NodeFacts],
    config: OperatorConfig,
    current: Engine | None = None,
    reselect: bool = False,
) -> Decision:
    """Choose the engine for `spec` on `nodes`, explaining every candidate.

    `current` is the engine the running Deployment uses (pass it only while the spec is unchanged);
    `reselect` is the `modeldeploy.io/reselect: "true"` annotation, which lets a better engine replace it.
    """
    order, how = engine_order(spec)
    judged = {e: judge(e, spec, nodes, config) for e in ALL_ENGINES}
    fresh = next((e for e in order if judged[e].eligible), None)
    notes: dict[Engine, list[str]] = {e: [] for e in ALL_ENGINES}
    for engine in ALL_ENGINES:
        if engine not in order:
            notes[engine].append(_not_tried_note(engine, spec, how))

    chosen = fresh
    kept = impossible = False
    summary = ""
    if current is not None and not reselect and current in order and current != fresh:
        if judged[current].eligible:
            chosen, kept = current, True
            summary = (
                f"{current.value}: kept the running engine while it can still run ({fresh.value if fresh else 'none'} "
                f"is earlier in order {_order_text(order, how)} and could run now; {RESELECT_HINT})"
            )
        else:
            chosen, impossible = None, True
            instead = f"{fresh.value} could run instead; {RESELECT_HINT}" if fresh else "no other engine can run"
            summary = (
                f"the running engine {current.value} can no longer run: {'; '.join(judged[current].failures)}; "
                f"the Deployment is left as it is ({instead})"
            )

    if chosen is not None:
        position = order.index(chosen)
        for engine in order[position + 1 :]:
            if judged[engine].eligible:
                notes[engine].append(f"eligible, but {chosen.value} comes first in the order")
        if kept:
            notes[chosen].append("kept: it is the running engine and can still run")
            for engine in order[:position]:
                if judged[engine].eligible:
                    notes[engine].append(f"eligible, but the running engine {chosen.value} is kept ({RESELECT_HINT})")
        if not summary:
            if how == "engine.name":
                summary = f"{chosen.value}: named in engine.name and its rules hold"
            else:
                summary = f"{chosen.value}: first eligible engine in order {_order_text(order, how)}"
    elif not summary:
        if how == "engine.name":
            named = order[0]
            summary = f"no engine can run: engine.name is {named.value} and {'; '.join(judged[named].failures)}"
        else:
            per_engine = "; ".join(f"{e.value}: {judged[e].failures[0]}" for e in order)
            summary = f"no engine can run: {per_engine}"

    listed = (*order, *(e for e in ALL_ENGINES if e not in order))
    candidates = tuple(
        EngineCandidate(
            engine=e,
            eligible=judged[e].eligible,
            reasons=(*judged[e].model_reasons, *judged[e].nodes.reasons, *notes[e]),
            nodes=judged[e].nodes.nodes,
        )
        for e in listed
    )
    if impossible:
        warnings: tuple[str, ...] = (summary,)
    elif chosen == Engine.LLAMA_CPP:
        warnings = llamacpp_warnings(spec)
    else:
        warnings = ()
    return Decision(
        engine=chosen,
        candidates=candidates,
        placement=judged[chosen].nodes.placement if chosen else None,
        summary=summary,
        warnings=warnings,
        kept_current=kept,
        current_impossible=impossible,
    )
