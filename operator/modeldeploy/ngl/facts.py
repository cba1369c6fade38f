"""What a GGUF header says about a model, as the memory model reads it: per-layer tensor bytes (with CUDA's
padding), attention shape, sliding-window layers, experts; and the size of a separate mmproj projector.

The first of the three steps of auto-NGL (docs/ngl.md): facts (here), the memory model (memory.py), the
placement of layers on GPUs (estimate.py). Pure: no file or device access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from modeldeploy.ngl.architectures import facts_for, swa_layers
from modeldeploy.ngl.gguf_header import ArrayInfo, GGUFHeader, TensorInfo

MiB = 1 << 20

# A separate mmproj gets its own ggml CUDA backend on GPU 0 (cuBLAS handle, workspace, CUDA pool) beside
# its weights and compute buffer.  Measured on an H200 as NVML peak minus every logged buffer minus the
# text model's overhead: 59 and 88 MiB (LLaVA CLIP-L/336 without / with flash attention), 89 and 128 MiB
# (Gemma 3's SigLIP at 896 px): 60 MiB, two vision streams (the pool's temporaries grow with the
# patches) and 32 MiB more with flash attention (docs/auto-ngl-validation.md).
PROJECTOR_BACKEND_BYTES = 60 * MiB


PROJECTOR_FLASH_ATTN_BYTES = 32 * MiB


class EstimateError(ValueError):
    """The header lacks what the estimate needs; the caller falls back (all layers) and says why."""


# CUDA buffer alignment and the row padding the CUDA backend adds to quantized tensors
# (ggml-cuda: get_alloc_size pads rows to MATRIX_ROW_PADDING elements).
CUDA_ALIGNMENT = 128


MATRIX_ROW_PADDING = 512


class ProjectorFacts(BaseModel):
    """A separate multimodal projector (mmproj) file: llama.cpp loads it on the first GPU."""

    path: str
    weights_bytes: int
    graph_bytes: int


@dataclass(frozen=True)
class ModelFacts:
    """Sizes read from the header, per layer where llama.cpp allows them to differ."""

    architecture: str
    known: bool
    n_layer: int
    n_embd: int
    n_head: list[int]
    n_head_kv: list[int]
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_ff_exp: int
    n_expert: int
    n_expert_used: int
    n_ff_shexp: int
    mla: bool
    n_vocab: int
    n_ctx_train: int
    n_swa: int
    swa: list[bool]
    layer_weights: list[int]
    layer_largest_tensor: list[int]
    output_weights: int
    output_largest_tensor: int
    input_weights: int
    model_bytes: int


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _per_layer(header: GGUFHeader, suffix: str, n_layer: int, default: int | None) -> list[int]:
    """A hyper-parameter that may be a scalar or a per-layer array (OpenELM, Gemma 3n, some hybrids)."""
    value = header.arch_value(suffix)
    if isinstance(value, ArrayInfo):
        if value.values is None or len(value.values) < n_layer:
            raise EstimateError(f"{suffix} is an array of {value.count} values for {n_layer} layers")
        return [int(v) for v in value.values[:n_layer]]
    number = as_int(value)
    if number is None:
        if default is None:
            raise EstimateError(f"the header has no {header.architecture}.{suffix}")
        number = default
    return [number] * n_layer


def cuda_alloc_size(t: TensorInfo) -> int:
    """Bytes a tensor takes in a CUDA buffer: quantized rows padded to 512 elements, 128-byte aligned."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size = t.nbytes
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
    quantized = block > 1
    if quantized and t.shape[0] % MATRIX_ROW_PADDING:
        pad = MATRIX_ROW_PADDING - t.shape[0] % MATRIX_ROW_PADDING
        size += pad // block * type_size
    return -(-size // CUDA_ALIGNMENT) * CUDA_ALIGNMENT


def _is_projector_tensor(name: str) -> bool:
    return name.startswith(("v.", "mm.", "a.", "mm_", "resampler.")) or name.startswith("model.vision")


def model_facts(header: GGUFHeader) -> ModelFacts:
    """Extract the sizes the estimate needs; EstimateError when the header cannot support one."""
    arch = header.architecture
    if not arch:
        raise EstimateError("the header has no general.architecture")
    if (
        arch == "clip"
        or any(k.startswith("clip.") for k in header.metadata)
        or any(_is_projector_tensor(t.name) for t in header.tensors)
    ):
        raise EstimateError(
            "a multimodal projector embedded in the model GGUF is not supported (use a separate mmproj file)"
        )
    n_layer = as_int(header.arch_value("block_count"))
    if n_layer is None or n_layer <= 0:
        raise EstimateError(f"the header has no usable {arch}.block_count")
    n_embd = as_int(header.arch_value("embedding_length"))
    if n_embd is None or n_embd <= 0:
        raise EstimateError(f"the header has no usable {arch}.embedding_length")
    n_head = _per_layer(header, "attention.head_count", n_layer, None)
    n_head_kv = _per_layer(header, "attention.head_count_kv", n_layer, max(n_head))
    head_default = n_embd // max(max(n_head), 1)
    head_dim_k = as_int(header.arch_value("attention.key_length")) or head_default
    head_dim_v = as_int(header.arch_value("attention.value_length")) or head_default
    n_ff_list = _per_layer(header, "feed_forward_length", n_layer, 4 * n_embd)
    n_expert = as_int(header.arch_value("expert_count")) or 0
    n_expert_used = as_int(header.arch_value("expert_used_count")) or 0
    n_ff_exp = as_int(header.arch_value("expert_feed_forward_length")) or (max(n_ff_list) if n_expert else 0)
    n_ff_shexp = as_int(header.arch_value("expert_shared_feed_forward_length")) or 0
    n_vocab = header.array_count("tokenizer.ggml.tokens") or as_int(header.arch_value("vocab_size")) or 0
    emb = header.tensor_index.get("token_embd.weight")
    if n_vocab <= 0 and emb is not None and len(emb.shape) > 1:
        n_vocab = emb.shape[1]
    n_ctx_train = as_int(header.arch_value("context_length")) or 4096
    n_swa = as_int(header.arch_value("attention.sliding_window")) or 0

    layer_weights = [0] * n_layer
    layer_largest = [0] * n_layer
    output_weights = 0
    output_largest = 0
    input_weights = 0
    model_bytes = 0
    for t in header.tensors:
        model_bytes += t.nbytes
        size = cuda_alloc_size(t)
        if t.name.startswith("blk."):
            idx_text = t.name.split(".", 2)[1]
            if not idx_text.isdigit() or int(idx_text) >= n_layer:
                # llama.cpp would refuse such a tensor; count it on the output side to stay safe.
                output_weights += size
                continue
            il = int(idx_text)
            layer_weights[il] += size
            layer_largest[il] = max(layer_largest[il], size)
        elif t.name.startswith(("token_embd.", "token_types.", "position_embd.")) and not t.name.startswith(
            "token_embd_norm."
        ):
            input_weights += t.nbytes
        else:
            output_weights += size
            output_largest = max(output_largest, size)
    if "output.weight" not in header.tensor_index and emb is not None:
        # Tied embeddings: llama.cpp duplicates token_embd onto the output device.
        output_weights += cuda_alloc_size(emb)
        output_largest = max(output_largest, cuda_alloc_size(emb))

    facts = facts_for(arch)
    return ModelFacts(
        architecture=arch,
        known=facts.known,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ff=max(n_ff_list),
        n_ff_exp=n_ff_exp,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        n_ff_shexp=n_ff_shexp,
        mla=bool(as_int(header.arch_value("attention.key_length_mla")))
        and bool(as_int(header.arch_value("attention.value_length_mla"))),
        n_vocab=n_vocab,
        n_ctx_train=n_ctx_train,
        n_swa=n_swa,
        swa=swa_layers(header, n_layer),
        layer_weights=layer_weights,
        layer_largest_tensor=layer_largest,
        output_weights=output_weights,
        output_largest_tensor=output_largest,
        input_weights=input_weights,
        model_bytes=model_bytes,
    )


def projector_facts(header: GGUFHeader, flash_attn: bool = False) -> ProjectorFacts:
    """Size a separate mmproj file: its weights, the vision encoder's graph for one image, its backend.

    mtmd reserves the vision graph for an image of `clip.vision.image_size` (its warm-up), on GPU 0, with
    the text model's flash-attention setting.  The peak of three blocks, in vision streams S (n_embd x
    patches, f32): without flash attention the scores of every patch pair (patches^2 x heads, f32) plus
    6 S (SigLIP at 896 px: 4,096 patches, 1 GiB + 108 MiB); with it 6 S; the FFN (n_ff x patches + 3 S);
    an MLP projector's two layers on every patch (2 x the LLM width + 2 S; Gemma 3 pools 4 x 4 patches
    into one image token first).  Fitted to llama.cpp's reservation for LLaVA CLIP-L/336 and Gemma 3's
    SigLIP, with and without flash attention, within 1 MiB (docs/auto-ngl-validation.md).
    """
    weights = sum(cuda_alloc_size(t) for t in header.tensors)
    md = header.metadata
    n_embd = as_int(md.get("clip.vision.embedding_length")) or 1024
    image = as_int(md.get("clip.vision.image_size")) or 448
    patch = as_int(md.get("clip.vision.patch_size")) or 14
    heads = as_int(md.get("clip.vision.attention.head_count")) or 16
    ff = as_int(md.get("clip.vision.feed_forward_length")) or 4 * n_embd
    class_token = 1 if "v.class_embd" in header.tensor_index else 0
    patches = max((image // max(patch, 1)) ** 2, 1) + class_token
    merge = 1
    if md.get("clip.projector_type") == "gemma3":
        merge = as_int(md.get("clip.vision.projector.scale_factor")) or 4
    llm_width = max((max(t.shape) for t in header.tensors if t.name.startswith("mm.")), default=n_embd)
    f32 = 4
    stream = n_embd * patches * f32
    attn = 6 * stream + (0 if flash_attn else patches * patches * heads * f32)
    ffn = ff * patches * f32 + 3 * stream
    projection = 2 * llm_width * max(patches // (merge * merge), 1) * f32 + 2 * stream
    backend = PROJECTOR_BACKEND_BYTES + 2 * stream + (PROJECTOR_FLASH_ATTN_BYTES if flash_attn else 0)
    graph = max(attn, ffn, projection) + backend
    return ProjectorFacts(path=header.path, weights_bytes=weights, graph_bytes=graph)
