"""`model.quantization` as Xinference's model specs spell it, and the one form the operator uses.

Xinference's builtin model specs (llm_family.json) write the same quantization several ways: pytorch
models list `4-bit`/`8-bit` (older specs) or `Int4`, bnb `4-bit`, gptq `Int4`, `int8` or `8bits`, awq
`Int4` or `4bit`, mlx `4bit`, `bf16` or `mxfp4`, GGUF `Q4_K_M` or `q4_k_m`. A user copying a spec from
there must not be refused, so each format accepts every spelling its specs use, compared without
regard to case, and `normalise` maps it to one canonical form (`4bit`, `Int4`, `Q4_K_M`, …) that
selection, rendering and status use. The accepted sets are finite per format (except GGUF, whose file
quantisations keep growing), so the CRD's CEL rules are generated from the same tables and the
apiserver refuses exactly what this module refuses.
"""

from __future__ import annotations

from modeldeploy.formats import ModelFormat

BIT_WIDTHS = (2, 3, 4, 5, 6, 8)


def _bit_spellings(n: int) -> tuple[str, ...]:
    return (f"{n}bit", f"{n}-bit", f"{n}bits", f"{n}-bits")


# Lower-case spelling → canonical form, per kind of quantization.
_BITS = {s: f"{n}bit" for n in BIT_WIDTHS for s in _bit_spellings(n)}  # quantize-on-load / MLX widths
_INTS = {f"int{n}": f"Int{n}" for n in (2, 3, 4, 8)}  # GPTQ/AWQ checkpoints
_BITS_AS_INT = {s: f"Int{n}" for n in (2, 3, 4, 8) for s in _bit_spellings(n)}
_INTS_AS_BITS = {f"int{n}": f"{n}bit" for n in (4, 8)}
_NONE = {"none": "none"}
_GPTQ_MIXES = {
    m.lower(): m
    for m in (
        "Int4-Int8Mix",
        "Int4-Int8Mix-Lite",
        "Int4-Int8Mix-Compact",
        "Int4-Int8Mix-Medium",
        "Int4-W4A16",
        "Int8-W8A16",
    )
}
_AWQ_VARIANTS = {m.lower(): m for m in ("AWQ", "AWQ-Lite", "AWQ-FP16Mix")}
_MLX_FLOATS = {m: m for m in ("bf16", "fp16", "mxfp4", "mxfp8", "nvfp4", "8bit-mxfp8")}

# Every spelling each format accepts (GGUF: see GGUF_REFUSED). Keys are lower case.
ACCEPTED: dict[ModelFormat, dict[str, str]] = {
    ModelFormat.PYTORCH: {**_NONE, **{k: v for k, v in _BITS.items() if v in ("4bit", "8bit")}, **_INTS_AS_BITS}
    | {"fp8": "fp8"},
    ModelFormat.BNB: {**_NONE, **{k: v for k, v in _BITS.items() if v in ("4bit", "8bit")}},
    ModelFormat.GPTQ: {**_INTS, **_BITS_AS_INT, **_GPTQ_MIXES},
    ModelFormat.AWQ: {**_INTS, **_BITS_AS_INT, **_AWQ_VARIANTS},
    ModelFormat.MLX: {**_NONE, **_BITS, **_MLX_FLOATS},
    ModelFormat.FP8: {**_NONE, "fp8": "fp8"},
    ModelFormat.FP4: {**_NONE, "fp4": "fp4"},
}
# GGUF takes any file quantisation name, but never a checkpoint or quantize-on-load spelling.
GGUF_REFUSED: frozenset[str] = frozenset(_BITS) | frozenset(_INTS)
_GGUF_FLOATS = {"fp16": "F16", "f16": "F16", "fp32": "F32", "f32": "F32", "bf16": "BF16"}

_ALLOWED_TEXT: dict[ModelFormat, str] = {
    ModelFormat.PYTORCH: "none, 4bit or 8bit (also written 4-bit, Int4), or fp8",
    ModelFormat.BNB: "none, 4bit or 8bit (also written 4-bit, 8-bit)",
    ModelFormat.GPTQ: "Int2, Int3, Int4 or Int8 (also written 4bit, 8bits), or an Int4-Int8Mix variant",
    ModelFormat.AWQ: "Int4 or Int8 (also written 4bit, 8bit), or AWQ, AWQ-Lite, AWQ-FP16Mix",
    ModelFormat.MLX: "none, 2bit to 8bit, bf16, fp16, mxfp4, mxfp8 or nvfp4",
    ModelFormat.FP8: "fp8 or none",
    ModelFormat.FP4: "fp4 or none",
}


def allowed_text(fmt: ModelFormat) -> str:
    if fmt == ModelFormat.GGUFV2:
        return "a GGUF file quantisation such as Q4_K_M, Q8_0 or F16"
    return _ALLOWED_TEXT[fmt]


def problem(fmt: ModelFormat, quantization: str | None) -> str | None:
    """Why this format can never be loaded at this quantization, or None when it may."""
    if quantization is None:
        return None
    q = quantization.strip().lower()
    if fmt == ModelFormat.GGUFV2:
        if q in GGUF_REFUSED:
            return f"model.quantization {quantization!r} is not {allowed_text(fmt)}"
        return None
    if q not in ACCEPTED[fmt]:
        return f"model.quantization for {fmt.value} must be {allowed_text(fmt)} (got {quantization!r})"
    return None


def _gguf(q: str) -> str:
    low = q.lower()
    if low in _GGUF_FLOATS:
        return _GGUF_FLOATS[low]
    if low == "none":
        return "none"
    prefix = ""
    if low.startswith("i1-"):  # imatrix builds keep their lower-case prefix, as their file names do
        prefix, q = "i1-", q[3:]
    return prefix + q.upper()


def normalise(fmt: ModelFormat, quantization: str | None) -> str | None:
    """The canonical spelling (`4-bit` → `4bit`, `int4` → `Int4`, `q4_k_m` → `Q4_K_M`); call after `problem`."""
    if quantization is None:
        return None
    q = quantization.strip()
    if fmt == ModelFormat.GGUFV2:
        return _gguf(q)
    return ACCEPTED[fmt].get(q.lower(), q)
