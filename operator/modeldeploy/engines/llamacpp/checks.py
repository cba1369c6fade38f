"""Pre-checks for the seed's llama.cpp "Common Issues" that need no GGUF file, only the spec.

They do not stop a deployment (the engine would still start); they become `Decision.warnings`, which the
operator reports as a Degraded condition, so a user sees the seed's fix before the first failing request.
The pod repeats these checks with the real GGUF (engines/llamacpp/preflight.py); the thresholds are the
same numbers so the two never disagree (a test compares them).

Thresholds chosen:
- per-slot context = n_ctx / n_parallel. Below MIN_SLOT_CTX_TEXT (1024 tokens) warns: a chat template
  plus a short exchange already takes several hundred tokens.
- a multimodal model (abilities has vision, or model.multimodalProjector is set) without ctx_shift
  enabled: llama.cpp turns context shift off for multimodal, and one image takes hundreds to thousands
  of tokens, so below MIN_SLOT_CTX_MULTIMODAL (4096) per slot warns with the seed's multimodal fix.
- Checked only when n_ctx is set: unset (or 0) means the model's training context, unknown without the
  file, and usually large. An unset n_parallel counts as 1, which can only under-report.
- vision without a separate multimodalProjector warns: a projector embedded in the model GGUF is not
  supported (seed, Auto NGL section).
"""

from __future__ import annotations

from collections.abc import Mapping

from modeldeploy.engines.base import ModelView
from modeldeploy.formats import ArgValue, truthy

MIN_SLOT_CTX_TEXT = 1024
MIN_SLOT_CTX_MULTIMODAL = 4096
# The seed's fixes, verbatim.
FIX_CONTEXT_TEXT = "Please increase the context size by either increasing n_ctx or reducing n_parallel."
FIX_CONTEXT_MULTIMODAL = (
    "If you are using the multimodal feature, the ctx_shift is disabled by default. Please increase the "
    "context size by either increasing n_ctx or reducing n_parallel."
)


def _arg(args: Mapping[str, ArgValue], name: str) -> ArgValue | None:
    """An engine arg by its common_params name; `n-ctx` is accepted for `n_ctx`."""
    for key, value in args.items():
        if key.replace("-", "_") == name:
            return value
    return None


def _as_int(value: ArgValue | None) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _is_multimodal(model: ModelView) -> bool:
    return "vision" in model.abilities or model.multimodal_projector is not None


def context_warnings(model: ModelView) -> list[str]:
    """Warn when a slot's context is below the threshold for this kind of model (or the args are unreadable)."""
    args = model.args
    warnings: list[str] = []
    raw_ctx, raw_parallel = _arg(args, "n_ctx"), _arg(args, "n_parallel")
    n_ctx, n_parallel = _as_int(raw_ctx), _as_int(raw_parallel)
    for name, raw, parsed in (("n_ctx", raw_ctx, n_ctx), ("n_parallel", raw_parallel, n_parallel)):
        if raw is not None and parsed is None:
            warnings.append(f"engine.args.{name} is {raw!r}, not an integer; llama.cpp will refuse it")
    if n_ctx is None or n_ctx <= 0:  # 0 means "from the model": nothing to check here
        return warnings
    slots = n_parallel if n_parallel and n_parallel > 0 else 1
    per_slot = n_ctx // slots
    figures = f"{per_slot} tokens of context per slot (n_ctx {n_ctx} / n_parallel {slots})"
    if _is_multimodal(model) and not truthy(_arg(args, "ctx_shift")):
        if per_slot < MIN_SLOT_CTX_MULTIMODAL:
            warnings.append(
                f"multimodal model on llama.cpp with ctx_shift off and only {figures}, below "
                f"{MIN_SLOT_CTX_MULTIMODAL}: requests with images may fail with 'the request exceeds the available "
                f"context size'. {FIX_CONTEXT_MULTIMODAL}"
            )
    elif per_slot < MIN_SLOT_CTX_TEXT:
        warnings.append(
            f"llama.cpp gets only {figures}, below {MIN_SLOT_CTX_TEXT}: longer conversations may fail with "
            f"'the request exceeds the available context size'. {FIX_CONTEXT_TEXT}"
        )
    return warnings


def projector_warnings(model: ModelView) -> list[str]:
    """Vision on llama.cpp needs a separate mmproj file; one embedded in the model GGUF is not supported."""
    if "vision" in model.abilities and not model.multimodal_projector:
        return [
            "model.abilities includes vision but model.multimodalProjector is not set: llama.cpp needs the "
            "projector as a separate mmproj file; a projector embedded in the model GGUF is not supported"
        ]
    return []


def llamacpp_warnings(model: ModelView) -> tuple[str, ...]:
    """Every llama.cpp pre-check for this spec, in a stable order."""
    return (*projector_warnings(model), *context_warnings(model))
