"""The estimate on real GGUF files: budgets respected, monotonic, placement, fallback, projectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.ngl.estimate import GpuInfo, decide, estimate
from modeldeploy.ngl.facts import projector_facts
from modeldeploy.ngl.gguf_header import read_header
from modeldeploy.ngl.memory import Options
from tests.support import ngl_gguf
from tests.support.gguf_tables import nbytes
from tests.support.ngl_gguf import Q, Spec

MiB = 1 << 20
ARCHS = sorted(ngl_gguf.SPECS)


def gpu(mib: float, index: int = 0) -> GpuInfo:
    return GpuInfo(index=index, name=f"gpu{index}", free_bytes=int(mib * MiB))


def check_budget(result, gpus: list[GpuInfo]) -> None:  # noqa: ANN001
    """Every GPU's estimated use plus its margin stays within its free memory."""
    assert result.estimate is not None
    for g, free in zip(result.estimate.gpus, gpus, strict=True):
        assert g.total_bytes + g.margin_bytes <= free.free_bytes or g.layers == 0


@pytest.mark.parametrize("name", ARCHS)
def test_monotonic_in_free_memory_and_within_budget(models: dict[str, Path], name: str) -> None:
    h = read_header(models[name])
    full = estimate(h, [gpu(1 << 20)], Options(n_ctx=4096)).estimate
    assert full is not None
    top = full.full_offload_bytes / MiB
    last = 0
    for frac in [0.0, 0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.2, 2.0]:
        gpus = [gpu(top * frac)]
        r = estimate(h, gpus, Options(n_ctx=4096))
        check_budget(r, gpus)
        assert r.n_gpu_layers >= last
        last = r.n_gpu_layers
    assert last == ngl_gguf.SPECS[name].n_layer + 1


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma3", "qwen3moe", "deepseek2"])
def test_monotonic_in_context_parallel_and_cache_type(models: dict[str, Path], name: str) -> None:
    """More context, more sequences or a wider cache type: more memory, never more layers."""
    h = read_header(models[name])
    gpus = [gpu(700)]

    def run(**kw: object) -> tuple[int, int]:
        r = estimate(h, gpus, Options(**kw))
        assert r.estimate is not None
        check_budget(r, gpus)
        return r.n_gpu_layers, sum(r.estimate.kv_bytes_per_layer)

    by_ctx = [run(n_ctx=c) for c in (1024, 4096, 16384, 65536)]
    # n_ctx is llama.cpp's (all sequences): 4096 tokens per sequence means n_ctx = 4096 x n_parallel.
    by_par = [run(n_ctx=4096 * p, n_parallel=p) for p in (1, 2, 4, 8)]
    # The same n_ctx split into more sequences: the same cells, attention over shorter streams; a
    # sliding-window layer keeps a window per stream, so it grows with the streams.
    split = [run(n_ctx=16384, n_parallel=p) for p in (1, 2, 4, 8)]
    if name == "gemma3":
        assert [kv for _, kv in split] == sorted(kv for _, kv in split)
    else:
        assert len({kv for _, kv in split}) == 1
        assert [n for n, _ in split] == sorted(n for n, _ in split)
    by_type = [run(n_ctx=16384, cache_type_k=t, cache_type_v=t) for t in ("f32", "f16", "q8_0", "q4_0")]
    for seq in (by_ctx, by_par):
        assert [n for n, _ in seq] == sorted((n for n, _ in seq), reverse=True)
        assert [kv for _, kv in seq] == sorted(kv for _, kv in seq)
        assert seq[0][1] < seq[-1][1]
    assert [n for n, _ in by_type] == sorted(n for n, _ in by_type)
    kvs = [kv for _, kv in by_type]
    assert kvs[0] > kvs[1] > kvs[2] > kvs[3]  # f32 > f16 > q8_0 > q4_0


