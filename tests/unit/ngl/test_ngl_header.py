"""The bounded GGUF header reader on real files written by the `gguf` package, and on hostile ones."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from gguf import GGUFReader

from modeldeploy.ngl.facts import MATRIX_ROW_PADDING, model_facts
from modeldeploy.ngl.gguf_header import GGUFHeaderError, read_header
from tests.support import ngl_gguf
from tests.support.gguf_tables import nbytes
from tests.support.ngl_gguf import Q, Spec


@pytest.mark.parametrize("name", sorted(ngl_gguf.SPECS))
def test_tensor_table_matches_the_gguf_package(models: dict[str, Path], name: str) -> None:
    """Every tensor's shape, type, offset and byte size agree with GGUFReader and with the spec."""
    h = read_header(models[name])
    ref = GGUFReader(models[name])
    assert [t.name for t in h.tensors] == [t.name for t in ref.tensors]
    for ours, theirs in zip(h.tensors, ref.tensors, strict=True):
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert ours.nbytes == int(theirs.n_bytes)
        assert h.data_offset + ours.offset == int(theirs.data_offset)
    assert h.architecture == ngl_gguf.SPECS[name].arch
    assert h.arch_value("block_count") == ngl_gguf.SPECS[name].n_layer
    assert h.array_count("tokenizer.ggml.tokens") == ngl_gguf.SPECS[name].n_vocab


@pytest.mark.parametrize("name", sorted(n for n in ngl_gguf.SPECS if n != "unknown-arch"))
def test_layer_weight_bytes_are_the_tensor_tables(models: dict[str, Path], name: str) -> None:
    """Per-layer bytes: the raw sum equals the spec's; the CUDA size adds only row padding and alignment."""
    spec = ngl_gguf.SPECS[name]
    h = read_header(models[name])
    raw = [0] * spec.n_layer
    count = [0] * spec.n_layer
    for t in h.tensors:
        if t.name.startswith("blk."):
            raw[int(t.name.split(".")[1])] += t.nbytes
            count[int(t.name.split(".")[1])] += 1
    assert raw == ngl_gguf.layer_bytes(spec)
    m = model_facts(h)
    for il in range(spec.n_layer):
        assert raw[il] <= m.layer_weights[il] <= raw[il] + count[il] * (128 + MATRIX_ROW_PADDING * 2)


@pytest.mark.parametrize(("qtype", "n_layer"), [(Q.Q4_K, 3), (Q.Q8_0, 9), (Q.F16, 2), (Q.Q6_K, 16)])
def test_layer_bytes_exact_without_padding(tmp_path: Path, qtype: Q, n_layer: int) -> None:
    """Rows of a multiple of 512 elements need no CUDA row padding: the estimate is the tensor bytes to 128."""
    spec = Spec(n_embd=1024, n_ff=2048, n_head=8, n_head_kv=8, n_layer=n_layer, wtype=qtype)
    h = read_header(ngl_gguf.write(tmp_path / "m.gguf", spec))
    m = model_facts(h)
    for il in range(n_layer):
        expected = sum(
            -(-nbytes(shape, q) // 128) * 128
            for name, shape, q in ngl_gguf.table(spec)
            if name.startswith(f"blk.{il}.")
        )
        assert m.layer_weights[il] == expected
    assert m.model_bytes == sum(nbytes(shape, q) for _, shape, q in ngl_gguf.table(spec))


def test_reads_only_the_header_of_a_large_sparse_file(tmp_path: Path) -> None:
    """A 20 GiB file (a hole past its tensor table) costs one small read."""
    p = ngl_gguf.write(tmp_path / "big.gguf", Spec(n_embd=8192, n_ff=28672, n_head=64, n_head_kv=8, n_layer=40))
    size = p.stat().st_size
    assert size > 10 << 30
    h = read_header(p)
    assert h.bytes_read <= max(h.data_offset, 1 << 20) + (1 << 20)
    assert h.bytes_read < size / 1000


# --- hostile files -------------------------------------------------------------------------------


def _gguf(version: int = 3, n_tensors: int = 0, n_kv: int = 0, body: bytes = b"", pad: int = 64) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body + b"\0" * pad


def _kv_string(key: bytes, length: int, payload: bytes = b"") -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, length) + payload


