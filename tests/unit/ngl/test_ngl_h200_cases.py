"""The estimate against what loaded on an H200 (docs/auto-ngl-validation.md, H200 runs), and the llama.cpp
rules those runs checked: n_ctx split into per-sequence streams, the latent-only KV cache of multi-head
latent attention, and Gemma's CUDA-pool temporary growing with the context like everyone else's.

The headers are real-shaped (the validation models' tensor tables and vocabulary sizes); the measured
"best" is the largest -ngl that loaded and ran a prompt filling the context at that NVML free memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.ngl.estimate import GpuInfo, decide
from modeldeploy.ngl.facts import PROJECTOR_BACKEND_BYTES, PROJECTOR_FLASH_ATTN_BYTES, model_facts, projector_facts
from modeldeploy.ngl.gguf_header import read_header
from modeldeploy.ngl.memory import Options, kv_bytes_per_layer, overhead_bytes
from tests.support import ngl_gguf
from tests.support.gguf_projectors import PROJECTORS, write_projector
from tests.support.ngl_gguf import Spec

MiB = 1 << 20

SHAPES: dict[str, Spec] = {
    # Vocabulary sizes are those of the tokenizers the validation models carried.
    "llama-8b": Spec(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256, n_ctx_train=131072),
    "gemma3-12b": Spec(
        arch="gemma3", n_layer=48, n_embd=3840, n_head=16, n_head_kv=8, n_ff=15360, n_vocab=128256, head_dim=256,
        tied=True, qk_norm=True, post_norms=True, n_swa=1024, n_ctx_train=131072,
    ),
    "qwen2-14b": Spec(
        arch="qwen2", n_layer=48, n_embd=5120, n_head=40, n_head_kv=8, n_ff=13824, n_vocab=152064, qkv_bias=True,
        n_ctx_train=32768,
    ),
    "qwen3-32b": Spec(
        arch="qwen3", n_layer=64, n_embd=5120, n_head=64, n_head_kv=8, n_ff=25600, n_vocab=151936, head_dim=128,
        qk_norm=True, n_ctx_train=40960,
    ),
    "qwen3moe-30b-a3b": Spec(
        arch="qwen3moe", n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, n_ff=6144, n_vocab=151936, head_dim=128,
        qk_norm=True, n_expert=128, n_expert_used=8, n_ff_exp=768, n_ctx_train=40960,
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


@pytest.fixture(scope="module")
def projectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("h200-projectors")
    return {name: write_projector(d / f"{name}.gguf", p) for name, p in PROJECTORS.items()}


# (mmproj, its patches with the class token, flash attention, the vision graph's CUDA compute buffer
# llama.cpp reserved, MiB)
PROJECTOR_GRAPHS = [
    ("llava-clip-l-336", 577, False, 32.88),
    ("llava-clip-l-336", 577, True, 21.55),
    ("gemma3-siglip-896", 4096, False, 1132.0),
    ("gemma3-siglip-896", 4096, True, 121.25),
]


@pytest.mark.parametrize(("name", "patches", "fa", "reserved_mib"), PROJECTOR_GRAPHS)
def test_projector_graph_matches_llama_cpp_reservation(
    projectors: dict[str, Path], name: str, patches: int, fa: bool, reserved_mib: float
) -> None:
    """The vision graph, without the projector backend's part: never below what mtmd reserved, at most
    2 MiB above (a 4,096-patch SigLIP without flash attention reserves 1 GiB of scores)."""
    p = projector_facts(read_header(projectors[name]), flash_attn=fa)
    stream = PROJECTORS[name].n_embd * patches * 4
    backend = PROJECTOR_BACKEND_BYTES + 2 * stream + (PROJECTOR_FLASH_ATTN_BYTES if fa else 0)
    graph_mib = (p.graph_bytes - backend) / MiB
    assert reserved_mib <= graph_mib <= reserved_mib + 2


# (model, mmproj, NVML free MiB, flash attention, largest -ngl that loaded with an image and a full prompt)
MEASURED_MMPROJ = [
    ("llama-8b", "llava-clip-l-336", 6401.1, False, 26),
    ("llama-8b", "llava-clip-l-336", 6401.1, True, 30),
    ("llama-8b", "gemma3-siglip-896", 7601.1, False, 25),
    ("llama-8b", "gemma3-siglip-896", 6401.1, True, 27),
]


@pytest.mark.parametrize(("model", "mmproj", "free_mib", "fa", "best"), MEASURED_MMPROJ)
def test_measured_h200_mmproj_cases(
    shapes: dict[str, Path], projectors: dict[str, Path], model: str, mmproj: str, free_mib: float, fa: bool, best: int
) -> None:
    """An 8B with a separate mmproj (LLaVA's CLIP, Gemma 3's SigLIP): never more layers than loaded, at most
    one fewer; the SigLIP graph is 1 GiB larger without flash attention and the estimate follows."""
    proj = projector_facts(read_header(projectors[mmproj]), flash_attn=fa)
    gpus = [GpuInfo(index=0, free_bytes=int(free_mib * MiB))]
    r = decide(read_header(shapes[model]), gpus, Options(n_ctx=8192, flash_attn=fa), proj)
    assert best - 1 <= r.n_gpu_layers <= best


# Two GPUs with unequal (and equal) free memory, -c 8192.  (model, NVML free MiB per GPU, flash attention,
# largest -ngl that loaded over every split tried, NVML peak MiB per GPU at our N and split)
TWO_GPUS = [
    ("qwen2-14b", (4097.1, 6145.1), False, 34, (3927.6, 5915.6)),
    ("qwen3-32b", (8193.1, 12289.1), True, 61, (7901.6, 12103.6)),
    ("qwen3moe-30b-a3b", (6145.1, 10241.1), True, 40, (5833.6, 10065.6)),
    ("gemma3-12b", (3585.1, 4609.1), False, 38, (3467.6, 4383.6)),
    ("gemma3-12b", (3073.1, 5121.1), False, 39, (2937.6, 4913.6)),
    ("gemma3-12b", (4097.1, 4097.1), False, 39, (3915.6, 3935.6)),
]


@pytest.mark.parametrize(("model", "free", "fa", "best", "peak"), TWO_GPUS)
def test_two_gpu_cases_estimate_each_gpu_at_or_above_its_peak(
    shapes: dict[str, Path], model: str, free: tuple[float, float], fa: bool, best: int, peak: tuple[float, float]
) -> None:
    """Each GPU's estimate covers the peak NVML saw at our N and split; the first GPU counts the host weight
    that op offload copies into its compute buffer (it was 43-49 MiB short of the peak without it)."""
    gpus = [GpuInfo(index=i, free_bytes=int(f * MiB)) for i, f in enumerate(free)]
    r = decide(read_header(shapes[model]), gpus, Options(n_ctx=8192, flash_attn=fa))
    assert r.estimate is not None and r.n_gpu_layers <= best
    for g, seen in zip(r.estimate.gpus, peak, strict=True):
        assert g.total_bytes >= seen * MiB
        assert g.total_bytes + g.margin_bytes <= g.free_bytes


def _gemma_two_gpu_gap(case: tuple[str, tuple[float, float], bool, int, tuple[float, float]]) -> object:
    """Gemma 3 on two GPUs: the largest N that loads leaves 23-34 MiB free on a GPU, less than the per-GPU
    margin; N >= best - 1 would need one GPU planned that tight (docs/auto-ngl-validation.md, H200)."""
    if case[0] == "gemma3-12b" and case[1] != (3585.1, 4609.1):
        return pytest.param(*case, marks=pytest.mark.xfail(strict=True, reason="per-GPU margin and rounding"))
    return pytest.param(*case)


@pytest.mark.parametrize(("model", "free", "fa", "best", "peak"), [_gemma_two_gpu_gap(c) for c in TWO_GPUS])
def test_two_gpu_cases_at_most_one_layer_below_the_largest_that_loads(
    shapes: dict[str, Path], model: str, free: tuple[float, float], fa: bool, best: int, peak: tuple[float, float]
) -> None:
    """The goal: at most one layer below what loaded (strict xfail where the doc explains why not)."""
    gpus = [GpuInfo(index=i, free_bytes=int(f * MiB)) for i, f in enumerate(free)]
    r = decide(read_header(shapes[model]), gpus, Options(n_ctx=8192, flash_attn=fa))
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
