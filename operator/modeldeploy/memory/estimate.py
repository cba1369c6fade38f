"""GPU memory per GPU for one model under one engine, and the largest context that fits. Pure.

The arithmetic follows the engines' own start-up (docs/memory-placement.md cites the source lines):

- vLLM may use `total × gpu-memory-utilization` (default 0.9). It loads the weights, profiles one
  forward pass of `max-num-batched-tokens` to find the activation peak, counts memory outside PyTorch
  (CUDA context, NCCL, cuBLAS), and gives the rest to the KV cache, which must hold at least one
  request of `max-model-len` tokens or the engine refuses to start.
- SGLang may use `total × mem-fraction-static` (0.88 at tp 1 down to 0.79 at tp 16) for weights and
  the KV pool; activations and CUDA graphs live in the remainder.

Weights are the parameters times the bytes of the quantization, or the model's files (the shared cache's
listing) when the parameters are unknown. All sizes are bytes per GPU at a tensor-parallel size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy.formats import ArgValue, ModelFormat
from modeldeploy.memory.models import ModelShape, find_shape, parse_billions

GIB = 1024**3
MIB = 1024**2
# vLLM's profile run: max-num-batched-tokens and max-num-seqs as vLLM defaults them for its API server
# (vllm/engine/arg_utils.py): 8192 and 1024 on GPUs of at least 70 GiB (but A100s, counted here too, which
# overestimates them), 2048 and 256 on the others; the sampler's logits are float32.
LARGE_GPU = 70 * 1024**3
PROFILE = {True: (8192, 1024), False: (2048, 256)}
# Memory outside PyTorch's allocator that vLLM counts per GPU, as vLLM printed it for Llama-3-8B on an
# H100 (vllm-project/vllm pull request 10511): 1.79 GiB alone, 3.58 GiB with tensor parallel 2 (NCCL).
NON_TORCH_TP1 = int(1.8 * GIB)
NON_TORCH_TP = int(3.6 * GIB)
CONTEXT_STEP = 256  # the largest context that fits is reported in steps of this many tokens

# Bytes per parameter of the quantized linear layers (embeddings stay 16-bit): 4-bit weights carry a
# 16-bit scale and a 4-bit zero point per group of 128; NVFP4 an 8-bit scale per 16.
_BYTES_PER_PARAM: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "16bit": 2.0,
    "fp8": 1.0,
    "int8": 1.0 + 20 / 128 / 8,
    "int4": 0.5 + 20 / 128 / 8,
    "int3": 0.375 + 20 / 128 / 8,
    "fp4": 0.5 + 8 / 16 / 8,
    "bnb4": 0.5 + 4 / 64 / 8,
    "bnb8": 1.0,
}


@dataclass(frozen=True)
class EngineMemory:
    """How one engine divides a GPU's memory; each engine module states its own (engines/vllm.py)."""

    label: str
    fraction_arg: str  # the engine.args key of the fraction of GPU memory the engine may take
    fraction_by_tp: tuple[tuple[int, float], ...]  # (tensor parallel at least, default fraction), largest first
    context_arg: str  # the engine.args key of the context length (max-model-len, context-length)
    profiles_activation: bool  # vLLM: activation peak and non-torch memory come out of the fraction
    # Quantization kind -> the lowest compute capability the engine has kernels for (engines' docs).
    min_capability: Mapping[str, tuple[int, int]]
    # Sliding-window layers keep only the window in the KV cache (vLLM's hybrid KV cache manager); when
    # False every layer is counted at the full context, which can only overestimate.
    sliding_window_pool: bool = True

    def fraction(self, tp: int, args: Mapping[str, ArgValue]) -> tuple[float, bool]:
        """The fraction at `tp`, and whether engine.args set it."""
        given = arg(args, self.fraction_arg)
        if given is not None:
            try:
                return float(given), True
            except ValueError:
                pass
        for least, value in self.fraction_by_tp:
            if tp >= least:
                return value, False
        return self.fraction_by_tp[-1][1], False


