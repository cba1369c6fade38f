"""Side by side with Xinference's estimator (`xllamacpp.estimate_gpu_layers`) on the same files.

Both estimators read the same GGUF files with the same free memory; the test prints both answers
(`pytest -s` shows the table) and checks ours never plans past the budget, including where theirs
says the model fits.  The GPU validation (docs/auto-ngl-validation.md) shows which of the two loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.ngl.estimate import GpuInfo, decide
from modeldeploy.ngl.gguf_header import read_header
from modeldeploy.ngl.memory import Options
from tests.support import ngl_gguf
from tests.support.ngl_gguf import Spec

xllamacpp = pytest.importorskip("xllamacpp")
MiB = 1 << 20

SHAPES = {
    "llama-8b": Spec(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256),
    "llama-8b-small-vocab": Spec(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=2000),
    "qwen3-32b": Spec(
        arch="qwen3", n_vocab=2000, n_layer=64, n_embd=5120, n_head=64, n_head_kv=8, n_ff=25600, head_dim=128,
        qk_norm=True,
    ),
    "qwen3moe-30b": Spec(
        arch="qwen3moe", n_vocab=2000, n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, n_ff=6144, head_dim=128,
        qk_norm=True,
        n_expert=128, n_expert_used=8, n_ff_exp=768,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ngl-shaped")
    return {name: ngl_gguf.write(d / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.mark.parametrize("name", ["llama-8b-small-vocab", "qwen3-32b", "qwen3moe-30b"])
def test_side_by_side(shaped: dict[str, Path], name: str) -> None:
    h = read_header(shaped[name])
    rows = []
    for free_mib in (3072, 5120, 8192, 12288, 24576):
        free = free_mib * MiB
        ours = decide(h, [GpuInfo(index=0, free_bytes=free)], Options(n_ctx=8192))
        theirs = xllamacpp.estimate_gpu_layers(
            gpus=[{"name": "CUDA0", "memory_free": free}],
            model_path=str(shaped[name]),
            projectors=[],
            context_length=8192,
            batch_size=512,
            num_parallel=1,
            kv_cache_type="f16",
        )
        assert ours.estimate is not None
        used = ours.estimate.vram_bytes
        margin = ours.estimate.gpus[0].margin_bytes
        rows.append((free_mib, ours.n_gpu_layers, round(used / MiB), theirs.layers, round(theirs.vram_size / MiB)))
        assert used + margin <= free or ours.n_gpu_layers == 0
        # Both count the same layers: neither may claim more than the model has.
        assert 0 <= ours.n_gpu_layers <= SHAPES[name].n_layer + 1
        assert 0 <= theirs.layers <= SHAPES[name].n_layer + 1
    print(f"\n{name}: free MiB | ours N, MiB | xllamacpp N, MiB")
    for row in rows:
        print("  {:6d} | {:3d} {:6d} | {:3d} {:6d}".format(*row))
    # Ours grows with the budget; so does theirs.
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)


def test_where_xllamacpp_overcommits_ours_stays_within(shaped: dict[str, Path]) -> None:
    """At 5 GiB free with an 8k prompt the 8B loads 22 layers on an H100; xllamacpp plans 25, ours 21."""
    free = int(5104.2 * MiB)
    ours = decide(read_header(shaped["llama-8b"]), [GpuInfo(index=0, free_bytes=free)], Options(n_ctx=8192))
    theirs = xllamacpp.estimate_gpu_layers(
        [{"name": "CUDA0", "memory_free": free}], str(shaped["llama-8b"]), [], 8192, 512, 1, "f16"
    )
    print(f"\nllama-8b at 5104 MiB: ours {ours.n_gpu_layers}, xllamacpp {theirs.layers}, measured best 22")
    assert ours.n_gpu_layers <= 22 < theirs.layers
