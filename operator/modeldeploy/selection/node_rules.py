"""Node rules per engine and the placement that pins the Deployment to the nodes that satisfy them.

An engine runs on one of a few kinds of node ("tiers"), tried in order: CUDA (Linux with enough NVIDIA
GPUs), CPU (Linux) and Apple silicon. The first tier with a usable node wins and the Deployment is pinned
to that tier by labels, so that the pods land where selection counted and a similar node joining later
does not change the rendered Deployment.

Which tiers an engine may use, in which order, is the engine's own `node_needs` (engines/). GPU rule
(documented in the reasons): vLLM and SGLang need `resources.gpus` (default 1) CUDA GPUs on one node.
llama.cpp and transformers use GPUs when they can: with `resources.gpus` unset they are pinned to CUDA
nodes with 1 GPU per replica when at least one usable Linux node has a CUDA GPU, and run on CPU (0 GPUs)
otherwise; `resources.gpus: 0` forces CPU, `resources.gpus: N` requires N CUDA GPUs. llama.cpp goes to
Apple silicon only when no Linux node is usable (the Linux container is its ordinary image). MLX runs
on Apple silicon only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import LabelMappings
from modeldeploy.engines.base import Engine, NodeNeed, Tier
from modeldeploy.selection.memory_fit import MemoryVerdict, Preference, judge_memory, prefer_gpu_share
from modeldeploy.selection.node_classes import NodeClass, count_by_text, group_nodes, member_names
from modeldeploy.selection.nodes import ARCH_LABEL, OS_LABEL
from modeldeploy.selection.scheduling import (
    format_taint,
    matches_affinity,
    matches_node_selector,
    untolerated_taints,
)
from modeldeploy.selection.types import NodeFacts, Placement

MAX_NAMES = 10  # node names listed in one reason before "and N more"


def engine_phrase(needs: Sequence[NodeNeed]) -> str:
    """What a node must be for any of `needs`: 'Linux with a CUDA GPU', 'Linux or Apple silicon'."""
    phrases: list[str] = []
    for need in needs:
        phrase = "Linux" if need.tier == Tier.CUDA and len(needs) > 1 else need.phrase()
        if phrase not in phrases:
            phrases.append(phrase)
    return " or ".join(phrases)


def gpu_toleration(mappings: LabelMappings) -> dict[str, Any]:
    """The toleration every engine using CUDA GPUs renders: GPU nodes are usually tainted with this key."""
    return {"key": mappings.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"}


def tier_tolerations(need: NodeNeed, mappings: LabelMappings) -> tuple[dict[str, Any], ...]:
    return (gpu_toleration(mappings),) if need.tier == Tier.CUDA else ()


def hardware_miss(need: NodeNeed, node: NodeFacts) -> str | None:
    """Why the node's hardware does not suit the tier (a short category), or None when it does."""
    if need.tier == Tier.APPLE:
        return None if node.apple_silicon else "not Apple silicon"
    if node.os != "linux":
        return "not Linux"
    if need.tier == Tier.CUDA:
        if node.gpus == 0:
            return "CPU-only"
        if node.gpus < need.gpus:
            return f"with fewer than {need.gpus} CUDA GPUs"
    return None


def usability_problem(
    node: NodeFacts, spec: ModelDeploymentSpec, need: NodeNeed, mappings: LabelMappings
) -> str | None:
    """Why pods of this tier could not be scheduled on the node (a short category), or None."""
    if not node.ready:
        return "not Ready"
    if node.unschedulable:
        return "cordoned"
    if not matches_node_selector(node, spec.node_selector):
        return "not matching spec.nodeSelector"
    if not matches_affinity(node, spec.affinity):
        return "not matching spec.affinity"
    blocking = untolerated_taints(node, [*spec.tolerations, *tier_tolerations(need, mappings)])
    if blocking:
        return f"tainted {format_taint(blocking[0])} (not tolerated)"
    return None


