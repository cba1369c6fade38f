"""The example node sets (examples/nodes/) give the decisions the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from selection_factories import CONFIG, spec

from modeldeploy.config import LabelMappings
from modeldeploy.selection import facts_from_document, select_engine
from modeldeploy.selection.types import NodeFacts

GGUF = {"fmt": "ggufv2", "quantization": "Q4_K_M"}
MLX = {"fmt": "mlx", "quantization": "4bit"}


def load(repo_root: Path, name: str) -> list[NodeFacts]:
    return facts_from_document((repo_root / "examples" / "nodes" / f"{name}.yaml").read_text(), LabelMappings())


def test_gpu_cluster_facts(repo_root: Path) -> None:
    nodes = {n.name: n for n in load(repo_root, "gpu-cluster")}
    assert list(nodes) == ["cp-1", "gpu-a100-1", "gpu-l4-1"]
    a100 = nodes["gpu-a100-1"]
    assert (a100.gpus, a100.gpu_memory_mib, a100.gpu_product, a100.compute_capability) == (
        8,
        81920,
        "NVIDIA-A100-SXM4-80GB",
        (8, 0),
    )
    assert nodes["cp-1"].gpus == 0


def test_mixed_cluster_facts(repo_root: Path) -> None:
    nodes = {n.name: n for n in load(repo_root, "mixed-cluster")}
    assert nodes["gpu-a10g-1"].unschedulable and nodes["gpu-a10g-1"].gpus == 1
    assert not nodes["cpu-2"].ready
    assert nodes["mac-mini-1"].apple_silicon and nodes["mac-mini-1"].os == "darwin"
    assert nodes["mac-studio-1"].apple_silicon and nodes["mac-studio-1"].os == "linux"  # by the label only
    assert sum(n.apple_silicon for n in nodes.values()) == 2


@pytest.mark.parametrize(
    ("cluster", "kwargs", "engine", "nodes", "gpus"),
    [
        ("gpu-cluster", {}, "vllm", ("gpu-a100-1", "gpu-l4-1"), 1),
        ("gpu-cluster", {"gpus": 4}, "vllm", ("gpu-a100-1",), 4),
        ("gpu-cluster", GGUF, "llama.cpp", ("gpu-a100-1", "gpu-l4-1"), 1),
        ("cpu-cluster", {}, "transformers", ("cpu-1", "cpu-2", "cpu-arm-1"), 0),
        ("cpu-cluster", GGUF, "llama.cpp", ("cpu-1", "cpu-2", "cpu-arm-1"), 0),
        ("mixed-cluster", {}, "vllm", ("gpu-l4-1",), 1),
        ("mixed-cluster", GGUF, "llama.cpp", ("gpu-l4-1",), 1),
        ("mixed-cluster", MLX, "mlx", ("mac-mini-1", "mac-studio-1"), 0),
        ("mixed-cluster", {"name": "my-model", "gpus": 0}, "transformers", ("cpu-1", "mac-studio-1"), 0),
    ],
)
def test_example_decisions(
    repo_root: Path, cluster: str, kwargs: dict, engine: str, nodes: tuple[str, ...], gpus: int
) -> None:
    d = select_engine(spec(**kwargs), load(repo_root, cluster), CONFIG)
    assert d.engine == engine
    chosen = next(c for c in d.candidates if c.engine == engine)
    assert chosen.nodes == nodes
    assert d.placement is not None and d.placement.gpus == gpus


def test_cpu_cluster_explains_vllm_and_the_control_plane(repo_root: Path) -> None:
    d = select_engine(spec(), load(repo_root, "cpu-cluster"), CONFIG)
    vllm = d.candidates[0]
    assert vllm.reasons[-1] == "no usable node is Linux with a CUDA GPU (4 nodes: 4 CPU-only)"
    d = select_engine(spec(gpus=0, name="my-model"), load(repo_root, "gpu-cluster"), CONFIG)
    assert d.engine is None
    assert d.summary.endswith(
        "transformers: no usable node is Linux (3 nodes: 1 tainted node-role.kubernetes.io/control-plane:NoSchedule "
        "(not tolerated), 2 tainted nvidia.com/gpu=present:NoSchedule (not tolerated))"
    )


def test_mixed_cluster_without_enough_gpus(repo_root: Path) -> None:
    d = select_engine(spec(gpus=4), load(repo_root, "mixed-cluster"), CONFIG)
    assert d.engine is None
    assert d.candidates[0].reasons[-1] == (
        "no usable node is Linux with at least 4 CUDA GPUs (7 nodes: 4 CPU-only, 2 with fewer than 4 CUDA GPUs, "
        "1 not Linux)"
    )


def test_mixed_cluster_when_the_last_usable_gpu_node_is_gone(repo_root: Path) -> None:
    nodes = [n for n in load(repo_root, "mixed-cluster") if n.name != "gpu-l4-1"]
    d = select_engine(spec(), nodes, CONFIG, current="vllm")
    assert d.current_impossible
    assert d.summary == (
        "the running engine vllm can no longer run: no usable node is Linux with a CUDA GPU (6 nodes: 4 CPU-only, "
        "1 cordoned, 1 not Linux); the Deployment is left as it is (transformers could run instead; annotate "
        'modeldeploy.io/reselect: "true" to choose again)'
    )
