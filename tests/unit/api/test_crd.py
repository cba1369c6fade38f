"""The generated CRD: committed file fresh, schema structural, rules mirror the Python validators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api.crd import CRD_FILE, build_crd, crd_yaml
from modeldeploy.engines import registry

REPO = Path(__file__).resolve().parents[3]


def test_committed_crd_is_fresh() -> None:
    committed = (REPO / "crds" / CRD_FILE).read_text()
    assert committed == crd_yaml(registry), "crds/ is stale: run `modeldeploy crd > crds/" + CRD_FILE + "`"


def test_generation_is_deterministic() -> None:
    assert crd_yaml(registry) == crd_yaml(registry)


def _walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """Check the apiserver's structural-schema rules on every node."""
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "propertyNames"):
        if banned in node:
            problems.append(f"{path}: has {banned}")
    typed = node.get("type") or node.get("x-kubernetes-int-or-string")
    if not (typed or node.get("x-kubernetes-preserve-unknown-fields")):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if isinstance(node.get("additionalProperties"), bool):
        problems.append(f"{path}: boolean additionalProperties")
    exempt = path in ("", ".metadata") or path.endswith("[]") or "/additionalProperties" in path
    if not exempt and "description" not in node:
        problems.append(f"{path}: no description")
    for name, sub in node.get("properties", {}).items():
        _walk(sub, f"{path}.{name}", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}/additionalProperties", problems)
    if "items" in node:
        _walk(node["items"], f"{path}[]", problems)


def test_schema_is_structural_and_described() -> None:
    schema = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    _walk(schema, "", problems)
    assert problems == []


def test_crd_names_and_columns() -> None:
    crd = yaml.safe_load(crd_yaml(registry))
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["names"]["shortNames"] == ["mdep"]
    assert spec["names"]["categories"] == ["modeldeploy"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Engine", "Ready", "Model", "Endpoint", "Reason", "Age"]
    assert columns["Model"]["jsonPath"] == ".status.model.summary"
    assert columns["Endpoint"]["priority"] == 1


def test_cel_rules_present_for_each_engine_and_format_family() -> None:
    spec = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    engine_rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    for engine in ("vllm", "sglang", "llama.cpp", "transformers", "mlx"):
        assert any(f"self.engine.name != '{engine}'" in r for r in engine_rules), engine
    model_rules = spec["properties"]["model"]["x-kubernetes-validations"]
    quantization_rules = [r for r in model_rules if r["fieldPath"] == ".quantization"]
    assert len(quantization_rules) == 8  # ggufv2 plus one per format with a finite set of spellings
    assert {r["fieldPath"] for r in model_rules} == {".quantization", ".file", ".multimodalProjector"}
    assert spec["properties"]["engine"]["properties"]["nGpuLayers"]["minimum"] == -1
    assert spec["properties"]["resources"]["properties"]["gpus"]["minimum"] == 0


def test_cel_refuses_gpu_isolation_env() -> None:
    """The apiserver refuses NVIDIA_* and CUDA_VISIBLE_DEVICES in spec.env too (CEL needs `name` declared)."""
    env = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "env"
    ]
    assert env["maxItems"] == 256
    assert env["items"]["properties"]["name"]["type"] == "string" and env["items"]["required"] == ["name"]
    (rule,) = env["x-kubernetes-validations"]
    assert rule["rule"] == "self.all(e, !(e.name.startsWith('NVIDIA_') || e.name in ['CUDA_VISIBLE_DEVICES']))"
    assert "NVIDIA_*" in rule["message"]


@pytest.mark.parametrize("field", ["file", "multimodalProjector"])
def test_cel_keeps_model_files_inside_the_repository(field: str) -> None:
    model = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "model"
    ]
    (rule,) = [r for r in model["x-kubernetes-validations"] if r["fieldPath"] == f".{field}"]
    assert f"self.{field}.startsWith('/')" in rule["rule"] and f"self.{field}.contains('/../')" in rule["rule"]
    assert model["properties"][field]["maxLength"] == 1024  # bounds the rule's cost
