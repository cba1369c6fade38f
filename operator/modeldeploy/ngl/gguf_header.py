"""Bounded reader for the header and tensor table of a GGUF file.

Why our own parser instead of `gguf.GGUFReader`: the reader memory-maps the whole file and turns every
metadata array (the tokenizer's hundreds of thousands of tokens and merges) into numpy objects; the
auto-NGL init container runs next to a 40 GB model on a node that may be short of page cache, and it
must survive a hostile or truncated file with a clear message instead of a numpy error or a multi-GB
allocation.  This parser reads the file sequentially through a small buffer, *skips* arrays it does not
need (their element count is kept), checks every count and length against the file size and against
fixed limits before acting on it, and never reads past the tensor table.  `bench/ngl_bench.py`
measures both readers.

What we take from the `gguf` package: the quantisation block sizes (`GGML_QUANT_SIZES`), so a new ggml
type appears here when the package learns it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Limits: far above any real model (DeepSeek-V3: ~1,100 tensors, ~50 keys, vocab ~130k, merges ~130k;
# Gemma 3: vocab 262k), far below what would let a hostile header pin the CPU or memory.
MAX_KV_COUNT = 65_536
MAX_TENSOR_COUNT = 1_000_000
MAX_ARRAY_COUNT = 1 << 24
MAX_STRING_ARRAY_COUNT = 1 << 22
MAX_KEY_LEN = 65_536
MAX_STRING_LEN = 16 << 20
MAX_TENSOR_NAME_LEN = 4096
MAX_DIMS = 4
MAX_NESTING = 2
DEFAULT_MAX_HEADER_BYTES = 256 << 20
# Numeric arrays up to this many elements keep their values (per-layer head counts, SWA patterns);
# longer ones (token scores, token types) keep only their count.
KEEP_NUMERIC_ARRAY_MAX = 65_536

_CHUNK = 1 << 20

# GGUF value types (the spec's numbering).
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = range(10)
_UINT64, _INT64, _FLOAT64 = 10, 11, 12
_SCALAR_FORMATS: dict[int, str] = {
    _UINT8: "<B",
    _INT8: "<b",
    _UINT16: "<H",
    _INT16: "<h",
    _UINT32: "<I",
    _INT32: "<i",
    _FLOAT32: "<f",
    _BOOL: "<?",
    _UINT64: "<Q",
    _INT64: "<q",
    _FLOAT64: "<d",
}
_SCALAR_SIZES: dict[int, int] = {t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()}
_U64 = struct.Struct("<Q")


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file we can read; the message is one sentence naming file and problem."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array: its element type and count; values only for short numeric arrays."""

    item_type: int
    count: int
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table; `nbytes` is what llama.cpp allocates for it (ggml_nbytes)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """The ggml type's name (Q4_K, F16, ...)."""
        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return str(self.ggml_type)