def _kv_array(key: bytes, item_type: int, count: int) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, item_type, count)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "too small"),
    "bad magic": (b"GGML" + b"\0" * 60, "not a GGUF file"),
    "version 1": (_gguf(version=1), "unsupported GGUF version 1"),
    "version 99": (_gguf(version=99), "unsupported GGUF version 99"),
    "big endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + b"\0" * 64, "big-endian"),
    "absurd kv count": (_gguf(n_kv=1 << 60), "metadata entries"),
    "absurd tensor count": (_gguf(n_tensors=1 << 62), "tensors"),
    "counts larger than the file": (_gguf(n_tensors=1000, n_kv=1000), "truncated"),
    "huge key length": (_gguf(n_kv=1, body=struct.pack("<Q", 1 << 62)), "limit"),
    "huge string value": (_gguf(n_kv=1, body=_kv_string(b"a", 1 << 61)), "limit"),
    "string past the end": (_gguf(n_kv=1, body=_kv_string(b"a", 1 << 20), pad=8), "truncated"),
    "huge array": (_gguf(n_kv=1, body=_kv_array(b"a", 6, 1 << 60)), "limit"),
    "huge string array": (_gguf(n_kv=1, body=_kv_array(b"a", 8, 1 << 23)), "limit"),
    "string array past the end": (_gguf(n_kv=1, body=_kv_array(b"a", 8, 1 << 20)), "truncated"),
    "unknown value type": (_gguf(n_kv=1, body=struct.pack("<Q", 1) + b"a" + struct.pack("<I", 77)), "type 77"),
    "unknown array type": (_gguf(n_kv=1, body=_kv_array(b"a", 42, 1)), "unknown element type"),
    "arrays nested too deep": (
        _gguf(n_kv=1, body=_kv_array(b"a", 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1)),
        "nest",
    ),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_fail_cleanly(tmp_path: Path, case: str) -> None:
    """A clear GGUFHeaderError naming the file; no MemoryError, no hang, little memory."""
    data, needle = HOSTILE[case]
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFHeaderError) as err:
            read_header(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert str(p) in message
    assert needle.lower() in message.lower(), message
    assert "\n" not in message
    assert peak < 8 << 20


def _tensor_info(name: bytes, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return (
        struct.pack("<Q", len(name))
        + name
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


@pytest.mark.parametrize(
    ("info", "needle"),
    [
        (_tensor_info(b"w", (32, 1, 1, 1, 1), 0, 0), "dimensions"),
        (_tensor_info(b"w", (32,), 999, 0), "unknown ggml type"),
        (_tensor_info(b"w", (100,), int(Q.Q4_K), 0), "not a multiple"),
        (_tensor_info(b"w", (32,), 0, 7), "not aligned"),
        (_tensor_info(b"w", (1 << 20, 1 << 10), 0, 0), "truncated"),
        (_tensor_info(b"w", (0,), 0, 0), "impossible shape"),
    ],
)
def test_hostile_tensor_infos(tmp_path: Path, info: bytes, needle: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(_gguf(n_tensors=1, body=info, pad=256))
    with pytest.raises(GGUFHeaderError, match=needle):
        read_header(p)


@pytest.mark.timeout(20)
def test_every_truncation_of_a_real_header_is_reported(tmp_path: Path, models: dict[str, Path]) -> None:
    """Cut a real file anywhere inside its header: always GGUFHeaderError, never another exception."""
    src = models["qwen2"].read_bytes()
    h = read_header(models["qwen2"])
    p = tmp_path / "cut.gguf"
    cuts = sorted({*range(0, 200, 7), *range(0, h.data_offset, max(h.data_offset // 150, 1)), h.data_offset - 1})
    for cut in cuts:
        p.write_bytes(src[:cut])
        with pytest.raises(GGUFHeaderError):
            read_header(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(GGUFHeaderError, match="cannot open"):
        read_header(tmp_path / "nope.gguf")
    with pytest.raises(GGUFHeaderError):
        read_header(tmp_path)


def test_header_byte_limit(models: dict[str, Path]) -> None:
    with pytest.raises(GGUFHeaderError, match="byte limit"):
        read_header(models["llama"], max_header_bytes=4096)
