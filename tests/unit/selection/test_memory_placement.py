"""vLLM and SGLang are placed only where the model fits: GPU memory, compute capability, tensor parallel.

Three node classes as GPU Feature Discovery labels them: a T4 (15 GiB, compute capability 7.5), an L4
(22.5 GiB, 8.9) and an 8 × A100 80GB node (8.0). docs/memory-placement.md explains the arithmetic.
"""

from __future__ import annotations

from typing import Any

from selection_factories import CONFIG, facts, spec

from modeldeploy.selection.engine import select_engine
from modeldeploy.selection.types import Decision, EngineCandidate, NodeFacts

LINUX = {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
GPU_PRESENT = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}


def gpu_node(name: str, product: str, memory: int, major: int, minor: int, gpus: int = 1, **labels: str) -> NodeFacts:
    gfd = {
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory),
        "nvidia.com/gpu.compute.major": str(major),
        "nvidia.com/gpu.compute.minor": str(minor),
    }
    return facts(name, gpus=gpus, labels={**gfd, **labels})


T4 = gpu_node("t4-1", "Tesla-T4", 15360, 7, 5)
L4 = gpu_node("l4-1", "NVIDIA-L4", 23034, 8, 9)
A100 = gpu_node("a100-1", "NVIDIA-A100-SXM4-80GB", 81920, 8, 0, gpus=8)
CLUSTER = [T4, L4, A100]


def model(uri: str, fmt: str = "pytorch", quantization: str | None = "none", **kwargs: Any) -> dict[str, Any]:
    return {"model": {"uri": uri, **kwargs}, "fmt": fmt, "quantization": quantization}


def decide(
    uri: str, nodes: list[NodeFacts], fmt: str = "pytorch", quantization: str | None = "none", **kw: Any
) -> Decision:
    engine = kw.pop("engine", {"name": "vllm"})
    name = kw.pop("name", "qwen2.5-instruct")
    source = {"uri": uri, **kw.pop("model", {})}
    return select_engine(spec(name, fmt, quantization, engine=engine, model=source, **kw), nodes, CONFIG)


def candidate(decision: Decision, engine: str) -> EngineCandidate:
    return next(c for c in decision.candidates if c.engine == engine)


def reasons(decision: Decision, engine: str = "vllm") -> str:
    return "\n".join(candidate(decision, engine).reasons)


def test_llama_70b_bf16_gets_the_smallest_tensor_parallel_that_fits_on_the_a100_node() -> None:
    decision = decide("hf://meta-llama/Llama-3.1-70B-Instruct", CLUSTER, name="llama-3.1-instruct")
    assert decision.engine == "vllm"
    assert decision.placement is not None and decision.placement.gpus == 4
    assert candidate(decision, "vllm").nodes == ("a100-1",)
    text = reasons(decision)
    assert "tensor parallel 4: the smallest that holds Llama-3.1-70B (resources.gpus not set)" in text
    assert (
        "t4-1 [Tesla-T4, 1 GPU(s)] cannot hold it: compute capability 7.5 < 8.0 that vLLM's bfloat16 weights need"
        in text
    )
    assert "l4-1 [NVIDIA-L4, 1 GPU(s)] cannot hold it: 1 × 22.5 GiB × 0.9 = 20.2 GiB < 131.4 GiB weights" in text
    assert "a100-1 [NVIDIA-A100-SXM4-80GB, 8 GPU(s)] holds it: 4 × 80.0 GiB × 0.9 = 72.0 GiB per GPU ≥ 32.9 GiB" in text
    terms = decision.placement.node_selector_terms
    assert len(terms) == 1
    expressions = terms[0]["matchExpressions"]
    assert expressions[:2] == [LINUX, GPU_PRESENT]
    memory = next(e for e in expressions if e["key"] == "nvidia.com/gpu.memory")
    assert memory["operator"] == "Gt" and 23034 < int(memory["values"][0]) < 81920
    assert {"key": "nvidia.com/gpu.compute.major", "operator": "Gt", "values": ["7"]} in expressions


def test_llama_70b_with_too_few_gpus_named_is_refused_with_the_arithmetic() -> None:
    decision = decide("hf://meta-llama/Llama-3.1-70B-Instruct", CLUSTER, name="llama-3.1-instruct", gpus=1)
    assert decision.engine is None
    text = reasons(decision)
    assert "no usable node can hold the model" in text
    assert "a100-1 [NVIDIA-A100-SXM4-80GB, 8 GPU(s)]: 1 × 80.0 GiB × 0.9 = 72.0 GiB < 131.4 GiB weights" in text


