"""Scale from zero and on load, for real: KEDA, its HTTP add-on and Prometheus drive the operator's Deployment.

What is real: KEDA v2.21.0 (operator and metrics adapter, aggregated as external.metrics.k8s.io), the
HTTP add-on v0.12.0 (interceptor and scaler) and Prometheus 3.16.0, built from their Go modules and run
as processes beside the control plane (modeldeploy_dev/autoscaling.py, docs/autoscaling.md); the
ScaledObject and HTTPScaledObject the operator's reconcile applies for `minReplicas: 0`; the
kube-controller-manager's HPA controller that KEDA drives above one replica; and every pod, on the real
node (fetch from the local Hub server, auto-NGL, our llama.cpp entrypoint serving SmolLM2-135M).
Prometheus scrapes the pods by the labels the chart's PodMonitors select. A chat request is sent as a
user's client sends it for a model that scales from zero: to the interceptor, `Host: <name>.<ns>.svc`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.config import EnvVar, LabelMappings, OperatorConfig
from modeldeploy.config.scaling import AutoscalingSettings, HttpAddonSettings
from modeldeploy.controller.blocking import Kube, KubeError
from modeldeploy.controller.reconcile import reconcile_once
from modeldeploy.controller.scaling import forget_discovery
from modeldeploy.selection.nodes import NodeFacts, node_facts
from modeldeploy_dev import addon_crds, devchat, fromzero, testmodel
from modeldeploy_dev.autoscaling import Stack, StackError
from modeldeploy_dev.build import BuildError
from modeldeploy_dev.cluster import LocalCluster
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.realnode import RealNode
from tests.support.tools import unavailable
from tests.support.waiting import eventually

pytest.importorskip("xllamacpp")
pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
MD_CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NS = f"zero-{uuid.uuid4().hex[:6]}"
IDLE_S = 15  # scaleDownDelaySeconds: KEDA's cooldown to zero and the HPA's scale-down window
TOKENS = 16


def _say(message: str) -> None:
    print(f"[scale-from-zero] {message}", file=sys.stderr, flush=True)


def _wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class World:
    kube: Kube
    stack: Stack
    config: OperatorConfig
    nodes: list[NodeFacts]


@pytest.fixture(scope="module")
def world(
    kube_api: client.ApiClient,
    real_node: RealNode,
    local_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    try:
        repo_dir = testmodel.ensure_hub_repo() / testmodel.HUB_REPO
    except testmodel.ModelUnavailable as exc:
        unavailable(str(exc))
    assert local_cluster.ca is not None
    stack = Stack(
        tmp_path_factory.mktemp("autoscaling"), local_cluster.kubeconfig_path, local_cluster.ca, real_node.address, _say
    )
    try:
        stack.start(kube_api)
    except BuildError as exc:
        stack.stop()
        unavailable(f"KEDA, its HTTP add-on or Prometheus cannot be built here: {exc}")
    except StackError:
        stack.stop()
        raise
    try:
        addon_crds.install(kube_api, [yaml.safe_load(MD_CRD.read_text())])
        kube = Kube(kube_api)
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        core = client.CoreV1Api(kube_api)
        live = kube_api.sanitize_for_serialization(core.read_node(real_node.name))
        with HubServer({testmodel.HUB_REPO: repo_dir}, host=real_node.address) as hub:
            scaling = AutoscalingSettings(
                prometheus_address=stack.prometheus_url,
                http_addon=HttpAddonSettings(enabled=True, scaler_address=stack.scaler_address),
            )
            cfg = OperatorConfig(autoscaling=scaling, fetch_env=[EnvVar(name="HF_ENDPOINT", value=hub.url)])
            yield World(kube, stack, cfg, [node_facts(live, LabelMappings())])
            kube.request("DELETE", f"/api/v1/namespaces/{NS}")
    finally:
        stack.stop()
        # The session's cluster is shared: later tests expect no KEDA there (without it the operator renders an
        # HPA), so the CRDs the stack installed go with it.
        # KEDA's finalizers stay on objects it can no longer clean up, and would hold their CRDs forever.
        ext, crs = client.ApiextensionsV1Api(kube_api), client.CustomObjectsApi(kube_api)
        keda = [c for c in ext.list_custom_resource_definition().items if c.spec.group.endswith("keda.sh")]
        for crd in keda:
            group, version, plural = crd.spec.group, crd.spec.versions[0].name, crd.spec.names.plural
            for obj in crs.list_cluster_custom_object(group, version, plural)["items"]:
                meta = obj["metadata"]
                with contextlib.suppress(ApiException):
                    patch = {"metadata": {"finalizers": None}}
                    crs.patch_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"], patch)
            ext.delete_custom_resource_definition(crd.metadata.name)
        eventually(
            lambda: not any(c.spec.group.endswith("keda.sh") for c in ext.list_custom_resource_definition().items),
            "KEDA's CRDs to go",
            timeout=60,
        )


def _reconcile(world: World, name: str) -> None:
    for _ in range(40):
        try:
            result = reconcile_once(world.kube.api.configuration, NS, name, world.nodes, world.config)
            if result.failed is not None and result.failed.transient:
                time.sleep(0.5)
                continue
            assert result.outcome == "applied", result
            return
        except KubeError as exc:
            if not exc.transient:
                raise
            time.sleep(0.5)
    raise AssertionError("reconcile kept failing transiently")


def _replicas(kube: Kube, name: str) -> int:
    dep = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}") or {}
    return int((dep.get("spec") or {}).get("replicas") or 0)


def _pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    query = [("labelSelector", f"app.kubernetes.io/instance={name}")]
    return kube.request("GET", f"/api/v1/namespaces/{NS}/pods", query=query).get("items") or []


def _ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or ()}
    return conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


def _create(world: World, name: str, autoscaling: dict[str, int]) -> dict[str, Any]:
    forget_discovery()
    md = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
    md["metadata"] = {"name": name}
    md["spec"]["autoscaling"] = autoscaling
    world.kube.request("POST", f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments", body=md)
    _reconcile(world, name)
    service = world.kube.get(f"/api/v1/namespaces/{NS}/services/{name}") or {}
    entry = f"{service['spec']['clusterIP']} {name}.{NS} "
    _wait("the interceptor's route to the Service", lambda: entry in world.stack.hosts_file.read_text(), 30)
    return md


def _chat(world: World, name: str, model: str, http: httpx.Client, base: str | None = None) -> httpx.Response:
    """A chat completion the way a client reaches a model that scales from zero (the interceptor), or,
    given `base`, a model that always runs one replica (its Service: the interceptor routes only the
    hosts of models that scale from zero, docs/autoscaling.md)."""
    return http.post(
        f"{base or world.stack.interceptor_url}/v1/chat/completions",
        headers={} if base else {"Host": f"{name}.{NS}.svc"},
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Count from one to twenty in words."}],
            "max_tokens": TOKENS,
            "ignore_eos": True,
        },
    )


def _scaled_object(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/{name}") or {}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def test_a_request_at_zero_is_held_while_the_model_scales_up_then_it_goes_back_to_zero(world: World) -> None:
    kube, name = world.kube, "zero"
    md = _create(
        world, name, {"minReplicas": 0, "maxReplicas": 1, "targetRequests": 4, "scaleDownDelaySeconds": IDLE_S}
    )
    try:
        _wait(
            "KEDA to take the ScaledObject",
            lambda: _condition(_scaled_object(kube, name), "Ready").get("status") == "True",
            120,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {_scaled_object(kube, name).get('status')}\n{world.stack.log_tail('keda-operator')}"
        ) from None
    # The Deployment is created with one replica; KEDA takes it to zero after the cooldown.
    _wait("KEDA to scale the idle model to zero", lambda: _replicas(kube, name) == 0, 180)
    _wait("no pod left", lambda: not [p for p in _pods(kube, name) if not p["metadata"].get("deletionTimestamp")], 120)

    # Status at zero: a reconcile (as the operator's own) leaves KEDA's replica count alone and folds in
    # KEDA's real ScaledObject status; kubectl's columns say 0/0 ScaledToZero.
    _reconcile(world, name)
    assert _replicas(kube, name) == 0
    md_path = f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments/{name}"
    status = (kube.get(md_path) or {}).get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or ()}
    assert conds["Autoscaling"]["status"] == "True", conds
    assert "KEDA has the ScaledObject Ready" in conds["Autoscaling"]["message"], conds["Autoscaling"]
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "ScaledToZero", conds["Ready"]
    assert (status["ready"], status.get("reason")) == ("0/0", "ScaledToZero"), status

    watch = fromzero.Watch(kube.api, NS, name).start()
    try:
        # Streamed, as a chat client asks; devchat raises on any HTTP error (a 502/503 from an empty Service).
        reply = devchat.chat(
            world.stack.interceptor_url, md["spec"]["model"]["name"], "Say hello.", max_tokens=TOKENS,
            timeout=600, host=f"{name}.{NS}.svc",
        )  # fmt: skip
    except devchat.ChatError as exc:
        raise AssertionError(f"{exc}\n{world.stack.log_tail('interceptor')}") from None
    finally:
        seen = watch.stop()
    seen["first_token"] = reply.first_token_s
    _say(f"from zero to the first token, {reply.text!r}:\n{fromzero.report(seen)}")
    # Held, not refused: the replica was started for this request, and it answered.
    assert reply.text
    assert {"replicas", "ready"} <= set(seen), seen
    assert seen["ready"] < reply.first_token_s, seen
    # No load: back to zero after scaleDownDelaySeconds.
    _wait("back to zero once idle", lambda: _replicas(kube, name) == 0, IDLE_S + 120)
    kube.request("DELETE", f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments/{name}")


def _prometheus_view(world: World, name: str) -> str:
    """What Prometheus scraped and what the ScaledObject's query reads, for a failure message."""
    base = world.stack.prometheus_url
    with httpx.Client(timeout=10) as http:
        targets = http.get(f"{base}/api/v1/targets").json()["data"]["activeTargets"]
        seen = [(t["labels"].get("pod"), t["health"], t.get("lastError")) for t in targets]
        raw = http.get(f"{base}/api/v1/query", params={"query": '{__name__=~"llamacpp:requests_.*"}'}).json()
    return f"Prometheus targets {seen}; series {raw.get('data', {}).get('result')}"