@dataclass
class GGUFHeader:
    """What the estimator needs from a GGUF file, plus how much of the file it cost to learn it."""

    path: str
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    bytes_read: int
    tensor_index: dict[str, TensorInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.tensor_index = {t.name: t for t in self.tensors}

    @property
    def architecture(self) -> str:
        """`general.architecture` (empty when missing)."""
        value = self.metadata.get("general.architecture", "")
        return value if isinstance(value, str) else ""

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """`{arch}.{suffix}` from the metadata, e.g. arch_value("block_count")."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    def array_count(self, key: str) -> int | None:
        """The element count of a metadata array (e.g. tokenizer.ggml.tokens), None when absent."""
        value = self.metadata.get(key)
        return value.count if isinstance(value, ArrayInfo) else None


class _BoundedReader:
    """Sequential reader over a file with a small buffer, a byte budget and a read counter.

    Skips (`skip`) move the position without reading when they leave the buffer, so fixed-size arrays
    cost nothing.  Every request is checked against the file size first: a claimed length that runs
    past the end is reported as truncation before any allocation.
    """

    def __init__(self, path: str, fd: int, file_size: int, max_header_bytes: int) -> None:
        self.path = path
        self.fd = fd
        self.file_size = file_size
        self.max_header_bytes = max_header_bytes
        self.buf = b""
        self.buf_start = 0  # file offset of buf[0]
        self.pos = 0  # current file offset
        self.bytes_read = 0

    def fail(self, what: str) -> GGUFHeaderError:
        return GGUFHeaderError(f"{self.path}: {what}")

    def _check(self, n: int, what: str) -> None:
        if n < 0:
            raise self.fail(f"negative length for {what}")
        if self.pos + n > self.file_size:
            raise self.fail(
                f"file is truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {self.file_size} bytes"
            )
        if self.pos + n > self.max_header_bytes:
            raise self.fail(f"header is larger than the {self.max_header_bytes} byte limit (at {what})")

    def read(self, n: int, what: str) -> bytes:
        self._check(n, what)
        off = self.pos - self.buf_start
        if off + n <= len(self.buf):
            self.pos += n
            return self.buf[off : off + n]
        # Refill: keep the unread tail and read at least a chunk more.
        want = max(n, _CHUNK)
        data = os.pread(self.fd, want, self.pos)
        self.bytes_read += len(data)
        if len(data) < n:
            raise self.fail(f"file is truncated: {what} runs past the end of the file")
        self.buf = data
        self.buf_start = self.pos
        self.pos += n
        return data[:n]

    def skip(self, n: int, what: str) -> None:
        self._check(n, what)
        self.pos += n

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        return struct.unpack(fmt, self.read(size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", 8, what))

    def string(self, max_len: int, what: str) -> str:
        n = self.u64(f"length of {what}")
        if n > max_len:
            raise self.fail(f"{what} claims {n} bytes, over the {max_len} byte limit")
        return self.read(n, what).decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip `count` length-prefixed strings (a tokenizer's vocabulary or merges) with a tight loop.

        Walks the lengths inside the buffer with struct.unpack_from and refills only at its end: the
        per-element cost is what makes a 400k-entry vocabulary take tens of milliseconds, not half a second.
        """
        unpack = _U64.unpack_from
        done = 0
        while done < count:
            buf = self.buf
            off = self.pos - self.buf_start
            end = len(buf)
            limit = min(end, self.file_size - self.buf_start)
            while done < count and off + 8 <= end:
                n = unpack(buf, off)[0]
                if n > MAX_STRING_LEN:
                    self.pos = self.buf_start + off
                    raise self.fail(f"an element of {what} claims {n} bytes, over the {MAX_STRING_LEN} byte limit")
                if off + 8 + n > limit:
                    break
                off += 8 + n
                done += 1
            self.pos = self.buf_start + off
            if done < count:
                # The next length or string crosses the buffer's end: go through the checked path.
                n = self.u64(f"length of an element of {what}")
                if n > MAX_STRING_LEN:
                    raise self.fail(f"an element of {what} claims {n} bytes, over the {MAX_STRING_LEN} byte limit")
                self.skip(n, what)
                done += 1


def _read_value(r: _BoundedReader, vtype: int, key: str, depth: int = 0) -> Any:
    if vtype in _SCALAR_FORMATS:
        return r.unpack(_SCALAR_FORMATS[vtype], _SCALAR_SIZES[vtype], f"value of {key!r}")
    if vtype == _STRING:
        return r.string(MAX_STRING_LEN, f"string value of {key!r}")
    if vtype == _ARRAY:
        if depth >= MAX_NESTING:
            raise r.fail(f"metadata {key!r} nests arrays deeper than {MAX_NESTING} levels")
        item_type = r.u32(f"array type of {key!r}")
        count = r.u64(f"array length of {key!r}")
        if count > MAX_ARRAY_COUNT:
            raise r.fail(f"metadata array {key!r} claims {count} elements, over the {MAX_ARRAY_COUNT} limit")
        if item_type in _SCALAR_FORMATS:
            size = _SCALAR_SIZES[item_type] * count
            if count <= KEEP_NUMERIC_ARRAY_MAX:
                raw = r.read(size, f"array {key!r}")
                fmt = "<" + _SCALAR_FORMATS[item_type][1] * count
                return ArrayInfo(item_type, count, tuple(struct.unpack(fmt, raw)))
            r.skip(size, f"array {key!r}")
            return ArrayInfo(item_type, count)
        if item_type == _STRING:
            if count > MAX_STRING_ARRAY_COUNT:
                raise r.fail(f"string array {key!r} claims {count} elements, over the {MAX_STRING_ARRAY_COUNT} limit")
            # Each element needs at least its 8-byte length: reject impossible counts before looping.
            r._check(8 * count, f"array {key!r}")
            r.skip_strings(count, f"array {key!r}")
            return ArrayInfo(item_type, count)
        if item_type == _ARRAY:
            r._check(12 * count, f"array {key!r}")
            for _ in range(count):
                inner_type = r.u32(f"array type inside {key!r}")
                _read_value_of_array(r, inner_type, key, depth + 1)
            return ArrayInfo(item_type, count)
        raise r.fail(f"metadata array {key!r} has unknown element type {item_type}")
    raise r.fail(f"metadata {key!r} has unknown value type {vtype}")


def _read_value_of_array(r: _BoundedReader, inner_type: int, key: str, depth: int) -> None:
    """Skip one nested array whose element type was already read."""
    count = r.u64(f"array length inside {key!r}")
    if count > MAX_ARRAY_COUNT:
        raise r.fail(f"nested array in {key!r} claims {count} elements, over the {MAX_ARRAY_COUNT} limit")
    if inner_type in _SCALAR_SIZES:
        r.skip(_SCALAR_SIZES[inner_type] * count, f"array inside {key!r}")
    elif inner_type == _STRING:
        r._check(8 * count, f"array inside {key!r}")
        r.skip_strings(count, f"array inside {key!r}")
    else:
        raise r.fail(f"nested array in {key!r} has unsupported element type {inner_type}")


def tensor_nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    """Bytes of a tensor of this shape and type, as ggml computes them (rows of whole blocks)."""
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n_elements_row = shape[0] if shape else 1
    rows = 1
    for d in shape[1:]:
        rows *= d
    return (n_elements_row // block) * type_size * rows


def read_header(path: str | os.PathLike[str], *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor table, never its weights.

    Raises GGUFHeaderError with one sentence naming the file and the problem for anything that is not a
    well-formed GGUF v2/v3 file (and OSError's message for a missing or unreadable file, reworded).
    """
    p = str(Path(path))
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise GGUFHeaderError(f"{p}: cannot open the file ({exc.strerror or exc})") from None
    try:
        try:
            file_size = os.fstat(fd).st_size
        except OSError as exc:  # pragma: no cover - fstat on an open fd practically never fails
            raise GGUFHeaderError(f"{p}: cannot stat the file ({exc.strerror})") from None
        if os.path.isdir(p):
            raise GGUFHeaderError(f"{p}: is a directory, not a GGUF file")
        r = _BoundedReader(p, fd, file_size, max_header_bytes)
        try:
            return _parse(r)
        except OSError as exc:
            raise GGUFHeaderError(f"{p}: read error ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _parse(r: _BoundedReader) -> GGUFHeader:
    if r.file_size < 24:
        raise r.fail(f"file is too small to be GGUF ({r.file_size} bytes)")
    magic = r.read(4, "magic")
    if magic != GGUF_MAGIC:
        raise r.fail(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise r.fail("big-endian GGUF files are not supported")
        raise r.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    if n_kv > MAX_KV_COUNT:
        raise r.fail(f"header claims {n_kv} metadata entries, over the {MAX_KV_COUNT} limit")
    if n_tensors > MAX_TENSOR_COUNT:
        raise r.fail(f"header claims {n_tensors} tensors, over the {MAX_TENSOR_COUNT} limit")
    # Smallest possible entries: a key-value pair is 8+1+4+1 bytes, a tensor info 8+1+4+8+4+8.
    if 14 * n_kv + 33 * n_tensors > r.file_size:
        raise r.fail(f"file is truncated: {n_kv} metadata entries and {n_tensors} tensors cannot fit in it")

    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string(MAX_KEY_LEN, "metadata key")
        vtype = r.u32(f"value type of {key!r}")
        metadata[key] = _read_value(r, vtype, key)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > (1 << 20):
        raise r.fail(f"general.alignment {alignment!r} is not a power of two up to 1 MiB")

    raw_tensors: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n_tensors):
        name = r.string(MAX_TENSOR_NAME_LEN, f"name of tensor #{i}")
        n_dims = r.u32(f"dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = struct.unpack(f"<{n_dims}Q", r.read(8 * n_dims, f"shape of tensor {name!r}"))
        ggml_type = r.u32(f"type of tensor {name!r}")
        offset = r.u64(f"offset of tensor {name!r}")
        raw_tensors.append((name, tuple(int(d) for d in shape), ggml_type, offset))

    data_offset = -(-r.pos // alignment) * alignment
    data_size = r.file_size - data_offset
    tensors: list[TensorInfo] = []
    for name, shape, ggml_type, offset in raw_tensors:
        try:
            qtype = GGMLQuantizationType(ggml_type)
            block, _ = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise r.fail(f"tensor {name!r} has unknown ggml type {ggml_type}") from None
        if any(d <= 0 or d >= (1 << 40) for d in shape):
            raise r.fail(f"tensor {name!r} has an impossible shape {list(shape)}")
        if shape[0] % block:
            raise r.fail(
                f"tensor {name!r}: first dimension {shape[0]} is not a multiple of the {qtype.name} block {block}"
            )
        nbytes = tensor_nbytes(shape, ggml_type)
        if offset % alignment:
            raise r.fail(f"tensor {name!r}: data offset {offset} is not aligned to {alignment}")
        if offset + nbytes > data_size:
            raise r.fail(
                f"file is truncated: tensor {name!r} needs bytes up to {data_offset + offset + nbytes}, "
                f"the file has {r.file_size}"
            )
        tensors.append(TensorInfo(name, shape, ggml_type, offset, nbytes))

    return GGUFHeader(
        path=r.path,
        version=version,
        file_size=r.file_size,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        bytes_read=r.bytes_read,
    )
