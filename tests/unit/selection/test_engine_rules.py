"""Format and quantization rules of llama.cpp, transformers, SGLang and MLX (docs/selection.md)."""

from __future__ import annotations

import pytest
from selection_factories import CONFIG, spec

from modeldeploy.engines import registry
from modeldeploy.selection.engine import model_view

ALL_FORMATS = ["pytorch", "gptq", "awq", "fp4", "fp8", "bnb", "ggufv2", "mlx"]
QUANT = {"pytorch": "none", "gptq": "Int4", "awq": "Int4", "bnb": "4bit", "ggufv2": "Q4_K_M", "mlx": "4bit"}
LOADS = {
    "vllm": {"pytorch", "gptq", "awq", "fp4", "fp8", "bnb"},
    "sglang": {"pytorch", "gptq", "awq", "fp8"},
    "llama.cpp": {"ggufv2"},
    "transformers": {"pytorch", "gptq", "awq", "bnb"},
    "mlx": {"mlx"},
}


def ok(engine: str, **kwargs: object) -> tuple[bool, list[str]]:
    results = [r for r in registry.get(engine).model_rules(model_view(spec(**kwargs), CONFIG)) if r is not None]
    return all(r.ok for r in results), [r.reason for r in results]


@pytest.mark.parametrize("engine", list(LOADS))
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_format_table(engine: str, fmt: str) -> None:
    passed, reasons = ok(engine, fmt=fmt, quantization=QUANT.get(fmt))
    assert passed is (fmt in LOADS[engine])


@pytest.mark.parametrize(
    ("engine", "fmt", "reason"),
    [
        ("llama.cpp", "ggufv2", "format ggufv2 is the GGUF format llama.cpp loads"),
        ("llama.cpp", "pytorch", "format pytorch is not GGUF (llama.cpp loads ggufv2 only)"),
        ("transformers", "fp8", "format fp8 is not one transformers loads (pytorch, gptq, awq, bnb)"),
        ("sglang", "bnb", "format bnb is not one SGLang loads (pytorch, gptq, awq, fp8)"),
        ("mlx", "ggufv2", "format ggufv2 is not one MLX loads (mlx)"),
        ("mlx", "mlx", "format mlx is one MLX loads"),
    ],
)
def test_format_reasons(engine: str, fmt: str, reason: str) -> None:
    assert reason in ok(engine, fmt=fmt, quantization=QUANT.get(fmt))[1]


@pytest.mark.parametrize(
    ("quantization", "passed", "reason"),
    [
        ("none", True, "pytorch with quantization none is one transformers loads"),
        ("4bit", True, "pytorch with quantization 4bit is one transformers loads"),
        ("8BIT", True, "pytorch with quantization 8bit is one transformers loads"),  # normalised
        ("4-bit", True, "pytorch with quantization 4bit is one transformers loads"),  # Xinference's spelling
        ("8-bit", True, "pytorch with quantization 8bit is one transformers loads"),
        (None, True, "pytorch with quantization none is one transformers loads"),
    ],
)
def test_transformers_pytorch_quantization(quantization: str | None, passed: bool, reason: str) -> None:
    assert ok("transformers", quantization=quantization) == (
        passed,
        ["format pytorch is one transformers loads", reason],
    )


@pytest.mark.parametrize(("fmt", "quantization"), [("gptq", "Int2"), ("awq", "Int8"), ("gptq", None), ("bnb", None)])
def test_transformers_reads_quantized_checkpoints_whatever_the_bits(fmt: str, quantization: str | None) -> None:
    passed, reasons = ok("transformers", fmt=fmt, quantization=quantization)
    assert passed
    assert f"{fmt} has no quantization condition for transformers" in reasons


@pytest.mark.parametrize(
    ("fmt", "quantization", "passed", "reason"),
    [
        ("pytorch", "none", True, "pytorch with quantization none is one SGLang loads"),
        ("pytorch", "4bit", False, "pytorch needs quantization none; got 4bit"),
        ("awq", "Int8", True, "awq has no quantization condition for SGLang"),
        ("fp8", None, True, "fp8 has no quantization condition for SGLang"),
    ],
)
def test_sglang_quantization(fmt: str, quantization: str | None, passed: bool, reason: str) -> None:
    got_passed, reasons = ok("sglang", fmt=fmt, quantization=quantization)
    assert got_passed is passed
    assert reason in reasons


def test_sglang_needs_a_gpu() -> None:
    passed, reasons = ok("sglang", gpus=0)
    assert not passed
    assert "SGLang needs at least 1 GPU per replica; resources.gpus is 0" in reasons


def test_mlx_cannot_use_nvidia_gpus() -> None:
    passed, reasons = ok("mlx", fmt="mlx", quantization="4bit", gpus=1)
    assert not passed
    assert "MLX runs on Apple silicon and cannot use nvidia.com/gpu; resources.gpus is 1" in reasons
    assert ok("mlx", fmt="mlx", quantization="4bit", gpus=0)[0]
