"""bench/peer.py's arithmetic and its KServe set-up, without a cluster (the run itself is not part of CI)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peer", REPO / "bench" / "peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = module
    spec.loader.exec_module(module)
    return module


def test_ratio_is_ours_over_theirs_and_none_where_meaningless(peer: ModuleType) -> None:
    assert peer.ratio(12.0, 4.0) == 3.0
    assert peer.ratio(1.0, 3.0) == 0.33
    assert peer.ratio(5.0, 0) is None  # a peer that made no request: no ratio, the raw figures say it
    assert peer.ratio(None, 3.0) is None
    assert peer.ratio(math.nan, 3.0) is None
    got = peer.ratios({"converge_s": 40.0, "cpu_ms_per_object": 9.0}, {"converge_s": 20.0, "cpu_ms_per_object": 3.0})
    assert got == {"converge_s": 2.0, "cpu_ms_per_object": 3.0}


def test_latency_counts_objects_never_seen(peer: ModuleType) -> None:
    created = {f"o{i}": float(i) for i in range(100)}
    seen = {f"o{i}": i + 1.0 for i in range(99)}  # o99 never got its Deployment
    got = peer.latency_figures(created, seen, "create_to_deployment")
    assert got == {
        "create_to_deployment_p50_ms": 1000,
        "create_to_deployment_p99_ms": 1000,
        "create_to_deployment_missing": 1,
    }


def test_status_written_needs_this_generation(peer: ModuleType) -> None:
    ours = {"kind": "ModelDeployment", "metadata": {"generation": 2}}
    assert not peer.status_written({**ours, "status": {"observedGeneration": 1, "engine": "llama.cpp"}})
    assert peer.status_written({**ours, "status": {"observedGeneration": 2, "engine": "llama.cpp"}})
    assert peer.status_written({**ours, "status": {"observedGeneration": 2, "reason": "NoFeasibleNode"}})
    isvc = {"kind": "InferenceService", "metadata": {"generation": 1}}
    assert not peer.status_written({**isvc, "status": {}})
    assert peer.status_written({**isvc, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready"}]}})


def test_kserve_webhooks_point_at_the_manager_and_keep_only_what_the_bench_uses(
    peer: ModuleType, tmp_path: Path
) -> None:
    hook = {"clientConfig": {"service": {"name": "svc", "namespace": "kserve", "path": ""}}, "name": "h"}

    def config(kind: str, name: str, *paths: str) -> dict[str, object]:
        hooks = [{**hook, "clientConfig": {"service": {**hook["clientConfig"]["service"], "path": p}}} for p in paths]
        return {"kind": kind, "metadata": {"name": name}, "webhooks": hooks}

    docs = [
        config(
            "MutatingWebhookConfiguration",
            "inferenceservice.serving.kserve.io",
            "/mutate-serving-kserve-io-v1beta1-inferenceservice",
            "/mutate-pods",
        ),
        config("ValidatingWebhookConfiguration", "trainedmodel", "/validate-serving-kserve-io-v1alpha1-trainedmodel"),
    ]
    (tmp_path / "config" / "webhook").mkdir(parents=True)
    (tmp_path / "config" / "webhook" / "manifests.yaml").write_text(yaml.safe_dump_all(docs))
    got = peer.kserve_webhooks(tmp_path, 9443, "Q0E=")
    assert [d["metadata"]["name"] for d in got] == ["bench-inferenceservice.serving.kserve.io"]
    assert [h["clientConfig"] for h in got[0]["webhooks"]] == [
        {"url": "https://127.0.0.1:9443/mutate-serving-kserve-io-v1beta1-inferenceservice", "caBundle": "Q0E="},
        {"url": "https://127.0.0.1:9443/mutate-pods", "caBundle": "Q0E="},
    ]


def test_kserve_config_runs_standard_mode(peer: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "config" / "configmap").mkdir(parents=True)
    data = {"deploy": '{"defaultDeploymentMode": "Serverless"}', "ingress": '{"ingressDomain": "example.com"}'}
    doc = {"metadata": {"name": "x", "namespace": "y"}, "data": data}
    (tmp_path / "config" / "configmap" / "inferenceservice.yaml").write_text(yaml.safe_dump(doc))
    got = peer.kserve_config(tmp_path)
    assert got["metadata"] == {"name": "inferenceservice-config", "namespace": "kserve"}
    assert json.loads(got["data"]["deploy"])["defaultDeploymentMode"] == "Standard"
    assert json.loads(got["data"]["ingress"]) == {"ingressDomain": "example.com", "disableIstioVirtualHost": True}