def arg(args: Mapping[str, ArgValue], key: str) -> ArgValue | None:
    """An engine.args value whatever its spelling (`max_model_len`, `--max-model-len`)."""
    for name, value in args.items():
        if name.lstrip("-").replace("_", "-") == key:
            return value
    return None


def quant_kind(fmt: ModelFormat, quantization: str | None, shape: ModelShape | None) -> str:
    """The kind of weights the GPU runs: bf16, fp16, 16bit (one of the two), fp8, int4, int8, int3, fp4, bnb4
    or bnb8."""
    q = (quantization or "none").lower()
    if fmt == ModelFormat.PYTORCH:
        if q == "fp8":
            return "fp8"
        if q in ("4bit", "8bit"):
            return "bnb4" if q == "4bit" else "bnb8"
        if shape is None:
            return "16bit"  # bfloat16 or float16: unknown without config.json, so no capability is required
        return "bf16" if shape.bf16 else "fp16"
    if fmt in (ModelFormat.AWQ, ModelFormat.GPTQ):
        for bits in ("8", "3"):
            if q.startswith(f"int{bits}"):
                return f"int{bits}"
        return "int4"
    if fmt == ModelFormat.FP8:
        return "fp8"
    if fmt == ModelFormat.FP4:
        return "fp4"
    if fmt == ModelFormat.BNB:
        return "bnb8" if q == "8bit" else "bnb4"
    return "16bit"


@dataclass(frozen=True)
class ModelMemory:
    """What the estimate knows of the model: its weights, where that figure came from, its shape."""

    weights: int  # bytes, whole model
    weights_from: str  # "listing" | "parameters"
    kind: str  # quant_kind
    shape: ModelShape | None
    params_b: float | None

    @property
    def name(self) -> str:
        return self.shape.key if self.shape else "the model"


def model_memory(
    name: str,
    size_in_billions: str | None,
    uri: str,
    fmt: ModelFormat,
    quantization: str | None,
    listed_bytes: int | None = None,
) -> ModelMemory | None:
    """The model's memory facts, or None when neither its shape, its size nor its files are known."""
    shape = find_shape(name, size_in_billions, uri)
    kind = quant_kind(fmt, quantization, shape)
    params_b = shape.params_b if shape else parse_billions(size_in_billions)
    if params_b is None:
        # A repository's listing may hold the weights twice (Meta's repositories add `original/*.pth`), so
        # it is read only when nothing else tells the size.
        return ModelMemory(listed_bytes, "listing", kind, shape, None) if listed_bytes else None
    per_param = _BYTES_PER_PARAM[kind]
    params = params_b * 1e9
    if shape is not None and per_param < 2:
        embedding = shape.embedding_params
        weights = (params - embedding) * per_param + embedding * 2
    else:
        weights = params * per_param
    return ModelMemory(int(weights), "parameters", kind, shape, params_b)