@dataclass(frozen=True)
class NodeProblem:
    """Why one node does not suit one tier: its hardware, or something that keeps the pods off it."""

    text: str
    hardware: bool


def node_problem(
    node: NodeFacts, spec: ModelDeploymentSpec, need: NodeNeed, mappings: LabelMappings
) -> NodeProblem | None:
    """Hardware first (a cordoned CPU node is reported as CPU-only), then whether pods can land there."""
    miss = hardware_miss(need, node)
    if miss:
        return NodeProblem(miss, hardware=True)
    problem = usability_problem(node, spec, need, mappings)
    return NodeProblem(problem, hardware=False) if problem else None


def _names(nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:MAX_NAMES])
    return shown if len(nodes) <= MAX_NAMES else f"{shown} and {len(nodes) - MAX_NAMES} more"


@dataclass(frozen=True)
class NodeVerdict:
    """Whether an engine's node rules hold, why, where it would run and how it is pinned there."""

    ok: bool
    reasons: tuple[str, ...]
    nodes: tuple[str, ...]  # the usable nodes of the chosen tier
    placement: Placement | None


def placement_for(
    need: NodeNeed,
    chosen: Sequence[NodeFacts],
    mappings: LabelMappings,
    memory: MemoryVerdict | None = None,
    preference: Preference | None = None,
) -> Placement:
    """Label terms, tolerations and GPUs per replica that pin the pods to nodes like `chosen`; `memory`
    adds the GPU memory and compute capability the model needs (selection/memory_fit.py)."""
    if need.tier == Tier.APPLE:
        terms: tuple[dict[str, Any], ...] = (
            {
                "matchExpressions": [
                    {"key": OS_LABEL, "operator": "In", "values": ["darwin"]},
                    {"key": ARCH_LABEL, "operator": "In", "values": ["arm64"]},
                ]
            },
            {
                "matchExpressions": [
                    {"key": mappings.accelerator, "operator": "In", "values": [mappings.apple_silicon_value]}
                ]
            },
        )
        return Placement(
            node_selector_terms=terms, tolerations=(), gpus=0, gpu_resource=mappings.gpu_resource, apple_silicon=True
        )
    expressions: list[dict[str, Any]] = [{"key": OS_LABEL, "operator": "In", "values": ["linux"]}]
    if need.tier == Tier.CUDA and chosen and all(n.label(mappings.gpu_present) == "true" for n in chosen):
        # Only when every chosen node carries it; otherwise the GPU resource limit alone finds GPU nodes.
        expressions.append({"key": mappings.gpu_present, "operator": "In", "values": ["true"]})
    terms = ({"matchExpressions": expressions},)
    if memory is not None and memory.hosts:
        fields = [{"key": "metadata.name", "operator": "In", "values": list(memory.hosts)}]
        terms = ({"matchExpressions": expressions, "matchFields": fields},)
    elif memory is not None and memory.alternatives:
        terms = tuple({"matchExpressions": [*expressions, *alt]} for alt in memory.alternatives)
    return Placement(
        node_selector_terms=terms,
        tolerations=tier_tolerations(need, mappings),
        gpus=need.gpus if need.tier == Tier.CUDA else 0,
        gpu_resource=mappings.gpu_resource,
        preferred_terms=preference.terms if preference else (),
    )


def tier_problems(
    nodes: Sequence[NodeFacts], spec: ModelDeploymentSpec, need: NodeNeed, mappings: LabelMappings
) -> list[NodeProblem | None]:
    """node_problem for every node, judged once per class of identical nodes (node_classes.py)."""
    out: list[NodeProblem | None] = [None] * len(nodes)
    for cls in group_nodes(nodes, mappings, by_host=_by_host(spec)):
        problem = node_problem(cls.facts, spec, need, mappings)
        for position in cls.members:
            out[position] = problem
    return out


def _by_host(spec: ModelDeploymentSpec) -> bool:
    """Whether the spec may tell nodes of one pool apart (by name or per-node labels)."""
    return bool(spec.node_selector) or spec.affinity is not None


