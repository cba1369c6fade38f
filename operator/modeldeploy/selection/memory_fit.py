"""Which GPU nodes can hold the model under vLLM or SGLang, at which tensor-parallel size. Pure.

Applied after the node rules (node_rules.py) to the usable CUDA nodes, one class of identical nodes at a
time, for an engine that states how it divides memory (`Engine.memory`). When nothing is known of the
model (no listing, no known shape, no sizeInBillions) nothing is judged and the decision is as it was.
The placement then pins the pods by the facts: GPU memory above what one GPU needs and compute capability
at least what the weights' kernels need, by labels when every fitting node carries them, else by node
names when some usable node cannot hold it (docs/memory-placement.md, "Placement").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import LabelMappings
from modeldeploy.engines.base import Engine
from modeldeploy.memory.estimate import EngineMemory, ModelMemory, gib, model_memory
from modeldeploy.memory.gguf import gguf_bytes, share_on_gpu
from modeldeploy.memory.judge import GpuJudgement, judge_gpu, minimum_gpu_mib, required_capability
from modeldeploy.memory.models import parse_billions
from modeldeploy.selection.node_classes import NodeClass, group_nodes
from modeldeploy.selection.types import NodeFacts

MAX_CLASSES = 6  # node classes whose arithmetic one decision lists


@dataclass(frozen=True)
class MemoryVerdict:
    """The classes that hold the model, the tensor-parallel size, the reasons and the pinning expressions."""

    fitting: tuple[NodeClass, ...]
    tp: int
    reasons: tuple[str, ...]
    # Expressions ANDed into the CUDA term, one alternative per tuple entry (ORed terms): compute
    # capability X.Y with Y > 0 needs two alternatives.
    alternatives: tuple[tuple[dict[str, Any], ...], ...]
    # When no label can say it: the fitting nodes by name (a matchFields term on metadata.name).
    hosts: tuple[str, ...] = ()


def spec_memory(spec: ModelDeploymentSpec, listed_bytes: int | None) -> ModelMemory | None:
    """The model's memory facts from the spec (and the listing's total, when the cache listed it)."""
    model = spec.model
    return model_memory(model.name, model.size_in_billions, model.uri, model.format, model.quantization, listed_bytes)


def _class_name(cls: NodeClass, name: str) -> str:
    more = len(cls.members) - 1
    return f"{name} (and {more} like it)" if more else name


def _describe(cls: NodeClass, member_name: str, counts: bool = True) -> str:
    """'gpu-1 (and 9 like it) [H100, 8 GPU(s)]'; without `counts`, 'nodes with [H100, 8 GPU(s)]'."""
    facts = cls.facts
    product = f"{facts.gpu_product}, " if facts.gpu_product else ""
    named = _class_name(cls, member_name) if counts else "nodes with"
    return f"{named} [{product}{facts.gpus} GPU(s)]"


def _ordered(lines: list[str], counts: bool) -> list[str]:
    """Node-list order with counts; else sorted and distinct, so that only the kinds of node matter."""
    return lines if counts else sorted(set(lines))


def _judge(
    engine: EngineMemory, model: ModelMemory, spec: ModelDeploymentSpec, cls: NodeClass, tp: int | None
) -> GpuJudgement:
    facts = cls.facts
    return judge_gpu(
        engine,
        model,
        spec.model.format,
        spec.engine.args,
        facts.gpus,
        facts.gpu_memory_mib,
        facts.compute_capability,
        tp,
    )


def judge_memory(
    engine: Engine,
    spec: ModelDeploymentSpec,
    classes: Sequence[NodeClass],
    nodes: Sequence[NodeFacts],
    listed_bytes: int | None = None,
    counts: bool = True,
) -> MemoryVerdict | None:
    """Judge the usable CUDA classes of `nodes` (the whole node list); None: nothing to judge."""
    profile = engine.memory
    if profile is None or not classes:
        return None
    model = spec_memory(spec, listed_bytes)
    if model is None:
        return None
    names = _Names(nodes)
    fixed = spec.resources.gpus
    first = [_judge(profile, model, spec, c, fixed) for c in classes]
    sizes = [j.tp for j in first if j.ok and j.tp is not None]
    if not sizes:
        lines = [f"{_describe(c, names[c.first], counts)}: {j.text}" for c, j in zip(classes, first, strict=True)]
        return MemoryVerdict((), 0, tuple(_capped(_ordered(lines, counts))), ())
    tp = min(sizes)
    final = [_judge(profile, model, spec, c, tp) if c.facts.gpus >= tp else None for c in classes]
    fitting = tuple(c for c, j in zip(classes, final, strict=True) if j is not None and j.ok)
    lines = []
    for cls, j, alone in zip(classes, final, first, strict=True):
        # A class with fewer GPUs than `tp` is shown as judged on its own GPUs (it cannot hold it there).
        shown = j if j is not None else alone
        # "gpu-1 (and 9 like it) [...] holds it", "nodes with [...] hold it"
        verdict = ("holds it" if counts else "hold it") if shown.ok else "cannot hold it"
        lines.append(f"{_describe(cls, names[cls.first], counts)} {verdict}: {shown.text}")
    reasons = _capped(_ordered(lines, counts))
    if fixed is None and tp > 1:
        reasons.insert(0, f"tensor parallel {tp}: the smallest that holds {model.name} (resources.gpus not set)")
    alternatives, hosts = _pinning(profile, model, spec, classes, fitting, final, names)
    return MemoryVerdict(fitting, tp, tuple(reasons), alternatives, hosts)


class _Names:
    """Node names by position, read only where a reason names a node (the list may hold 500 nodes)."""

    def __init__(self, nodes: Sequence[NodeFacts]) -> None:
        self._nodes = nodes

    def __getitem__(self, position: int) -> str:
        return self._nodes[position].name


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_CLASSES:
        return lines
    return [*lines[:MAX_CLASSES], f"and {len(lines) - MAX_CLASSES} more kinds of node"]


def _pinning(
    profile: EngineMemory,
    model: ModelMemory,
    spec: ModelDeploymentSpec,
    classes: Sequence[NodeClass],
    fitting: Sequence[NodeClass],
    final: Sequence[GpuJudgement | None],
    names: _Names,
) -> tuple[tuple[tuple[dict[str, Any], ...], ...], tuple[str, ...]]:
    """Expressions that keep the pods on nodes like `fitting`, by labels where all carry them."""
    excluded = len(fitting) < len(classes)
    expressions: list[dict[str, Any]] = []
    labelled = True
    needs = [j.needed for j in final if j is not None and j.ok and j.needed is not None]
    memory_labels = {c.facts.gpu_memory_label for c in fitting}
    if needs and len(memory_labels) == 1 and None not in memory_labels:
        least = max(minimum_gpu_mib(profile, n, spec.engine.args) for n in needs)
        expressions.append({"key": memory_labels.pop(), "operator": "Gt", "values": [str(least - 1)]})
    elif excluded:
        labelled = False
    required = required_capability(profile, model, spec.model.format, spec.engine.args)
    alternatives: list[tuple[dict[str, Any], ...]] = []
    capability_labels = {c.facts.compute_labels for c in fitting}
    if required is not None and len(capability_labels) == 1 and None not in capability_labels:
        major_key, minor_key = next(iter(capability_labels)) or ("", "")
        major, minor = required[1]
        if minor == 0:
            alternatives = [(*expressions, _gt(major_key, major - 1))]
        else:
            alternatives = [
                (*expressions, _gt(major_key, major)),
                (
                    *expressions,
                    {"key": major_key, "operator": "In", "values": [str(major)]},
                    _gt(minor_key, minor - 1),
                ),
            ]
    elif required is not None and excluded:
        labelled = False
    if not labelled:
        return (), tuple(sorted(names[i] for c in fitting for i in c.members))
    if not alternatives:
        return ((tuple(expressions),) if expressions else ()), ()
    return tuple(alternatives), ()


def _gt(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "operator": "Gt", "values": [str(value)]}


@dataclass(frozen=True)
class MemoryRow:
    """One engine on one kind of GPU node: what `modeldeploy memory` prints (docs/cli.md)."""

    engine: str
    nodes: str  # the first node of the class, and how many are like it
    gpus: int
    gpu_mib: int | None
    capability: str  # "8.9", or "?" when unknown
    verdict: str  # "fits", "no"
    tp: int | None
    text: str  # the judgment's sentence, with its arithmetic


def memory_table(
    spec: ModelDeploymentSpec,
    nodes: Sequence[NodeFacts],
    mappings: LabelMappings,
    engines: Sequence[Engine],
    listed_bytes: int | None = None,
) -> tuple[ModelMemory | None, list[MemoryRow]]:
    """Every engine sized by memory against every kind of CUDA node, whatever the node rules say."""
    model = spec_memory(spec, listed_bytes)
    rows: list[MemoryRow] = []
    if model is None:
        return None, rows
    classes = [c for c in group_nodes(nodes, mappings) if c.facts.gpus > 0]
    for engine in engines:
        if engine.memory is None:
            continue
        for cls in classes:
            facts = cls.facts
            judged = _judge(engine.memory, model, spec, cls, spec.resources.gpus)
            capability = (
                f"{facts.compute_capability[0]}.{facts.compute_capability[1]}" if facts.compute_capability else "?"
            )
            rows.append(
                MemoryRow(
                    engine.name,
                    _class_name(cls, nodes[cls.first].name),
                    facts.gpus,
                    facts.gpu_memory_mib,
                    capability,
                    "fits" if judged.ok else "no",
                    judged.tp,
                    judged.text,
                )
            )
    return model, rows


@dataclass(frozen=True)
class Preference:
    """llama.cpp's preferred node affinity: toward the nodes whose GPUs hold the most of the model."""

    reason: str
    terms: tuple[dict[str, Any], ...]