def test_the_queue_gauge_through_prometheus_and_keda_changes_the_replica_count(world: World) -> None:
    kube, name = world.kube, "load"
    target, most = 1, 2
    md = _create(
        world, name, {"minReplicas": 1, "maxReplicas": most, "targetRequests": target, "scaleDownDelaySeconds": IDLE_S}
    )
    _wait("the first replica Ready", lambda: any(_ready(p) for p in _pods(kube, name)), 300)
    service = kube.get(f"/api/v1/namespaces/{NS}/services/{name}") or {}
    base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    stop = threading.Event()
    failed: list[str] = []
    answered: list[int] = []

    def user() -> None:
        with httpx.Client(timeout=300, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not stop.is_set():
                try:
                    reply = _chat(world, name, md["spec"]["model"]["name"], http, base)
                    reply.raise_for_status()
                    answered.append(reply.json()["usage"]["completion_tokens"])
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    failed.append(f"{type(exc).__name__}: {exc}")

    users = [threading.Thread(target=user, daemon=True) for _ in range(4)]
    for u in users:
        u.start()
    try:
        try:
            _wait(f"KEDA to ask for {most} replicas on the queue gauge", lambda: _replicas(kube, name) == most, 240)
        except AssertionError as exc:
            hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/keda-hpa-{name}") or {}
            raise AssertionError(
                f"{exc}; HPA {hpa.get('status')}; {len(answered)} answered, failures {failed[:3]}\n"
                f"{_prometheus_view(world, name)}\n{world.stack.log_tail('keda-operator')}"
            ) from None
    finally:
        stop.set()
        for u in users:
            u.join(timeout=300)
    assert answered and not failed, failed[:3]
    _wait("back to 1 replica once idle", lambda: _replicas(kube, name) == 1, IDLE_S + 180)
