"""API validation in Python mirrors what the CRD refuses, with messages naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.loader import describe_validation_error


def spec(**model: object) -> dict:
    base = {"name": "qwen2.5-instruct", "format": "pytorch", "uri": "hf://Qwen/Qwen2.5-7B-Instruct"}
    base.update(model)
    return {"model": base}


def error_of(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        ModelDeploymentSpec.model_validate(data)
    return describe_validation_error(info.value, "spec")


def test_defaults() -> None:
    s = ModelDeploymentSpec.model_validate(spec())
    assert s.engine.name == "auto"
    assert s.engine.n_gpu_layers == -1
    assert s.replicas == 1
    assert s.model.abilities == ["chat"]


@pytest.mark.parametrize(("given", "normalised"), [("0.5", "0_5"), ("7", "7"), (7, "7"), (1.8, "1_8"), ("0_5", "0_5")])
def test_size_in_billions_normalised(given: object, normalised: str) -> None:
    assert ModelDeploymentSpec.model_validate(spec(sizeInBillions=given)).model.size_in_billions == normalised


def test_unknown_format_names_field_and_allowed_values() -> None:
    msg = error_of(spec(format="safetensors"))
    assert msg.startswith("spec.model.format:")
    assert "'pytorch'" in msg and "ggufv2" in msg and "'safetensors'" in msg


def test_missing_uri() -> None:
    data = spec()
    del data["model"]["uri"]
    assert error_of(data) == "spec.model.uri: is required"


def test_negative_gpus() -> None:
    msg = error_of({**spec(), "resources": {"gpus": -1}})
    assert msg.startswith("spec.resources.gpus:") and "greater than or equal to 0" in msg


def test_ngl_below_minus_one() -> None:
    assert error_of({**spec(), "engine": {"nGpuLayers": -2}}).startswith("spec.engine.nGpuLayers:")


def test_unknown_field_is_refused() -> None:
    assert error_of(spec(fromat="x")) == "spec.model.fromat: is not a known field"


@pytest.mark.parametrize(
    ("fmt", "quant"),
    [
        ("ggufv2", "Int4"),
        ("ggufv2", "4-bit"),
        ("awq", "Q4_K_M"),
        ("gptq", "none"),
        ("mlx", "Int4"),
        ("pytorch", "Q4_K_M"),
        ("pytorch", "Int3"),
        ("bnb", "Int4"),
        ("fp8", "Int8"),
    ],
)
def test_impossible_format_quantization_pairs(fmt: str, quant: str) -> None:
    assert "model.quantization" in error_of(spec(format=fmt, quantization=quant))


# Spellings Xinference's model specs use, and the one form each becomes.
@pytest.mark.parametrize(
    ("fmt", "quant", "canonical"),
    [
        ("pytorch", "4-bit", "4bit"),
        ("pytorch", "8-bit", "8bit"),
        ("pytorch", "none", "none"),
        ("pytorch", "Int4", "4bit"),
        ("pytorch", "fp8", "fp8"),
        ("bnb", "4-bit", "4bit"),
        ("gptq", "8bits", "Int8"),
        ("gptq", "int4", "Int4"),
        ("gptq", "Int4-Int8Mix", "Int4-Int8Mix"),
        ("awq", "4bit", "Int4"),
        ("awq", "AWQ-Lite", "AWQ-Lite"),
        ("mlx", "4bit", "4bit"),
        ("mlx", "BF16", "bf16"),
        ("mlx", "8bit-MXFP8", "8bit-mxfp8"),
        ("fp8", "FP8", "fp8"),
        ("fp4", "FP4", "fp4"),
        ("ggufv2", "q4_k_m", "Q4_K_M"),
        ("ggufv2", "i1-Q4_K_M", "i1-Q4_K_M"),
        ("ggufv2", "UD-Q4_K_XL", "UD-Q4_K_XL"),
        ("ggufv2", "fp16", "F16"),
        ("ggufv2", "none", "none"),
    ],
)
def test_xinference_spellings_accepted_and_normalised(fmt: str, quant: str, canonical: str) -> None:
    model = ModelDeploymentSpec.model_validate(spec(format=fmt, quantization=quant)).model
    assert model.quantization == canonical


def test_engine_that_cannot_load_format() -> None:
    msg = error_of({**spec(format="awq", quantization="Int4"), "engine": {"name": "mlx"}})
    assert msg == "engine.name mlx cannot load model.format awq (it loads: mlx)"


def test_bad_uri_scheme() -> None:
    assert error_of(spec(uri="ftp://x/y")).startswith("spec.model.uri: string should match pattern")


def test_cache_needs_exactly_one() -> None:
    assert error_of({**spec(), "cache": {}}) == "cache needs exactly one of pvc, emptyDir or shared"


def test_preference_unique() -> None:
    assert "twice" in error_of({**spec(), "engine": {"preference": ["vllm", "vllm"]}})


@pytest.mark.parametrize(
    "name", ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA", "CUDA_VISIBLE_DEVICES"]
)
def test_gpu_isolation_env_is_refused(name: str) -> None:
    """A user NVIDIA_VISIBLE_DEVICES=all would show every GPU of the node to a pod given none."""
    msg = error_of({**spec(), "env": [{"name": "OK", "value": "1"}, {"name": name, "value": "all"}]})
    assert (
        msg.startswith("spec.env must not set NVIDIA_*")
        and "NVIDIA_*" in msg
        and "resources.gpus" in msg
        and name in msg
    )


def test_other_env_is_accepted() -> None:
    s = ModelDeploymentSpec.model_validate({**spec(), "env": [{"name": "CUDA_LAUNCH_BLOCKING", "value": "1"}]})
    assert s.env == [{"name": "CUDA_LAUNCH_BLOCKING", "value": "1"}]


@pytest.mark.parametrize("field", ["file", "multimodalProjector"])
@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../b.gguf", "..", "a/.."])
def test_model_files_stay_inside_the_repository(field: str, path: str) -> None:
    """An absolute path or '..' would load, or have the fetcher write, a file outside the weights' directory."""
    msg = error_of(spec(format="ggufv2", quantization="Q4_K_M", **{field: path}))
    label = "model.file" if field == "file" else "model.multimodalProjector"
    assert msg == f"{label} must be a relative path inside the repository, without '..' (got {path!r})"


def test_relative_model_files_are_accepted() -> None:
    s = ModelDeploymentSpec.model_validate(
        spec(format="ggufv2", quantization="Q4_K_M", file="sub/dir/m..q4.gguf", multimodalProjector="mmproj.gguf")
    )
    assert s.model.file == "sub/dir/m..q4.gguf"
