"""select_engine: order, forcing, preference, node usability, placement, mixed clusters, stability."""

from __future__ import annotations

import pytest
from selection_factories import CONFIG, cpu, facts, gpu, mac, node_dict, spec

from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.selection.engine import select_engine
from modeldeploy.selection.nodes import node_facts
from modeldeploy.selection.types import Decision, EngineCandidate, NodeFacts

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
LINUX = {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
GPU_PRESENT = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
GGUF = {"fmt": "ggufv2", "quantization": "Q4_K_M"}
MLX = {"fmt": "mlx", "quantization": "4bit"}
MIXED = [gpu("gpu-1", gpus=2), cpu("cpu-1"), mac("mac-1")]


def candidate(decision: Decision, engine: str) -> EngineCandidate:
    return next(c for c in decision.candidates if c.engine == engine)


def test_candidates_list_every_engine_tried_first() -> None:
    d = select_engine(spec(), MIXED, CONFIG)
    assert [c.engine for c in d.candidates] == [
        "vllm",
        "llama.cpp",
        "mlx",
        "transformers",
        "sglang",
    ]
    assert d.as_json()["candidates"][0] == {
        "engine": "vllm",
        "eligible": True,
        "reasons": list(candidate(d, "vllm").reasons),
        "nodes": 1,
    }
    assert "eligible, but vllm comes first in the order" in candidate(d, "transformers").reasons


# --- mixed cluster: each format goes where the seed's rules send it ---


@pytest.mark.parametrize(
    ("kwargs", "engine", "nodes", "gpus"),
    [
        ({}, "vllm", ("gpu-1",), 1),
        (GGUF, "llama.cpp", ("gpu-1",), 1),
        (MLX, "mlx", ("mac-1",), 0),
        ({"name": "my-model"}, "transformers", ("gpu-1",), 1),
    ],
)
def test_mixed_cluster(kwargs: dict, engine: str, nodes: tuple, gpus: int) -> None:
    d = select_engine(spec(**kwargs), MIXED, CONFIG)
    assert d.engine == engine
    assert candidate(d, engine).nodes == nodes
    assert d.placement is not None and d.placement.gpus == gpus


# --- placement ---


def test_gpu_placement_uses_gfd_label_when_every_chosen_node_has_it() -> None:
    d = select_engine(spec(), [gpu("gpu-1"), gpu("gpu-2")], CONFIG)
    assert d.placement is not None
    assert d.placement.node_selector_terms == ({"matchExpressions": [LINUX, GPU_PRESENT]},)
    assert d.placement.tolerations == (GPU_TOLERATION,)
    assert (d.placement.gpus, d.placement.gpu_resource, d.placement.apple_silicon) == (1, "nvidia.com/gpu", False)


def test_gpu_placement_relies_on_the_resource_when_a_node_lacks_the_label() -> None:
    d = select_engine(spec(), [gpu("gpu-1"), gpu("gpu-2", gfd=False)], CONFIG)
    assert d.placement is not None
    assert d.placement.node_selector_terms == ({"matchExpressions": [LINUX]},)
    assert candidate(d, "vllm").nodes == ("gpu-1", "gpu-2")


def test_apple_placement() -> None:
    d = select_engine(spec(**MLX), [mac("mac-1")], CONFIG)
    assert d.placement is not None
    assert d.placement.apple_silicon is True
    assert d.placement.gpus == 0
    assert d.placement.tolerations == ()
    assert d.placement.node_selector_terms == (
        {
            "matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["darwin"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
            ]
        },
        {"matchExpressions": [{"key": "modeldeploy.io/accelerator", "operator": "In", "values": ["apple-silicon"]}]},
    )


