"""The objects a ScalingPlan renders: ScaledObject / HPA / HTTPScaledObject, InferencePool and HTTPRoute.

Pure and deterministic like the rest of rendering (same input, same bytes). The caller passes the
metadata (name, namespace, labels, owner) and the pod selector, so these objects are owned and
garbage-collected exactly like the Deployment.

The load signal: the engine's requests running plus waiting, summed over the ModelDeployment's pods.
Pods are matched by namespace and `pod=~"<name>-<hash>-<hash>"`: the labels every Prometheus pod scrape
has (PodMonitor or kubernetes_sd), and unambiguous because a Deployment's pod names add exactly two
dash-free segments (the regex is anchored), so `qwen` never matches the pods of `qwen-big`.
"""

from __future__ import annotations

import copy
from typing import Any

from modeldeploy.config.network import NetworkPolicySettings
from modeldeploy.config.scaling import AutoscalingSettings, GatewaySettings
from modeldeploy.scaling.epp import epp_name, epp_objects
from modeldeploy.scaling.plan import ScalingPlan

KEDA_API = "keda.sh/v1alpha1"
HTTP_ADDON_API = "http.keda.sh/v1alpha1"
INFERENCE_API = "inference.networking.k8s.io/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
SKIP_SCALED_OBJECT = "httpscaledobject.keda.sh/skip-scaledobject-creation"
# Set by the gateway's body-based router from the request's `model` field (Gateway API Inference Extension).
MODEL_HEADER = "X-Gateway-Model-Name"
# The per-pod metric a Prometheus adapter serves for the HPA fallback (the rule is in docs/autoscaling.md).
HPA_METRIC = "modeldeploy_requests_in_flight"
OPENAI_PATH = "/v1"


def load_query(metrics: tuple[str, ...], namespace: str, name: str) -> str:
    """PromQL: requests in flight over the ModelDeployment's pods (one selector, so a missing series is 0)."""
    names = "|".join(metrics)
    return f'sum({{__name__=~"{names}",namespace="{namespace}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"}})'


def _meta(meta: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    out = copy.deepcopy(meta)
    if name:
        out["name"] = name
    return out


def scaled_object(
    meta: dict[str, Any],
    plan: ScalingPlan,
    metrics: tuple[str, ...],
    target: int,
    delay_s: int,
    settings: AutoscalingSettings,
) -> dict[str, Any]:
    """KEDA ScaledObject on the Deployment: the Prometheus trigger, plus the HTTP add-on's when from zero."""
    name, namespace = meta["name"], meta["namespace"]
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "requests-in-flight",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": settings.prometheus_address,
                "query": load_query(metrics, namespace, name),
                "threshold": str(target),
                "ignoreNullValues": "true",
            },
        }
    ]
    if plan.scale_from_zero:
        triggers.append(
            {
                "type": "external-push",
                "name": "held-requests",
                "metadata": {"scalerAddress": settings.http_addon.scaler_address, "httpScaledObject": f"{name}-http"},
            }
        )
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": _meta(meta),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": plan.min_replicas,
            "maxReplicaCount": plan.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": delay_s,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": delay_s}},
                }
            },
            "triggers": triggers,
        },
    }


def http_scaled_object(
    meta: dict[str, Any], plan: ScalingPlan, port: int, target: int, settings: AutoscalingSettings
) -> dict[str, Any]:
    """HTTPScaledObject: the interceptor routes `<name>.<namespace>.svc` to the Service and holds requests
    while there is no replica; our ScaledObject carries its trigger (so it creates no ScaledObject itself).
    """
    name, namespace = meta["name"], meta["namespace"]
    out = _meta(meta, f"{name}-http")
    out.setdefault("annotations", {})[SKIP_SCALED_OBJECT] = "true"
    return {
        "apiVersion": HTTP_ADDON_API,
        "kind": "HTTPScaledObject",
        "metadata": out,
        "spec": {
            "hosts": [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"],
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "service": name,
                "port": port,
            },
            "replicas": {"min": plan.min_replicas, "max": plan.max_replicas},
            "scalingMetric": {"concurrency": {"targetValue": target}},
            "timeouts": {"conditionWait": settings.http_addon.cold_start_timeout},
        },
    }


