"""The endpoint picker (EPP) behind each InferencePool: Deployment, Service, ServiceAccount, Role, RoleBinding.

A conformant gateway asks the pool's picker (`endpointPickerRef`) which pod serves each request; without
one the pool can only fail open. These objects are what the Inference Extension's `inferencepool` Helm
chart installs per pool, rendered per ModelDeployment so they are owned and pruned like our other
children (docs/gateway.md). Pure and deterministic.

Engines: the picker scrapes each pod's `/metrics` for its queue length and KV-cache use. Its defaults are
vLLM's names; for SGLang and llama.cpp the chart-style flags point it at those engines' gauges, and LoRA
scraping is switched off (an empty metric name) since neither exports vLLM's LoRA info gauge.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from modeldeploy.config.network import NetworkPolicySettings
from modeldeploy.config.scaling import GatewaySettings
from modeldeploy.render.labels import COMPONENT as COMPONENT_LABEL
from modeldeploy.render.labels import INSTANCE, NAME
from modeldeploy.render.network import picker_network_policy

EPP_SUFFIX = "-epp"
# A Service name (and a label value) is at most 63 characters; a ModelDeployment name may be 63 itself.
NAME_LIMIT = 63
_HASH_LEN = 8


def epp_name(pool: str) -> str:
    """`<pool>-epp`, or for pool names too long for that, a deterministic shortening within 63 characters:
    the head of the name, 8 hex digits of its SHA-256 (so two long names with one head differ), `-epp`.

    The picker's Service is what the InferencePool's endpointPickerRef names; Services are DNS-1035 labels
    (docs/gateway.md).
    """
    name = pool + EPP_SUFFIX
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(pool.encode()).hexdigest()[:_HASH_LEN]
    head = pool[: NAME_LIMIT - len(EPP_SUFFIX) - _HASH_LEN - 1].rstrip("-.")
    return f"{head}-{digest}{EPP_SUFFIX}"


# The picker image is distroless `nonroot` (uid 65532); a numeric uid lets the kubelet check runAsNonRoot.
EPP_UID = 65532
GRPC_HEALTH_PORT = 9003
METRICS_PORT = 9090
INFERENCE_GROUP = "inference.networking.k8s.io"
INFERENCE_X_GROUP = "inference.networking.x-k8s.io"
COMPONENT = "endpoint-picker"

# engine -> picker flags naming its gauges (vLLM: the picker's defaults, no flags).
ENGINE_METRIC_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "sglang": (
        ("--total-queued-requests-metric", "sglang:num_queue_reqs"),
        ("--kv-cache-usage-percentage-metric", "sglang:token_usage"),
        ("--lora-info-metric", ""),
    ),
    "llama.cpp": (
        ("--total-queued-requests-metric", "llamacpp:requests_deferred"),
        ("--kv-cache-usage-percentage-metric", "llamacpp:kv_cache_usage_ratio"),
        ("--lora-info-metric", ""),
    ),
}

# What the picker reads, as the chart's RBAC grants it: the pool, the pods it selects, and the
# objectives / model rewrites that refer to the pool. Read-only.
EPP_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [INFERENCE_GROUP], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [INFERENCE_X_GROUP],
        "resources": ["inferenceobjectives", "inferencemodelrewrites"],
        "verbs": ["get", "list", "watch"],
    },
)


def _meta(meta: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(meta)
    out["name"] = name
    out.setdefault("labels", {})[COMPONENT_LABEL] = COMPONENT
    return out


def epp_args(
    pool: str, namespace: str, engine: str, gateway: GatewaySettings, metrics_port: int | None = None
) -> list[str]:
    """The picker's command line: its pool, its ports, and the engine's gauge names.

    `metrics_port`: where the model pods serve /metrics when it is not the pool's target port (llama.cpp
    with an API key relays it on its own port; docs/security.md, "API keys")."""
    args = ["--pool-name", pool, "--pool-namespace", namespace]
    args += ["--grpc-port", str(gateway.endpoint_picker_port), "--grpc-health-port", str(GRPC_HEALTH_PORT)]
    args += ["--metrics-port", str(METRICS_PORT), "--zap-encoder", "json", "--tracing=false"]
    # As the chart does without its Prometheus monitoring: an authenticated metrics endpoint needs
    # cluster-wide TokenReview/SubjectAccessReview rights, which a per-pool Role cannot hold.
    args += ["--metrics-endpoint-auth=false"]
    for flag, value in ENGINE_METRIC_FLAGS.get(engine, ()):
        args += [flag, value]
    if metrics_port is not None:
        args += ["--model-server-metrics-port", str(metrics_port)]
    return args


def epp_objects(
    meta: dict[str, Any],
    engine: str,
    gateway: GatewaySettings,
    metrics_port: int | None = None,
    network: NetworkPolicySettings | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, Deployment and Service of the pool's picker, in that order, then
    its NetworkPolicy when `network` is enabled (docs/security.md, "NetworkPolicies").

    Empty when the pool has no endpointPickerRef (port 0) or the gateway brings its own picker.
    """
    if not gateway.endpoint_picker_port or not gateway.endpoint_picker.deploy:
        return []
    pool, namespace = meta["name"], meta["namespace"]
    name = epp_name(pool)
    # Its own name/instance on the pods, so neither the model's Service nor the pool selects the picker.
    selector = {NAME: "modeldeploy-epp", INSTANCE: name}
    health = {"port": GRPC_HEALTH_PORT, "service": "inference-extension"}
    container: dict[str, Any] = {
        "name": "epp",
        "image": gateway.endpoint_picker.image,
        "imagePullPolicy": "IfNotPresent",
        "args": epp_args(pool, namespace, engine, gateway, metrics_port),
        "ports": [
            {"name": "grpc", "containerPort": gateway.endpoint_picker_port},
            {"name": "grpc-health", "containerPort": GRPC_HEALTH_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "livenessProbe": {"grpc": dict(health), "initialDelaySeconds": 5, "periodSeconds": 10},
        "readinessProbe": {"grpc": dict(health), "periodSeconds": 2},
        "env": [
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "EPP_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": EPP_UID,
            "runAsGroup": EPP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_meta = {"labels": {**_meta(meta, name)["labels"], **selector}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(meta, name),
        "spec": {
            "replicas": 1,
            # One active picker (its prefix-cache scoring is stateful): the old one goes before the new starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": pod_meta,
                # Mirrors the longest grace period of the model pods, so in-flight picks drain (chart default).
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 130,
                    # Pod Security "restricted", like the model pods (docs/security.md, "Restricted pods").
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(meta, name),
        "spec": {
            "selector": dict(selector),
            "ports": [
                {
                    "name": "grpc-ext-proc",
                    "protocol": "TCP",
                    "port": gateway.endpoint_picker_port,
                    "appProtocol": "http2",
                },
                {"name": "http-metrics", "protocol": "TCP", "port": METRICS_PORT},
            ],
            "type": "ClusterIP",
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(meta, name)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(meta, name),
        "rules": copy.deepcopy(list(EPP_RULES)),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(meta, name),
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
    }
    objects: list[dict[str, Any]] = [account, role, binding, deployment, service]
    if network is not None and network.enabled:
        port = gateway.endpoint_picker_port
        objects.append(picker_network_policy(_meta(meta, name), selector, port, METRICS_PORT, gateway, network))
    return objects
