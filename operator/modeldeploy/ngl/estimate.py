"""How many layers llama.cpp can put on the GPUs: a pure function of the GGUF header, free memory and options.

Three steps, one module each: the model's facts from its header (facts.py), what an offload costs on
each GPU (memory.py), and here the placement: which N layers fit under llama.cpp's own placement.

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

from typing import Any

from pydantic import BaseModel, Field

from modeldeploy.ngl.facts import EstimateError, MiB, ModelFacts, ProjectorFacts, as_int, model_facts
from modeldeploy.ngl.gguf_header import GGUFHeader
from modeldeploy.ngl.memory import (
    Options,
    context_of,
    graph_bytes,
    kv_bytes_per_layer,
    overhead_bytes,
    projector_gpu_bytes,
)


class GpuInfo(BaseModel):
    """One GPU as the estimate sees it."""

    index: int
    name: str = ""
    free_bytes: int = Field(ge=0)
    total_bytes: int = 0


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
        proj = projector_gpu_bytes(projector) if gi == 0 else 0

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
    c = context_of(m, o)
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
        block_count = as_int(header.arch_value("block_count"))
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
