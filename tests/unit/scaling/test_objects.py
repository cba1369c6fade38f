"""The rendered autoscaling and routing objects: load query, owners, routing by model name."""

from __future__ import annotations

from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.config.scaling import AutoscalingSettings, GatewaySettings, HttpAddonSettings
from modeldeploy.scaling import objects as so
from modeldeploy.scaling.plan import HTTP_ROUTE, HTTP_SCALED_OBJECT, INFERENCE_POOL, SCALED_OBJECT, plan_scaling

META = {"name": "qwen", "namespace": "ml", "labels": {"app.kubernetes.io/instance": "qwen"}}
SELECTOR = {"app.kubernetes.io/instance": "qwen", "app.kubernetes.io/component": "model-server"}
ALL = frozenset({SCALED_OBJECT, HTTP_SCALED_OBJECT, HTTP_ROUTE, INFERENCE_POOL})
METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")


DEFAULT = AutoscalingSettings()
GW = GatewaySettings(name="gw")


def _render(spec, settings=DEFAULT, gateway=GW):
    plan = plan_scaling(spec, True, "vllm", settings, gateway, ALL)
    return so.scaling_objects(META, SELECTOR, "qwen2.5-instruct", 8000, METRICS, 4, 120, plan, settings, gateway)


def test_query_sums_the_engine_gauges_of_this_deployments_pods_only() -> None:
    q = so.load_query(METRICS, "ml", "qwen")
    assert q == (
        'sum({__name__=~"vllm:num_requests_running|vllm:num_requests_waiting",namespace="ml",'
        'pod=~"qwen-[a-z0-9]+-[a-z0-9]+"})'
    )


def test_keda_scaled_object_and_route_to_the_pool() -> None:
    scaled, pool, route, *epp = _render(AutoscalingSpec(min_replicas=1, max_replicas=3))
    assert [o["kind"] for o in epp] == ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen"}
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["threshold"] == "4" and "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 120
    }
    assert pool["spec"]["selector"]["matchLabels"] == SELECTOR
    assert pool["spec"]["endpointPickerRef"]["name"] == "qwen-epp"
    match = route["spec"]["rules"][0]["matches"][0]
    assert match["headers"] == [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": "qwen2.5-instruct"}]
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
    assert all(o["metadata"]["name"] == "qwen" and o["metadata"]["namespace"] == "ml" for o in (scaled, pool, route))


def test_from_zero_the_route_goes_through_the_interceptor() -> None:
    settings = AutoscalingSettings(http_addon=HttpAddonSettings(enabled=True))
    scaled, http, _pool, route, *_epp = _render(AutoscalingSpec(min_replicas=0, max_replicas=3), settings)
    assert scaled["spec"]["minReplicaCount"] == 0
    push = scaled["spec"]["triggers"][1]
    assert push["type"] == "external-push" and push["metadata"]["httpScaledObject"] == "qwen-http"
    assert http["metadata"]["name"] == "qwen-http"
    assert http["metadata"]["annotations"][so.SKIP_SCALED_OBJECT] == "true"
    assert "qwen.ml.svc" in http["spec"]["hosts"]
    rule = route["spec"]["rules"][0]
    assert rule["backendRefs"][0]["name"] == "keda-add-ons-http-interceptor-proxy"
    assert rule["filters"][0]["urlRewrite"]["hostname"] == "qwen.ml.svc"
    assert META.get("annotations") is None  # the caller's metadata is never mutated


def test_rendering_is_deterministic() -> None:
    spec = AutoscalingSpec(min_replicas=0, max_replicas=5)
    settings = AutoscalingSettings(http_addon=HttpAddonSettings(enabled=True))
    assert _render(spec, settings) == _render(spec, settings)
