"""One engine module registered from outside the operator: selection, rendering, the CRD and the CLI
all pick it up, and nothing of it is left behind once it is unregistered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from toy_engine import Toy

from modeldeploy import __version__
from modeldeploy.api.crd import build_crd, crd_yaml
from modeldeploy.cli import main
from modeldeploy.engines import registry

REPO = Path(__file__).resolve().parents[3]
CPU_NODES = str(REPO / "examples" / "nodes" / "cpu-cluster.yaml")
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
BUILTIN = ("vllm", "sglang", "llama.cpp", "transformers", "mlx")


def md_yaml(engine: str = "toy", size: str = "1_5", fmt: str = "pytorch") -> str:
    return f"""apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {{name: tiny, namespace: demo}}
spec:
  model: {{name: tiny-llm, format: {fmt}, sizeInBillions: "{size}", uri: "hf://org/tiny-llm"}}
  engine: {{name: {engine}, args: {{max_batch: 4, stream: false}}}}
"""


@pytest.fixture
def toy() -> Iterator[Toy]:
    with registry.registered(Toy()) as engine:
        yield engine  # type: ignore[misc]
    assert "toy" not in registry.names()


def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, *argv: str) -> tuple[int, str, str]:
    path = tmp_path / "md.yaml"
    path.write_text(text)
    code = main([argv[0], "-f", str(path), "--nodes", CPU_NODES, *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_until_registered(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, tmp_path, md_yaml(), "select")
    assert code == 2
    assert "spec.engine.name: input should be 'auto', 'vllm', 'sglang', 'llama.cpp', 'transformers' or 'mlx'" in err
    assert registry.names() == BUILTIN


def test_crd_carries_the_toy(toy: Toy) -> None:
    version = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = version["properties"]["spec"]
    engine = spec["properties"]["engine"]["properties"]
    assert engine["name"]["enum"] == ["auto", *BUILTIN, "toy"]
    assert engine["preference"]["items"]["enum"] == [*BUILTIN, "toy"]
    selection = version["properties"]["status"]["properties"]["selection"]["items"]["properties"]
    assert selection["engine"]["enum"] == [*BUILTIN, "toy"]
    assert list(spec["properties"]["images"]["properties"])[-3:] == ["toy", "ngl", "fetch"]
    rule = spec["x-kubernetes-validations"][-1]
    assert "self.engine.name != 'toy' || self.model.format in ['pytorch']" in rule["rule"]
    assert "(it loads: pytorch)" in rule["messageExpression"]


def test_crd_back_to_the_committed_one_after(toy: Toy) -> None:
    assert crd_yaml(registry) != CRD_FILE.read_text()
    registry.unregister("toy")
    assert crd_yaml(registry) == CRD_FILE.read_text()
    registry.register(toy)  # the fixture unregisters it


def test_select_chooses_it_when_named(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, tmp_path, md_yaml(), "select", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["engine"] == "toy"
    first = doc["candidates"][0]
    assert first == {
        "engine": "toy",
        "eligible": True,
        "reasons": [
            "format pytorch is one Toy loads",
            "1_5B parameters fit Toy's limit of 3B",
            "3 of 4 nodes can host it (Linux): cpu-1, cpu-2, cpu-arm-1",
        ],
        "nodes": 3,
    }
    assert [c["engine"] for c in doc["candidates"]] == ["toy", "vllm", "llama.cpp", "mlx", "transformers", "sglang"]


def test_select_explains_why_not(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, tmp_path, md_yaml(size="7"), "select")
    assert code == 3
    assert "no engine can run: engine.name is toy and 7B parameters exceed Toy's limit of 3B" in out
    assert "toy" in out.split("\n", 2)[1]  # the table's first candidate row
    code, out, _ = cli(capsys, tmp_path, md_yaml(engine="auto"), "select", "-o", "json")
    toy_row = next(c for c in json.loads(out)["candidates"] if c["engine"] == "toy")
    assert toy_row["reasons"][-1] == "not chosen automatically: list it in engine.preference or set engine.name"


def test_preference_lists_it(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = md_yaml(engine="auto").replace("engine: {name: auto,", "engine: {preference: [toy, transformers],")
    code, out, _ = cli(capsys, tmp_path, text, "select", "-o", "json")
    assert (code, json.loads(out)["engine"]) == (0, "toy")


def test_render_uses_its_container(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, tmp_path, md_yaml(), "render")
    assert code == 0
    deployment, service, policy = yaml.safe_load_all(out)
    assert policy["kind"] == "NetworkPolicy"
    assert deployment["metadata"]["labels"]["modeldeploy.io/engine"] == "toy"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/modeldeploy/toy:{__version__}"
    assert container["command"] == [
        "toy-server",
        "--model",
        "/models/hf/org/tiny-llm/main",
        "--port",
        "8000",
        "--max-batch",
        "4",
        "--no-stream",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # The shared parts still apply after the engine's: security, CPU placement, fetch init container.
    assert container["securityContext"]["runAsNonRoot"] is True
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in container["env"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch"]
    assert service["spec"]["ports"][0]["port"] == 8000


def test_its_reserved_args_are_refused(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, tmp_path, md_yaml().replace("max_batch: 4", "port: 9"), "render")
    assert code == 2
    assert err.endswith("md.yaml: tiny: engine.args must not set --port: ModelDeploy sets it for toy\n")


def test_api_checks_its_formats(toy: Toy, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, tmp_path, md_yaml(fmt="ggufv2"), "select")
    assert code == 2
    assert "engine.name toy cannot load model.format ggufv2 (it loads: pytorch)" in err


def test_a_name_cannot_be_taken_twice(toy: Toy) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Toy())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Auto", (Toy,), {"name": "auto"})())