def test_qwen_7b_bf16_on_a_t4_is_refused_for_bfloat16_and_for_memory_in_half() -> None:
    decision = decide("hf://Qwen/Qwen2.5-7B-Instruct", [T4])
    assert decision.engine is None
    assert "compute capability 7.5 < 8.0 that vLLM's bfloat16 weights need (set engine.args dtype: half)" in reasons(
        decision
    )
    half = decide(
        "hf://Qwen/Qwen2.5-7B-Instruct", [T4], engine={"name": "vllm", "args": {"dtype": "half", "max-model-len": 8192}}
    )
    assert half.engine is None
    assert "t4-1 [Tesla-T4, 1 GPU(s)]: 1 × 15.0 GiB × 0.9 = 13.5 GiB < 14.2 GiB weights" in reasons(half)
    assert "0.4 GiB KV at 8,192 tokens" in reasons(half)


def test_qwen_7b_bf16_lands_on_the_l4_not_the_t4() -> None:
    decision = decide(
        "hf://Qwen/Qwen2.5-7B-Instruct", [T4, L4], engine={"name": "vllm", "args": {"max-model-len": 8192}}
    )
    assert decision.engine == "vllm"
    assert candidate(decision, "vllm").nodes == ("l4-1",)
    assert decision.placement is not None and decision.placement.gpus == 1
    # compute capability 8.0 or more, and more memory than the T4's
    expressions = decision.placement.node_selector_terms[0]["matchExpressions"]
    memory = next(e for e in expressions if e["key"] == "nvidia.com/gpu.memory")
    assert 15360 <= int(memory["values"][0]) < 23034


def test_an_fp8_checkpoint_is_not_eligible_on_compute_capability_7_5() -> None:
    decision = decide(
        "hf://org/Qwen2.5-7B-Instruct-FP8", [T4], fmt="fp8", quantization=None, model={"sizeInBillions": "7"}
    )
    assert decision.engine is None
    assert "compute capability 7.5 < 8.0 that vLLM's FP8 weights need" in reasons(decision)


def test_qwen_72b_awq_does_not_fit_one_l4_and_goes_to_the_a100() -> None:
    alone = decide("hf://Qwen/Qwen2.5-72B-Instruct-AWQ", [L4], fmt="awq", quantization="Int4")
    assert alone.engine is None
    assert "l4-1 [NVIDIA-L4, 1 GPU(s)]: 1 × 22.5 GiB × 0.9 = 20.2 GiB < 38.6 GiB weights" in reasons(alone)
    both = decide("hf://Qwen/Qwen2.5-72B-Instruct-AWQ", [L4, A100], fmt="awq", quantization="Int4")
    assert both.engine == "vllm" and candidate(both, "vllm").nodes == ("a100-1",)
    assert both.placement is not None and both.placement.gpus == 1


def test_the_largest_context_that_fits_is_named_when_the_requested_one_does_not() -> None:
    decision = decide("hf://meta-llama/Llama-3.1-8B-Instruct", [L4], name="llama-3.1-instruct", gpus=1)
    assert decision.engine is None
    assert "8.0 GiB KV at 131,072 tokens" not in reasons(decision)  # 16 GiB at 131,072 tokens on one GPU
    assert "16.0 GiB KV at 131,072 tokens; the largest context that fits is" in reasons(decision)
    assert "tokens (max-model-len)" in reasons(decision)


def test_sglang_uses_its_own_fraction() -> None:
    decision = decide(
        "hf://Qwen/Qwen2.5-7B-Instruct", [L4], engine={"name": "sglang", "args": {"context-length": 8192}}
    )
    assert decision.engine == "sglang"
    assert "1 × 22.5 GiB × 0.88 = 19.8 GiB ≥ 14.2 GiB weights + 0.4 GiB KV at 8,192 tokens" in reasons(
        decision, "sglang"
    )


def test_an_unknown_model_without_size_is_placed_as_before() -> None:
    decision = decide("hf://org/unknown-model", CLUSTER)
    assert decision.engine == "vllm"
    assert decision.placement is not None
    assert decision.placement.node_selector_terms == ({"matchExpressions": [LINUX, GPU_PRESENT]},)
    assert candidate(decision, "vllm").nodes == ("t4-1", "l4-1", "a100-1")
    assert "holds it" not in reasons(decision)


