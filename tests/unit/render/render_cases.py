"""Hand-built ModelDeployments and Decisions for the renderer tests.

Decisions are constructed directly (not by the selection engine) so these tests pin the renderer alone:
a change in selection must not rewrite the golden files.
"""

from __future__ import annotations

import copy
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.selection.types import Decision, Placement

CONFIG = OperatorConfig()

LINUX = {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
GPU_PRESENT = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
APPLE = {"key": "modeldeploy.io/accelerator", "operator": "In", "values": ["apple-silicon"]}
VK_TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


def gpu_placement(gpus: int = 1) -> Placement:
    """Linux nodes with CUDA GPUs, tolerating the usual GPU taint."""
    return Placement(
        node_selector_terms=({"matchExpressions": [LINUX, GPU_PRESENT]},),
        tolerations=(GPU_TOLERATION,),
        gpus=gpus,
    )


def cpu_placement() -> Placement:
    """Any Linux node, no GPUs."""
    return Placement(node_selector_terms=({"matchExpressions": [LINUX]},), tolerations=(), gpus=0)


def apple_placement() -> Placement:
    """Apple-silicon nodes behind a virtual-kubelet provider."""
    return Placement(
        node_selector_terms=({"matchExpressions": [APPLE]},),
        tolerations=(VK_TOLERATION,),
        gpus=0,
        apple_silicon=True,
    )


def decision(engine: str | None, placement: Placement | None) -> Decision:
    return Decision(engine=engine, candidates=(), placement=placement, summary="chosen by hand for a test")


def md(spec: dict[str, Any], name: str = "m", uid: str | None = None) -> ModelDeployment:
    """A ModelDeployment from a spec dict, as the loader would build it."""
    metadata: dict[str, Any] = {"name": name, "namespace": "models"}
    if uid:
        metadata["uid"] = uid
    return ModelDeployment.model_validate(
        {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": metadata, "spec": spec}
    )


VLLM_SPEC: dict[str, Any] = {
    "model": {
        "name": "llama-3.1-instruct",
        "format": "pytorch",
        "sizeInBillions": "8",
        "quantization": "none",
        "uri": "hf://meta-llama/Llama-3.1-8B-Instruct@0e9e39f",
        "credentialsSecret": "hf-token",
    },
    "engine": {
        "name": "vllm",
        "args": {
            "max_model_len": 8192,
            "gpu-memory-utilization": 0.9,
            "enable-prefix-caching": False,
            "enforce-eager": True,
        },
    },
    "resources": {"gpus": 2, "requests": {"memory": "32Gi", "cpu": "8"}, "limits": {"memory": "64Gi"}},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}],
    "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
    "podLabels": {"team": "ml"},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "serviceAccountName": "models",
}

SGLANG_SPEC: dict[str, Any] = {
    "model": {
        "name": "qwen2.5-instruct",
        "format": "pytorch",
        "sizeInBillions": "7",
        "quantization": "none",
        "uri": "hf://Qwen/Qwen2.5-7B-Instruct",
    },
    "engine": {
        "name": "sglang",
        "args": {"mem-fraction-static": 0.85, "enable-metrics": True, "disable-radix-cache": False},
    },
    "resources": {"gpus": 2},
}

LLAMACPP_SPEC: dict[str, Any] = {
    "model": {
        "name": "qwen2.5-vl-instruct",
        "format": "ggufv2",
        "sizeInBillions": "7",
        "quantization": "Q4_K_M",
        "uri": "hf://unsloth/Qwen2.5-VL-7B-Instruct-GGUF",
        "file": "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
        "multimodalProjector": "mmproj-F16.gguf",
        "abilities": ["chat", "vision"],
    },
    "engine": {
        "name": "llama.cpp",
        "nGpuLayers": -1,
        "args": {"n_ctx": 16384, "n_parallel": 4, "cache_type_k": "q8_0", "flash_attn": True, "sampling.top_k": 40},
    },
    "cache": {"pvc": "model-cache"},
}

LLAMACPP_CPU_SPEC: dict[str, Any] = {
    "model": {
        "name": "qwen2.5-instruct",
        "format": "ggufv2",
        "sizeInBillions": "0_5",
        "quantization": "Q8_0",
        "uri": "pvc://shared-models/qwen/0.5b",
        "file": "qwen2.5-0.5b-instruct-q8_0.gguf",
    },
    "engine": {"name": "llama.cpp", "nGpuLayers": -1, "args": {"n_ctx": 4096, "sampling.temp": 0.7}},
    "nodeSelector": {"topology.kubernetes.io/zone": "eu-1a"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu-big"]}]},
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu-spot"]}]},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                }
            ],
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "llamacpp-cpu"}},
                    },
                }
            ]
        },
    },
}

TRANSFORMERS_SPEC: dict[str, Any] = {
    "model": {
        "name": "my-finetune",
        "family": "my-private-family",
        "format": "pytorch",
        "quantization": "none",
        "uri": "s3://models/my-finetune",
        "credentialsSecret": "s3-credentials",
    },
    "engine": {"name": "transformers", "args": {"continuous_batching": False}},
    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
    "cache": {"emptyDir": {"sizeLimit": "40Gi"}},
}

MLX_SPEC: dict[str, Any] = {
    "model": {
        "name": "qwen2.5-instruct",
        "format": "mlx",
        "sizeInBillions": "7",
        "quantization": "4bit",
        "uri": "hf://mlx-community/Qwen2.5-7B-Instruct-4bit",
    },
    "engine": {
        "name": "mlx",
        "args": {"max-tokens": 2048, "use-default-chat-template": False},
    },
}

# golden file name → (spec, engine, placement factory, uid)
GOLDEN_CASES: dict[str, tuple[dict[str, Any], str, Any, str | None]] = {
    "vllm": (VLLM_SPEC, "vllm", lambda: gpu_placement(2), "0b8a1f4e-7f1c-4d9a-9a57-1d2a3c4b5e6f"),
    "sglang": (SGLANG_SPEC, "sglang", lambda: gpu_placement(2), None),
    "llamacpp": (LLAMACPP_SPEC, "llama.cpp", lambda: gpu_placement(1), "4f1e2d3c-0000-4000-8000-000000000001"),
    "llamacpp-cpu": (LLAMACPP_CPU_SPEC, "llama.cpp", cpu_placement, None),
    "transformers": (TRANSFORMERS_SPEC, "transformers", cpu_placement, None),
    "mlx": (MLX_SPEC, "mlx", apple_placement, None),
}


def case(name: str) -> tuple[ModelDeployment, Decision]:
    """A golden case as (ModelDeployment, Decision); specs are copied so tests may mutate them."""
    spec, engine, placement, uid = GOLDEN_CASES[name]
    return md(copy.deepcopy(spec), name=name, uid=uid), decision(engine, placement())


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with top-level spec keys replaced."""
    spec = copy.deepcopy(base)
    spec.update(copy.deepcopy(changes))
    return spec
