"""Small builders for the selection tests: Node dicts as kubectl prints them, NodeFacts, specs."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.selection.nodes import node_facts
from modeldeploy.selection.types import NodeFacts

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def node_dict(
    name: str,
    *,
    os: str = "linux",
    arch: str = "amd64",
    gpus: int = 0,
    gfd: bool = True,
    ready: bool | None = True,
    cordoned: bool = False,
    taints: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node in the camelCase shape of `kubectl get nodes -o yaml`; GPU nodes get GFD labels and the taint."""
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": os, "kubernetes.io/arch": arch}
    allocatable: dict[str, Any] = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    node_taints = list(taints or [])
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
        if gfd:
            all_labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": "NVIDIA-L4",
                "nvidia.com/gpu.memory": "23034",
                "nvidia.com/gpu.compute.major": "8",
                "nvidia.com/gpu.compute.minor": "9",
            }
        if taints is None:
            node_taints.append(dict(GPU_TAINT))
    all_labels |= labels or {}
    conditions = [] if ready is None else [{"type": "Ready", "status": "True" if ready else "False"}]
    spec: dict[str, Any] = {"taints": node_taints} if node_taints else {}
    if cordoned:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {"allocatable": allocatable, "capacity": dict(allocatable), "conditions": conditions},
    }


def facts(name: str, **kwargs: Any) -> NodeFacts:
    return node_facts(node_dict(name, **kwargs), LabelMappings())


def gpu(name: str = "gpu-1", gpus: int = 1, **kwargs: Any) -> NodeFacts:
    return facts(name, gpus=gpus, **kwargs)


def cpu(name: str = "cpu-1", **kwargs: Any) -> NodeFacts:
    return facts(name, **kwargs)


def mac(name: str = "mac-1", **kwargs: Any) -> NodeFacts:
    return facts(name, os="darwin", arch="arm64", **kwargs)


def spec(
    name: str = "qwen2.5-instruct",
    fmt: str = "pytorch",
    quantization: str | None = None,
    *,
    family: str | None = None,
    engine: dict[str, Any] | None = None,
    gpus: int | None = None,
    **extra: Any,
) -> ModelDeploymentSpec:
    """A spec whose model passes every vLLM model rule unless told otherwise."""
    model: dict[str, Any] = {"name": name, "format": fmt, "uri": "hf://org/repo"}
    if quantization is not None:
        model["quantization"] = quantization
    if family is not None:
        model["family"] = family
    model |= extra.pop("model", {})
    data: dict[str, Any] = {"model": model, **extra}
    if engine:
        data["engine"] = engine
    if gpus is not None:
        data["resources"] = {"gpus": gpus}
    return ModelDeploymentSpec.model_validate(data)


CONFIG = OperatorConfig()
