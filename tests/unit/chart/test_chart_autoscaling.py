"""The chart's autoscaling, gateway and engine-metrics toggles: lint, render, reach the operator's config."""

from __future__ import annotations

from pathlib import Path

import yaml

from modeldeploy.config import OperatorConfig
from tests.support.chart import CHART, by_kind, operator_roles, run_helm, template

TOGGLES = ("-f", str(CHART / "ci" / "autoscaling-values.yaml"))


def _config(objects: list[dict]) -> OperatorConfig:
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    return OperatorConfig.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))


def test_lint_strict_with_every_toggle_on(helm: Path) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *TOGGLES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_defaults_render_no_podmonitor_and_no_gateway(helm: Path) -> None:
    objects = template(helm)
    assert by_kind(objects, "PodMonitor") == []
    config = _config(objects)
    assert not config.gateway.enabled and config.autoscaling.keda and not config.autoscaling.http_addon.enabled


def test_toggles_reach_the_operator_and_render_one_podmonitor_per_engine(helm: Path) -> None:
    objects = template(helm, *TOGGLES)
    config = _config(objects)
    assert config.gateway.name == "inference-gateway" and config.gateway.namespace == "gateways"
    assert config.autoscaling.http_addon.enabled
    assert config.autoscaling.prometheus_address == "http://prometheus.monitoring.svc:9090"
    monitors = by_kind(objects, "PodMonitor")
    assert [m["spec"]["selector"]["matchLabels"]["modeldeploy.io/engine"] for m in monitors] == [
        "vllm",
        "sglang",
        "llama.cpp",
    ]
    http = {"port": "http", "path": "/metrics", "interval": "15s"}
    for m in monitors[:2]:
        assert m["spec"]["podMetricsEndpoints"] == [http]
    # llama.cpp with an API key relays /metrics on the port named `metrics`, and its pods carry a label
    # that keeps them from being scraped (and failing with 401) on `http` (docs/security.md, "API keys").
    drop = {
        "sourceLabels": ["__meta_kubernetes_pod_label_modeldeploy_io_metrics_port"],
        "regex": "metrics",
        "action": "drop",
    }
    assert monitors[2]["spec"]["podMetricsEndpoints"] == [
        {**http, "relabelings": [drop]},
        {"port": "metrics", "path": "/metrics", "interval": "15s"},
    ]
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "prometheus"
        assert m["spec"]["namespaceSelector"] == {"any": True}


def test_rbac_covers_the_autoscaling_and_routing_kinds(helm: Path) -> None:
    (role,) = operator_roles(template(helm))
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for pair in [
        ("keda.sh", "scaledobjects"),
        ("http.keda.sh", "httpscaledobjects"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("inference.networking.k8s.io", "inferencepools"),
        ("gateway.networking.k8s.io", "httproutes"),
    ]:
        assert pair in granted


def test_bad_toggle_values_are_refused(helm: Path) -> None:
    for bad, where in [
        ("config.gateway.name=Not_A_Name", "/config/gateway/name"),
        ("config.autoscaling.prometheusAddress=prometheus:9090", "/config/autoscaling/prometheusAddress"),
        ("engineMetrics.podMonitor.enabled=yes", "/engineMetrics/podMonitor/enabled"),
    ]:
        proc = run_helm(helm, "template", "md", str(CHART), "--set", bad)
        assert proc.returncode != 0 and where in proc.stderr, (bad, proc.stderr)
