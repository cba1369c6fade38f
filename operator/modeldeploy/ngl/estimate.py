"""How many layers llama.cpp can put on the GPUs: a pure function of the GGUF header, free memory and options.

The method is Ollama's (`EstimateGPULayers`): weights per layer, KV cache per layer, a compute-graph
buffer and fixed overheads, filled into GPUs layer by layer.  What is different, and why:

* Weights are the exact tensor bytes of `blk.N.*` (plus CUDA's row padding and buffer alignment), not
  an average layer; KV is per layer (sliding-window layers hold only the window, per-layer head counts
  are honoured).  An average over-fills one end of a model whose layers differ.
* Layers are placed the way llama.cpp places them: `-ngl N` offloads the *last* N repeating layers, the
  output layer only when N = block_count + 1, the token embedding never; with several GPUs the
  offloaded range is cut in order, GPU 0 taking the first chunk, the last GPU the output.  The filler
  checks each candidate N under exactly that placement instead of adding layers greedily in a
  different order from the one llama.cpp uses.
* The compute buffer follows llama.cpp's graph: logits for a micro-batch on the output device, the
  attention scores (n_kv x n_ubatch x n_head, f32) without flash attention, the FFN activations
  (routed experts for MoE), and, under partial offload, the copies of CPU-resident weights that
  llama.cpp's scheduler moves to the GPU for large batches ("op offload").
* The fixed overhead (CUDA context, cuBLAS workspace, the CUDA memory pool) and the safety margin are
  measured values (docs/auto-ngl-validation.md), not Ollama's guesses.

Everything here is pure: no file or device access, so it is tested with headers written by the
`gguf` package and any free-memory list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from modeldeploy.ngl.architectures import facts_for, swa_layers
from modeldeploy.ngl.gguf_header import ArrayInfo, GGUFHeader, TensorInfo

MiB = 1 << 20
CacheType = Literal["f16", "bf16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]

# (block size, bytes per block) of the KV cache types llama.cpp accepts for --cache-type-k/-v.
CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
    "iq4_nl": (32, 18),
}

# CUDA buffer alignment and the row padding the CUDA backend adds to quantized tensors
# (ggml-cuda: get_alloc_size pads rows to MATRIX_ROW_PADDING elements).
CUDA_ALIGNMENT = 128
MATRIX_ROW_PADDING = 512
# llama.cpp pads the KV cache size to 256 cells.
KV_PAD = 256
# llama.cpp's scheduler offloads an op whose weights sit in host memory when the batch is at least this.
OP_OFFLOAD_MIN_BATCH = 32
# The logits block also holds a few residual-stream tensors (measured, see graph_bytes).
LOGITS_STREAM_FACTOR = 2.5

# Per-GPU fixed cost of a llama.cpp process that uses the GPU, outside the buffers it logs: the CUDA
# context with its loaded kernels, cuBLAS handles and workspace, and the CUDA pool's small temporaries.
# Measured on an H100 (driver 580, CUDA 13) as NVML's peak use minus llama.cpp's model + KV + compute
# buffers (docs/auto-ngl-validation.md): 688-695 MiB without flash attention once the attention
# temporary below is taken out, 606-620 MiB with it; a mixture-of-experts model adds the routed
# experts' temporaries (772 MiB in all with flash attention and a full context).  Rounded up.
DEFAULT_OVERHEAD_BYTES = 700 * MiB
FLASH_ATTN_OVERHEAD_BYTES = 630 * MiB
MOE_POOL_BYTES = 160 * MiB
# A separate mmproj gets its own ggml CUDA backend on GPU 0 (cuBLAS handle, workspace, CUDA pool) beside
# its weights and compute buffer.  Measured on an H200 as NVML peak minus every logged buffer minus the
# text model's overhead: 59 and 88 MiB (LLaVA CLIP-L/336 without / with flash attention), 89 and 128 MiB
# (Gemma 3's SigLIP at 896 px): 60 MiB, two vision streams (the pool's temporaries grow with the
# patches) and 32 MiB more with flash attention (docs/auto-ngl-validation.md).
PROJECTOR_BACKEND_BYTES = 60 * MiB
PROJECTOR_FLASH_ATTN_BYTES = 32 * MiB
# Kept free on every GPU on top of the estimate: covers the error of the graph model.
DEFAULT_MARGIN_BYTES = 48 * MiB
DEFAULT_MARGIN_FRACTION = 0.0025


class EstimateError(ValueError):
    """The header lacks what the estimate needs; the caller falls back (all layers) and says why."""


class GpuInfo(BaseModel):
    """One GPU as the estimate sees it."""

    index: int
    name: str = ""
    free_bytes: int = Field(ge=0)
    total_bytes: int = 0


class Options(BaseModel):
    """The llama.cpp settings that change memory use (defaults are llama-server's)."""

    n_ctx: int | None = Field(
        default=None, ge=0, description="llama.cpp's n_ctx: KV cells of all sequences together; None/0 = the model's"
    )
    n_parallel: int = Field(default=1, ge=1, description="llama.cpp's n_parallel (sequences, one KV stream each)")
    kv_unified: bool = Field(default=False, description="llama.cpp's kv_unified: one stream shared by all sequences")
    cache_type_k: CacheType = "f16"
    cache_type_v: CacheType = "f16"
    flash_attn: bool = False
    n_batch: int = Field(default=2048, ge=1)
    n_ubatch: int = Field(default=512, ge=1)
    op_offload: bool = True
    overhead_bytes: int | None = Field(default=None, ge=0, description="None = the measured default for the mode")
    margin_bytes: int = Field(default=DEFAULT_MARGIN_BYTES, ge=0)
    margin_fraction: float = Field(default=DEFAULT_MARGIN_FRACTION, ge=0.0, lt=1.0)


class ProjectorFacts(BaseModel):
    """A separate multimodal projector (mmproj) file: llama.cpp loads it on the first GPU."""

    path: str
    weights_bytes: int
    graph_bytes: int


class GpuEstimate(BaseModel):
    """What one GPU would hold with the chosen N."""

    index: int
    name: str
    free_bytes: int
    layers: int
    has_output: bool
    weights_bytes: int
    kv_bytes: int
    graph_bytes: int
    projector_bytes: int
    overhead_bytes: int
    margin_bytes: int
    total_bytes: int


class Estimate(BaseModel):
    """The breakdown behind the decision (the `estimate` object of the JSON).

    Keys: architecture, known_architecture (False = default calculation), block_count, layers_total
    (block_count + 1: llama.cpp counts the output layer), layers_offloaded, n_ctx (llama.cpp's: all
    sequences, padded), n_parallel, kv_cells (cells of a full-attention layer over all streams),
    cache_type_k/v, flash_attn, n_ubatch, model_bytes (all tensors), layer_weights_bytes (per repeating
    layer), output_bytes, input_bytes
    (token embedding, stays on the CPU), kv_bytes_per_layer, gpus (one GpuEstimate per GPU: layers,
    weights/kv/graph/projector/overhead/margin bytes and total_bytes = everything but the margin),
    vram_bytes (sum of total_bytes over GPUs that hold layers: the predicted device memory use),
    full_offload_bytes (what all layers would need on one GPU), cpu_weights_bytes (weights left on the host).
    """

    architecture: str
    known_architecture: bool
    block_count: int
    layers_total: int
    layers_offloaded: int
    n_ctx: int
    n_parallel: int
    kv_cells: int
    cache_type_k: str
    cache_type_v: str
    flash_attn: bool
    n_ubatch: int
    model_bytes: int
    layer_weights_bytes: list[int]
    output_bytes: int
    input_bytes: int
    kv_bytes_per_layer: list[int]
    gpus: list[GpuEstimate]
    vram_bytes: int
    full_offload_bytes: int
    cpu_weights_bytes: int


class NglResult(BaseModel):
    """The decision written to ngl.json (keys fixed by docs: n_gpu_layers, tensor_split, estimate, fallback, reason)."""

    n_gpu_layers: int
    tensor_split: list[int]
    estimate: Estimate | None
    fallback: bool
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object of docs/ngl.md, key order as documented."""
        return {
            "n_gpu_layers": self.n_gpu_layers,
            "tensor_split": self.tensor_split,
            "estimate": None if self.estimate is None else self.estimate.model_dump(),
            "fallback": self.fallback,
            "reason": self.reason,
        }


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


def _as_int(value: Any) -> int | None:
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
    number = _as_int(value)
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
    n_layer = _as_int(header.arch_value("block_count"))
    if n_layer is None or n_layer <= 0:
        raise EstimateError(f"the header has no usable {arch}.block_count")
    n_embd = _as_int(header.arch_value("embedding_length"))
    if n_embd is None or n_embd <= 0:
        raise EstimateError(f"the header has no usable {arch}.embedding_length")
    n_head = _per_layer(header, "attention.head_count", n_layer, None)
    n_head_kv = _per_layer(header, "attention.head_count_kv", n_layer, max(n_head))
    head_default = n_embd // max(max(n_head), 1)
    head_dim_k = _as_int(header.arch_value("attention.key_length")) or head_default
    head_dim_v = _as_int(header.arch_value("attention.value_length")) or head_default
    n_ff_list = _per_layer(header, "feed_forward_length", n_layer, 4 * n_embd)
    n_expert = _as_int(header.arch_value("expert_count")) or 0
    n_expert_used = _as_int(header.arch_value("expert_used_count")) or 0
    n_ff_exp = _as_int(header.arch_value("expert_feed_forward_length")) or (max(n_ff_list) if n_expert else 0)
    n_ff_shexp = _as_int(header.arch_value("expert_shared_feed_forward_length")) or 0
    n_vocab = header.array_count("tokenizer.ggml.tokens") or _as_int(header.arch_value("vocab_size")) or 0
    emb = header.tensor_index.get("token_embd.weight")
    if n_vocab <= 0 and emb is not None and len(emb.shape) > 1:
        n_vocab = emb.shape[1]
    n_ctx_train = _as_int(header.arch_value("context_length")) or 4096
    n_swa = _as_int(header.arch_value("attention.sliding_window")) or 0

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
        mla=bool(_as_int(header.arch_value("attention.key_length_mla")))
        and bool(_as_int(header.arch_value("attention.value_length_mla"))),
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


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _row_bytes(cache_type: str, n: int) -> int:
    block, size = CACHE_TYPES[cache_type]
    return -(-n // block) * size


@dataclass(frozen=True)
class _Context:
    """llama.cpp's context geometry.  n_ctx is llama.cpp's n_ctx: the KV cells of all sequences together
    (`-c`, padded to 256); without a unified cache every sequence gets its own stream of n_ctx / n_parallel
    cells, and attention runs over one stream, so the attention terms use the per-stream cells."""

    n_ctx: int
    n_stream: int
    kv_cells: int  # per stream, a full-attention layer
    swa_cells: int  # per stream, a sliding-window layer
    n_ubatch: int


def _context(m: ModelFacts, o: Options) -> _Context:
    n_ctx = _pad(o.n_ctx if o.n_ctx else m.n_ctx_train, KV_PAD)
    unified = o.kv_unified or o.n_parallel == 1
    n_stream = 1 if unified else o.n_parallel
    kv_cells = n_ctx if unified else _pad(n_ctx // o.n_parallel, KV_PAD)
    n_ctx = kv_cells * n_stream
    swa_cells = kv_cells
    if m.n_swa > 0 and any(m.swa):
        swa_cells = _pad(min(kv_cells, m.n_swa * (o.n_parallel if unified else 1) + o.n_ubatch), KV_PAD)
    n_ubatch = min(o.n_ubatch, o.n_batch, n_ctx)
    return _Context(n_ctx, n_stream, kv_cells, swa_cells, n_ubatch)


def kv_bytes_per_layer(m: ModelFacts, o: Options) -> list[int]:
    """K and V cache bytes of each layer (on the layer's device when offloaded)."""
    c = _context(m, o)
    out = []
    for il in range(m.n_layer):
        cells = (c.swa_cells if m.swa[il] else c.kv_cells) * c.n_stream
        k = _row_bytes(o.cache_type_k, m.n_head_kv[il] * m.head_dim_k) * cells
        # Multi-head latent attention caches only the compressed latent (K); V is a view of it.
        v = 0 if m.mla else _row_bytes(o.cache_type_v, m.n_head_kv[il] * m.head_dim_v) * cells
        out.append(k + v)
    return out


def _attention_cells(m: ModelFacts, c: _Context, layers: list[int]) -> int:
    """KV cells the widest of these layers attends over (sliding-window layers hold only the window)."""
    if not layers:
        return 0
    return max(c.swa_cells if m.swa[il] else c.kv_cells for il in layers)


def graph_bytes(
    m: ModelFacts,
    o: Options,
    *,
    layers: list[int],
    has_output: bool,
    cpu_layers: list[int],
    runs_cpu_layers: bool,
) -> int:
    """The CUDA compute buffer of one GPU for a worst-case micro-batch (llama.cpp reserves it up front).

    The peak of three blocks of llama.cpp's graph, f32 activations of a full micro-batch (T tokens):
    * attention: without flash attention the scores KQ (cells x T x heads) plus the f32 mask; with it only
      Q, the output and an f16 mask; plus a few residual-stream tensors ((n_embd + q width) x T);
    * the logits (n_vocab x T) on the GPU holding the output layer;
    * the FFN (3 x n_ff x T; routed experts x n_expert_used for MoE).
    With op offload (batches of 32 tokens or more) llama.cpp also runs the CPU-resident layers' matrix
    work and attention on the first GPU, so there the widest CPU layer counts too, plus the copy of its
    K and V.  Coefficients measured against llama.cpp's own reservation (docs/auto-ngl-validation.md).
    """
    if not layers and not has_output:
        return 0
    c = _context(m, o)
    facts = facts_for(m.architecture)
    t = c.n_ubatch
    e = m.n_embd
    f32 = 4
    offload = o.op_offload and t >= OP_OFFLOAD_MIN_BATCH and runs_cpu_layers and bool(cpu_layers)
    attn_layers = layers + (cpu_layers if offload else [])
    cells = _attention_cells(m, c, attn_layers) or c.kv_cells
    heads = max((m.n_head[il] for il in attn_layers), default=max(m.n_head))
    stream = (e + heads * m.head_dim_k) * t * f32
    kv_copy = 0
    if offload:
        kv_copy = max(
            (
                _row_bytes(o.cache_type_k, m.n_head_kv[il] * m.head_dim_k)
                + (0 if m.mla else _row_bytes(o.cache_type_v, m.n_head_kv[il] * m.head_dim_v))
            )
            * (c.swa_cells if m.swa[il] else c.kv_cells)
            * c.n_stream
            for il in cpu_layers
        )
    attn: float
    ffn: float
    moe_extra: float
    if o.flash_attn:
        attn = 3 * stream + cells * t * 2 + kv_copy
    else:
        attn = cells * t * heads * f32 + cells * t * f32 + facts.graph_stream_factor * stream + kv_copy
    # Op offload copies a host-resident weight into this GPU's compute buffer before multiplying with it:
    # the largest CPU layer tensor (an FFN matrix, or a whole expert stack for MoE) sits beside the FFN
    # activations.  Two GPUs showed it: the first GPU, without the logits, reserved 34 and 120 MiB more
    # than the activations alone (docs/auto-ngl-validation.md, H200).
    weight_copy = max((m.layer_largest_tensor[il] for il in cpu_layers), default=0) if offload else 0
    if m.n_expert and m.n_expert_used:
        ffn = 3 * m.n_ff_exp * m.n_expert_used * t * f32 + 3 * m.n_ff_shexp * t * f32 + stream + weight_copy
        moe_extra = 2 * m.n_ff_exp * m.n_expert_used * t * f32 + 2 * m.n_expert * t * f32
    else:
        ffn = 3 * m.n_ff * t * f32 + stream + weight_copy
        moe_extra = 0
    peak = max(attn, ffn)
    if has_output:
        peak = max(peak, m.n_vocab * t * f32 + LOGITS_STREAM_FACTOR * stream)
    return int(peak + moe_extra)


def overhead_bytes(m: ModelFacts, o: Options, layers: list[int], cpu_layers: list[int], first: bool) -> int:
    """Per-GPU memory outside llama.cpp's logged buffers: CUDA context, cuBLAS, and the CUDA pool.

    The pool's largest temporary: without flash attention, the f16 copy of the softmaxed scores that
    cuBLAS multiplies with V (cells x T x heads x 2 bytes) once a prompt fills the context; for a
    mixture of experts, the routed experts' gathers.  The pool keeps its peak, so the larger counts.
    """
    if o.overhead_bytes is not None:
        base = o.overhead_bytes
    else:
        base = FLASH_ATTN_OVERHEAD_BYTES if o.flash_attn else DEFAULT_OVERHEAD_BYTES
    pool = MOE_POOL_BYTES if m.n_expert and m.n_expert_used else 0
    if not o.flash_attn:
        c = _context(m, o)
        attn_layers = layers + (cpu_layers if first else [])
        if attn_layers:
            cells = _attention_cells(m, c, attn_layers)
            heads = max(m.n_head[il] for il in attn_layers)
            facts = facts_for(m.architecture)
            term = cells * c.n_ubatch * heads * 2
            pool = max(pool, int(facts.attn_pool_factor * term) + facts.attn_pool_extra_mib * MiB)
    return base + pool


def _projector_gpu(projector: ProjectorFacts | None) -> int:
    return 0 if projector is None else projector.weights_bytes + projector.graph_bytes


def offloaded(m: ModelFacts, n: int) -> tuple[list[int], bool]:
    """The repeating layers and whether the output layer go to the GPUs for `-ngl n`.

    llama.cpp counts the output layer as layer n_layer and offloads layers i >= n_layer + 1 - n: the
    output layer first (any n >= 1), then the last n - 1 repeating layers.
    """
    n = max(0, min(n, m.n_layer + 1))
    if n == 0:
        return [], False
    return list(range(m.n_layer - (n - 1), m.n_layer)), True


def _layout(
    m: ModelFacts, n: int, gpus: list[GpuInfo], o: Options, kv: list[int], projector: ProjectorFacts | None
) -> list[GpuEstimate] | None:
    """Place `-ngl n` the way llama.cpp does and return per-GPU use, or None when it does not fit.

    The offloaded range (layers in order, the output layer last) is cut into contiguous chunks, GPU 0
    taking the first: each GPU takes as many as fit before the next (greedy is optimal for ordered
    contiguous bins); tensor_split then carries these counts, which llama.cpp's split arithmetic maps
    back to the same chunks.
    """
    layers, with_output = offloaded(m, n)
    items: list[int] = layers + ([m.n_layer] if with_output else [])
    cpu_layers = [il for il in range(m.n_layer) if il not in set(layers)]
    result: list[GpuEstimate] = []
    pos = 0
    for gi, g in enumerate(gpus):
        margin = o.margin_bytes + int(o.margin_fraction * g.free_bytes)
        proj = _projector_gpu(projector) if gi == 0 else 0

        def usage(take: int, _pos: int = pos, _proj: int = proj, _margin: int = margin, _g: GpuInfo = g) -> GpuEstimate:
            chunk = items[_pos : _pos + take]
            has_out = bool(chunk) and chunk[-1] == m.n_layer
            chunk_layers = chunk[:-1] if has_out else chunk
            w = sum(m.layer_weights[il] for il in chunk_layers) + (m.output_weights if has_out else 0)
            kvb = sum(kv[il] for il in chunk_layers)
            first = _pos == 0 and take > 0
            gb = graph_bytes(
                m, o, layers=chunk_layers, has_output=has_out, cpu_layers=cpu_layers, runs_cpu_layers=first
            )
            used = bool(chunk)
            over = overhead_bytes(m, o, chunk_layers, cpu_layers, first) if used or _proj else 0
            total = w + kvb + gb + over + _proj
            return GpuEstimate(
                index=_g.index,
                name=_g.name,
                free_bytes=_g.free_bytes,
                layers=len(chunk),
                has_output=has_out,
                weights_bytes=w,
                kv_bytes=kvb,
                graph_bytes=gb,
                projector_bytes=_proj,
                overhead_bytes=over,
                margin_bytes=_margin,
                total_bytes=total,
            )

        remaining = len(items) - pos
        best: GpuEstimate | None = None
        best_take = 0
        lo, hi = 0, remaining
        while lo <= hi:
            mid = (lo + hi) // 2
            u = usage(mid)
            if u.total_bytes + u.margin_bytes <= g.free_bytes or (mid == 0 and not u.projector_bytes):
                best, best_take = u, mid
                lo = mid + 1
            else:
                hi = mid - 1
        if best is None:
            return None
        result.append(best)
        pos += best_take
    if pos < len(items):
        return None
    return result


def estimate(
    header: GGUFHeader,
    gpus: list[GpuInfo],
    options: Options | None = None,
    projector: ProjectorFacts | None = None,
) -> NglResult:
    """Choose -ngl for llama.cpp: the largest N whose placement fits every GPU (never an all-layers fallback here).

    Raises EstimateError when the header lacks what the estimate needs; `decide()` turns that into the
    documented fallback.
    """
    o = options or Options()
    m = model_facts(header)
    kv = kv_bytes_per_layer(m, o)
    c = _context(m, o)
    full = _layout(m, m.n_layer + 1, [GpuInfo(index=0, free_bytes=1 << 62)], o, kv, projector)
    assert full is not None
    full_bytes = full[0].total_bytes

    chosen = 0
    layout: list[GpuEstimate] = []
    if gpus:
        # Fits are monotonic in N (each extra layer only adds bytes), so search downwards from all.
        lo, hi = 0, m.n_layer + 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _layout(m, mid, gpus, o, kv, projector) is not None:
                lo = mid
            else:
                hi = mid - 1
        chosen = lo
        layout = _layout(m, chosen, gpus, o, kv, projector) or [] if chosen else []
    if chosen == 0:
        layout = [
            GpuEstimate(
                index=g.index,
                name=g.name,
                free_bytes=g.free_bytes,
                layers=0,
                has_output=False,
                weights_bytes=0,
                kv_bytes=0,
                graph_bytes=0,
                projector_bytes=0,
                overhead_bytes=0,
                margin_bytes=0,
                total_bytes=0,
            )
            for g in gpus
        ]
    offloaded_weights = sum(g.weights_bytes for g in layout)
    est = Estimate(
        architecture=m.architecture,
        known_architecture=m.known,
        block_count=m.n_layer,
        layers_total=m.n_layer + 1,
        layers_offloaded=chosen,
        n_ctx=c.n_ctx,
        n_parallel=o.n_parallel,
        kv_cells=c.kv_cells * c.n_stream,
        cache_type_k=o.cache_type_k,
        cache_type_v=o.cache_type_v,
        flash_attn=o.flash_attn,
        n_ubatch=c.n_ubatch,
        model_bytes=m.model_bytes,
        layer_weights_bytes=m.layer_weights,
        output_bytes=m.output_weights,
        input_bytes=m.input_weights,
        kv_bytes_per_layer=kv,
        gpus=layout,
        vram_bytes=sum(g.total_bytes for g in layout if g.layers),
        full_offload_bytes=full_bytes,
        cpu_weights_bytes=max(m.model_bytes - offloaded_weights, 0),
    )
    if not gpus:
        reason = "no GPU visible: all layers stay on the CPU"
    elif chosen == m.n_layer + 1:
        reason = f"all {chosen} layers fit ({_mib(est.vram_bytes)} MiB estimated)"
    elif chosen == 0:
        reason = "not even one layer fits in the free GPU memory"
    else:
        reason = f"{chosen} of {m.n_layer + 1} layers fit ({_mib(est.vram_bytes)} MiB estimated)"
    if not m.known and gpus:
        reason += f"; architecture {m.architecture!r} uses the default calculation"
    split = [g.layers for g in layout] if len(gpus) > 1 and chosen else []
    return NglResult(n_gpu_layers=chosen, tensor_split=split, estimate=est, fallback=False, reason=reason)


def _mib(n: int) -> int:
    return round(n / MiB)


def fallback(header: GGUFHeader | None, why: str) -> NglResult:
    """Xinference's rule: when the estimate fails, offload all layers (llama.cpp clamps 999 to the model's count)."""
    n = 999
    if header is not None:
        block_count = _as_int(header.arch_value("block_count"))
        if block_count and block_count > 0:
            n = block_count + 1
    return NglResult(
        n_gpu_layers=n, tensor_split=[], estimate=None, fallback=True, reason=f"estimate failed ({why}): all layers"
    )


def decide(
    header: GGUFHeader,
    gpus: list[GpuInfo],
    options: Options | None = None,
    projector: ProjectorFacts | None = None,
) -> NglResult:
    """estimate(), with the documented fallback when the header cannot be estimated."""
    if not gpus:
        try:
            return estimate(header, gpus, options, projector)
        except EstimateError as exc:
            reason = f"no GPU visible ({exc})"
            return NglResult(n_gpu_layers=0, tensor_split=[], estimate=None, fallback=False, reason=reason)
    try:
        return estimate(header, gpus, options, projector)
    except EstimateError as exc:
        return fallback(header, str(exc))


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
    n_embd = _as_int(md.get("clip.vision.embedding_length")) or 1024
    image = _as_int(md.get("clip.vision.image_size")) or 448
    patch = _as_int(md.get("clip.vision.patch_size")) or 14
    heads = _as_int(md.get("clip.vision.attention.head_count")) or 16
    ff = _as_int(md.get("clip.vision.feed_forward_length")) or 4 * n_embd
    class_token = 1 if "v.class_embd" in header.tensor_index else 0
    patches = max((image // max(patch, 1)) ** 2, 1) + class_token
    merge = 1
    if md.get("clip.projector_type") == "gemma3":
        merge = _as_int(md.get("clip.vision.projector.scale_factor")) or 4
    llm_width = max((max(t.shape) for t in header.tensors if t.name.startswith("mm.")), default=n_embd)
    f32 = 4
    stream = n_embd * patches * f32
    attn = 6 * stream + (0 if flash_attn else patches * patches * heads * f32)
    ffn = ff * patches * f32 + 3 * stream
    projection = 2 * llm_width * max(patches // (merge * merge), 1) * f32 + 2 * stream
    backend = PROJECTOR_BACKEND_BYTES + 2 * stream + (PROJECTOR_FLASH_ATTN_BYTES if flash_attn else 0)
    graph = max(attn, ffn, projection) + backend
    return ProjectorFacts(path=header.path, weights_bytes=weights, graph_bytes=graph)
