"""Engines: one module per engine (its facts, model rules, node needs and container).

`engines/base.py` is the protocol, `engines/registry.py` the one table of engines; `engines/vllm.py`,
`sglang.py`, `transformers.py`, `mlx.py` and `llamacpp/spec.py` are the built-in engines (the
`llamacpp/` package is also the llama.cpp container's entrypoint). This module holds only the model
formats every engine and the API share, and imports nothing, so the slim llama.cpp image can import it.
"""

from __future__ import annotations

from enum import StrEnum


class ModelFormat(StrEnum):
    """Xinference's `model_format` values."""

    PYTORCH = "pytorch"
    GPTQ = "gptq"
    AWQ = "awq"
    FP4 = "fp4"
    FP8 = "fp8"
    BNB = "bnb"
    GGUFV2 = "ggufv2"
    MLX = "mlx"
