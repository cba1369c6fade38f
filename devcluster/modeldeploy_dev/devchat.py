"""`modeldeploy dev chat NAME PROMPT`, and the conversation `modeldeploy dev demo` ends with.

A client on the host reaches the model the way a client in the cluster does: through the ModelDeployment's
Service, whose ClusterIP kube-proxy routes to a Ready pod on the real node (docs/real-node.md). This
sends one OpenAI chat completion there, streamed, so the time to the first token is measured where a
user would feel it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.render.containers import PORT
from modeldeploy.render.labels import COMPONENT, COMPONENT_VALUE, INSTANCE


class ChatError(RuntimeError):
    """The ModelDeployment cannot be talked to; the message is one sentence for the user."""


@dataclass(frozen=True)
class Reply:
    text: str
    first_token_s: float  # from sending the request
    total_s: float


def _ready(obj: dict[str, Any]) -> bool:
    ready = str((obj.get("status") or {}).get("ready") or "")
    done, _, want = ready.partition("/")
    return bool(want) and done == want and want != "0"


def _model_deployment(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any]:
    try:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise ChatError(f"there is no ModelDeployment {namespace}/{name} in the dev cluster") from None
        raise
    return dict(obj)


def endpoint(api: client.ApiClient, name: str, namespace: str = "default") -> str:
    """The base URL (http://CLUSTER-IP:PORT) of the ModelDeployment's Service, once a pod that runs on this
    machine (not a fake node's) is among its ready endpoints."""
    obj = _model_deployment(api, name, namespace)
    status = obj.get("status") or {}
    if not _ready(obj):
        reason = status.get("reason") or "not rolled out yet"
        raise ChatError(f"ModelDeployment {namespace}/{name} is not Ready ({status.get('ready') or '0/1'}: {reason})")
    core = client.CoreV1Api(api)
    selector = f"{INSTANCE}={name},{COMPONENT}={COMPONENT_VALUE}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    running = [p for p in pods if p.status.pod_ip and not p.metadata.deletion_timestamp]
    ready = [p for p in running if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())]
    if not ready:
        raise ChatError(
            f"ModelDeployment {namespace}/{name} has no Ready pod this machine runs: only pods on the real node "
            "run here (docs/real-node.md); the fake GPU and Apple nodes run nothing"
        )
    try:
        service = core.read_namespaced_service(name, namespace)
    except ApiException as exc:
        raise ChatError(f"ModelDeployment {namespace}/{name} has no Service ({exc.status})") from None
    port = next((p.port for p in service.spec.ports or () if p.target_port in (PORT, str(PORT), "http")), PORT)
    return f"http://{service.spec.cluster_ip}:{port}"


def api_key(api: client.ApiClient, name: str, namespace: str = "default") -> str | None:
    """The key spec.auth names, read from its Secret as any client that holds the key would have it; None
    when the ModelDeployment asks for none (docs/security.md, "API keys")."""
    obj = _model_deployment(api, name, namespace)
    ref = (((obj.get("spec") or {}).get("auth") or {}).get("apiKeySecret")) or {}
    if not ref:
        return None
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(ref["name"], namespace)
    except ApiException as exc:
        raise ChatError(f"cannot read the API key Secret {namespace}/{ref['name']} ({exc.status})") from None
    raw = (secret.data or {}).get(ref["key"])
    if raw is None:
        raise ChatError(f"the Secret {namespace}/{ref['name']} has no key {ref['key']} (spec.auth.apiKeySecret)")
    try:
        return base64.b64decode(raw).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise ChatError(f"the Secret {namespace}/{ref['name']} key {ref['key']} is not text") from None


def route(api: client.ApiClient, name: str, namespace: str, interceptor: str | None) -> tuple[str, str | None]:
    """Where to send the request, and the Host header: a model that scales from zero is asked through the
    KEDA HTTP add-on's interceptor, which holds the request while the first replica starts (its Service
    has no endpoint at zero, docs/autoscaling.md); any other through its Service."""
    obj = _model_deployment(api, name, namespace)
    scaling = (obj.get("spec") or {}).get("autoscaling") or {}
    if scaling and scaling.get("minReplicas") == 0:
        if interceptor is None:
            raise ChatError(f"ModelDeployment {namespace}/{name} scales from zero and no interceptor runs here")
        return interceptor, f"{name}.{namespace}.svc"
    return endpoint(api, name, namespace), None


# Greedy decoding makes the answer repeatable; a 135M model needs a plain system prompt to stay on task
# (without one, SmolLM2's GGUF template adds its own, and greedy decoding then rambles in French).
SYSTEM_PROMPT = "You are a helpful assistant."


def chat(
    base: str,
    model: str,
    prompt: str,
    max_tokens: int = 96,
    timeout: float = 120,
    system: str = SYSTEM_PROMPT,
    key: str | None = None,
    host: str | None = None,
) -> Reply:
    """One streamed chat completion at temperature 0 (with `key` as the bearer token when the model server
    asks for one); the reply's text and timings."""
    messages = [{"role": "system", "content": system}] if system else []
    body = {
        "model": model,
        "messages": [*messages, {"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    started = time.monotonic()
    first: float | None = None
    parts: list[str] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[5:]).get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece and first is None:
                        first = time.monotonic() - started
                    parts.append(piece)
    except urllib.error.HTTPError as exc:
        raise ChatError(f"{base} answered HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
    except (OSError, ValueError) as exc:
        raise ChatError(f"{base} did not answer the chat completion: {exc}") from None
    total = time.monotonic() - started
    return Reply("".join(parts).strip(), first if first is not None else total, total)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def timeline(api: client.ApiClient, name: str, namespace: str = "default") -> str:
    """Where the time went in the Ready pod, from its status (whole seconds, as the apiserver and the
    kubelet stamp them): created to scheduled, each init container's run, then the server's start to Ready
    (model load plus the probes' periods)."""
    selector = f"{INSTANCE}={name},{COMPONENT}={COMPONENT_VALUE}"
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    pod = next((p for p in pods if not p.metadata.deletion_timestamp), None)
    if pod is None or pod.status is None:
        return ""
    status = client.ApiClient().sanitize_for_serialization(pod.status)
    created = client.ApiClient().sanitize_for_serialization(pod.metadata).get("creationTimestamp")
    parts = []
    scheduled = next((c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), {})
    took = _seconds(created, scheduled.get("lastTransitionTime"))
    if took is not None:
        parts.append(f"scheduling {took:.0f} s")
    for init in status.get("initContainerStatuses") or ():
        done = (init.get("state") or {}).get("terminated") or {}
        took = _seconds(done.get("startedAt"), done.get("finishedAt"))
        if took is not None:
            parts.append(f"{init['name']} {took:.0f} s")
    engine = next(iter(status.get("containerStatuses") or ()), {})
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), {})
    took = _seconds(
        ((engine.get("state") or {}).get("running") or {}).get("startedAt"), ready.get("lastTransitionTime")
    )
    if took is not None:
        parts.append(f"server start → Ready {took:.0f} s")
    return ", ".join(parts)


def where_it_runs(api: client.ApiClient, kubeconfig: Path, name: str, namespace: str = "default") -> str:
    """One line on the pod that answered, checked as a user would check it: its node and runtime, its
    images, `kubectl exec … id -u`, `kubectl logs`, and `/v1/models` at the Service's ClusterIP."""
    core = client.CoreV1Api(api)
    selector = f"{INSTANCE}={name},{COMPONENT}={COMPONENT_VALUE}"
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items if p.status.pod_ip]
    if not pods:
        return "no pod with an IP"
    pod = pods[0]
    node = core.read_node(pod.spec.node_name)
    images = sorted({c.image.rsplit("/", 1)[-1] for c in (pod.spec.init_containers or []) + pod.spec.containers})
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace]
    uid = subprocess.run(
        [*kubectl, "exec", pod.metadata.name, "-c", "engine", "--", "id", "-u"], capture_output=True, text=True
    )
    logs = subprocess.run([*kubectl, "logs", pod.metadata.name, "-c", "engine"], capture_output=True, text=True)
    service = core.read_namespaced_service(name, namespace)
    models = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v1/models"
    try:
        with urllib.request.urlopen(models, timeout=10) as response:
            answered = f"HTTP {response.status}"
    except OSError as exc:
        answered = f"no answer ({exc})"
    return (
        f"pod {pod.metadata.name} on {pod.spec.node_name} ({node.status.node_info.container_runtime_version}), "
        f"images {', '.join(images)}; `kubectl exec … id -u`: {uid.stdout.strip() or uid.stderr.strip()}; "
        f"`kubectl logs`: {len(logs.stdout.splitlines())} lines; {models}: {answered}"
    )
