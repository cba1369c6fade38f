"""Header-only GGUF files from a tensor table: shared by the auto-NGL tests and the GPU validation models.

Both describe a model as (name, ggml shape, ggml type) rows and leave the data section as a hole: the
estimator reads only the header and the tensor table, and llama.cpp loads zeros (valid in every ggml
quantisation), so a 40 GB model costs a few megabytes of disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

Q = GGMLQuantizationType
Table = list[tuple[str, tuple[int, ...], Q]]
ALIGNMENT = 32  # GGUF's default general.alignment


def nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    """ggml_nbytes of a contiguous tensor (the reference the tests compare against)."""
    block, size = GGML_QUANT_SIZES[qtype]
    n = shape[0] // block * size
    for d in shape[1:]:
        n *= d
    return n


def layer_bytes(table: Sequence[tuple[str, tuple[int, ...], Q]], n_layer: int) -> list[int]:
    """Sum of ggml_nbytes of each layer's `blk.N.*` tensors."""
    out = [0] * n_layer
    for name, shape, q in table:
        if name.startswith("blk."):
            out[int(name.split(".")[1])] += nbytes(shape, q)
    return out


def write_tensors_sparse(writer: GGUFWriter, path: Path, table: Sequence[tuple[str, tuple[int, ...], Q]]) -> Path:
    """Add the tensor table to a writer that holds the metadata, write it out, and size the file as if
    the data were there (a hole)."""
    for name, shape, qtype in table:
        block, size = GGML_QUANT_SIZES[qtype]
        byte_shape = (*reversed(shape[1:]), shape[0] // block * size)
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes(shape, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_end = path.stat().st_size
    data = sum(-(-nbytes(shape, q) // ALIGNMENT) * ALIGNMENT for _, shape, q in table)
    os.truncate(path, -(-header_end // ALIGNMENT) * ALIGNMENT + data)
    return path