def test_custom_mappings_shape_placement() -> None:
    mappings = LabelMappings(gpu_resource="example.com/gpu", gpu_taint_key="example.com/gpu")
    config = OperatorConfig(label_mappings=mappings)
    raw = node_dict("gpu-x", taints=[{"key": "example.com/gpu", "effect": "NoSchedule"}])
    raw["status"]["allocatable"]["example.com/gpu"] = "1"
    d = select_engine(spec(), [node_facts(raw, mappings)], config)
    assert d.engine == "vllm"
    assert d.placement is not None
    assert d.placement.gpu_resource == "example.com/gpu"
    assert d.placement.tolerations == ({"key": "example.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert d.placement.node_selector_terms == ({"matchExpressions": [LINUX]},)  # no GFD label on it


# --- the GPU rule of llama.cpp and transformers ---


@pytest.mark.parametrize(
    ("nodes", "gpus", "chosen", "placed_gpus", "rule"),
    [
        (
            MIXED,
            None,
            ("gpu-1",),
            1,
            "GPU rule: a usable Linux node has a CUDA GPU, so it is pinned to GPU nodes with 1 GPU per replica "
            "(set resources.gpus: 0 to run on CPU)",
        ),
        (MIXED, 0, ("cpu-1",), 0, "GPU rule: resources.gpus is 0, so it runs on CPU with no GPU"),
        (MIXED, 2, ("gpu-1",), 2, "GPU rule: resources.gpus is 2, so it runs on a CUDA node with 2 GPU(s) per replica"),
        (
            [cpu("cpu-1"), mac("mac-1")],
            None,
            ("cpu-1",),
            0,
            "GPU rule: no usable Linux node has a CUDA GPU, so it runs on CPU with no GPU",
        ),
        ([mac("mac-1")], None, ("mac-1",), 0, "no usable Linux node, so it runs on Apple silicon"),
        ([mac("mac-1")], 0, ("mac-1",), 0, "GPU rule: resources.gpus is 0, so it runs on Apple silicon with no GPU"),
    ],
)
def test_llamacpp_gpu_rule(nodes: list, gpus: int | None, chosen: tuple, placed_gpus: int, rule: str) -> None:
    d = select_engine(spec(gpus=gpus, **GGUF), nodes, CONFIG)
    assert d.engine == "llama.cpp"
    llama = candidate(d, "llama.cpp")
    assert llama.nodes == chosen
    assert rule in llama.reasons
    assert d.placement is not None and d.placement.gpus == placed_gpus
    assert d.placement.tolerations == ((GPU_TOLERATION,) if placed_gpus else ())


def test_llamacpp_cpu_fallback_explains_the_gpu_tier() -> None:
    d = select_engine(spec(**GGUF), [gpu("gpu-1", cordoned=True), cpu("cpu-1")], CONFIG)
    assert candidate(d, "llama.cpp").reasons[1:] == (
        "no usable node is Linux with a CUDA GPU (2 nodes: 1 cordoned, 1 CPU-only)",
        "1 of 2 nodes can host it (Linux): cpu-1",
        "GPU rule: no usable Linux node has a CUDA GPU, so it runs on CPU with no GPU",
    )


def test_llamacpp_explicit_gpus_never_fall_back_to_cpu() -> None:
    d = select_engine(spec(gpus=1, **GGUF), [cpu("cpu-1"), mac("mac-1")], CONFIG)
    assert d.engine is None
    assert candidate(d, "llama.cpp").reasons[-1] == (
        "no usable node is Linux with a CUDA GPU (2 nodes: 1 CPU-only, 1 not Linux)"
    )


def test_llamacpp_no_node_at_all() -> None:
    d = select_engine(spec(**GGUF), [cpu("cpu-1", ready=False), facts_windows()], CONFIG)
    assert d.engine is None
    assert candidate(d, "llama.cpp").reasons[-1] == (
        "no usable node is Linux or Apple silicon (2 nodes: 1 not Ready, 1 not Linux or Apple silicon)"
    )


def facts_windows() -> NodeFacts:
    return facts("win-1", os="windows")


def test_transformers_on_cpu_and_gpu() -> None:
    d = select_engine(spec(name="my-model"), [cpu("cpu-1"), cpu("cpu-2")], CONFIG)
    assert d.engine == "transformers"
    assert candidate(d, "transformers").nodes == ("cpu-1", "cpu-2")
    assert d.placement is not None
    assert (d.placement.gpus, d.placement.tolerations) == (0, ())
    assert d.placement.node_selector_terms == ({"matchExpressions": [LINUX]},)
    d = select_engine(spec(name="my-model"), [cpu("cpu-1"), gpu("gpu-1")], CONFIG)
    assert candidate(d, "transformers").nodes == ("gpu-1",)
    # transformers never runs on a Mac
    d = select_engine(spec(name="my-model"), [mac("mac-1")], CONFIG)
    assert d.engine is None
    assert candidate(d, "transformers").reasons[-1] == "no usable node is Linux (1 node: 1 not Linux)"


# --- node usability: Ready, cordon, taints, nodeSelector, affinity ---


@pytest.mark.parametrize(
    ("node", "category"),
    [
        (gpu("g", ready=False), "not Ready"),
        (gpu("g", ready=None), "not Ready"),
        (gpu("g", cordoned=True), "cordoned"),
        (
            gpu("g", taints=[{"key": "dedicated", "value": "train", "effect": "NoSchedule"}]),
            "tainted dedicated=train:NoSchedule (not tolerated)",
        ),
        (
            gpu("g", taints=[{"key": "nvidia.com/gpu", "effect": "NoExecute"}]),
            "tainted nvidia.com/gpu:NoExecute (not tolerated)",
        ),
        (gpu("g", labels={"pool": "batch"}), "not matching spec.nodeSelector"),
    ],
)
def test_unusable_gpu_node(node: object, category: str) -> None:
    d = select_engine(
        spec(nodeSelector={"pool": "inference"}) if "nodeSelector" in category else spec(), [node], CONFIG
    )
    assert d.engine is None
    assert candidate(d, "vllm").reasons[-1] == f"no usable node is Linux with a CUDA GPU (1 node: 1 {category})"


def test_gpu_taint_is_tolerated_by_the_engine_and_other_taints_by_the_user() -> None:
    tainted = gpu(
        "g",
        taints=[
            {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
            {"key": "team", "value": "ml", "effect": "NoSchedule"},
        ],
    )
    assert select_engine(spec(), [tainted], CONFIG).engine is None
    user = [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    d = select_engine(spec(tolerations=user), [tainted], CONFIG)
    assert d.engine == "vllm"
    # the rendered tolerations are the engine's own; the renderer adds the user's
    assert d.placement is not None and d.placement.tolerations == (GPU_TOLERATION,)
    assert select_engine(spec(tolerations=[{"operator": "Exists"}]), [tainted], CONFIG).engine == "vllm"


def test_cpu_engines_do_not_tolerate_the_gpu_taint() -> None:
    # With resources.gpus: 0 transformers renders no GPU toleration, so a tainted GPU node is off limits.
    d = select_engine(spec(name="my-model", gpus=0), [gpu("gpu-1")], CONFIG)
    assert d.engine is None
    assert candidate(d, "transformers").reasons[-1] == (
        "no usable node is Linux (1 node: 1 tainted nvidia.com/gpu=present:NoSchedule (not tolerated))"
    )


def test_node_selector_restricts_candidates() -> None:
    nodes = [gpu("gpu-a", labels={"pool": "a"}), gpu("gpu-b", labels={"pool": "b"}), cpu("cpu-b", labels={"pool": "b"})]
    d = select_engine(spec(nodeSelector={"pool": "b"}), nodes, CONFIG)
    assert d.engine == "vllm"
    assert candidate(d, "vllm").nodes == ("gpu-b",)
    assert "1 of 3 nodes can host it (Linux with a CUDA GPU): gpu-b" in candidate(d, "vllm").reasons
    d = select_engine(spec(nodeSelector={"pool": "c"}), nodes, CONFIG)
    assert candidate(d, "vllm").reasons[-1] == (
        "no usable node is Linux with a CUDA GPU (3 nodes: 2 not matching spec.nodeSelector, 1 CPU-only)"
    )
    assert d.engine is None


def test_user_affinity_restricts_candidates() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]
            }
        }
    }
    nodes = [gpu("gpu-a", labels={"zone": "z1"}), gpu("gpu-b", labels={"zone": "z2"})]
    d = select_engine(spec(affinity=affinity), nodes, CONFIG)
    assert candidate(d, "vllm").nodes == ("gpu-a",)


