"""How much GPU memory llama.cpp takes for a given offload: KV cache per layer, the compute graph's buffer,
fixed per-GPU overheads. The second of the three steps of auto-NGL (docs/ngl.md), between the model's
facts (facts.py) and the placement of layers on GPUs (estimate.py).

The graph follows llama.cpp's: logits for a micro-batch on the output device, the attention scores
without flash attention, the FFN activations (routed experts for MoE), and, under partial offload, the
copies of CPU-resident weights the scheduler moves to the GPU for large batches ("op offload"). The
fixed overheads are measured values (docs/auto-ngl-validation.md). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from modeldeploy.ngl.architectures import facts_for
from modeldeploy.ngl.facts import MiB, ModelFacts, ProjectorFacts

# Kept free on every GPU on top of the estimate: covers the error of the graph model.
DEFAULT_MARGIN_BYTES = 48 * MiB


DEFAULT_MARGIN_FRACTION = 0.0025


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


def context_of(m: ModelFacts, o: Options) -> _Context:
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
    c = context_of(m, o)
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
    c = context_of(m, o)
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
        c = context_of(m, o)
        attn_layers = layers + (cpu_layers if first else [])
        if attn_layers:
            cells = _attention_cells(m, c, attn_layers)
            heads = max(m.n_head[il] for il in attn_layers)
            facts = facts_for(m.architecture)
            term = cells * c.n_ubatch * heads * 2
            pool = max(pool, int(facts.attn_pool_factor * term) + facts.attn_pool_extra_mib * MiB)
    return base + pool


def projector_gpu_bytes(projector: ProjectorFacts | None) -> int:
    return 0 if projector is None else projector.weights_bytes + projector.graph_bytes
