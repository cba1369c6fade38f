"""The memory estimate against what vLLM and SGLang print at start-up and against their arithmetic.

Figures vLLM and SGLang printed are quoted from the threads docs/memory-placement.md cites; the config.json
facts are those of the models' repositories (memory/models.py).
"""

from __future__ import annotations

import pytest

from modeldeploy.engines import registry
from modeldeploy.formats import ModelFormat
from modeldeploy.memory.estimate import (
    GIB,
    EngineMemory,
    kv_cache_bytes,
    largest_context,
    model_memory,
    need,
    tensor_parallel_sizes,
)
from modeldeploy.memory.models import KNOWN, ModelShape, find_shape

VLLM = registry.get("vllm").memory
SGLANG = registry.get("sglang").memory
assert VLLM is not None and SGLANG is not None
H100_BYTES = int(79.22 * GIB)  # what vLLM printed as total_gpu_memory on an H100 80GB


def shape(key: str) -> ModelShape:
    return next(s for s in KNOWN if s.key == key)


@pytest.mark.parametrize(
    ("uri", "name", "size", "key"),
    [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", "x", None, "Llama-3.1-8B"),
        ("hf://meta-llama/Llama-3.1-70B-Instruct@abc", "x", None, "Llama-3.1-70B"),
        ("hf://Qwen/Qwen2.5-7B-Instruct-AWQ", "x", None, "Qwen2.5-7B"),
        ("hf://Qwen/Qwen2.5-72B-Instruct-AWQ", "x", None, "Qwen2.5-72B"),
        ("hf://Qwen/Qwen3-30B-A3B", "x", None, "Qwen3-30B-A3B"),
        ("hf://deepseek-ai/DeepSeek-V2-Lite-Chat", "x", None, "DeepSeek-V2-Lite"),
        ("hf://google/gemma-3-12b-it", "x", None, "Gemma-3-12B"),
        ("s3://bucket/llama", "llama-3.1-instruct", "70", "Llama-3.1-70B"),
        ("/models/q", "qwen2.5-instruct", "7", "Qwen2.5-7B"),
    ],
)
def test_known_models_are_found_by_repository_or_by_name_and_size(
    uri: str, name: str, size: str | None, key: str
) -> None:
    found = find_shape(name, size, uri)
    assert found is not None and found.key == key


def test_an_unknown_model_has_no_shape() -> None:
    assert find_shape("my-model", "7", "hf://org/my-model") is None


@pytest.mark.parametrize(
    ("uri", "fmt", "quantization", "published_gb", "tolerance"),
    [
        # Sizes of the repositories' safetensors files.
        ("hf://meta-llama/Llama-3.1-8B-Instruct", ModelFormat.PYTORCH, "none", 16.06, 0.01),
        ("hf://meta-llama/Llama-3.1-70B-Instruct", ModelFormat.PYTORCH, "none", 141.1, 0.01),
        ("hf://Qwen/Qwen2.5-7B-Instruct", ModelFormat.PYTORCH, "none", 15.23, 0.01),
        ("hf://Qwen/Qwen2.5-7B-Instruct-AWQ", ModelFormat.AWQ, "Int4", 5.58, 0.02),
        ("hf://Qwen/Qwen2.5-72B-Instruct-AWQ", ModelFormat.AWQ, "Int4", 41.0, 0.03),  # about 41 GB
    ],
)
def test_weights_from_parameters_match_the_files(
    uri: str, fmt: ModelFormat, quantization: str, published_gb: float, tolerance: float
) -> None:
    memory = model_memory("x", None, uri, fmt, quantization)
    assert memory is not None
    assert memory.weights / 1e9 == pytest.approx(published_gb, rel=tolerance)


def test_the_listing_is_read_only_when_the_parameters_are_unknown() -> None:
    """A listing may hold the weights twice (safetensors and original/*.pth), so parameters win."""
    known = model_memory("x", "7", "hf://Qwen/Qwen2.5-7B-Instruct", ModelFormat.PYTORCH, "none", listed_bytes=123)
    assert known is not None and known.weights_from == "parameters"
    unknown = model_memory("custom", None, "hf://org/custom", ModelFormat.PYTORCH, "none", listed_bytes=123)
    assert unknown is not None and unknown.weights == 123 and unknown.weights_from == "listing"


def test_without_shape_the_size_in_billions_gives_the_weights() -> None:
    memory = model_memory("custom", "0_5", "hf://org/custom", ModelFormat.PYTORCH, "none")
    assert memory is not None and memory.shape is None and memory.weights == 1_000_000_000


def test_nothing_known_means_no_estimate() -> None:
    assert model_memory("custom", None, "hf://org/custom", ModelFormat.PYTORCH, "none") is None


def test_vllm_llama3_8b_on_an_h100_matches_its_memory_profile() -> None:
    """vLLM printed: weights 14.96 GiB, non_torch 1.79 GiB, activation peak 1.26 GiB, KV 53.29 GiB (tp 1);
    weights 7.48 GiB, non_torch 3.58 GiB (tp 2)."""
    memory = model_memory("x", None, "hf://meta-llama/Llama-3.1-8B-Instruct", ModelFormat.PYTORCH, "none")
    assert memory is not None
    one = need(memory, VLLM, 1, 8192, {}, H100_BYTES)
    assert one.weights / GIB == pytest.approx(14.96, abs=0.01)
    assert (one.reserve / GIB) == pytest.approx(1.79 + 1.26, abs=0.4)  # ours: 1.8 + 1.6 (1024 sequences' logits)
    kv_room = H100_BYTES * 0.9 - one.weights - one.reserve
    assert kv_room / GIB == pytest.approx(53.29, abs=0.5)
    two = need(memory, VLLM, 2, 8192, {}, H100_BYTES)
    assert two.weights / GIB == pytest.approx(7.48, abs=0.01)


