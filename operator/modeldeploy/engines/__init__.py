"""The engines ModelDeploy can deploy and the static facts about each.

These facts are shared by three places that must never disagree: the CRD's CEL rules (what the
apiserver can reject alone), the selection engine (what the operator decides with node facts) and the
renderer. Keeping them in one table is what stops a CEL rule from allowing a pair the selector forbids.
"""

from __future__ import annotations

from enum import StrEnum


class Engine(StrEnum):
    """An inference engine, spelled as users write it in `engine.name`."""

    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMA_CPP = "llama.cpp"
    TRANSFORMERS = "transformers"
    MLX = "mlx"


class ModelFormat(StrEnum):
    """Xinference's `model_format` values."""

    PYTORCH = "pytorch"
    GPTQ = "gptq"
    AWQ = "awq"
    FP4 = "fp4"
    FP8 = "fp8"
    BNB = "bnb"
    GGUFV2 = "ggufv2"
    MLX = "mlx"


# Formats each engine can load at all (the seed's rules; quantization rules live in selection).
ENGINE_FORMATS: dict[Engine, frozenset[ModelFormat]] = {
    Engine.VLLM: frozenset(
        {ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.FP4, ModelFormat.FP8, ModelFormat.BNB}
    ),
    Engine.SGLANG: frozenset({ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.FP8}),
    Engine.LLAMA_CPP: frozenset({ModelFormat.GGUFV2}),
    Engine.TRANSFORMERS: frozenset({ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.BNB}),
    Engine.MLX: frozenset({ModelFormat.MLX}),
}

# Engines that cannot run without CUDA GPUs; they get `nvidia.com/gpu` limits (default 1).
GPU_REQUIRED_ENGINES: frozenset[Engine] = frozenset({Engine.VLLM, Engine.SGLANG})

# The order tried under `engine.name: auto` when the user gives no preference. SGLang is absent on
# purpose: the seed gives no automatic rule for it, so it runs only when named or listed.
DEFAULT_PREFERENCE: tuple[Engine, ...] = (Engine.VLLM, Engine.LLAMA_CPP, Engine.MLX, Engine.TRANSFORMERS)

# Keys of `images` (spec and operator config) for each engine; also the image folder names.
IMAGE_KEYS: dict[Engine, str] = {
    Engine.VLLM: "vllm",
    Engine.SGLANG: "sglang",
    Engine.LLAMA_CPP: "llamacpp",
    Engine.TRANSFORMERS: "transformers",
    Engine.MLX: "mlx",
}
