"""`modeldeploy memory`, `select --nodes` and `render --nodes` read the same estimate (docs/memory-placement.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modeldeploy.cli import main

REPO = Path(__file__).resolve().parents[3]
NODES = str(REPO / "examples" / "nodes" / "gpu-classes.yaml")
LLAMA_70B = """apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {name: llama70b, namespace: models}
spec:
  model: {name: llama-3.1-instruct, format: pytorch, quantization: none, uri: "hf://meta-llama/Llama-3.1-70B-Instruct"}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def test_memory_prints_each_engine_on_each_kind_of_gpu_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "md.yaml"
    md.write_text(LLAMA_70B)
    code, out = run(capsys, "memory", "-f", str(md), "--nodes", NODES)
    assert code == 0
    assert "Llama-3.1-70B (meta-llama/Llama-3.1-70B-Instruct), bf16, 131.4 GiB of weights from the parameters" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  vllm") or line.startswith("  sglang")]
    assert [(r[0], r[1], r[5], r[6]) for r in rows] == [
        ("vllm", "gpu-t4-1", "-", "no"),
        ("vllm", "gpu-l4-1", "-", "no"),
        ("vllm", "gpu-a100-1", "4", "fits"),
        ("sglang", "gpu-t4-1", "-", "no"),
        ("sglang", "gpu-l4-1", "-", "no"),
        ("sglang", "gpu-a100-1", "4", "fits"),
    ]


def test_render_with_nodes_requests_the_tensor_parallel_size_select_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md = tmp_path / "md.yaml"
    md.write_text(LLAMA_70B)
    code, out = run(capsys, "select", "-f", str(md), "--nodes", NODES)
    assert code == 0 and "tensor parallel 4: the smallest that holds Llama-3.1-70B" in out
    code, out = run(capsys, "render", "-f", str(md), "--nodes", NODES)
    assert code == 0
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    engine = next(c for c in pod["containers"] if c["name"] == "engine")
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "4"
    command = engine["command"] + engine.get("args", [])
    assert command[command.index("--tensor-parallel-size") + 1] == "4"
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {e["key"]: e for e in term["matchExpressions"]}
    assert keys["nvidia.com/gpu.memory"]["operator"] == "Gt"
    assert keys["nvidia.com/gpu.compute.major"] == {
        "key": "nvidia.com/gpu.compute.major",
        "operator": "Gt",
        "values": ["7"],
    }


def test_a_node_with_fewer_gpus_than_the_asked_tensor_parallel_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md = tmp_path / "md.yaml"
    md.write_text(LLAMA_70B.replace("llama70b", "llama8b").replace("70B", "8B") + "  resources: {gpus: 2}\n")
    code, out = run(capsys, "memory", "-f", str(md), "--nodes", NODES)
    assert code == 0
    l4 = next(line for line in out.splitlines() if line.startswith("  vllm") and "gpu-l4-1" in line)
    assert " no " in l4 and "1 GPU(s) < tensor parallel 2 (resources.gpus)" in l4
    a100 = next(line for line in out.splitlines() if line.startswith("  vllm") and "gpu-a100-1" in line)
    assert " fits " in a100
