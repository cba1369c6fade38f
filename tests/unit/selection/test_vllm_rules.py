"""Every condition of the seed's vLLM paragraph, one by one.

The baseline (qwen2.5-instruct, pytorch, quantization none, a Linux node with a CUDA GPU) satisfies them
all and gets vLLM. Each case breaks exactly one condition: vLLM must then be ineligible with that
condition named in its reasons, and the next engine in the default order (or none) is chosen.
"""

from __future__ import annotations

import pytest
from selection_factories import CONFIG, cpu, gpu, mac, spec

from modeldeploy.config import OperatorConfig
from modeldeploy.selection.engine import select_engine
from modeldeploy.selection.types import Decision, EngineCandidate

GPU_CLUSTER = [gpu("gpu-1"), cpu("cpu-1")]


def candidate(decision: Decision, engine: str) -> EngineCandidate:
    return next(c for c in decision.candidates if c.engine == engine)


def test_baseline_satisfies_every_condition() -> None:
    d = select_engine(spec(), GPU_CLUSTER, CONFIG)
    assert d.engine == "vllm"
    vllm = candidate(d, "vllm")
    assert vllm.eligible
    assert vllm.reasons[:3] == (
        "format pytorch is one vLLM loads",
        "pytorch with quantization none is one vLLM loads",
        "model qwen2.5-instruct is in vLLM's supported list",
    )
    assert "1 of 2 nodes can host it (Linux with a CUDA GPU): gpu-1" in vllm.reasons
    assert vllm.nodes == ("gpu-1",)
    assert d.summary == "vllm: first eligible engine in order vllm, llama.cpp, mlx, transformers"


# Condition 1: the model format is pytorch, gptq, awq, fp4, fp8 or bnb.
@pytest.mark.parametrize(
    ("fmt", "quantization", "expected"),
    [
        ("pytorch", "none", "vllm"),
        ("gptq", "Int4", "vllm"),
        ("awq", "Int4", "vllm"),
        ("fp4", None, "vllm"),
        ("fp8", None, "vllm"),
        ("bnb", "4bit", "vllm"),
        ("ggufv2", "Q4_K_M", "llama.cpp"),
        ("mlx", "4bit", None),  # no Apple silicon node: nothing can run
    ],
)
def test_format_condition(fmt: str, quantization: str | None, expected: str | None) -> None:
    d = select_engine(spec(fmt=fmt, quantization=quantization), GPU_CLUSTER, CONFIG)
    assert d.engine == expected
    vllm = candidate(d, "vllm")
    if expected == "vllm":
        assert f"format {fmt} is one vLLM loads" in vllm.reasons
    else:
        assert not vllm.eligible
        assert f"format {fmt} is not one vLLM loads (pytorch, gptq, awq, fp4, fp8, bnb)" in vllm.reasons


@pytest.mark.parametrize("fmt", ["fp4", "fp8", "bnb"])
def test_formats_without_a_quantization_condition_say_so(fmt: str) -> None:
    d = select_engine(spec(fmt=fmt), GPU_CLUSTER, CONFIG)
    assert f"{fmt} has no quantization condition for vLLM" in candidate(d, "vllm").reasons


# Conditions 2-4: pytorch -> none; awq -> Int4; gptq -> Int3, Int4 or Int8 (any spelling, normalised).
@pytest.mark.parametrize(
    ("fmt", "quantization", "reason"),
    [
        ("pytorch", "none", "pytorch with quantization none is one vLLM loads"),
        ("pytorch", "NONE", "pytorch with quantization none is one vLLM loads"),
        ("pytorch", None, "pytorch with quantization none is one vLLM loads"),  # unset = plain weights
        ("awq", "Int4", "awq with quantization Int4 is one vLLM loads"),
        ("awq", "int4", "awq with quantization Int4 is one vLLM loads"),
        ("awq", "4bit", "awq with quantization Int4 is one vLLM loads"),
        ("gptq", "Int3", "gptq with quantization Int3 is one vLLM loads"),
        ("gptq", "INT4", "gptq with quantization Int4 is one vLLM loads"),
        ("gptq", "8bits", "gptq with quantization Int8 is one vLLM loads"),
        ("gptq", "Int8", "gptq with quantization Int8 is one vLLM loads"),
    ],
)
def test_quantization_condition_holds(fmt: str, quantization: str | None, reason: str) -> None:
    d = select_engine(spec(fmt=fmt, quantization=quantization), GPU_CLUSTER, CONFIG)
    assert d.engine == "vllm"
    assert reason in candidate(d, "vllm").reasons


@pytest.mark.parametrize(
    ("fmt", "quantization", "reason"),
    [
        ("pytorch", "4bit", "pytorch needs quantization none; got 4bit"),
        ("pytorch", "8bit", "pytorch needs quantization none; got 8bit"),
        ("awq", "Int8", "awq needs quantization Int4; got Int8"),
        ("awq", "Int3", "awq needs quantization Int4; got Int3"),
        ("awq", None, "awq needs quantization Int4; model.quantization is not set"),
        ("gptq", "Int2", "gptq needs quantization Int3, Int4 or Int8; got Int2"),
        ("gptq", None, "gptq needs quantization Int3, Int4 or Int8; model.quantization is not set"),
    ],
)
def test_quantization_condition_fails_alone(fmt: str, quantization: str | None, reason: str) -> None:
    d = select_engine(spec(fmt=fmt, quantization=quantization), GPU_CLUSTER, CONFIG)
    vllm = candidate(d, "vllm")
    assert not vllm.eligible
    assert reason in vllm.reasons
    assert [r for r in vllm.reasons if "needs" in r] == [reason]  # the only failing rule
    # transformers loads all of these, on the GPU node
    assert d.engine == "transformers"
    assert d.placement is not None and d.placement.gpus == 1


