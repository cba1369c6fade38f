"""Fake node sets, the dev command's parsing and settling rule, the CLI pass-through, build caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy import cli
from modeldeploy.controller.run import default_priority
from modeldeploy_dev import build, dev
from modeldeploy_dev.nodes import is_ready, load_node_set

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "nodes"


def test_bundled_node_set_has_gpu_cpu_and_apple_nodes() -> None:
    nodes = load_node_set(dev.DEFAULT_NODES)
    labels = [n["metadata"].get("labels", {}) for n in nodes]
    assert any("nvidia.com/gpu" in (n["status"].get("allocatable") or {}) for n in nodes)
    assert any(lab.get("kubernetes.io/os") == "darwin" for lab in labels)
    assert any(lab.get("modeldeploy.io/accelerator") == "apple-silicon" for lab in labels)
    ready = [n["metadata"]["name"] for n in nodes if is_ready(n)]
    assert 0 < len(ready) < len(nodes)  # the set also shows a NotReady node


def test_node_set_accepts_a_stream_of_nodes(tmp_path: Path) -> None:
    f = tmp_path / "n.yaml"
    f.write_text("kind: Node\nmetadata: {name: a}\n---\nkind: Node\nmetadata: {name: b}\n---\nkind: Pod\n")
    assert [n["metadata"]["name"] for n in load_node_set(f)] == ["a", "b"]


def test_settled_needs_the_current_generation_and_a_decision() -> None:
    obj = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "ready": "0/1", "engine": "vllm"}}
    assert not dev.settled(obj)
    obj["status"]["observedGeneration"] = 2
    assert dev.settled(obj)
    obj["status"] = {"observedGeneration": 2, "ready": "0/1", "engine": None, "reason": "NoEligibleEngine"}
    assert dev.settled(obj)
    obj["status"] = {"observedGeneration": 2}
    assert not dev.settled(obj)


def test_why_is_the_engine_selected_message_and_why_not_ready() -> None:
    selected = {"type": "EngineSelected", "status": "True", "message": "vllm: first eligible"}
    ready = {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "1/1"}
    assert dev.why({"status": {"conditions": [ready, selected]}}) == "vllm: first eligible"
    ready = {"type": "Ready", "status": "False", "reason": "Unschedulable", "message": "0/7 nodes are available"}
    assert dev.why({"status": {"conditions": [ready, selected]}}).endswith(
        "not ready (Unschedulable): 0/7 nodes are available"
    )
    assert dev.why({}) == "(not decided yet)"


def test_dev_requires_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        dev.main([])
    assert exc.value.code == 2
    assert "ACTION" in capsys.readouterr().err


def test_dev_status_without_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dev", "--dir", str(tmp_path), "status"]) == 1
    assert "no dev cluster runs" in capsys.readouterr().out
    assert cli.main(["dev", "--dir", str(tmp_path), "down"]) == 0


def test_run_passes_leading_options_through(capsys: pytest.CaptureFixture[str]) -> None:
    # --help proves the operator's own parser got `--standalone --help` (argparse REMAINDER used to refuse it)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--standalone", "--help"])
    assert exc.value.code == 0
    assert "--peering" in capsys.readouterr().out


def test_peering_priority_from_the_pod_name() -> None:
    assert default_priority(None) is None
    a, b = default_priority("modeldeploy-7c9d-abcde"), default_priority("modeldeploy-7c9d-fghij")
    assert a == default_priority("modeldeploy-7c9d-abcde")  # stable across restarts of the same pod
    assert a != b and all(1 <= p <= 10000 for p in (a, b))  # type: ignore[operator]


def test_missing_binaries_override_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_K8S_BIN", str(tmp_path))
    with pytest.raises(build.BuildError, match="lacks one of kube-apiserver"):
        build.ensure_binaries()


def test_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELDEPLOY_K8S_BIN", raising=False)
    monkeypatch.setenv("MODELDEPLOY_CACHE", str(tmp_path))
    assert build.bin_dir() == tmp_path / "k8s" / build.K8S_VERSION / "bin"


def test_wrapper_module_replaces_every_staging_module() -> None:
    gomod = (build.GOMOD_DIR / "go.mod").read_text()
    assert f"k8s.io/kubernetes {build.K8S_VERSION}" in gomod
    minor = build.K8S_VERSION.split(".", 1)[1]
    replaces = [line.split() for line in gomod.splitlines() if "=>" in line]
    assert len(replaces) > 25
    assert all(r[0] == r[2] and r[3] == f"v0.{minor}" for r in replaces)


def test_demo_nodes_are_the_mixed_cluster_with_more_l4_gpus() -> None:
    """demo-cluster.yaml is derived from mixed-cluster.yaml; this keeps the two from drifting apart."""
    mixed = {n["metadata"]["name"]: n for n in load_node_set(EXAMPLES / "mixed-cluster.yaml")}
    demo = {n["metadata"]["name"]: n for n in load_node_set(dev.DEFAULT_NODES)}
    assert demo.keys() == mixed.keys()
    for name, node in demo.items():
        if name == "gpu-l4-1":
            assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
            assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
            continue
        assert node == mixed[name], name
