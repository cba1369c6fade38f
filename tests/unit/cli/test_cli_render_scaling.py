"""`modeldeploy render --addons`: what the operator applies on a cluster with those add-ons installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modeldeploy.cli import main

REPO = Path(__file__).resolve().parents[3]
NODES = str(REPO / "examples" / "nodes" / "cpu-cluster.yaml")
MD = """apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {name: chat, namespace: ml}
spec:
  model: {name: qwen2.5-instruct, format: ggufv2, quantization: Q4_K_M, uri: /models/q.gguf}
  autoscaling: {minReplicas: 0, maxReplicas: 3}
"""
CONFIG = "gateway: {name: inference}\nautoscaling: {httpAddon: {enabled: true}}\n"
EVERYTHING = "keda,keda-http-addon,gateway-api,inference-extension"


def _render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict]:
    (tmp_path / "md.yaml").write_text(MD)
    (tmp_path / "config.yaml").write_text(CONFIG)
    argv = ["render", "-f", str(tmp_path / "md.yaml"), "--nodes", NODES, "--config", str(tmp_path / "config.yaml")]
    assert main([*argv, *extra]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_with_every_addon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = _render(tmp_path, capsys, "--addons", EVERYTHING)
    kinds = [o["kind"] for o in objects]
    model = ["Deployment", "Service", "NetworkPolicy"]
    assert kinds == [*model, "ScaledObject", "HTTPScaledObject", "InferencePool", "HTTPRoute"] + [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
    ]
    assert all(o["metadata"]["name"] == objects[0]["metadata"]["name"] + "-epp" for o in objects[7:])
    assert objects[0]["spec"]["replicas"] == 1 and objects[3]["spec"]["minReplicaCount"] == 0
    assert "--alias" in objects[0]["spec"]["template"]["spec"]["containers"][0]["command"]


def test_on_a_plain_cluster_an_hpa_and_no_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = _render(tmp_path, capsys)
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"]
    assert objects[3]["spec"]["minReplicas"] == 1


def test_unknown_addon_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "md.yaml").write_text(MD)
    code = main(["render", "-f", str(tmp_path / "md.yaml"), "--nodes", NODES, "--addons", "kedda"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown add-on 'kedda'" in err and len(err.strip().splitlines()) == 1