def kv_cache_bytes(shape: ModelShape, tokens: int, tp: int, dtype_bytes: int, windows: bool = True) -> int:
    """KV cache per GPU for `tokens` tokens of one sequence.

    Each layer keeps a K and a V of `kv_heads × head_dim` per token, split over tensor parallel ranks (a
    rank holds at least one head: engines replicate KV heads when tp exceeds them). MLA keeps one latent
    of `kv_lora_rank + qk_rope_head_dim` per token and layer on every rank. Sliding-window layers keep
    at most the window.
    """
    full = shape.full_layers if windows else shape.layers
    sliding = shape.layers - full
    per_layer_tokens = full * tokens + sliding * min(tokens, shape.sliding_window)
    if shape.mla_latent:
        return per_layer_tokens * shape.mla_latent * dtype_bytes
    heads = -(-shape.kv_heads // tp)
    return per_layer_tokens * 2 * heads * shape.head_dim * dtype_bytes


def activation_bytes(shape: ModelShape, batched_tokens: int, seqs: int) -> int:
    """vLLM's profiled activation peak: MLP and attention intermediates of one batch, plus the logits.

    Calibrated on vLLM's print for Llama-3-8B (1.26 GiB, pull request 10511); it does not shrink with
    tensor parallel there, so it is not divided.
    """
    return batched_tokens * (4 * shape.intermediate + 4 * shape.hidden) * 2 + seqs * shape.vocab * 4


@dataclass(frozen=True)
class Need:
    """The memory one GPU needs at tensor parallel `tp` and `context` tokens."""

    tp: int
    context: int
    weights: int
    reserve: int  # vLLM's activation peak and non-torch memory; 0 for SGLang (outside its fraction)
    kv: int | None  # None: the model's shape is unknown, so the KV cache was not counted

    @property
    def total(self) -> int:
        return self.weights + self.reserve + (self.kv or 0)


def kv_dtype_bytes(model: ModelMemory, args: Mapping[str, ArgValue]) -> int:
    """fp8 KV cache when engine.args ask for it (kv-cache-dtype fp8*), else the model's dtype."""
    value = arg(args, "kv-cache-dtype")
    if isinstance(value, str) and value.lower().startswith("fp8"):
        return 1
    return model.shape.dtype_bytes if model.shape else 2


def requested_context(model: ModelMemory, engine: EngineMemory, args: Mapping[str, ArgValue]) -> int | None:
    """The context the engine will be started with: engine.args, else the model's maximum (None: unknown)."""
    given = arg(args, engine.context_arg)
    if given is not None and not isinstance(given, bool):
        try:
            return int(given)
        except ValueError:
            pass
    return model.shape.max_context if model.shape else None


def need(
    model: ModelMemory,
    engine: EngineMemory,
    tp: int,
    context: int,
    args: Mapping[str, ArgValue],
    gpu_bytes: int = 0,
) -> Need:
    """Weights, engine reserve and KV cache per GPU (`gpu_bytes`: the GPU's memory, which sets vLLM's
    default batch of its profile run)."""
    shape = model.shape
    reserve = 0
    if engine.profiles_activation:
        reserve = NON_TORCH_TP1 if tp == 1 else NON_TORCH_TP
        if shape is not None:
            tokens, seqs = PROFILE[gpu_bytes >= LARGE_GPU]
            batched = arg(args, "max-num-batched-tokens")
            if isinstance(batched, int | str) and str(batched).isdigit():
                tokens = int(batched)
            reserve += activation_bytes(shape, tokens, seqs)
    kv = None
    if shape is not None:
        kv = kv_cache_bytes(shape, context, tp, kv_dtype_bytes(model, args), engine.sliding_window_pool)
    return Need(tp, context, -(-model.weights // tp), reserve, kv)


def budget(engine: EngineMemory, gpu_bytes: int, tp: int, args: Mapping[str, ArgValue]) -> tuple[float, int]:
    """The fraction of one GPU the engine takes at `tp`, and those bytes."""
    fraction, _ = engine.fraction(tp, args)
    return fraction, int(gpu_bytes * fraction)


def largest_context(
    model: ModelMemory, engine: EngineMemory, tp: int, gpu_bytes: int, args: Mapping[str, ArgValue]
) -> int:
    """The most tokens of one sequence whose KV cache fits beside the weights (0: not even the weights)."""
    shape = model.shape
    if shape is None:
        return 0
    _, room = budget(engine, gpu_bytes, tp, args)
    low, high = 0, shape.max_context
    while low < high:  # the KV cache grows with the tokens, so the fitting contexts are a prefix
        middle = (low + high + 1) // 2
        if need(model, engine, tp, middle, args, gpu_bytes).total <= room:
            low = middle
        else:
            high = middle - 1
    return low - low % CONTEXT_STEP


def tensor_parallel_sizes(shape: ModelShape | None, gpus: int) -> tuple[int, ...]:
    """Tensor-parallel sizes up to `gpus` the engines accept: they divide the attention heads, and the KV
    heads divide them or are divided by them."""
    sizes = []
    for tp in range(1, gpus + 1):
        if shape is not None:
            if shape.heads % tp:
                continue
            if shape.kv_heads % tp and tp % shape.kv_heads and not shape.mla_latent:
                continue
        sizes.append(tp)
    return tuple(sizes)


def gib(value: float) -> str:
    """Bytes as GiB with one decimal: 14.2 GiB."""
    return f"{value / GIB:.1f} GiB"
