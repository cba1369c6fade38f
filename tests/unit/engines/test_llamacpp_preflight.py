"""Pre-flight checks for the seed's three llama.cpp common issues, on a real GGUF header."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from modeldeploy.engines.llamacpp import preflight
from modeldeploy.engines.llamacpp.preflight import FIX_CONTEXT, FIX_KV, Plan, check, read_shape
from tests.support.tiny_gguf import TinyLlama, write_tiny_llama
from tests.unit.ngl.test_ngl_header import HOSTILE

F16 = 1
GIB = 1 << 30


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> preflight.ModelShape:
    path = write_tiny_llama(tmp_path_factory.mktemp("m") / "m.gguf", TinyLlama(n_layer=4, n_head=4, n_head_kv=2))
    return read_shape(path)


def _plan(**kw: object) -> Plan:
    base = dict(
        n_ctx=8192,
        n_parallel=1,
        n_gpu_layers=0,
        ctx_shift=False,
        multimodal=False,
        cache_type_k=F16,
        cache_type_v=F16,
        no_kv_offload=False,
        fit_params=True,
    )
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def test_shape_from_gguf_metadata(shape: preflight.ModelShape) -> None:
    assert shape.arch == "llama" and shape.n_layer == 4
    assert shape.kv_heads_per_layer == (2, 2, 2, 2) and shape.key_length == 16 == shape.value_length
    # 4 layers x 2 heads x (16 + 16) dims x 2 bytes per cell.
    assert shape.kv_bytes(1000, 2, 2) == 4 * 2 * 32 * 2 * 1000


def test_q8_0_cache_is_smaller_than_f16() -> None:
    assert preflight.bytes_per_element(8) == pytest.approx(34 / 32)
    assert preflight.bytes_per_element(F16) == 2


def test_healthy_plan_has_no_findings(shape: preflight.ModelShape) -> None:
    findings, figures = check(_plan(), shape, host_free=8 * GIB, gpu_free=None)
    assert findings == [] and figures["slot_ctx"] == 8192


def test_small_slot_context_warns_with_seed_fix(shape: preflight.ModelShape) -> None:
    findings, _ = check(_plan(n_ctx=2048, n_parallel=4), shape, 8 * GIB, None)
    assert [f.issue for f in findings] == ["slot-context-too-small"]
    assert not findings[0].fatal and "512 tokens" in findings[0].message


def test_multimodal_without_context_shift(shape: preflight.ModelShape) -> None:
    findings, _ = check(_plan(n_ctx=4096, n_parallel=2, multimodal=True), shape, 8 * GIB, None)
    assert [f.issue for f in findings] == ["multimodal-no-context-shift"]
    assert findings[0].fix == FIX_CONTEXT
    with_shift, _ = check(_plan(n_ctx=4096, n_parallel=2, multimodal=True, ctx_shift=True), shape, 8 * GIB, None)
    assert with_shift == []


def test_kv_cache_larger_than_host_memory_is_fatal(shape: preflight.ModelShape) -> None:
    findings, figures = check(_plan(n_ctx=1 << 24), shape, host_free=1 * GIB, gpu_free=None)
    kv = [f for f in findings if f.issue == "kv-cache-cannot-fit"]
    assert kv and kv[0].fatal and kv[0].fix == FIX_KV
    assert figures["kv_cache_bytes"] == shape.kv_bytes(1 << 24, 2, 2)


def test_kv_cache_on_gpu_counts_offloaded_layers_only(shape: preflight.ModelShape) -> None:
    kv_all = shape.kv_bytes(1 << 20, 2, 2)
    findings, figures = check(_plan(n_ctx=1 << 20, n_gpu_layers=2), shape, host_free=64 * GIB, gpu_free=kv_all // 4)
    assert figures["kv_gpu_bytes"] == kv_all // 2
    assert any(f.issue == "kv-cache-cannot-fit" and "GPU" in f.message and f.fatal for f in findings)


def test_auto_context_only_warns(shape: preflight.ModelShape) -> None:
    # n_ctx 0 means the training context, which llama.cpp shrinks itself when fit_params is on.
    findings, figures = check(_plan(n_ctx=0), shape, host_free=1024, gpu_free=None)
    assert figures["n_ctx"] == 2048
    assert findings and not any(f.fatal for f in findings)


def test_weights_plus_kv_over_budget_warns(shape: preflight.ModelShape) -> None:
    kv = shape.kv_bytes(8192, 2, 2)
    findings, _ = check(_plan(), shape, host_free=kv + shape.file_bytes // 2, gpu_free=None)
    assert [(f.issue, f.fatal) for f in findings] == [("kv-cache-cannot-fit", False)]


def test_reads_shape_of_a_file_without_arch_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"not a gguf")
    with pytest.raises((ValueError, OSError)):
        read_shape(path)


def _header_with(kvs: bytes, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + kvs + b"\0" * 64


def _kv_str(key: bytes, value: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value


def _kv_u32(key: bytes, value: int) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, value)


# The weights come from wherever model.uri points: crafted headers claiming huge counts and lengths, and a
# well-formed one claiming four billion layers (a per-layer list would be built from it).
CRAFTED = {
    **{case: data for case, (data, _) in HOSTILE.items()},
    "four billion layers": _header_with(
        _kv_str(b"general.architecture", b"llama")
        + _kv_u32(b"llama.block_count", 0xFFFFFFFF)
        + _kv_u32(b"llama.embedding_length", 64)
        + _kv_u32(b"llama.attention.head_count", 4),
        4,
    ),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_header_is_a_clean_error_in_bounded_memory(tmp_path: Path, case: str) -> None:
    """The preflight reads the header with the bounded parser (ngl/gguf_header.py), not gguf.GGUFReader:
    one ValueError (which the entrypoint logs as "cannot read the GGUF header" and starts without the KV
    check), a few MiB at most, whatever the header claims."""
    path = tmp_path / "crafted.gguf"
    path.write_bytes(CRAFTED[case])
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as err:
            read_shape(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert peak < 8 << 20, peak


def test_the_preflight_never_uses_the_gguf_packages_reader() -> None:
    source = Path(preflight.__file__).read_text()
    assert "GGUFReader(" not in source
