"""The estimate against what loaded on an H200 (docs/auto-ngl-validation.md, H200 runs), and the llama.cpp
rules those runs checked: n_ctx split into per-sequence streams, the latent-only KV cache of multi-head
latent attention, and Gemma's CUDA-pool temporary growing with the context like everyone else's.

The headers are real-shaped (the validation models' tensor tables and vocabulary sizes); the measured
"best" is the largest -ngl that loaded and ran a prompt filling the context at that NVML free memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.ngl.estimate import (
    PROJECTOR_BACKEND_BYTES,
    GpuInfo,
    Options,
    ProjectorFacts,
    decide,
    kv_bytes_per_layer,
    model_facts,
    overhead_bytes,
)
from modeldeploy.ngl.gguf_header import read_header
from tests.support import ngl_gguf
from tests.support.ngl_gguf import Spec

MiB = 1 << 20

SHAPES: dict[str, Spec] = {
    # Vocabulary sizes are those of the tokenizers the validation models carried.
    "llama-8b": Spec(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256, n_ctx_train=131072),
    "gemma3-12b": Spec(
        arch="gemma3", n_layer=48, n_embd=3840, n_head=16, n_head_kv=8, n_ff=15360, n_vocab=128256, head_dim=256,
        tied=True, qk_norm=True, post_norms=True, n_swa=1024, n_ctx_train=131072,
    ),
}  # fmt: skip

# (model, NVML free MiB, n_ctx, n_parallel, flash attention, cache type, largest -ngl that loaded)
MEASURED = [
    ("llama-8b", 5121.1, 8192, 2, False, "f16", 24),
    ("llama-8b", 6145.1, 16384, 4, False, "f16", 26),
    ("llama-8b", 6145.1, 16384, 4, True, "f16", 27),
    ("llama-8b", 12001.1, 32768, 1, False, "f16", 32),
    ("llama-8b", 6001.1, 32768, 1, True, "q4_0", 31),
    ("gemma3-12b", 4097.1, 8192, 1, False, "f16", 18),
    ("gemma3-12b", 6145.1, 8192, 1, True, "f16", 35),
    ("gemma3-12b", 8193.1, 32768, 1, False, "f16", 31),
]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("h200-shapes")
    return {name: ngl_gguf.write(d / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.mark.parametrize(("model", "free_mib", "ctx", "np_", "fa", "cache", "best"), MEASURED)
def test_measured_h200_cases(
    shapes: dict[str, Path], model: str, free_mib: float, ctx: int, np_: int, fa: bool, cache: str, best: int
) -> None:
    """Never more layers than loaded, at most one fewer."""
    o = Options(n_ctx=ctx, n_parallel=np_, flash_attn=fa, cache_type_k=cache, cache_type_v=cache)
    r = decide(read_header(shapes[model]), [GpuInfo(index=0, free_bytes=int(free_mib * MiB))], o)
    assert best - 1 <= r.n_gpu_layers <= best


# The LLaVA CLIP-L/336 mmproj of the runs: 624,412,672 bytes of weights in CUDA buffers, 36 MiB of
# vision graph by projector_facts' formula, plus the projector's own CUDA backend.
LLAVA_PROJECTOR = ProjectorFacts(
    path="mmproj.gguf", weights_bytes=624_412_672, graph_bytes=37_814_272 + PROJECTOR_BACKEND_BYTES
)


@pytest.mark.parametrize(("fa", "best"), [(False, 26), (True, 30)])
def test_measured_h200_mmproj_cases(shapes: dict[str, Path], fa: bool, best: int) -> None:
    """An 8B with a separate mmproj at 6401 MiB free: the projector's backend counted, no OOM."""
    gpus = [GpuInfo(index=0, free_bytes=int(6401.1 * MiB))]
    r = decide(read_header(shapes["llama-8b"]), gpus, Options(n_ctx=8192, flash_attn=fa), LLAVA_PROJECTOR)
    assert best - 1 <= r.n_gpu_layers <= best


def test_parallel_sequences_split_n_ctx_into_streams(shapes: dict[str, Path]) -> None:
    """llama.cpp's n_ctx is all sequences together: -np 4 -c 16384 holds the cells of -c 16384, and
    attention (with its CUDA-pool temporary) runs over one 4096-cell stream, as with -c 4096."""
    m = model_facts(read_header(shapes["llama-8b"]))
    split = Options(n_ctx=16384, n_parallel=4)
    assert kv_bytes_per_layer(m, split) == kv_bytes_per_layer(m, Options(n_ctx=16384))
    layers = list(range(16, 32))
    assert overhead_bytes(m, split, layers, [], True) == overhead_bytes(m, Options(n_ctx=4096), layers, [], True)
    assert overhead_bytes(m, split, layers, [], True) < overhead_bytes(m, Options(n_ctx=16384), layers, [], True)
    # --kv-unified: one stream for all sequences, attention over all of it.
    unified = Options(n_ctx=16384, n_parallel=4, kv_unified=True)
    assert kv_bytes_per_layer(m, unified) == kv_bytes_per_layer(m, split)
    assert overhead_bytes(m, unified, layers, [], True) == overhead_bytes(m, Options(n_ctx=16384), layers, [], True)


def test_gemma_pool_grows_with_the_context_like_llama(shapes: dict[str, Path]) -> None:
    """Gemma's extra pool memory is a constant (8k and 32k measured), not a multiple of the scores."""
    g = model_facts(read_header(shapes["gemma3-12b"]))
    layers = [5, 11, 17]  # full-attention layers: they attend over the whole context
    grow = overhead_bytes(g, Options(n_ctx=32768), layers, [], True) - overhead_bytes(
        g, Options(n_ctx=8192), layers, [], True
    )
    scores_f16 = (32768 - 8192) * 512 * 16 * 2  # cells x ubatch x heads x 2 bytes
    assert scores_f16 <= grow <= 1.06 * scores_f16


def test_multi_head_latent_attention_caches_the_latent_only(tmp_path: Path) -> None:
    """deepseek2 written with key_length_mla: one K row of latent + rope per cell, no V cache."""
    mla = ngl_gguf.SPECS["deepseek2"].with_(
        n_head_kv=1,
        extra_kv={
            "deepseek2.attention.key_length": 512 + 64,
            "deepseek2.attention.value_length": 512,
            "deepseek2.attention.key_length_mla": 192,
            "deepseek2.attention.value_length_mla": 128,
        },
    )
    m = model_facts(read_header(ngl_gguf.write(tmp_path / "mla.gguf", mla)))
    assert kv_bytes_per_layer(m, Options(n_ctx=4096)) == [4096 * 576 * 2] * mla.n_layer
    legacy = model_facts(read_header(ngl_gguf.write(tmp_path / "legacy.gguf", ngl_gguf.SPECS["deepseek2"])))
    assert not legacy.mla
    assert kv_bytes_per_layer(legacy, Options(n_ctx=4096))[0] == 4096 * 8 * (192 + 192) * 2