def test_long_node_lists_are_shortened() -> None:
    nodes = [gpu(f"gpu-{i:02d}") for i in range(12)]
    reasons = candidate(select_engine(spec(), nodes, CONFIG), "vllm").reasons
    assert (
        "12 of 12 nodes can host it (Linux with a CUDA GPU): gpu-00, gpu-01, gpu-02, gpu-03, gpu-04, gpu-05, "
        "gpu-06, gpu-07, gpu-08, gpu-09 and 2 more" in reasons
    )


# --- forcing and preference ---


def test_named_engine_is_checked_not_replaced() -> None:
    d = select_engine(spec(engine={"name": "vllm"}), [cpu("cpu-1")], CONFIG)
    assert d.engine is None
    assert d.placement is None
    assert d.summary == (
        "no engine can run: engine.name is vllm and no usable node is Linux with a CUDA GPU (1 node: 1 CPU-only)"
    )
    assert candidate(d, "transformers").eligible  # it could, but it was not asked for
    assert candidate(d, "transformers").reasons[-1] == "not tried: engine.name is vllm"
    assert d.candidates[0].engine == "vllm"


def test_named_engine_that_runs() -> None:
    d = select_engine(spec(engine={"name": "transformers"}), MIXED, CONFIG)
    assert d.engine == "transformers"
    assert d.summary == "transformers: named in engine.name and its rules hold"
    assert candidate(d, "vllm").reasons[-1] == "not tried: engine.name is transformers"


