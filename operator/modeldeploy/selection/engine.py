"""select_engine: a spec, the cluster's node facts and the operator config in, a Decision out. Pure.

The same function backs the operator and `modeldeploy select`, so a decision can be explained offline.
Every engine is judged fully (model rules and node rules) even when it is not tried, so status.selection
tells the user what else could run and what to change.

Decisions taken here (see docs/selection.md):
- Order: `engine.name` alone when named (checked, never replaced); else `engine.preference`; else the
  registry's default order (engines with an `auto_rank`). An engine without one (SGLang) is judged like
  the others and `eligible` says whether its rules hold, but under the default order it is never chosen;
  its reasons say to list it in engine.preference.
- Stability: a `current` engine that is in the order and still eligible is kept unless `reselect`; the
  caller passes `current` only while the spec is unchanged. If it became impossible, nothing is chosen
  (`current_impossible`), so the Deployment is left as it is and the operator reports Degraded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import registry
from modeldeploy.engines.base import ModelView, RuleResult
from modeldeploy.selection.node_classes import NodeClass, group_nodes
from modeldeploy.selection.node_rules import NodeVerdict, evaluate_nodes
from modeldeploy.selection.types import Decision, EngineCandidate, NodeFacts

RESELECT_HINT = 'annotate modeldeploy.io/reselect: "true" to choose again'


@dataclass(frozen=True)
class Judgement:
    """One engine judged: model rules and node rules, with the failures first-class for the summary."""

    engine: str
    model_reasons: tuple[str, ...]
    failures: tuple[str, ...]
    nodes: NodeVerdict

    @property
    def eligible(self) -> bool:
        return not self.failures


def model_view(spec: ModelDeploymentSpec, config: OperatorConfig) -> ModelView:
    """The facts an engine's rules read (engines/base.py): the engines never see the API's models."""
    model = spec.model
    return ModelView(
        name=model.name,
        family=model.family,
        format=model.format,
        quantization=model.quantization,
        size_in_billions=model.size_in_billions,
        abilities=tuple(model.abilities),
        multimodal_projector=model.multimodal_projector,
        gpus=spec.resources.gpus,
        args=spec.engine.args,
        extra_families=tuple(config.vllm_extra_families),
        allow_trust_remote_code=config.allow_trust_remote_code,
        api_key=spec.auth is not None,
    )


def judge(
    name: str,
    spec: ModelDeploymentSpec,
    nodes: Sequence[NodeFacts],
    config: OperatorConfig,
    classes: Sequence[NodeClass] | None = None,
    listed_bytes: int | None = None,
    counts: bool = True,
) -> Judgement:
    """Apply every model rule and the node rules of the engine called `name`."""
    engine = registry.get(name)
    view = model_view(spec, config)
    results = [r for r in (*engine.model_rules(view), engine.api_key_rule(view)) if r is not None]
    # What render would refuse of engine.args, refused here too, so select and render agree.
    args_problem = engine.args_problem(view.args, allow_trust_remote_code=view.allow_trust_remote_code)
    if args_problem:
        results.append(RuleResult(False, args_problem))
    verdict = evaluate_nodes(engine, spec, nodes, config.label_mappings, classes, listed_bytes, counts)
    failures = [r.reason for r in results if not r.ok]
    if not verdict.ok:
        failures.extend(verdict.reasons)
    return Judgement(name, tuple(r.reason for r in results), tuple(failures), verdict)


def engine_order(spec: ModelDeploymentSpec) -> tuple[tuple[str, ...], str]:
    """The engines tried, in order, and how the order came about (for the summary)."""
    if spec.engine.name != registry.AUTO:
        return (spec.engine.name,), "engine.name"
    if spec.engine.preference:
        return tuple(spec.engine.preference), "engine.preference"
    return registry.default_preference(), "default"


def _not_tried_note(spec: ModelDeploymentSpec, how: str) -> str:
    if how == "engine.name":
        return f"not tried: engine.name is {spec.engine.name}"
    if how == "engine.preference":
        return "not tried: not listed in engine.preference"
    # Under the default order only engines without an auto_rank are left out.
    return "not chosen automatically: list it in engine.preference or set engine.name"


def _order_text(order: Sequence[str], how: str) -> str:
    text = ", ".join(order)
    return f"{text} (engine.preference)" if how == "engine.preference" else text


def select_engine(
    spec: ModelDeploymentSpec,
    nodes: Sequence[NodeFacts],
    config: OperatorConfig,
    current: str | None = None,
    reselect: bool = False,
    classes: Sequence[NodeClass] | None = None,
    listed_bytes: int | None = None,
    counts: bool = True,
) -> Decision:
    """Choose the engine for `spec` on `nodes`, explaining every candidate.

    `current` is the engine the running Deployment uses (pass it only while the spec is unchanged);
    `reselect` is the `modeldeploy.io/reselect: "true"` annotation, which lets a better engine replace it.
    `classes` is `nodes` grouped by node_classes.group_nodes, when the caller keeps them (the operator
    groups once per change of the node facts); otherwise they are grouped here, once for every engine.
    `listed_bytes`: the model's files' total from the shared cache's listing (status.model.bytesTotal),
    which the memory estimate prefers to sizeInBillions (docs/memory-placement.md).
    `counts`: reasons count and name nodes (`modeldeploy select`); the operator's status passes False
    (node_rules.evaluate_nodes: kinds of node only, so node churn within a pool does not rewrite it).
    """
    order, how = engine_order(spec)
    every = registry.listing_order()  # candidates not tried are listed in this order after the tried ones
    if classes is None:
        classes = group_nodes(nodes, config.label_mappings)
    judged = {e: judge(e, spec, nodes, config, classes, listed_bytes, counts) for e in every}
    fresh = next((e for e in order if judged[e].eligible), None)
    notes: dict[str, list[str]] = {e: [] for e in every}
    for engine in every:
        if engine not in order:
            notes[engine].append(_not_tried_note(spec, how))

    chosen = fresh
    kept = impossible = False
    summary = ""
    if current is not None and not reselect and current in order and current != fresh:
        if judged[current].eligible:
            chosen, kept = current, True
            summary = (
                f"{current}: kept the running engine while it can still run ({fresh if fresh else 'none'} "
                f"is earlier in order {_order_text(order, how)} and could run now; {RESELECT_HINT})"
            )
        else:
            chosen, impossible = None, True
            instead = f"{fresh} could run instead; {RESELECT_HINT}" if fresh else "no other engine can run"
            summary = (
                f"the running engine {current} can no longer run: {'; '.join(judged[current].failures)}; "
                f"the Deployment is left as it is ({instead})"
            )

    if chosen is not None:
        position = order.index(chosen)
        for engine in order[position + 1 :]:
            if judged[engine].eligible:
                notes[engine].append(f"eligible, but {chosen} comes first in the order")
        if kept:
            notes[chosen].append("kept: it is the running engine and can still run")
            for engine in order[:position]:
                if judged[engine].eligible:
                    notes[engine].append(f"eligible, but the running engine {chosen} is kept ({RESELECT_HINT})")
        if not summary:
            if how == "engine.name":
                summary = f"{chosen}: named in engine.name and its rules hold"
            else:
                summary = f"{chosen}: first eligible engine in order {_order_text(order, how)}"
    elif not summary:
        if how == "engine.name":
            named = order[0]
            summary = f"no engine can run: engine.name is {named} and {'; '.join(judged[named].failures)}"
        else:
            per_engine = "; ".join(f"{e}: {judged[e].failures[0]}" for e in order)
            summary = f"no engine can run: {per_engine}"

    listed = (*order, *(e for e in every if e not in order))
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
    elif chosen is not None:
        warnings = registry.get(chosen).warnings(model_view(spec, config))
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
