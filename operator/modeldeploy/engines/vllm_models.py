"""vLLM's supported-model list: the seed's list shipped as package data, plus the operator config's extras.

The list is data, not code, so that it can be diffed against the seed and extended from Helm values
(`vllmExtraFamilies`) without a release. Names are compared case-insensitively because Xinference's own
spelling is inconsistent (`Yi`, `QwQ-32B`, `glm-4.5` next to `GLM-4.6`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources

DATA_FILE = "vllm_supported.txt"


def parse_model_list(text: str) -> tuple[str, ...]:
    """Names from the data file's text: one per line; blank lines and `#` comments are ignored."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return tuple(names)


@cache
def seed_supported_models() -> tuple[str, ...]:
    """The seed's vLLM-supported names, in seed order, as spelled there."""
    text = resources.files("modeldeploy").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    return parse_model_list(text)


def supported_models(extra: Iterable[str] = ()) -> frozenset[str]:
    """Lower-cased names vLLM supports: the seed's list plus `extra` (from `config.vllm_extra_families`)."""
    return frozenset(n.lower() for n in seed_supported_models()) | frozenset(e.strip().lower() for e in extra)


def is_vllm_supported(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether `name` (a model family or a builtin model name) is in vLLM's supported list."""
    return name.strip().lower() in supported_models(extra)