def test_a_node_without_memory_labels_is_assumed_to_fit_and_says_so() -> None:
    bare = facts("bare-1", gpus=1, gfd=False)
    decision = decide("hf://Qwen/Qwen2.5-7B-Instruct", [bare])
    assert decision.engine == "vllm"
    text = reasons(decision)
    assert "compute capability unknown: assumed at least 8.0 (bfloat16 weights)" in text
    assert "GPU memory unknown: assumed it holds 14.2 GiB of weights" in text


def test_fitting_nodes_without_labels_are_pinned_by_name_when_another_is_excluded() -> None:
    bare = facts("bare-1", gpus=1, gfd=False)
    decision = decide("hf://Qwen/Qwen2.5-7B-Instruct", [bare, T4])
    assert decision.engine == "vllm" and candidate(decision, "vllm").nodes == ("bare-1",)
    assert decision.placement is not None
    (term,) = decision.placement.node_selector_terms
    assert term["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["bare-1"]}]


def test_fp8_needs_8_9_alternatives_only_where_the_engine_says_so() -> None:
    """Compute capability X.Y with Y > 0 is two ORed terms (major above X, or major X and minor at least Y)."""
    decision = decide("hf://Qwen/Qwen2.5-7B-Instruct", [L4], engine={"name": "vllm", "args": {"max-model-len": 8192}})
    assert decision.placement is not None and len(decision.placement.node_selector_terms) == 1


def test_llama_cpp_and_transformers_are_not_judged_by_memory() -> None:
    decision = decide(
        "hf://meta-llama/Llama-3.1-70B-Instruct", [T4], name="llama-3.1-instruct", engine={"name": "transformers"}
    )
    assert decision.engine == "transformers"
    assert "holds it" not in reasons(decision, "transformers")


def gguf_decision(nodes: list[NodeFacts], size: str = "70") -> Decision:
    source = {"uri": "hf://org/llama-70b-gguf", "file": "m.gguf", "sizeInBillions": size}
    return select_engine(
        spec("llama-3.1-instruct", "ggufv2", "Q4_K_M", engine={"name": "llama.cpp"}, model=source), nodes, CONFIG
    )


def test_llama_cpp_prefers_the_nodes_whose_gpus_hold_the_most_layers() -> None:
    decision = gguf_decision(CLUSTER)
    assert decision.engine == "llama.cpp"
    assert decision.placement is not None
    # Every GPU node stays possible (auto-NGL offloads what fits); the weights add up to each node's share.
    assert candidate(decision, "llama.cpp").nodes == ("t4-1", "l4-1", "a100-1")
    terms = decision.placement.preferred_terms
    thresholds = [int(t["preference"]["matchExpressions"][0]["values"][0]) for t in terms]
    assert thresholds == [15359, 23033, 81919]
    weights = [t["weight"] for t in terms]
    assert sum(weights) == 100 and weights[0] < sum(weights[:2]) < 100
    assert (
        "preferred: the nodes whose GPUs hold the most of the 37.3 GiB GGUF, where auto-NGL puts the most layers on "
        "the GPU (a100-1 100 %, l4-1 54 %, t4-1 36 %)"
    ) in reasons(decision, "llama.cpp")


def test_llama_cpp_has_no_preference_where_every_node_holds_it_all() -> None:
    decision = gguf_decision(CLUSTER, size="1")
    assert decision.placement is not None and decision.placement.preferred_terms == ()
    assert "preferred" not in reasons(decision, "llama.cpp")


def test_a_gpu_count_that_does_not_divide_the_heads_is_refused() -> None:
    decision = decide("hf://Qwen/Qwen2.5-7B-Instruct", [A100], gpus=3)
    assert decision.engine is None
    assert (
        "tensor parallel 3 does not divide Qwen2.5-7B's 28 attention heads and 4 KV heads, which vLLM refuses "
        "(resources.gpus: 1, 2, 4)"
    ) in reasons(decision)


def test_a_model_of_unknown_dtype_is_not_refused_for_bfloat16() -> None:
    """Without config.json facts the dtype is unknown: only the weights are judged, no capability required."""
    decision = decide("hf://org/custom-7b", [T4], model={"sizeInBillions": "3"})
    assert decision.engine == "vllm"
    text = reasons(decision)
    assert "compute capability" not in text
    assert "t4-1 [Tesla-T4, 1 GPU(s)] holds it: 1 × 15.0 GiB × 0.9 = 13.5 GiB ≥ 5.6 GiB weights" in text
    assert "the KV cache (not counted: the model's config.json facts are unknown)" in text