def test_kv_per_token_is_vllm_page_arithmetic() -> None:
    """2 × KV heads × head dim × dtype per layer and token; MLA one latent of 512 + 64."""
    assert kv_cache_bytes(shape("Llama-3.1-8B"), 1, 1, 2) == 32 * 2 * 8 * 128 * 2  # 128 KiB
    assert kv_cache_bytes(shape("Llama-3.1-70B"), 1, 4, 2) == 80 * 2 * 2 * 128 * 2
    assert kv_cache_bytes(shape("Qwen2.5-7B"), 1, 1, 2) == 28 * 2 * 4 * 128 * 2
    assert kv_cache_bytes(shape("Qwen3-30B-A3B"), 1, 1, 2) == 48 * 2 * 4 * 128 * 2
    assert kv_cache_bytes(shape("DeepSeek-V2-Lite"), 1, 1, 2) == 27 * 576 * 2
    assert kv_cache_bytes(shape("DeepSeek-V2-Lite"), 1, 2, 2) == 27 * 576 * 2  # MLA: every rank holds it all


def test_kv_heads_are_replicated_when_tensor_parallel_exceeds_them() -> None:
    qwen = shape("Qwen2.5-7B")  # 4 KV heads
    assert kv_cache_bytes(qwen, 1, 4, 2) == kv_cache_bytes(qwen, 1, 1, 2) // 4
    assert kv_cache_bytes(qwen, 1, 8, 2) == kv_cache_bytes(qwen, 1, 4, 2)


def test_gemma3_sliding_layers_keep_only_the_window() -> None:
    gemma = shape("Gemma-3-12B")
    per_layer_token = 2 * 8 * 256 * 2
    assert kv_cache_bytes(gemma, 32768, 1, 2) == (8 * 32768 + 40 * 1024) * per_layer_token
    assert kv_cache_bytes(gemma, 512, 1, 2) == 48 * 512 * per_layer_token


def test_qwen3_235b_kv_tokens_match_what_vllm_and_sglang_printed_at_tp4() -> None:
    """vLLM: 8.11 GiB of KV cache, 178,880 tokens; SGLang: 367,404 tokens, K size 8.23 GB (its GB are GiB).
    Qwen3-235B-A22B: 94 layers, 4 KV heads of 128 (config.json); one head per rank at tp 4."""
    qwen3_235b = ModelShape("Qwen3-235B-A22B", "Qwen/Qwen3-235B-A22B", 235, 94, 4096, 64, 4, 128, 12288, 151936, 40960)
    per_token = kv_cache_bytes(qwen3_235b, 1, 4, 2)
    assert 8.11 * GIB / per_token == pytest.approx(178_880, rel=0.015)  # vLLM rounds to whole blocks per layer group
    assert 367_404 * per_token / 2 / GIB == pytest.approx(8.23, abs=0.01)


def test_tensor_parallel_sizes_divide_the_heads() -> None:
    assert tensor_parallel_sizes(shape("Qwen2.5-7B"), 8) == (1, 2, 4)  # 28 heads, 4 KV heads: not 7
    assert tensor_parallel_sizes(shape("Llama-3.1-70B"), 8) == (1, 2, 4, 8)
    assert tensor_parallel_sizes(None, 3) == (1, 2, 3)


def test_sglang_fraction_defaults_by_tensor_parallel_and_args_win() -> None:
    engine: EngineMemory = SGLANG
    assert engine.fraction(1, {}) == (0.88, False)
    assert engine.fraction(2, {}) == (0.87, False)
    assert engine.fraction(8, {}) == (0.83, False)
    assert engine.fraction(1, {"mem-fraction-static": 0.7}) == (0.7, True)
    assert VLLM.fraction(4, {"gpu_memory_utilization": "0.8"}) == (0.8, True)


def test_largest_context_is_the_last_that_fits() -> None:
    memory = model_memory("x", None, "hf://meta-llama/Llama-3.1-8B-Instruct", ModelFormat.PYTORCH, "none")
    assert memory is not None
    l4 = 23034 * 1024**2
    largest = largest_context(memory, VLLM, 1, l4, {})
    assert 0 < largest < 131072 and largest % 256 == 0
    assert need(memory, VLLM, 1, largest, {}, l4).total <= l4 * 0.9
    assert need(memory, VLLM, 1, largest + 256, {}, l4).total > l4 * 0.9


def test_fp8_kv_cache_halves_it() -> None:
    memory = model_memory("x", None, "hf://meta-llama/Llama-3.1-8B-Instruct", ModelFormat.PYTORCH, "none")
    assert memory is not None
    plain = need(memory, VLLM, 1, 8192, {}).kv
    fp8 = need(memory, VLLM, 1, 8192, {"kv-cache-dtype": "fp8_e4m3"}).kv
    assert plain is not None and fp8 is not None and fp8 * 2 == plain


def test_sglang_counts_sliding_layers_at_the_full_context() -> None:
    gemma = model_memory("x", None, "hf://google/gemma-3-12b-it", ModelFormat.PYTORCH, "none")
    assert gemma is not None
    assert need(gemma, SGLANG, 1, 32768, {}).kv == kv_cache_bytes(shape("Gemma-3-12B"), 32768, 1, 2, windows=False)
    assert need(gemma, VLLM, 1, 32768, {}).kv == kv_cache_bytes(shape("Gemma-3-12B"), 32768, 1, 2)