def prefer_gpu_share(
    spec: ModelDeploymentSpec,
    classes: Sequence[NodeClass],
    nodes: Sequence[NodeFacts],
    gpus: int,
    counts: bool = True,
) -> Preference | None:
    """Weights that add up, per node, to the share of the model its `gpus` GPUs hold (in percent).

    None when the model's size or quantisation is unknown, when a class lacks a memory label no affinity
    can compare, or when every class would hold the same share (nothing to prefer: nothing changes).
    """
    params = parse_billions(spec.model.size_in_billions)
    weights = gguf_bytes(params, spec.model.quantization) if params else None
    labels = {c.facts.gpu_memory_label for c in classes}
    if weights is None or len(labels) != 1 or None in labels:
        return None
    label = next(iter(labels)) or ""
    shares: dict[int, float] = {}
    for cls in classes:
        mib = cls.facts.gpu_memory_mib or 0
        shares[mib] = share_on_gpu(weights, mib, gpus)
    if len(set(shares.values())) < 2:
        return None
    terms: list[dict[str, Any]] = []
    previous = 0
    for mib in sorted(shares):
        percent = round(100 * shares[mib])
        if percent > previous:
            preference = {"matchExpressions": [{"key": label, "operator": "Gt", "values": [str(mib - 1)]}]}
            terms.append({"weight": percent - previous, "preference": preference})
            previous = percent
    names = _Names(nodes)
    if counts:
        ranked = sorted(classes, key=lambda c: (-shares[c.facts.gpu_memory_mib or 0], c.first))
        listed = ", ".join(f"{names[c.first]} {round(100 * shares[c.facts.gpu_memory_mib or 0])} %" for c in ranked)
    else:  # by GPU memory, not by a node's name: the same text whichever nodes the pools hold
        by_share = sorted(shares.items(), key=lambda pair: (-pair[1], pair[0]))
        listed = ", ".join(f"{mib} MiB GPUs {round(100 * share)} %" for mib, share in by_share)
    reason = (
        f"preferred: the nodes whose GPUs hold the most of the {gib(weights)} GGUF, where auto-NGL puts the most "
        f"layers on the GPU ({listed})"
    )
    return Preference(reason, tuple(terms))