def test_named_sglang() -> None:
    d = select_engine(spec(engine={"name": "sglang"}, gpus=2), MIXED, CONFIG)
    assert d.engine == "sglang"
    assert d.placement is not None and d.placement.gpus == 2
    assert d.placement.tolerations == (GPU_TOLERATION,)


def test_named_engine_failing_model_rule_lists_every_failure() -> None:
    d = select_engine(spec(name="my-model", fmt="awq", quantization="Int8", engine={"name": "vllm"}), [cpu()], CONFIG)
    assert d.summary == (
        "no engine can run: engine.name is vllm and awq needs quantization Int4; got Int8; "
        "model my-model is not in vLLM's supported list (add it to vllmExtraFamilies in the operator config if "
        "vLLM loads it; for a custom model set model.family); "
        "no usable node is Linux with a CUDA GPU (1 node: 1 CPU-only)"
    )


def test_preference_order() -> None:
    d = select_engine(spec(engine={"preference": ["transformers", "vllm"]}), MIXED, CONFIG)
    assert d.engine == "transformers"
    assert d.summary == "transformers: first eligible engine in order transformers, vllm (engine.preference)"
    assert [c.engine for c in d.candidates][:2] == ["transformers", "vllm"]
    assert candidate(d, "llama.cpp").reasons[-1] == "not tried: not listed in engine.preference"


def test_sglang_only_when_listed() -> None:
    d = select_engine(spec(name="my-model", fmt="fp8"), MIXED, CONFIG)
    assert d.engine is None
    d = select_engine(spec(name="my-model", fmt="fp8", engine={"preference": ["vllm", "sglang"]}), MIXED, CONFIG)
    assert d.engine == "sglang"
    assert d.summary == "sglang: first eligible engine in order vllm, sglang (engine.preference)"


def test_no_engine_summary_names_each_engine_in_order() -> None:
    d = select_engine(spec(**MLX), [cpu("cpu-1")], CONFIG)
    assert d.engine is None
    assert d.summary == (
        "no engine can run: vllm: format mlx is not one vLLM loads (pytorch, gptq, awq, fp4, fp8, bnb); "
        "llama.cpp: format mlx is not GGUF (llama.cpp loads ggufv2 only); "
        "mlx: no usable node is Apple silicon (1 node: 1 not Apple silicon); "
        "transformers: format mlx is not one transformers loads (pytorch, gptq, awq, bnb)"
    )
    assert d.as_json()["engine"] is None