def evaluate_nodes(
    engine: Engine,
    spec: ModelDeploymentSpec,
    nodes: Sequence[NodeFacts],
    mappings: LabelMappings,
    classes: Sequence[NodeClass] | None = None,
    listed_bytes: int | None = None,
    counts: bool = True,
) -> NodeVerdict:
    """Apply the engine's node rules to every node: the first tier with a usable node wins.

    On CUDA, an engine sized by memory keeps only the nodes that hold the model (memory_fit.py);
    `listed_bytes` is the model's size from the shared cache's listing, when known.

    `classes`: `nodes` grouped by node_classes.group_nodes (without by_host), when the caller has them;
    each class is judged once. A spec that may name hosts is judged node by node.

    Without `counts` (the operator's status), the reasons name kinds of node, never how many nodes or
    which ones, and `nodes` is empty: the verdict then depends only on which classes exist (and, for a
    spec judged node by node or pinned by host name, on the nodes), so a node joining an existing pool
    changes nothing (docs/operator-at-scale.md, "Node churn").
    """
    needs = engine.node_needs(spec.resources.gpus)
    if classes is None or _by_host(spec):
        classes = group_nodes(nodes, mappings, by_host=_by_host(spec))
    reasons: list[str] = []
    per_tier = [[node_problem(c.facts, spec, need, mappings) for c in classes] for need in needs]
    for index, (need, problems) in enumerate(zip(needs, per_tier, strict=True)):
        ok = [c for c, p in zip(classes, problems, strict=True) if p is None]
        if not ok:
            if len(needs) > 1 and index < len(needs) - 1:
                texts = [(p.text, c) for c, p in zip(classes, problems, strict=True) if p]
                reasons.append(f"no usable node is {need.phrase()} ({count_by_text(texts, len(nodes), counts)})")
            continue
        memory = None
        if need.tier == Tier.CUDA:
            memory = judge_memory(engine, spec, ok, nodes, listed_bytes, counts)
        if memory is not None and not memory.fitting:
            held = "; ".join(memory.reasons)
            return NodeVerdict(
                False, (*reasons, f"no usable node can hold the model ({need.phrase()}): {held}"), (), None
            )
        if memory is not None:
            ok = list(memory.fitting)
            need = NodeNeed(need.tier, memory.tp)
        if counts:
            names = member_names(nodes, ok)
            reasons.append(f"{len(names)} of {len(nodes)} nodes can host it ({need.phrase()}): {_names(names)}")
        else:
            names = ()
            reasons.append(f"usable nodes can host it ({need.phrase()})")
        gpu_reason = engine.gpu_rule_reason(need, spec.resources.gpus, index > 0)
        if gpu_reason:
            reasons.append(gpu_reason)
        if memory is not None:
            reasons.extend(memory.reasons)
        preference = None
        if need.tier == Tier.CUDA and engine.prefers_gpu_share:
            preference = prefer_gpu_share(spec, ok, nodes, need.gpus, counts)
            if preference is not None:
                reasons.append(preference.reason)
        # Every member of a class carries the representative's gpu_present label (node_classes.shape).
        placement = placement_for(need, [c.facts for c in ok], mappings, memory, preference)
        return NodeVerdict(True, tuple(reasons), names, placement)
    # No tier works: say per node why, reporting for each node the tier it came closest to.
    combined = [(_closest_problem(needs, [problems[i] for problems in per_tier]), c) for i, c in enumerate(classes)]
    failure = f"no usable node is {engine_phrase(needs)} ({count_by_text(combined, len(nodes), counts)})"
    return NodeVerdict(False, (failure,), (), None)


def _closest_problem(needs: Sequence[NodeNeed], problems: Sequence[NodeProblem | None]) -> str:
    """For a node no tier accepts: its scheduling problem on a tier whose hardware fits, else the hardware."""
    for problem in problems:
        if problem and not problem.hardware:
            return problem.text
    first = problems[0]
    if len(needs) == 1 and first:
        return first.text
    return f"not {engine_phrase(needs)}"