def test_kv_bytes_per_layer_llama() -> None:
    """K + V per layer = cells x kv heads x head dim x 2 bytes each (f16), cells padded to 256."""
    from modeldeploy.ngl.facts import model_facts
    from modeldeploy.ngl.memory import kv_bytes_per_layer

    spec = ngl_gguf.SPECS["llama"]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        m = model_facts(read_header(ngl_gguf.write(Path(d) / "m.gguf", spec)))
    kv = kv_bytes_per_layer(m, Options(n_ctx=1000, n_parallel=3))
    # llama.cpp: n_ctx 1000 -> 1024, three streams of 1024 // 3 = 341 -> 512 cells each.
    cells = 3 * 512
    assert kv == [2 * cells * spec.n_head_kv * spec.dk * 2] * spec.n_layer
    q8 = kv_bytes_per_layer(m, Options(n_ctx=1000, n_parallel=3, cache_type_k="q8_0", cache_type_v="q8_0"))
    assert q8 == [2 * cells * (spec.n_head_kv * spec.dk // 32 * 34)] * spec.n_layer


def test_sliding_window_layers_hold_only_the_window(models: dict[str, Path]) -> None:
    from modeldeploy.ngl.facts import model_facts
    from modeldeploy.ngl.memory import kv_bytes_per_layer

    m = model_facts(read_header(models["gemma3"]))
    kv = kv_bytes_per_layer(m, Options(n_ctx=32768))
    full_layers = [il for il in range(m.n_layer) if (il + 1) % 6 == 0]
    assert full_layers == [5, 11]
    assert all(kv[il] > 10 * kv[0] for il in full_layers)
    assert len(set(kv[il] for il in range(m.n_layer) if il not in full_layers)) == 1


def test_layers_go_last_first_and_output_first(models: dict[str, Path]) -> None:
    """-ngl 1 is the output layer; -ngl 2 adds the last repeating layer (llama.cpp's order)."""
    h = read_header(models["llama"])
    big = estimate(h, [gpu(1 << 20)], Options(n_ctx=2048)).estimate
    assert big is not None
    w = big.layer_weights_bytes
    for n in range(1, 4):
        layers = list(range(len(w) - (n - 1), len(w)))
        from modeldeploy.ngl.estimate import _layout
        from modeldeploy.ngl.facts import model_facts
        from modeldeploy.ngl.memory import kv_bytes_per_layer

        m = model_facts(h)
        o = Options(n_ctx=2048)
        g = _layout(m, n, [gpu(1 << 20)], o, kv_bytes_per_layer(m, o), None)
        assert g is not None
        assert g[0].has_output
        assert g[0].weights_bytes == sum(w[il] for il in layers) + big.output_bytes


def test_multi_gpu_split(tmp_path: Path) -> None:
    spec = Spec(arch="qwen2", qkv_bias=True, n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336)
    h = read_header(ngl_gguf.write(tmp_path / "q.gguf", spec))
    one = estimate(h, [gpu(1 << 20)], Options(n_ctx=8192)).estimate
    assert one is not None
    need = one.full_offload_bytes / MiB
    gpus = [gpu(need * 0.75, 0), gpu(need * 0.75, 1)]
    r = estimate(h, gpus, Options(n_ctx=8192))
    check_budget(r, gpus)
    assert r.n_gpu_layers == spec.n_layer + 1
    assert len(r.tensor_split) == 2 and sum(r.tensor_split) == r.n_gpu_layers
    assert all(n > 0 for n in r.tensor_split)
    assert r.estimate is not None and r.estimate.gpus[-1].has_output
    single = estimate(h, gpus[:1], Options(n_ctx=8192))
    assert single.n_gpu_layers < r.n_gpu_layers
    # An uneven pair: the bigger GPU takes more layers.
    uneven = [gpu(need * 0.4, 0), gpu(need * 0.9, 1)]
    ru = estimate(h, uneven, Options(n_ctx=8192))
    check_budget(ru, uneven)
    assert ru.tensor_split[0] < ru.tensor_split[1]
    # One GPU only: no tensor_split.
    assert estimate(h, [gpu(need * 2)], Options(n_ctx=8192)).tensor_split == []


def test_no_gpu_means_zero_layers(models: dict[str, Path], tmp_path: Path) -> None:
    h = read_header(models["llama"])
    r = decide(h, [], Options())
    assert r.n_gpu_layers == 0 and not r.fallback and "no GPU" in r.reason
    no_blocks = Spec(omit_kv=frozenset({"llama.block_count"}))
    broken = read_header(ngl_gguf.write(tmp_path / "nobc.gguf", no_blocks))
    assert decide(broken, [], Options()).n_gpu_layers == 0


def test_fallback_to_all_layers_when_the_estimate_fails(tmp_path: Path) -> None:
    no_embd = ngl_gguf.write(tmp_path / "a.gguf", Spec(n_layer=7, omit_kv=frozenset({"llama.embedding_length"})))
    r = decide(read_header(no_embd), [gpu(100)], Options())
    assert r.fallback and r.n_gpu_layers == 8 and r.estimate is None
    assert "embedding_length" in r.reason
    no_blocks = ngl_gguf.write(tmp_path / "b.gguf", Spec(omit_kv=frozenset({"llama.block_count"})))
    r = decide(read_header(no_blocks), [gpu(100)], Options())
    assert r.fallback and r.n_gpu_layers == 999


def test_embedded_projector_refused_separate_mmproj_counted(tmp_path: Path, models: dict[str, Path]) -> None:
    embedded = Spec(extra_tensors=(("v.blk.0.attn_q.weight", (1024, 1024), Q.F16),))
    r = decide(read_header(ngl_gguf.write(tmp_path / "e.gguf", embedded)), [gpu(4000)], Options())
    assert r.fallback and "projector" in r.reason

    clip = Spec(arch="clip", n_layer=2, n_embd=1024, n_ff=4096, n_head=16, n_head_kv=16, wtype=Q.F16)
    proj = projector_facts(read_header(ngl_gguf.write(tmp_path / "mmproj.gguf", clip)))
    assert proj.weights_bytes >= sum(nbytes(s, q) for _, s, q in ngl_gguf.table(clip))
    big = Spec(n_layer=16, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336)
    h = read_header(ngl_gguf.write(tmp_path / "big.gguf", big))
    full = estimate(h, [gpu(1 << 20)], Options(n_ctx=4096)).estimate
    assert full is not None
    budget = [gpu((full.full_offload_bytes + (proj.weights_bytes + proj.graph_bytes) // 2) / MiB + 60)]
    without = estimate(h, budget, Options(n_ctx=4096))
    assert without.n_gpu_layers == full.layers_total
    with_proj = estimate(h, budget, Options(n_ctx=4096), proj)
    check_budget(with_proj, budget)
    assert with_proj.estimate is not None
    assert with_proj.estimate.gpus[0].projector_bytes == proj.weights_bytes + proj.graph_bytes
    assert with_proj.n_gpu_layers < without.n_gpu_layers


def test_unknown_architecture_uses_the_default_calculation(models: dict[str, Path]) -> None:
    r = decide(read_header(models["unknown-arch"]), [gpu(100000)], Options())
    assert not r.fallback and r.estimate is not None and not r.estimate.known_architecture
    assert "default calculation" in r.reason


def test_flash_attention_needs_less(models: dict[str, Path]) -> None:
    h = read_header(models["llama"])
    a = estimate(h, [gpu(1 << 20)], Options(n_ctx=32768)).estimate
    b = estimate(h, [gpu(1 << 20)], Options(n_ctx=32768, flash_attn=True)).estimate
    assert a is not None and b is not None
    assert b.full_offload_bytes < a.full_offload_bytes


# Measured on an H100 (docs/auto-ngl-validation.md, run 3: an ~7,600-token prompt in an 8192 context):
# the largest -ngl that loaded and ran for llama-8B-shaped Q4_K files at NVML free memory pinned.
MEASURED_8B = [(5104.2, False, 22), (5104.2, True, 26), (3056.2, False, 8)]


@pytest.mark.parametrize(("free_mib", "fa", "best"), MEASURED_8B)
def test_measured_h100_cases(tmp_path_factory: pytest.TempPathFactory, free_mib: float, fa: bool, best: int) -> None:
    """Real-shaped 8B header: never more than what loaded, at most one less."""
    d = tmp_path_factory.getbasetemp() / "ngl-8b"
    d.mkdir(exist_ok=True)
    p = d / "llama-8b.gguf"
    if not p.exists():
        spec = Spec(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256, n_ctx_train=131072)
        ngl_gguf.write(p, spec)
    r = decide(read_header(p), [gpu(free_mib)], Options(n_ctx=8192, flash_attn=fa))
    assert best - 1 <= r.n_gpu_layers <= best
