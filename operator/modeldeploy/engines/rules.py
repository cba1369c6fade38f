"""Rule and node-need building blocks the engine modules compose.

Each rule gives a reason whether it passes or fails, because `status.selection` must say why an engine
was chosen as much as why one was not. Engines that share a policy (GPU-only, GPU-when-available) share
the wording here, so two engines never explain the same rule in two ways.
"""

from __future__ import annotations

from collections.abc import Mapping

from modeldeploy.engines.base import Engine, NodeNeed, RuleResult, Tier
from modeldeploy.formats import ModelFormat

# Format order for messages: the seed's own order.
FORMAT_ORDER = tuple(ModelFormat)


def formats_text(engine: Engine) -> str:
    """The formats the engine loads, in the seed's order: 'pytorch, gptq, awq'."""
    return ", ".join(f.value for f in FORMAT_ORDER if f in engine.formats)


def format_rule(engine: Engine, fmt: ModelFormat) -> RuleResult:
    """The model format is one the engine loads at all."""
    if fmt in engine.formats:
        return RuleResult(True, f"format {fmt.value} is one {engine.label} loads")
    return RuleResult(False, f"format {fmt.value} is not one {engine.label} loads ({formats_text(engine)})")


def quantization_rule(
    engine: Engine, fmt: ModelFormat, quantization: str | None, table: Mapping[ModelFormat, tuple[str, ...]]
) -> RuleResult | None:
    """The quantization the engine needs for this format (None when the format rule already fails).

    Compared case-insensitively. An unset quantization counts as `none` for pytorch (the API's meaning of
    plain weights) and as unknown for formats with a condition, which then fail rather than being guessed.
    """
    label = engine.label
    allowed = table.get(fmt)
    if allowed is None:
        if fmt not in engine.formats:
            return None  # the format rule already fails
        return RuleResult(True, f"{fmt.value} has no quantization condition for {label}")
    got = quantization
    if got is None and fmt == ModelFormat.PYTORCH:
        got = "none"
    wanted = " or ".join(allowed) if len(allowed) <= 2 else ", ".join(allowed[:-1]) + " or " + allowed[-1]
    if got is None:
        return RuleResult(False, f"{fmt.value} needs quantization {wanted}; model.quantization is not set")
    if got.lower() in {a.lower() for a in allowed}:
        return RuleResult(True, f"{fmt.value} with quantization {got} is one {label} loads")
    return RuleResult(False, f"{fmt.value} needs quantization {wanted}; got {got}")


def gpu_required_rule(engine: Engine, gpus: int | None) -> RuleResult:
    """A GPU-only engine needs at least one GPU per replica; it uses them all as tensor parallel."""
    label = engine.label
    if gpus == 0:
        return RuleResult(False, f"{label} needs at least 1 GPU per replica; resources.gpus is 0")
    if gpus:
        return RuleResult(True, f"{label} gets {gpus} GPU(s) per replica from resources.gpus (tensor parallel {gpus})")
    return RuleResult(
        True,
        f"{label} gets 1 GPU per replica (resources.gpus not set; tensor parallel 1, or more where the memory "
        "estimate asks for it)",
    )


def gpu_required_needs(gpus: int | None) -> tuple[NodeNeed, ...]:
    """GPU-only engines: `resources.gpus` (default 1) CUDA GPUs on one Linux node."""
    return (NodeNeed(Tier.CUDA, gpus or 1),)


def gpu_when_available_needs(gpus: int | None, apple_fallback: bool = False) -> tuple[NodeNeed, ...]:
    """Engines that use GPUs when they can (see node_rules.py's docstring for the policy).

    `resources.gpus: N` means N CUDA GPUs and nothing else; 0 forces CPU; unset tries CUDA with one GPU
    and then CPU. With `apple_fallback`, Apple silicon is tried last (only when no Linux node is usable).
    """
    if gpus:
        return (NodeNeed(Tier.CUDA, gpus),)
    cpu = (NodeNeed(Tier.CPU),) if gpus == 0 else (NodeNeed(Tier.CUDA, 1), NodeNeed(Tier.CPU))
    return cpu + (NodeNeed(Tier.APPLE),) if apple_fallback else cpu


def gpu_when_available_reason(need: NodeNeed, gpus: int | None, earlier_failed: bool) -> str | None:
    """How such an engine's GPU count was decided on the chosen tier, for the reasons."""
    if gpus:
        return f"GPU rule: resources.gpus is {gpus}, so it runs on a CUDA node with {gpus} GPU(s) per replica"
    if gpus == 0:
        where = "on Apple silicon" if need.tier == Tier.APPLE else "on CPU"
        return f"GPU rule: resources.gpus is 0, so it runs {where} with no GPU"
    if need.tier == Tier.CUDA:
        return (
            "GPU rule: a usable Linux node has a CUDA GPU, so it is pinned to GPU nodes with 1 GPU per replica "
            "(set resources.gpus: 0 to run on CPU)"
        )
    if need.tier == Tier.CPU:
        return "GPU rule: no usable Linux node has a CUDA GPU, so it runs on CPU with no GPU"
    return "no usable Linux node, so it runs on Apple silicon" if earlier_failed else None
