"""The NetworkPolicies rendered per ModelDeployment (docs/security.md, "NetworkPolicies"): the serving port
from the namespace, the Gateway's and the monitoring namespace; egress only DNS where the weights come from
the shared cache; the endpoint picker's gRPC from the Gateway only; switched off by the operator config."""

from __future__ import annotations

from typing import Any

from render_cases import LLAMACPP_CPU_SPEC, VLLM_SPEC, cpu_placement, decision, gpu_placement, md, with_spec

from modeldeploy.config import OperatorConfig
from modeldeploy.render import dump_yaml, render
from modeldeploy.scaling.attach import with_scaling
from modeldeploy.scaling.plan import HTTP_ROUTE, HTTP_SCALED_OBJECT, INFERENCE_POOL, SCALED_OBJECT

SELECTOR = {"app.kubernetes.io/instance": "m", "app.kubernetes.io/component": "model-server"}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
SAME_NAMESPACE = {"podSelector": {}}
DNS_ONLY = [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
ALL_CRDS = frozenset({SCALED_OBJECT, HTTP_SCALED_OBJECT, HTTP_ROUTE, INFERENCE_POOL})


def by_name(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def policies(spec: dict[str, Any], config: OperatorConfig, engine: str = "vllm") -> list[dict[str, Any]]:
    placement = gpu_placement(1) if engine == "vllm" else cpu_placement()
    objects = render(md(spec, uid="u-1"), decision(engine, placement), config)
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_by_default_the_serving_port_from_the_namespace_and_monitoring_and_egress_open() -> None:
    (policy,) = policies(with_spec(VLLM_SPEC), OperatorConfig())
    assert policy["metadata"]["name"] == "m" and policy["metadata"]["namespace"] == "models"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    # The fetch init container downloads the weights: egress is not restricted.
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]
    assert policy["spec"]["ingress"] == [
        {"from": [SAME_NAMESPACE, MONITORING], "ports": [{"protocol": "TCP", "port": 8000}]}
    ]


def test_with_an_api_key_llamacpps_metrics_relay_is_reachable_beside_the_serving_port() -> None:
    auth = {"apiKeySecret": {"name": "model-keys", "key": "api-key"}}
    (keyed,) = policies(with_spec(LLAMACPP_CPU_SPEC, auth=auth), OperatorConfig(), engine="llama.cpp")
    relay = [p for p in keyed["spec"]["ingress"][0]["ports"] if p["port"] != 8000]
    assert relay == [{"protocol": "TCP", "port": 8001}]
    # Without a key, /metrics is on the serving port: no second port is opened.
    (plain,) = policies(with_spec(LLAMACPP_CPU_SPEC), OperatorConfig(), engine="llama.cpp")
    assert plain["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    # vLLM leaves /metrics open on its serving port even with a key.
    (vllm,) = policies(with_spec(VLLM_SPEC, auth=auth), OperatorConfig())
    assert vllm["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_weights_from_the_shared_cache_leave_only_dns_egress() -> None:
    (policy,) = policies(with_spec(VLLM_SPEC, cache={"shared": {}}), OperatorConfig())
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == DNS_ONLY
    # A cache of the pod's own (emptyDir) is filled by the pod's fetcher: egress stays open.
    (own,) = policies(with_spec(VLLM_SPEC, cache={"emptyDir": {}}), OperatorConfig())
    assert own["spec"]["policyTypes"] == ["Ingress"]


def test_the_gateways_namespace_may_reach_the_serving_port() -> None:
    shared = OperatorConfig.model_validate({"gateway": {"name": "gw", "namespace": "gateways"}})
    (policy,) = policies(with_spec(VLLM_SPEC), shared)
    assert policy["spec"]["ingress"][0]["from"] == [SAME_NAMESPACE, by_name("gateways"), MONITORING]
    own = OperatorConfig.model_validate({"gateway": {"name": "gw"}})  # each namespace's own Gateway
    assert policies(with_spec(VLLM_SPEC), own)[0]["spec"]["ingress"][0]["from"][1] == by_name("models")
    selected = OperatorConfig.model_validate(
        {
            "gateway": {"name": "gw", "namespace": "gateways"},
            "networkPolicies": {
                "gatewayNamespaceSelector": {"gateway-proxies": "true"},
                "monitoringNamespaceSelector": {},
            },
        }
    )
    (policy,) = policies(with_spec(VLLM_SPEC), selected)
    assert policy["spec"]["ingress"][0]["from"] == [
        SAME_NAMESPACE,
        {"namespaceSelector": {"matchLabels": {"gateway-proxies": "true"}}},
    ]


def test_keda_http_addons_interceptor_may_reach_a_model_that_scales_from_zero() -> None:
    config = OperatorConfig.model_validate({"autoscaling": {"httpAddon": {"enabled": True, "namespace": "keda"}}})
    from_zero = {"minReplicas": 0, "maxReplicas": 2}
    (policy,) = policies(with_spec(VLLM_SPEC, autoscaling=from_zero), config)
    assert by_name("keda") in policy["spec"]["ingress"][0]["from"]
    (policy,) = policies(with_spec(VLLM_SPEC, autoscaling={"minReplicas": 1, "maxReplicas": 2}), config)
    assert by_name("keda") not in policy["spec"]["ingress"][0]["from"]


def test_switched_off_no_policy_is_rendered() -> None:
    config = OperatorConfig.model_validate({"networkPolicies": {"enabled": False}})
    assert policies(with_spec(VLLM_SPEC), config) == []
    assert policies(with_spec(LLAMACPP_CPU_SPEC), config, engine="llama.cpp") == []


def test_the_rendering_is_deterministic() -> None:
    config = OperatorConfig.model_validate({"gateway": {"name": "gw", "namespace": "gateways"}})
    spec = with_spec(VLLM_SPEC, cache={"shared": {}})
    assert dump_yaml(policies(spec, config)) == dump_yaml(policies(spec, config))


def _with_picker(config: OperatorConfig) -> list[dict[str, Any]]:
    the_md = md(with_spec(LLAMACPP_CPU_SPEC), uid="u-1")
    rendered = render(the_md, decision("llama.cpp", cpu_placement()), config)
    objects, _ = with_scaling(the_md, "llama.cpp", rendered, config, ALL_CRDS)
    return objects


def test_the_endpoint_picker_takes_grpc_from_the_gateway_only_and_metrics_from_monitoring() -> None:
    config = OperatorConfig.model_validate({"gateway": {"name": "gw", "namespace": "gateways"}})
    objects = _with_picker(config)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "NetworkPolicy"] == ["m", "m-epp"]
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "m-epp")
    picker = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "m-epp")
    assert policy["spec"]["podSelector"] == picker["spec"]["selector"]  # exactly the picker's pods
    assert policy["spec"]["podSelector"]["matchLabels"] != SELECTOR
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [by_name("gateways")], "ports": [{"protocol": "TCP", "port": 9002}]},
        {"from": [MONITORING], "ports": [{"protocol": "TCP", "port": 9090}]},
    ]
    off = config.model_copy(update={"network_policies": config.network_policies.model_copy(update={"enabled": False})})
    assert [o for o in _with_picker(off) if o["kind"] == "NetworkPolicy"] == []
