"""Per-architecture facts the estimate needs beyond the tensor table.

Why a table: llama.cpp's memory use differs by architecture in a few ways the GGUF metadata does not
spell out: which layers use sliding-window attention (their KV cache holds only the window), and how
wide the feed-forward activations get (mixture-of-experts routes each token through `n_expert_used`
experts).  Architectures not listed use the default: every layer full attention, dense FFN, the
standard decoder graph.  That is the Xinference behaviour ("uncommon architectures use the default
calculation"); the difference here is that the default still reads every size from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modeldeploy.ngl.gguf_header import ArrayInfo, GGUFHeader


def _every(n: int) -> Callable[[int], bool]:
    """SWA on all layers except every n-th (layer n-1, 2n-1, ...), the Gemma 3 / Cohere2 layout."""
    return lambda il: (il + 1) % n != 0


def _even(il: int) -> bool:
    """SWA on even layers (Gemma 2, gpt-oss)."""
    return il % 2 == 0


@dataclass(frozen=True)
class ArchFacts:
    """What differs per architecture; None/False means "the default decoder"."""

    swa_layers: Callable[[int], bool] | None = None
    moe: bool = False
    # Residual-stream tensors live beside the attention scores, in units of (n_embd + q width) x T f32:
    # 2.75 measured for llama/qwen/mistral-style blocks; Gemma's extra norms keep more alive.
    graph_stream_factor: float = 2.75
    # The CUDA pool's attention temporary without flash attention, in units of cells x T x heads x 2 bytes,
    # plus a fixed part: 0.97-1.03 x measured for llama/qwen2 at 8k and 32k; Gemma 3 holds about 80 MiB
    # more at 8k and at 32k alike (a constant, not a factor: 1.6 x at 8k, 1.05 x at 32k;
    # docs/auto-ngl-validation.md).
    attn_pool_factor: float = 1.05
    attn_pool_extra_mib: int = 0
    # Known to llama.cpp's standard decoder graph (validated shapes); False = default calculation.
    known: bool = True


ARCHITECTURES: dict[str, ArchFacts] = {
    "llama": ArchFacts(),
    "mistral3": ArchFacts(),
    "qwen2": ArchFacts(),
    "qwen3": ArchFacts(),
    "qwen2moe": ArchFacts(moe=True),
    "qwen3moe": ArchFacts(moe=True),
    "gemma": ArchFacts(graph_stream_factor=4.25, attn_pool_extra_mib=32),
    "gemma2": ArchFacts(swa_layers=_even, graph_stream_factor=4.25, attn_pool_extra_mib=32),
    "gemma3": ArchFacts(swa_layers=_every(6), graph_stream_factor=4.25, attn_pool_extra_mib=32),
    "cohere2": ArchFacts(swa_layers=_every(4)),
    "command-r": ArchFacts(),
    "phi3": ArchFacts(),
    "deepseek2": ArchFacts(moe=True),
    "gpt-oss": ArchFacts(swa_layers=_even, moe=True),
    "llama4": ArchFacts(swa_layers=_every(4), moe=True),
    "granite": ArchFacts(),
    "starcoder2": ArchFacts(),
    "internlm2": ArchFacts(),
    "glm4": ArchFacts(),
    "olmo2": ArchFacts(),
}

# Unknown architectures: the standard decoder with a wider stream allowance (safer, not exact).
DEFAULT = ArchFacts(known=False, graph_stream_factor=4.5, attn_pool_factor=1.75)


def facts_for(arch: str) -> ArchFacts:
    """The facts for `arch`, or the default calculation for architectures not listed."""
    return ARCHITECTURES.get(arch, DEFAULT)


def swa_layers(header: GGUFHeader, n_layer: int) -> list[bool]:
    """Which layers use sliding-window attention.

    The file's own `{arch}.attention.sliding_window_pattern` (a bool per layer, written by newer
    converters) wins; otherwise the architecture's fixed layout applies when the file declares a
    window at all (Mistral-7B-v0.1 style models declare none and llama.cpp keeps a full cache).
    """
    window = header.arch_value("attention.sliding_window")
    if not isinstance(window, int) or window <= 0:
        return [False] * n_layer
    pattern = header.arch_value("attention.sliding_window_pattern")
    if isinstance(pattern, ArrayInfo) and pattern.values is not None and len(pattern.values) >= n_layer:
        return [bool(v) for v in pattern.values[:n_layer]]
    if isinstance(pattern, int) and pattern > 0:
        return [_every(pattern)(il) for il in range(n_layer)]
    rule = facts_for(header.architecture).swa_layers
    if rule is None:
        return [False] * n_layer
    return [rule(il) for il in range(n_layer)]
