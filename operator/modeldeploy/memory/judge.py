"""One GPU class judged for one model and engine: can it run the weights' kind, and does the model fit?

The sentences are what `status.selection` shows: every judgment carries its arithmetic, and every fact
that was missing is named with what was assumed instead (docs/memory-placement.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy.formats import ArgValue, ModelFormat
from modeldeploy.memory.estimate import (
    MIB,
    EngineMemory,
    ModelMemory,
    Need,
    arg,
    budget,
    gib,
    largest_context,
    need,
    requested_context,
    tensor_parallel_sizes,
)

KIND_TEXT = {
    "bf16": "bfloat16 weights",
    "fp16": "float16 weights",
    "fp8": "FP8 weights",
    "awq": "AWQ weights",
    "gptq": "GPTQ weights",
    "fp4": "FP4 weights",
    "bnb4": "bitsandbytes weights",
    "bnb8": "bitsandbytes weights",
}
HALF_DTYPES = ("half", "float16", "float32", "float")


def capability_key(model: ModelMemory, fmt: ModelFormat, args: Mapping[str, ArgValue]) -> str | None:
    """Which `min_capability` entry applies (None: none; bfloat16 cast to half by engine.args needs none)."""
    if fmt in (ModelFormat.AWQ, ModelFormat.GPTQ):
        return fmt.value
    if model.kind == "bf16":
        dtype = arg(args, "dtype")
        return None if isinstance(dtype, str) and dtype.lower() in HALF_DTYPES else "bf16"
    return model.kind


def required_capability(
    engine: EngineMemory, model: ModelMemory, fmt: ModelFormat, args: Mapping[str, ArgValue]
) -> tuple[str, tuple[int, int]] | None:
    """(what needs it, the lowest compute capability) for this model under this engine, or None."""
    key = capability_key(model, fmt, args)
    if key is None or key not in engine.min_capability:
        return None
    return KIND_TEXT.get(key, key), engine.min_capability[key]


@dataclass(frozen=True)
class GpuJudgement:
    """Whether a node class can run the model, at which tensor-parallel size, and the sentence why."""

    ok: bool
    tp: int | None  # the smallest tensor-parallel size that fits (None: none does, or not judged)
    text: str
    needed: Need | None = None  # what one GPU needs at `tp` (None: memory unknown or not judged)
    largest: int | None = None  # when it does not fit: the largest context that would


def _parts(n: Need, engine: EngineMemory) -> str:
    parts = [f"{gib(n.weights)} weights"]
    if n.reserve:
        parts.append(f"{gib(n.reserve)} activation and non-torch memory")
    if n.kv is not None:
        parts.append(f"{gib(n.kv)} KV at {n.context:,} tokens")
    else:
        parts.append("the KV cache (not counted: the model's config.json facts are unknown)")
    return " + ".join(parts)


def arithmetic(n: Need, engine: EngineMemory, gpu_bytes: int, fits: bool, args: Mapping[str, ArgValue]) -> str:
    """`1 × 22.5 GiB × 0.9 = 20.2 GiB ≥ 14.2 GiB weights + … + 1.0 GiB KV at 8,192 tokens`."""
    fraction, room = budget(engine, gpu_bytes, n.tp, args)
    sign = "≥" if fits else "<"
    per = " per GPU" if n.tp > 1 else ""
    return f"{n.tp} × {gib(gpu_bytes)} × {fraction:g} = {gib(room)}{per} {sign} {_parts(n, engine)}"


def judge_gpu(
    engine: EngineMemory,
    model: ModelMemory,
    fmt: ModelFormat,
    args: Mapping[str, ArgValue],
    gpus: int,
    gpu_mib: int | None,
    capability: tuple[int, int] | None,
    fixed_tp: int | None,
) -> GpuJudgement:
    """Judge one kind of GPU node: capability first, then the smallest tensor parallel that fits."""
    assumed: list[str] = []
    required = required_capability(engine, model, fmt, args)
    if required is not None:
        what, (major, minor) = required
        if capability is None:
            assumed.append(f"compute capability unknown: assumed at least {major}.{minor} ({what})")
        elif capability < (major, minor):
            hint = " (set engine.args dtype: half)" if what.startswith("bfloat16") else ""
            return GpuJudgement(
                False,
                None,
                f"compute capability {capability[0]}.{capability[1]} < {major}.{minor} that {engine.label}'s "
                f"{what} need{hint}",
            )
    if fixed_tp and 0 < gpus < fixed_tp:
        # The node rules pass over such a node anyway; the memory table says so rather than "fits".
        return GpuJudgement(False, None, f"{gpus} GPU(s) < tensor parallel {fixed_tp} (resources.gpus)")
    context = requested_context(model, engine, args) or 0
    sizes = (fixed_tp,) if fixed_tp else tensor_parallel_sizes(model.shape, gpus)
    shape = model.shape
    if fixed_tp and shape is not None and fixed_tp not in tensor_parallel_sizes(shape, fixed_tp):
        allowed = ", ".join(str(tp) for tp in tensor_parallel_sizes(shape, max(gpus, fixed_tp)))
        return GpuJudgement(
            False,
            None,
            f"tensor parallel {fixed_tp} does not divide {shape.key}'s {shape.heads} attention heads and "
            f"{shape.kv_heads} KV heads, which {engine.label} refuses (resources.gpus: {allowed})",
        )
    if gpu_mib is None:
        tp = sizes[0] if sizes else 1
        assumed.append(f"GPU memory unknown: assumed it holds {gib(model.weights)} of weights")
        return GpuJudgement(True, tp, "; ".join(assumed))
    gpu_bytes = gpu_mib * MIB
    if not sizes:
        return GpuJudgement(False, None, f"no tensor-parallel size up to {gpus} divides the attention heads")
    tried = None
    for tp in sizes:
        n = need(model, engine, tp, context, args, gpu_bytes)
        _, room = budget(engine, gpu_bytes, tp, args)
        tried = n
        if n.total <= room:
            text = arithmetic(n, engine, gpu_bytes, True, args)
            return GpuJudgement(True, tp, "; ".join([text, *assumed]), n)
    assert tried is not None
    text = arithmetic(tried, engine, gpu_bytes, False, args)
    largest = largest_context(model, engine, tried.tp, gpu_bytes, args) if model.shape else None
    if largest:
        text += f"; the largest context that fits is {largest:,} tokens ({engine.context_arg})"
    return GpuJudgement(False, None, "; ".join([text, *assumed]), tried, largest)


def minimum_gpu_mib(engine: EngineMemory, n: Need, args: Mapping[str, ArgValue]) -> int:
    """The smallest GPU (MiB, as the memory label counts) whose fraction holds `n`."""
    fraction, _ = engine.fraction(n.tp, args)
    return -(-int(n.total / fraction) // MIB)