# Condition 5: Linux with at least one CUDA device (here: on a usable node of the cluster).
@pytest.mark.parametrize(
    ("nodes", "reason"),
    [
        ([cpu("cpu-1"), cpu("cpu-2")], "no usable node is Linux with a CUDA GPU (2 nodes: 2 CPU-only)"),
        ([mac("mac-1"), cpu("cpu-1")], "no usable node is Linux with a CUDA GPU (2 nodes: 1 not Linux, 1 CPU-only)"),
        (
            [gpu("gpu-1", cordoned=True), gpu("gpu-2", ready=False), cpu("cpu-1")],
            "no usable node is Linux with a CUDA GPU (3 nodes: 1 cordoned, 1 not Ready, 1 CPU-only)",
        ),
        ([], "no usable node is Linux with a CUDA GPU (the cluster has no nodes)"),
    ],
)
def test_cuda_linux_condition_fails_alone(nodes: list, reason: str) -> None:
    d = select_engine(spec(), nodes, CONFIG)
    vllm = candidate(d, "vllm")
    assert not vllm.eligible
    assert vllm.reasons[-1] == reason
    assert vllm.nodes == ()
    has_linux_cpu = any(n.os == "linux" and n.ready and not n.unschedulable for n in nodes)
    assert d.engine == ("transformers" if has_linux_cpu else None)


def test_gpu_count_is_per_node() -> None:
    nodes = [gpu("gpu-1", gpus=1), gpu("gpu-2", gpus=1)]
    d = select_engine(spec(gpus=2), nodes, CONFIG)
    vllm = candidate(d, "vllm")
    assert not vllm.eligible
    assert "no usable node is Linux with at least 2 CUDA GPUs (2 nodes: 2 with fewer than 2 CUDA GPUs)" in vllm.reasons
    d = select_engine(spec(gpus=2), [*nodes, gpu("gpu-4", gpus=4)], CONFIG)
    assert d.engine == "vllm"
    assert candidate(d, "vllm").nodes == ("gpu-4",)
    assert d.placement is not None and d.placement.gpus == 2


def test_zero_gpus_is_refused_for_vllm() -> None:
    d = select_engine(spec(gpus=0), GPU_CLUSTER, CONFIG)
    assert "vLLM needs at least 1 GPU per replica; resources.gpus is 0" in candidate(d, "vllm").reasons
    assert d.engine == "transformers"  # on CPU, as asked


# Condition 6: family (custom model) or name (builtin) in vLLM's supported list.
@pytest.mark.parametrize(
    ("name", "family", "eligible", "reason"),
    [
        ("qwen2.5-instruct", None, True, "model qwen2.5-instruct is in vLLM's supported list"),
        ("Qwen2.5-Instruct", None, True, "model Qwen2.5-Instruct is in vLLM's supported list"),
        ("my-finetune", "qwen2.5-instruct", True, "model family qwen2.5-instruct is in vLLM's supported list"),
        (
            "qwen2.5-instruct",
            "my-family",
            False,
            "model family my-family is not in vLLM's supported list (add it to vllmExtraFamilies in the operator "
            "config if vLLM loads it)",
        ),
        (
            "gemma-3-4b-it",
            None,
            False,
            "model gemma-3-4b-it is not in vLLM's supported list (add it to vllmExtraFamilies in the operator "
            "config if vLLM loads it; for a custom model set model.family)",
        ),
    ],
)
def test_supported_list_condition(name: str, family: str | None, eligible: bool, reason: str) -> None:
    d = select_engine(spec(name=name, family=family), GPU_CLUSTER, CONFIG)
    vllm = candidate(d, "vllm")
    assert vllm.eligible is eligible
    assert reason in vllm.reasons
    assert d.engine == ("vllm" if eligible else "transformers")


def test_extra_families_from_config() -> None:
    config = OperatorConfig(vllm_extra_families=["gemma-3-4b-it"])
    d = select_engine(spec(name="Gemma-3-4B-IT"), GPU_CLUSTER, config)
    assert d.engine == "vllm"
    assert (
        "model Gemma-3-4B-IT is in vLLM's supported list (vllmExtraFamilies in the operator config)"
        in candidate(d, "vllm").reasons
    )


def test_fp8_unsupported_name_has_no_automatic_engine() -> None:
    # fp8 only loads in vLLM and SGLang; SGLang is not chosen automatically.
    d = select_engine(spec(name="my-model", fmt="fp8"), GPU_CLUSTER, CONFIG)
    assert d.engine is None
    assert d.placement is None
    sglang = candidate(d, "sglang")
    assert sglang.eligible
    assert sglang.reasons[-1] == "not chosen automatically: list it in engine.preference or set engine.name"
    assert d.summary.startswith("no engine can run: vllm: model my-model is not in vLLM's supported list")