def horizontal_pod_autoscaler(meta: dict[str, Any], plan: ScalingPlan, target: int, delay_s: int) -> dict[str, Any]:
    """autoscaling/v2 HPA on the per-pod in-flight metric a Prometheus adapter serves (min >= 1)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(meta),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"]},
            "minReplicas": max(plan.min_replicas, 1),
            "maxReplicas": plan.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": HPA_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(target)},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": delay_s}},
        },
    }


def inference_pool(
    meta: dict[str, Any], selector: dict[str, str], port: int, gateway: GatewaySettings
) -> dict[str, Any]:
    """One InferencePool per ModelDeployment: its pods, the serving port and the endpoint picker.

    The picker (`<name>-epp`) is the Inference Extension's load-aware scheduler; FailOpen lets the gateway
    still reach the pods while it is down rather than failing every request.
    """
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(selector)}, "targetPorts": [{"number": port}]}
    if gateway.endpoint_picker_port:
        spec["endpointPickerRef"] = {
            "name": epp_name(meta["name"]),
            "port": {"number": gateway.endpoint_picker_port},
            "failureMode": "FailOpen",
        }
    return {"apiVersion": INFERENCE_API, "kind": "InferencePool", "metadata": _meta(meta), "spec": spec}


def http_route(
    meta: dict[str, Any], served_name: str, plan: ScalingPlan, gateway: GatewaySettings, settings: AutoscalingSettings
) -> dict[str, Any]:
    """HTTPRoute on the configured Gateway: requests whose `model` is ours go to our pool.

    Scaling from zero, the backend is the KEDA HTTP add-on's interceptor instead (it holds the request
    while the first replica loads, then forwards to the Service); the Host is rewritten to the name the
    HTTPScaledObject routes on. The add-on's namespace must grant the route access (a ReferenceGrant,
    docs/gateway.md).
    """
    name, namespace = meta["name"], meta["namespace"]
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    rule: dict[str, Any] = {
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": OPENAI_PATH},
                "headers": [{"type": "Exact", "name": MODEL_HEADER, "value": served_name}],
            }
        ]
    }
    if plan.scale_from_zero:
        addon = settings.http_addon
        rule["filters"] = [{"type": "URLRewrite", "urlRewrite": {"hostname": f"{name}.{namespace}.svc"}}]
        rule["backendRefs"] = [
            {
                "group": "",
                "kind": "Service",
                "name": addon.interceptor_service,
                "namespace": addon.namespace,
                "port": addon.interceptor_port,
            }
        ]
    else:
        rule["backendRefs"] = [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name}]
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": _meta(meta),
        "spec": {"parentRefs": [parent], "rules": [rule]},
    }


def scaling_objects(
    meta: dict[str, Any],
    selector: dict[str, str],
    served_name: str,
    port: int,
    metrics: tuple[str, ...],
    target: int,
    delay_s: int,
    plan: ScalingPlan,
    settings: AutoscalingSettings,
    gateway: GatewaySettings,
    engine: str = "",
    metrics_port: int | None = None,
    network: NetworkPolicySettings | None = None,
) -> list[dict[str, Any]]:
    """Every object the plan asks for, in a fixed order (the pool's endpoint picker after the route).

    `metrics_port`: where the picker scrapes /metrics when it is not the serving port."""
    out: list[dict[str, Any]] = []
    if plan.autoscaler == "keda":
        out.append(scaled_object(meta, plan, metrics, target, delay_s, settings))
        if plan.scale_from_zero:
            out.append(http_scaled_object(meta, plan, port, target, settings))
    elif plan.autoscaler == "hpa":
        out.append(horizontal_pod_autoscaler(meta, plan, target, delay_s))
    if plan.route:
        out.append(inference_pool(meta, selector, port, gateway))
        out.append(http_route(meta, served_name, plan, gateway, settings))
        out.extend(epp_objects(meta, engine, gateway, metrics_port, network))
    return out
