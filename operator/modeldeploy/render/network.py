"""The NetworkPolicies of a ModelDeployment: who may reach its model server and its endpoint picker. Pure.

docs/security.md ("NetworkPolicies"). The model pods accept connections on the serving port only (and on
the metrics relay's, where an API key puts /metrics on a port of its own), from pods of their own
namespace (clients, the endpoint picker scraping `/metrics`), from the Gateway's namespace, from the
monitoring namespace, and from KEDA's HTTP add-on interceptor when the model scales from zero. Their
egress is left open, as the fetch init container downloads the weights, except where the weights come
from the shared model cache (docs/model-cache.md): then the pod downloads nothing and may only resolve
names (DNS). The endpoint picker accepts its gRPC port from the Gateway's namespace and its
unauthenticated metrics port from the monitoring namespace only.

Namespace selectors come from the operator config (config/network.py); a namespace is selected by name
through `kubernetes.io/metadata.name`, which the apiserver sets on every namespace. Deterministic: same
input, same bytes.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.config.network import NAMESPACE_NAME, NetworkPolicySettings
from modeldeploy.config.scaling import GatewaySettings
from modeldeploy.engines import registry
from modeldeploy.render.containers import PORT
from modeldeploy.render.labels import selector_labels
from modeldeploy.render.objects import object_meta

API_VERSION = "networking.k8s.io/v1"
DNS_PORT = 53


def _namespaces(labels: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": dict(sorted(labels.items()))}}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def gateway_namespaces(namespace: str, gateway: GatewaySettings, network: NetworkPolicySettings) -> dict[str, str]:
    """The labels of the namespaces the Gateway's proxies connect from: the configured selector, else the
    Gateway's own namespace (the ModelDeployment's when `gateway.namespace` is empty)."""
    selector = network.gateway_namespace_selector
    return dict(selector) if selector else {NAMESPACE_NAME: gateway.namespace or namespace}


def _scales_from_zero(md: ModelDeployment, config: OperatorConfig) -> bool:
    spec = md.spec.autoscaling
    return config.autoscaling.http_addon.enabled and spec is not None and spec.min_replicas == 0


def model_network_policy(
    md: ModelDeployment, engine: str, config: OperatorConfig, shared_cache: bool
) -> dict[str, Any]:
    """The model pods' NetworkPolicy (named like the ModelDeployment). `shared_cache`: the weights are mounted
    from the shared model cache, so egress is limited to DNS."""
    namespace = md.metadata.namespace
    peers: list[dict[str, Any]] = [{"podSelector": {}}]  # every pod of the ModelDeployment's namespace
    if config.gateway.enabled:
        peers.append(_namespaces(gateway_namespaces(namespace, config.gateway, config.network_policies)))
    if config.network_policies.monitoring_namespace_selector:
        peers.append(_namespaces(config.network_policies.monitoring_namespace_selector))
    if _scales_from_zero(md, config):
        peers.append(_namespaces({NAMESPACE_NAME: config.autoscaling.http_addon.namespace}))
    ports = _tcp(PORT)
    # With an API key, an engine whose server asks for it on /metrics serves them on a relay port of its own
    # (docs/security.md, "API keys"): the picker and Prometheus reach that port from the same peers.
    relay = registry.get(engine).metrics_port(md.spec.auth is not None)
    if relay is not None and relay != PORT:
        ports += _tcp(relay)
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": selector_labels(md)},
        "policyTypes": ["Ingress", "Egress"] if shared_cache else ["Ingress"],
        "ingress": [{"from": peers, "ports": ports}],
    }
    if shared_cache:
        spec["egress"] = [{"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}]
    return {"apiVersion": API_VERSION, "kind": "NetworkPolicy", "metadata": object_meta(md, engine), "spec": spec}


def picker_network_policy(
    meta: dict[str, Any],
    pod_labels: dict[str, str],
    grpc_port: int,
    metrics_port: int,
    gateway: GatewaySettings,
    network: NetworkPolicySettings,
) -> dict[str, Any]:
    """The endpoint picker's NetworkPolicy (`meta`: its name, namespace, labels, owner): gRPC from the
    Gateway's namespace, metrics from the monitoring namespace; egress open (it watches the apiserver
    and scrapes the model pods)."""
    peers = [_namespaces(gateway_namespaces(meta["namespace"], gateway, network))]
    ingress = [{"from": peers, "ports": _tcp(grpc_port)}]
    if network.monitoring_namespace_selector:
        monitoring = _namespaces(network.monitoring_namespace_selector)
        ingress.append({"from": [monitoring], "ports": _tcp(metrics_port)})
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }
