"""The words every layer shares, at the bottom of the import graph: model formats, engine argument values,
and what the API needs to know of the engines.

The API validates `engine.name` and the formats a named engine loads, and the CRD lists the engines in
enums and CEL rules; but the API must not import the engines (they are judged against a narrow view of
the model, not the API's types, and the two would import each other). So the API asks an
`EngineCatalogue` that its caller hands it (`engines/registry.py` is one), and this module, which imports
nothing, holds the words both sides speak (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

AUTO_ENGINE = "auto"  # `engine.name` for "let the operator choose"

ArgValue = str | int | float | bool  # one value of `engine.args`


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


class EngineCatalogue(Protocol):
    """The engines as the API and the CRD generator see them: names, image keys, formats per engine, and the
    `engine.args` keys each refuses (docs/security.md, "Engine arguments")."""

    def names(self) -> tuple[str, ...]: ...

    def image_keys(self) -> tuple[str, ...]: ...

    def formats_of(self, name: str) -> frozenset[ModelFormat]: ...

    def refused_arg(self, name: str, key: str) -> str | None: ...

    def api_key_problem(self, name: str) -> str | None: ...


def truthy(value: ArgValue | None) -> bool:
    """Whether an `engine.args` value turns a switch on, the one reading for every check and flag (the
    llama.cpp pre-checks and its command line once read "enabled" differently): a bool as itself, a string
    when it says so (true, 1, yes, on, enabled; not auto or off), a number when not zero."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes", "enabled")
    return bool(value)