# --- stability ---


def test_running_engine_is_kept_when_a_better_one_becomes_possible() -> None:
    nodes = [cpu("cpu-1"), gpu("gpu-new")]
    d = select_engine(spec(), nodes, CONFIG, current="transformers")
    assert d.engine == "transformers"
    assert d.kept_current is True
    assert d.summary == (
        "transformers: kept the running engine while it can still run (vllm is earlier in order vllm, llama.cpp, "
        'mlx, transformers and could run now; annotate modeldeploy.io/reselect: "true" to choose again)'
    )
    assert "kept: it is the running engine and can still run" in candidate(d, "transformers").reasons
    assert (
        'eligible, but the running engine transformers is kept (annotate modeldeploy.io/reselect: "true" to choose '
        "again)" in candidate(d, "vllm").reasons
    )
    # transformers keeps its own placement rule: a GPU node is usable, so it is pinned there with 1 GPU
    assert d.placement is not None and d.placement.gpus == 1


def test_reselect_moves_to_the_preferred_engine() -> None:
    d = select_engine(spec(), [cpu("cpu-1"), gpu("gpu-new")], CONFIG, current="transformers", reselect=True)
    assert (d.engine, d.kept_current) == ("vllm", False)


def test_current_equal_to_the_fresh_choice_is_plain() -> None:
    d = select_engine(spec(), [gpu("gpu-1")], CONFIG, current="vllm")
    assert (d.engine, d.kept_current, d.current_impossible) == ("vllm", False, False)
    assert d.summary.startswith("vllm: first eligible engine")


def test_current_engine_that_became_impossible_changes_nothing() -> None:
    d = select_engine(spec(), [cpu("cpu-1"), gpu("gpu-1", ready=False)], CONFIG, current="vllm")
    assert d.engine is None
    assert d.placement is None
    assert d.current_impossible is True
    assert d.summary == (
        "the running engine vllm can no longer run: no usable node is Linux with a CUDA GPU (2 nodes: 1 CPU-only, "
        "1 not Ready); the Deployment is left as it is (transformers could run instead; annotate "
        'modeldeploy.io/reselect: "true" to choose again)'
    )
    assert d.warnings == (d.summary,)
    d = select_engine(spec(), [cpu("cpu-1")], CONFIG, current="vllm", reselect=True)
    assert (d.engine, d.current_impossible) == ("transformers", False)


def test_current_not_in_the_order_is_ignored() -> None:
    # The caller passes current only for an unchanged spec; if it is not in the order, choose afresh.
    d = select_engine(spec(), [gpu("gpu-1")], CONFIG, current="sglang")
    assert (d.engine, d.kept_current, d.current_impossible) == ("vllm", False, False)


def test_llamacpp_warnings_only_for_llamacpp() -> None:
    args = {"engine": {"args": {"n_ctx": 512}}}
    assert select_engine(spec(**GGUF, **args), MIXED, CONFIG).warnings != ()
    assert select_engine(spec(**args), MIXED, CONFIG).warnings == ()


AUTH = {"apiKeySecret": {"name": "model-keys", "key": "api-key"}}


def test_with_an_api_key_auto_passes_over_engines_that_cannot_take_one_and_says_why() -> None:
    """docs/security.md, "API keys": transformers would serve this model on a CPU-only cluster, but has no
    API key; nothing is chosen and the candidate says why. With a GPU, vLLM (which takes one) is chosen
    even where SGLang is preferred."""
    d = select_engine(spec(auth=AUTH), [cpu("cpu-1")], CONFIG)
    assert d.engine is None
    assert any("transformers serve has no API key option" in r for r in candidate(d, "transformers").reasons)
    d = select_engine(spec(auth=AUTH, engine={"preference": ["sglang", "vllm"]}), [gpu("gpu-1")], CONFIG)
    assert d.engine == "vllm"
    assert any("logs its server arguments" in r for r in candidate(d, "sglang").reasons)
    assert "vLLM reads spec.auth's API key from VLLM_API_KEY, set from the Secret" in candidate(d, "vllm").reasons
