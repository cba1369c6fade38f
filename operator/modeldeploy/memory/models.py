"""The `config.json` facts of known models, since a ModelDeployment carries none of them.

The operator never reads the model's `config.json` before the engine starts (the weights may not be
downloaded yet), so the KV cache per token can only be computed for models whose architecture is known
here. The figures are those of each repository's `config.json` (the `source` field names it); a model
is found by its Hugging Face repository in `model.uri` or by `model.name` and `model.sizeInBillions`
as Xinference spells them. Unknown models are estimated from `sizeInBillions` alone, and the decision
says so (docs/memory-placement.md, "The model").
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads of one model's `config.json` (text model only)."""

    key: str  # how reasons name it: "Llama-3.1-8B"
    source: str  # the Hugging Face repository whose config.json gave the figures
    params_b: float  # total parameters, billions (every expert of a MoE)
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int  # head_dim (hidden_size / heads when absent)
    intermediate: int  # intermediate_size (the dense MLP's; MoE experts are smaller)
    vocab: int  # vocab_size
    max_context: int  # max_position_embeddings: the engines' default max-model-len / context-length
    dtype_bytes: int = 2  # torch_dtype: bfloat16 and float16 are 2 bytes
    bf16: bool = True  # torch_dtype is bfloat16 (needs compute capability 8.0)
    tied_embeddings: bool = False  # tie_word_embeddings
    mla_latent: int = 0  # MLA (DeepSeek-V2): kv_lora_rank + qk_rope_head_dim cached per token and layer
    sliding_window: int = 0  # sliding_window of the local-attention layers (0: none)
    full_attention_every: int = 0  # sliding_window_pattern: one global layer every N (Gemma-3: 6)

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied): never quantized by AWQ/GPTQ/FP8."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def full_layers(self) -> int:
        """Layers that keep the whole context in the KV cache."""
        if self.sliding_window and self.full_attention_every:
            return self.layers // self.full_attention_every
        return self.layers


_LLAMA_31_8B = ModelShape(
    "Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct", 8.03, 32, 4096, 32, 8, 128, 14336, 128256, 131072
)
_LLAMA_31_70B = ModelShape(
    "Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct", 70.55, 80, 8192, 64, 8, 128, 28672, 128256, 131072
)
_QWEN25_7B = ModelShape("Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", 7.62, 28, 3584, 28, 4, 128, 18944, 152064, 32768)
_QWEN25_72B = ModelShape("Qwen2.5-72B", "Qwen/Qwen2.5-72B-Instruct", 72.71, 80, 8192, 64, 8, 128, 29568, 152064, 32768)
_QWEN3_30B_A3B = ModelShape("Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B", 30.53, 48, 2048, 32, 4, 128, 6144, 151936, 40960)
_DEEPSEEK_V2_LITE = ModelShape(
    "DeepSeek-V2-Lite",
    "deepseek-ai/DeepSeek-V2-Lite-Chat",
    15.71,
    27,
    2048,
    16,
    16,
    192,  # qk_nope_head_dim 128 + qk_rope_head_dim 64
    10944,
    102400,
    163840,
    mla_latent=512 + 64,
)
_GEMMA3_12B = ModelShape(
    "Gemma-3-12B",
    "google/gemma-3-12b-it",
    12.19,
    48,
    3840,
    16,
    8,
    256,
    15360,
    262208,
    131072,
    tied_embeddings=True,
    sliding_window=1024,
    full_attention_every=6,
)

KNOWN: tuple[ModelShape, ...] = (
    _LLAMA_31_8B,
    _LLAMA_31_70B,
    _QWEN25_7B,
    _QWEN25_72B,
    _QWEN3_30B_A3B,
    _DEEPSEEK_V2_LITE,
    _GEMMA3_12B,
)

# Xinference's model names and sizes (llm_family.json) for the same models.
_BY_NAME: dict[tuple[str, str], ModelShape] = {
    ("llama-3.1", "8"): _LLAMA_31_8B,
    ("llama-3.1-instruct", "8"): _LLAMA_31_8B,
    ("llama-3.1", "70"): _LLAMA_31_70B,
    ("llama-3.1-instruct", "70"): _LLAMA_31_70B,
    ("qwen2.5", "7"): _QWEN25_7B,
    ("qwen2.5-instruct", "7"): _QWEN25_7B,
    ("qwen2.5", "72"): _QWEN25_72B,
    ("qwen2.5-instruct", "72"): _QWEN25_72B,
    ("qwen3", "30"): _QWEN3_30B_A3B,
    ("deepseek-v2-chat", "16"): _DEEPSEEK_V2_LITE,
    ("gemma-3-it", "12"): _GEMMA3_12B,
}

# Suffixes of repository names that do not change the architecture (a quantized or tuned variant).
_VARIANT = re.compile(r"(-(instruct|chat|it|awq|gptq(-int[348])?|int[348]|fp8(-dynamic)?|base|hf))+$")


def _repo_base(uri: str) -> str | None:
    """`hf://Qwen/Qwen2.5-72B-Instruct-AWQ@rev` → `qwen2.5-72b`; None for sources without a repository."""
    match = re.match(r"^(?:hf|modelscope)://[^/]+/([^@/]+)", uri)
    if not match:
        return None
    return _VARIANT.sub("", match.group(1).lower())


def find_shape(name: str, size_in_billions: str | None, uri: str) -> ModelShape | None:
    """The known shape of the model, by its repository first, then by Xinference's name and size."""
    base = _repo_base(uri)
    if base:
        for shape in KNOWN:
            if _VARIANT.sub("", shape.source.split("/")[1].lower()) == base or shape.key.lower() == base:
                return shape
    if size_in_billions is not None:
        return _BY_NAME.get((name.lower(), size_in_billions))
    return None


def parse_billions(size_in_billions: str | None) -> float | None:
    """Xinference's `0_5`, `7`, `1_8` as a number of billions (None when absent or unreadable)."""
    if not size_in_billions:
        return None
    try:
        return float(size_in_billions.replace("_", "."))
    except ValueError:
        return None
