"""Model rules per engine: what the model (format, quantization, name) must be for an engine to load it.

Each rule gives a reason whether it passes or fails, because `status.selection` must say why an engine
was chosen as much as why one was not. The vLLM rules are the seed's list, one check per bullet; the
node-side bullet ("Linux with at least one CUDA device") lives in node_rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import ENGINE_FORMATS, GPU_REQUIRED_ENGINES, Engine, ModelFormat
from modeldeploy.selection.vllm_models import is_vllm_supported

# Format order for messages: the seed's own order.
FORMAT_ORDER = tuple(ModelFormat)

# vLLM's quantization conditions from the seed (compared case-insensitively); formats absent here have none.
VLLM_QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {
    ModelFormat.PYTORCH: ("none",),
    ModelFormat.AWQ: ("Int4",),
    ModelFormat.GPTQ: ("Int3", "Int4", "Int8"),
}
# SGLang: plain pytorch only (selection.md); gptq/awq/fp8 carry their own quantization.
SGLANG_QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {ModelFormat.PYTORCH: ("none",)}
# transformers: pytorch plain or quantized on load through bitsandbytes. gptq, awq and bnb weights carry
# their quantization config, which transformers reads from the checkpoint: no condition on them.
TRANSFORMERS_QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {ModelFormat.PYTORCH: ("none", "4bit", "8bit")}

ENGINE_LABEL = {
    Engine.VLLM: "vLLM",
    Engine.SGLANG: "SGLang",
    Engine.LLAMA_CPP: "llama.cpp",
    Engine.TRANSFORMERS: "transformers",
    Engine.MLX: "MLX",
}


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome and the sentence that explains it."""

    ok: bool
    reason: str


def _formats(engine: Engine) -> str:
    return ", ".join(f.value for f in FORMAT_ORDER if f in ENGINE_FORMATS[engine])


def format_rule(engine: Engine, fmt: ModelFormat) -> RuleResult:
    """The model format is one the engine loads at all."""
    label = ENGINE_LABEL[engine]
    if fmt in ENGINE_FORMATS[engine]:
        return RuleResult(True, f"format {fmt.value} is one {label} loads")
    return RuleResult(False, f"format {fmt.value} is not one {label} loads ({_formats(engine)})")


def quantization_rule(
    engine: Engine, fmt: ModelFormat, quantization: str | None, table: dict[ModelFormat, tuple[str, ...]]
) -> RuleResult | None:
    """The quantization the engine needs for this format (None when the format rule already fails).

    Compared case-insensitively. An unset quantization counts as `none` for pytorch (the API's meaning of
    plain weights) and as unknown for formats with a condition, which then fail rather than being guessed.
    """
    label = ENGINE_LABEL[engine]
    allowed = table.get(fmt)
    if allowed is None:
        if fmt not in ENGINE_FORMATS[engine]:
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


def vllm_supported_rule(spec: ModelDeploymentSpec, config: OperatorConfig) -> RuleResult:
    """The family (custom model) or name (builtin) is in vLLM's supported list or the config's extras."""
    model = spec.model
    what = f"model family {model.family}" if model.family else f"model {model.name}"
    key = model.family or model.name
    if is_vllm_supported(key):
        return RuleResult(True, f"{what} is in vLLM's supported list")
    if is_vllm_supported(key, config.vllm_extra_families):
        return RuleResult(True, f"{what} is in vLLM's supported list (vllmExtraFamilies in the operator config)")
    hint = "" if model.family else "; for a custom model set model.family"
    return RuleResult(
        False,
        f"{what} is not in vLLM's supported list (add it to vllmExtraFamilies in the operator config "
        f"if vLLM loads it{hint})",
    )


def gpu_count_rule(engine: Engine, gpus: int | None) -> RuleResult | None:
    """GPU-only engines need at least one GPU per replica; MLX cannot use NVIDIA GPUs at all."""
    label = ENGINE_LABEL[engine]
    if engine in GPU_REQUIRED_ENGINES:
        if gpus == 0:
            return RuleResult(False, f"{label} needs at least 1 GPU per replica; resources.gpus is 0")
        if gpus:
            return RuleResult(
                True, f"{label} gets {gpus} GPU(s) per replica from resources.gpus (tensor parallel {gpus})"
            )
        return RuleResult(True, f"{label} gets 1 GPU per replica (resources.gpus not set; tensor parallel 1)")
    if engine == Engine.MLX and gpus:
        return RuleResult(False, f"MLX runs on Apple silicon and cannot use nvidia.com/gpu; resources.gpus is {gpus}")
    return None


def _vllm(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult | None]:
    fmt = spec.model.format
    return [
        format_rule(Engine.VLLM, fmt),
        quantization_rule(Engine.VLLM, fmt, spec.model.quantization, VLLM_QUANTIZATION),
        vllm_supported_rule(spec, config),
        gpu_count_rule(Engine.VLLM, spec.resources.gpus),
    ]


def _sglang(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult | None]:
    fmt = spec.model.format
    return [
        format_rule(Engine.SGLANG, fmt),
        quantization_rule(Engine.SGLANG, fmt, spec.model.quantization, SGLANG_QUANTIZATION),
        gpu_count_rule(Engine.SGLANG, spec.resources.gpus),
    ]


def _llamacpp(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult | None]:
    fmt = spec.model.format
    if fmt == ModelFormat.GGUFV2:
        return [RuleResult(True, "format ggufv2 is the GGUF format llama.cpp loads")]
    return [RuleResult(False, f"format {fmt.value} is not GGUF (llama.cpp loads ggufv2 only)")]


def _transformers(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult | None]:
    fmt = spec.model.format
    return [
        format_rule(Engine.TRANSFORMERS, fmt),
        quantization_rule(Engine.TRANSFORMERS, fmt, spec.model.quantization, TRANSFORMERS_QUANTIZATION),
    ]


def _mlx(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult | None]:
    return [format_rule(Engine.MLX, spec.model.format), gpu_count_rule(Engine.MLX, spec.resources.gpus)]


MODEL_RULES: dict[Engine, Callable[[ModelDeploymentSpec, OperatorConfig], list[RuleResult | None]]] = {
    Engine.VLLM: _vllm,
    Engine.SGLANG: _sglang,
    Engine.LLAMA_CPP: _llamacpp,
    Engine.TRANSFORMERS: _transformers,
    Engine.MLX: _mlx,
}


def model_rules(engine: Engine, spec: ModelDeploymentSpec, config: OperatorConfig) -> list[RuleResult]:
    """Every model rule of `engine` for this spec, in the seed's order, each with its reason."""
    return [r for r in MODEL_RULES[engine](spec, config) if r is not None]
