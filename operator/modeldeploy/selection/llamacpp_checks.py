"""Pre-checks for the seed's llama.cpp "Common Issues" that need no GGUF file, only the spec.

They do not stop a deployment (the engine would still start); they become `Decision.warnings`, which the
operator reports as a Degraded condition, so a user sees the seed's fix before the first failing request.

Thresholds chosen:
- per-slot context = n_ctx / n_parallel below MIN_CONTEXT_PER_SLOT (2048 tokens) warns: llama.cpp splits
  n_ctx between n_parallel slots, and a chat prompt plus answer rarely fits in less. Checked only when
  n_ctx is set (its default depends on the model); an unset n_parallel counts as 1, which can only
  under-report.
- a multimodal model (abilities has vision, or model.multimodalProjector is set) without ctx_shift enabled
  warns with the seed's fix (llama.cpp disables context shift for multimodal models).
- vision without a separate multimodalProjector warns: a projector embedded in the model GGUF is not
  supported (seed, Auto NGL section).
"""

from __future__ import annotations

from collections.abc import Mapping

from modeldeploy.api.v1alpha1 import ArgValue, ModelDeploymentSpec

MIN_CONTEXT_PER_SLOT = 2048


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


def _truthy(value: ArgValue | None) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def context_warnings(args: Mapping[str, ArgValue]) -> list[str]:
    """Warn when each slot gets less than MIN_CONTEXT_PER_SLOT tokens of context (or the args are unreadable)."""
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
    if per_slot < MIN_CONTEXT_PER_SLOT:
        warnings.append(
            f"llama.cpp gives each of {slots} slot(s) {per_slot} tokens of context (n_ctx {n_ctx} / n_parallel "
            f"{slots}), below {MIN_CONTEXT_PER_SLOT}: requests may fail with 'the request exceeds the available "
            "context size'. Please increase the context size by either increasing n_ctx or reducing n_parallel."
        )
    return warnings


def multimodal_warnings(spec: ModelDeploymentSpec) -> list[str]:
    """The seed's multimodal issues: ctx_shift is off for multimodal models; embedded projectors unsupported."""
    model = spec.model
    vision = "vision" in model.abilities
    warnings: list[str] = []
    if vision and not model.multimodal_projector:
        warnings.append(
            "model.abilities includes vision but model.multimodalProjector is not set: llama.cpp needs the "
            "projector as a separate mmproj file; a projector embedded in the model GGUF is not supported"
        )
    if (vision or model.multimodal_projector) and not _truthy(_arg(spec.engine.args, "ctx_shift")):
        warnings.append(
            "multimodal model on llama.cpp: ctx_shift is disabled by default for multimodal, so a conversation "
            "longer than the context fails with 'the request exceeds the available context size'. Please "
            "increase the context size by either increasing n_ctx or reducing n_parallel."
        )
    return warnings


def llamacpp_warnings(spec: ModelDeploymentSpec) -> tuple[str, ...]:
    """Every llama.cpp pre-check for this spec, in a stable order."""
    return (*context_warnings(spec.engine.args), *multimodal_warnings(spec))
