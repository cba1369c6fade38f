"""The autoscaling and gateway objects we render, accepted by a real kube-apiserver holding the real CRDs.

KEDA's, the HTTP add-on's, Gateway API's, the Inference Extension's and the Prometheus operator's CRDs
come from their Go modules (modeldeploy_dev.addon_crds), so the apiserver validates our objects
against exactly the schemas (and CEL rules) a user's cluster has. A control plane of its own: the
session cluster stays without these CRDs, as a cluster without KEDA or a gateway is.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config
from kubernetes.client import ApiClient, CoreV1Api

from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.config.scaling import (
    AutoscalingSettings,
    EndpointPickerSettings,
    GatewaySettings,
    HttpAddonSettings,
)
from modeldeploy.controller.apply import KubeError, object_path
from modeldeploy.controller.blocking import Kube
from modeldeploy.controller.reconcile import reconcile_once
from modeldeploy.controller.scaling import forget_discovery
from modeldeploy.scaling import objects as so
from modeldeploy.scaling.epp import EPP_RULES
from modeldeploy.scaling.plan import (
    HTTP_ROUTE,
    HTTP_SCALED_OBJECT,
    INFERENCE_POOL,
    SCALED_OBJECT,
    plan_scaling,
)
from modeldeploy.selection.nodes import facts_from_document
from modeldeploy_dev import BuildError, LocalCluster, addon_crds, ensure_binaries
from modeldeploy_dev.nodes import FakeKubelet, create_node, is_ready, load_node_set
from tests.cluster.test_operator import OperatorProcess, eventually
from tests.support.chart import operator_roles, template
from tests.support.tools import ensure_helm, unavailable

# No pytest timeout: the first run on a fresh machine builds the control plane inside the fixture (minutes);
# every wait below is bounded.
pytestmark = pytest.mark.cluster

NS = "addons"
REPO = Path(__file__).resolve().parents[2]
_API = {
    "ScaledObject": "keda.sh/v1alpha1",
    "HTTPScaledObject": "http.keda.sh/v1alpha1",
    "InferencePool": "inference.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
ALL_CRDS = frozenset({SCALED_OBJECT, HTTP_SCALED_OBJECT, HTTP_ROUTE, INFERENCE_POOL})
METRICS = ("llamacpp:requests_processing", "llamacpp:requests_deferred")
RBAC = "rbac.authorization.k8s.io/v1"


KUBECONFIG: dict[str, str] = {}  # the module cluster's, for an operator process


def _say(message: str) -> None:
    print(f"[addon cluster] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    try:
        ensure_binaries(log=_say)
    except BuildError as exc:
        unavailable(f"the local control plane cannot be built: {exc}")
    try:
        paths = addon_crds.ensure_addon_crds()
    except addon_crds.AddonCrdError as exc:
        unavailable(f"the add-on CRDs cannot be had: {exc}")
    cluster = LocalCluster(tmp_path_factory.mktemp("addon-cluster"), log=_say)
    cluster.start()
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        names = addon_crds.install(api, addon_crds.load_crds(paths))
        _say(f"installed {len(names)} CRDs: {', '.join(names)}")
        k = Kube(api)
        k.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        KUBECONFIG["path"] = str(cluster.kubeconfig_path)
        yield k
    finally:
        cluster.stop()


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/instance": name}}


def _objects(name: str, spec: AutoscalingSpec, addon: bool, gateway: GatewaySettings) -> list[dict[str, Any]]:
    settings = AutoscalingSettings(http_addon=HttpAddonSettings(enabled=addon))
    plan = plan_scaling(spec, True, "llama.cpp", settings, gateway, ALL_CRDS)
    return so.scaling_objects(
        _meta(name),
        {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "model-server"},
        "qwen2.5-instruct",
        8000,
        METRICS,
        spec.target_requests,
        spec.scale_down_delay_seconds,
        plan,
        settings,
        gateway,
        engine="llama.cpp",
    )


EPP_KINDS = ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"]


def _path(obj: dict[str, Any]) -> str:
    if obj["kind"] in EPP_KINDS:
        return object_path({**obj, "metadata": {**obj["metadata"], "namespace": NS}})
    plural = {
        "ScaledObject": "scaledobjects",
        "HTTPScaledObject": "httpscaledobjects",
        "HorizontalPodAutoscaler": "horizontalpodautoscalers",
        "InferencePool": "inferencepools",
        "HTTPRoute": "httproutes",
    }[obj["kind"]]
    return f"/apis/{obj['apiVersion']}/namespaces/{NS}/{plural}/{obj['metadata']['name']}"


def _apply(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    return kube.request(
        "PATCH",
        _path(obj),
        query=[("fieldManager", "modeldeploy"), ("force", "true")],
        body=obj,
        content_type="application/apply-patch+yaml",
    )


def test_keda_scale_from_zero_with_gateway_is_accepted(kube: Kube) -> None:
    gateway = GatewaySettings(name="inference", namespace="gateways", section_name="http")
    objs = _objects("zero", AutoscalingSpec(min_replicas=0, max_replicas=4), True, gateway)
    kinds = ["ScaledObject", "HTTPScaledObject", "InferencePool", "HTTPRoute", *EPP_KINDS]
    assert [o["kind"] for o in objs] == kinds
    for obj in objs:
        stored = _apply(kube, obj)
        assert stored["metadata"]["uid"] and stored["kind"] == obj["kind"]
    scaled = kube.get(_path(objs[0]))
    assert scaled is not None and scaled["spec"]["minReplicaCount"] == 0
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["prometheus", "external-push"]


def test_keda_and_pool_without_addon_are_accepted(kube: Kube) -> None:
    own_picker = GatewaySettings(name="gw", endpoint_picker=EndpointPickerSettings(deploy=False))  # e.g. GKE's
    objs = _objects("warm", AutoscalingSpec(min_replicas=0, max_replicas=3), False, own_picker)
    assert [o["kind"] for o in objs] == ["ScaledObject", "InferencePool", "HTTPRoute"]
    assert objs[1]["spec"]["endpointPickerRef"]["name"] == "warm-epp"
    for obj in objs:
        _apply(kube, obj)
    assert objs[0]["spec"]["minReplicaCount"] == 1  # raised: nothing would hold the first request
    route = kube.get(_path(objs[2]))
    assert route is not None
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"


def test_hpa_fallback_is_accepted(kube: Kube) -> None:
    settings = AutoscalingSettings()
    spec = AutoscalingSpec(min_replicas=2, max_replicas=5, target_requests=3)
    plan = plan_scaling(spec, True, "vllm", settings, GatewaySettings(), frozenset())
    assert plan.autoscaler == "hpa"
    hpa = so.horizontal_pod_autoscaler(_meta("hpa"), plan, 3, 60)
    stored = _apply(kube, hpa)
    assert stored["spec"]["minReplicas"] == 2 and stored["spec"]["metrics"][0]["pods"]["metric"]["name"]


def test_the_schemas_are_really_enforced(kube: Kube) -> None:
    """Not a rubber stamp: the same objects with a field the CRD forbids are refused."""
    objs = _objects("bad", AutoscalingSpec(max_replicas=2), False, GatewaySettings(name="gw"))
    pool = next(o for o in objs if o["kind"] == "InferencePool")
    pool["spec"]["targetPorts"] = [{"number": 70000}]
    with pytest.raises(KubeError) as refused:
        _apply(kube, pool)
    assert refused.value.status == 422 and "targetPorts" in refused.value.message
    route = next(o for o in objs if o["kind"] == "HTTPRoute")
    route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "no-leading-slash"
    with pytest.raises(KubeError) as refused_route:
        _apply(kube, route)
    assert refused_route.value.status == 422
    scaled = next(o for o in objs if o["kind"] == "ScaledObject")
    del scaled["spec"]["triggers"]
    with pytest.raises(KubeError) as refused_scaled:
        _apply(kube, scaled)
    assert refused_scaled.value.status == 422 and "triggers" in refused_scaled.value.message


# --- the operator's reconcile against these CRDs ------------------------------------------------------------

MD_CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NODES = facts_from_document((REPO / "examples" / "nodes" / "cpu-cluster.yaml").read_text(), LabelMappings())
MD_PATH = f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments"
CPU_NODES = REPO / "examples" / "nodes" / "cpu-cluster.yaml"


def _md(name: str, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {
            "name": "qwen2.5-instruct",
            "format": "ggufv2",
            "quantization": "Q4_K_M",
            "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        }
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def _install_md_crd(kube: Kube) -> None:
    api = kube.api
    addon_crds.install(api, [yaml.safe_load(MD_CRD.read_text())])


def _conditions(kube: Kube, name: str) -> dict[str, dict[str, Any]]:
    body = kube.get(f"{MD_PATH}/{name}") or {}
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}


def _reconcile(kube: Kube, name: str, config: OperatorConfig) -> None:
    """One reconcile as the operator runs it, with the world read from the apiserver (no watches here)."""
    last: Any = None
    for _ in range(60):  # the admission's RESTMapping of a just-installed CRD lags by seconds on a loaded machine
        try:
            result = reconcile_once(kube.api.configuration, NS, name, NODES, config)
        except KubeError as exc:
            if exc.transient:
                last = exc
                time.sleep(0.5)
                continue
            raise
        if result.failed is not None and result.failed.transient:
            last = result.failed
            time.sleep(0.5)
            continue
        assert result.outcome == "applied", result
        return
    raise AssertionError(f"reconcile kept failing transiently: {last}")


def test_reconcile_renders_scaling_and_routing_and_removes_them_when_unasked(kube: Kube) -> None:
    _install_md_crd(kube)
    scale_settings = AutoscalingSettings(http_addon=HttpAddonSettings(enabled=True))
    config = OperatorConfig(autoscaling=scale_settings, gateway=GatewaySettings(name="inference"))
    forget_discovery()
    kube.request("POST", MD_PATH, body=_md("chat", {"minReplicas": 0, "maxReplicas": 3, "targetRequests": 2}))
    _reconcile(kube, "chat", config)

    md = kube.get(f"{MD_PATH}/chat")
    uid = md["metadata"]["uid"]
    for kind, name in [
        ("ScaledObject", "chat"),
        ("HTTPScaledObject", "chat-http"),
        ("InferencePool", "chat"),
        ("HTTPRoute", "chat"),
    ]:
        obj = kube.get(_path({"apiVersion": _API[kind], "kind": kind, "metadata": {"name": name}}))
        assert obj is not None, f"{kind} {name} was not applied"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    scaled = kube.get(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/chat")
    assert scaled["spec"]["minReplicaCount"] == 0
    assert "llamacpp:requests_deferred" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    deployment = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/chat")
    assert deployment["spec"]["replicas"] == 1  # the first replica; KEDA takes over from here
    conditions = _conditions(kube, "chat")
    assert conditions["Autoscaling"]["status"] == "True" and conditions["Autoscaling"]["reason"] == "KEDA"
    assert "from zero through the KEDA HTTP add-on" in conditions["Autoscaling"]["message"]
    assert conditions["Routed"]["reason"] == "InferencePool"
    # The pool's endpoint picker, as the pool's endpointPickerRef names it, owned like the rest. (Its pod
    # would run an image this machine cannot pull; nothing here runs it, only the objects are checked.)
    pool = kube.get(f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools/chat")
    assert pool["spec"]["endpointPickerRef"]["name"] == "chat-epp"
    for kind in EPP_KINDS:
        api_version = {"Deployment": "apps/v1", "Role": RBAC, "RoleBinding": RBAC}.get(kind, "v1")
        obj = kube.get(_path({"apiVersion": api_version, "kind": kind, "metadata": {"name": "chat-epp"}}))
        assert obj is not None, f"{kind} chat-epp was not applied"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    epp_deployment = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/chat-epp")
    args = epp_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--pool-name") + 1] == "chat"
    assert args[args.index("--total-queued-requests-metric") + 1] == "llamacpp:requests_deferred"
    # the model's Service does not select the picker's pod
    model_selector = kube.get(f"/api/v1/namespaces/{NS}/services/chat")["spec"]["selector"]
    epp_labels = epp_deployment["spec"]["template"]["metadata"]["labels"]
    assert any(epp_labels.get(k) != v for k, v in model_selector.items())
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/chat")["spec"]["template"]["spec"]["containers"]

    # The autoscaling block removed: the KEDA objects go, the route stays, replicas are ours again.
    kube.request(
        "PATCH", f"{MD_PATH}/chat", body={"spec": {"autoscaling": None}}, content_type="application/merge-patch+json"
    )
    _reconcile(kube, "chat", config)
    assert kube.get(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/chat") is None
    assert kube.get(f"/apis/http.keda.sh/v1alpha1/namespaces/{NS}/httpscaledobjects/chat-http") is None
    assert kube.get(f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/chat") is not None
    conditions = _conditions(kube, "chat")
    assert "Autoscaling" not in conditions and conditions["Routed"]["status"] == "True"
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/chat-epp") is not None

    # The gateway switched off: the route, the pool and its picker go; the model's Deployment stays.
    _reconcile(kube, "chat", OperatorConfig(autoscaling=scale_settings))
    assert kube.get(f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/chat") is None
    assert kube.get(f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools/chat") is None
    for kind in EPP_KINDS:
        api_version = {"Deployment": "apps/v1", "Role": RBAC, "RoleBinding": RBAC}.get(kind, "v1")
        path = _path({"apiVersion": api_version, "kind": kind, "metadata": {"name": "chat-epp"}})
        assert kube.get(path) is None, f"{kind} chat-epp was not removed"
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/chat") is not None
    assert kube.get(f"/api/v1/namespaces/{NS}/services/chat") is not None


def test_reconcile_falls_back_to_an_hpa_and_says_so(kube: Kube) -> None:
    _install_md_crd(kube)
    forget_discovery()
    config = OperatorConfig(autoscaling=AutoscalingSettings(keda=False))
    kube.request("POST", MD_PATH, body=_md("fallback", {"minReplicas": 0, "maxReplicas": 2}))
    _reconcile(kube, "fallback", config)
    hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/fallback")
    assert hpa is not None and hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 2
    autoscaling = _conditions(kube, "fallback")["Autoscaling"]
    assert autoscaling["reason"] == "HPAFallback"
    assert "minReplicas 0 was raised to 1 because an HPA cannot scale to zero" in autoscaling["message"]


def test_without_the_crds_status_names_what_is_missing(kube_api: Any) -> None:
    """The session cluster has no KEDA, Gateway API or Inference Extension: HPA, no route, and status says why."""
    plain = Kube(kube_api)
    _install_md_crd(plain)
    with contextlib.suppress(KubeError):
        plain.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    forget_discovery()
    config = OperatorConfig(gateway=GatewaySettings(name="inference"))
    plain.request("POST", MD_PATH, body=_md("bare", {"minReplicas": 1, "maxReplicas": 2}))
    _reconcile(plain, "bare", config)
    conditions = _conditions(plain, "bare")
    assert conditions["Autoscaling"]["reason"] == "HPAFallback"
    assert "the CRD scaledobjects.keda.sh is absent (KEDA not installed)" in conditions["Autoscaling"]["message"]
    assert conditions["Routed"]["status"] == "False" and conditions["Routed"]["reason"] == "CRDMissing"
    assert "httproutes.gateway.networking.k8s.io" in conditions["Routed"]["message"]
    assert plain.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/bare") is not None
    plain.request("DELETE", f"/api/v1/namespaces/{NS}")


def test_a_second_modeldeployment_serving_the_same_model_name_is_not_routed(kube: Kube) -> None:
    """Two ModelDeployments with one model name on one Gateway (docs/gateway.md): the older routes, the newer
    gets Routed=False ModelNameConflict naming it and no HTTPRoute; once the older is gone, the newer routes."""
    _install_md_crd(kube)
    config = OperatorConfig(gateway=GatewaySettings(name="inference"))
    forget_discovery()
    routes = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
    for name in ("team-a", "team-b"):
        doc = _md(name, None)
        doc["spec"]["model"] |= {"name": "shared-chat", "family": "qwen2.5-instruct"}
        kube.request("POST", MD_PATH, body=doc)
        time.sleep(1.1)  # creationTimestamp has second precision: team-a is the older
    _reconcile(kube, "team-a", config)
    _reconcile(kube, "team-b", config)
    assert _conditions(kube, "team-a")["Routed"]["status"] == "True"
    assert kube.get(f"{routes}/team-a") is not None
    routed = _conditions(kube, "team-b")["Routed"]
    assert (routed["status"], routed["reason"]) == ("False", "ModelNameConflict")
    assert "by ModelDeployment team-a, created earlier" in routed["message"]  # same namespace: named
    assert kube.get(f"{routes}/team-b") is None
    assert kube.get(f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools/team-b") is not None

    kube.request("DELETE", f"{MD_PATH}/team-a")
    _reconcile(kube, "team-b", config)
    assert _conditions(kube, "team-b")["Routed"]["status"] == "True"
    route = kube.get(f"{routes}/team-b")
    assert route is not None
    match = route["spec"]["rules"][0]["matches"][0]["headers"][0]
    assert match["value"] == "shared-chat"


NETPOL = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"


def test_reconcile_applies_the_network_policies_and_removes_them_when_switched_off(kube: Kube) -> None:
    """docs/security.md, "NetworkPolicies": the model's and the picker's policies exist with the selectors and
    ports rendered, owned by the ModelDeployment; switched off in the operator config, the operator deletes
    them and nothing else. (No CNI here enforces NetworkPolicies: the objects are checked, not the traffic.)"""
    _install_md_crd(kube)
    forget_discovery()
    gateway = GatewaySettings(name="inference", namespace="gateways")
    kube.request("POST", MD_PATH, body=_md("guarded", None))
    _reconcile(kube, "guarded", OperatorConfig(gateway=gateway))
    uid = kube.get(f"{MD_PATH}/guarded")["metadata"]["uid"]

    model = kube.get(f"{NETPOL}/guarded")
    assert model is not None and model["metadata"]["ownerReferences"][0]["uid"] == uid
    deployment = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/guarded")
    assert model["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert model["spec"]["policyTypes"] == ["Ingress"]  # the pod's fetcher downloads: egress open
    (rule,) = model["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    picker = kube.get(f"{NETPOL}/guarded-epp")
    epp = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/guarded-epp")
    assert picker is not None and picker["metadata"]["ownerReferences"][0]["uid"] == uid
    assert picker["spec"]["podSelector"] == epp["spec"]["selector"]
    grpc, metrics = picker["spec"]["ingress"]
    assert grpc == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}],
        "ports": [{"protocol": "TCP", "port": 9002}],
    }
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9090}]

    # Switched off: ours go, the workload and the route stay.
    off = OperatorConfig.model_validate({"gateway": {"name": "inference", "namespace": "gateways"},
                                         "networkPolicies": {"enabled": False}})  # fmt: skip
    _reconcile(kube, "guarded", off)
    assert kube.get(f"{NETPOL}/guarded") is None and kube.get(f"{NETPOL}/guarded-epp") is None
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/guarded") is not None
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/guarded-epp") is not None
    # and on again: back, as rendered
    _reconcile(kube, "guarded", OperatorConfig(gateway=gateway))
    assert kube.get(f"{NETPOL}/guarded")["spec"] == model["spec"]

    # Without a gateway (no routing in status to prompt a prune), the policy the config dropped still goes.
    kube.request("POST", MD_PATH, body=_md("plain", None))
    _reconcile(kube, "plain", OperatorConfig())
    assert kube.get(f"{NETPOL}/plain") is not None and kube.get(f"{NETPOL}/plain-epp") is None
    _reconcile(kube, "plain", OperatorConfig.model_validate({"networkPolicies": {"enabled": False}}))
    assert kube.get(f"{NETPOL}/plain") is None
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/plain") is not None


def test_the_operator_hands_a_model_name_to_the_next_once_the_older_goes(
    kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The operator as a process, with a gateway configured: it tells the newer of two ModelDeployments
    serving one name from the watches (an index of served names), and reconciles it when the older goes."""
    _install_md_crd(kube)
    core = CoreV1Api(kube.api)
    nodes = [create_node(core, n) for n in load_node_set(CPU_NODES) if is_ready(n)]
    kubelet = FakeKubelet(kube.api, nodes).start()
    tmp = tmp_path_factory.mktemp("routing")
    settings = tmp / "config.yaml"
    settings.write_text(yaml.safe_dump({"gateway": {"name": "inference"}}))
    operator = OperatorProcess(KUBECONFIG["path"], tmp / "operator.log", "--standalone", f"--config={settings}")
    routes = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
    try:
        operator.start()
        for name in ("op-older", "op-newer"):
            doc = _md(name, None)
            doc["spec"]["model"] |= {"name": "op-chat", "family": "qwen2.5-instruct"}
            kube.request("POST", MD_PATH, body=doc)
            time.sleep(1.1)  # creationTimestamp has second precision
        eventually(lambda: kube.get(f"{routes}/op-older"), "the older's HTTPRoute", timeout=90)

        def yielded() -> bool:
            routed = _conditions(kube, "op-newer").get("Routed") or {}
            message = routed.get("message", "")
            return routed.get("reason") == "ModelNameConflict" and "ModelDeployment op-older" in message

        eventually(yielded, "Routed=False ModelNameConflict on the newer", timeout=90)
        assert kube.get(f"{routes}/op-newer") is None
        kube.request("DELETE", f"{MD_PATH}/op-older")
        eventually(lambda: kube.get(f"{routes}/op-newer"), "the newer's HTTPRoute once the older is gone", timeout=90)
        # The route is applied before the status that reports it is written.
        eventually(
            lambda: _conditions(kube, "op-newer")["Routed"]["status"] == "True", "Routed=True on the newer", timeout=30
        )
    finally:
        operator.stop()
        kubelet.stop()
        for name in nodes:
            with contextlib.suppress(KubeError):
                kube.request("DELETE", f"/api/v1/nodes/{name}")


def test_the_charts_podmonitors_are_accepted(kube: Kube) -> None:
    """engineMetrics.podMonitor.enabled: the chart's PodMonitors against the Prometheus operator's CRD."""
    from tests.support.chart import CHART, by_kind, template
    from tests.support.tools import ensure_helm

    objects = template(ensure_helm(), "-f", str(CHART / "ci" / "autoscaling-values.yaml"), namespace=NS)
    monitors = by_kind(objects, "PodMonitor")
    assert len(monitors) == 3
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        stored = kube.request(
            "PATCH",
            f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/podmonitors/{name}",
            query=[("fieldManager", "helm"), ("force", "true")],
            body=monitor,
            content_type="application/apply-patch+yaml",
        )
        assert stored["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_the_apiserver_refuses_min_above_max(kube: Kube) -> None:
    _install_md_crd(kube)
    with pytest.raises(KubeError) as refused:
        kube.request("POST", MD_PATH, body=_md("inverted", {"minReplicas": 3, "maxReplicas": 2}))
    assert refused.value.status == 422
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in refused.value.message
    with pytest.raises(KubeError) as missing:
        kube.request("POST", MD_PATH, body=_md("nomax", {"minReplicas": 0}))
    assert missing.value.status == 422 and "maxReplicas" in missing.value.message


def test_the_charts_rbac_lets_the_operator_create_the_pickers_role(kube: Kube) -> None:
    """Under the chart's own ClusterRole (gateway on), the operator creates `<name>-epp`'s Role: the
    apiserver's escalation check passes only because the chart grants it every right that Role grants."""
    _install_md_crd(kube)
    (chart_role,) = operator_roles(template(ensure_helm(), "--set", "config.gateway.name=inference"))
    account = "chart-operator"
    kube.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts", body={"metadata": {"name": account}})
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    kube.request("POST", f"{rbac}/clusterroles", body={"metadata": {"name": account}, "rules": chart_role["rules"]})
    binding = {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}],
    }
    kube.request("POST", f"{rbac}/clusterrolebindings", body=binding)
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{account}/token",
        body={"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    as_operator = copy.deepcopy(kube.api.configuration)
    as_operator.cert_file = as_operator.key_file = None
    as_operator.api_key = {"authorization": f"Bearer {token}"}
    operator = Kube(ApiClient(as_operator))
    config = OperatorConfig(gateway=GatewaySettings(name="inference"))
    forget_discovery()
    kube.request("POST", MD_PATH, body=_md("sa-chat", None))
    _reconcile(operator, "sa-chat", config)
    role = kube.get(f"{rbac}/namespaces/{NS}/roles/sa-chat-epp")
    assert role is not None and role["rules"] == [dict(r) for r in EPP_RULES]
    assert kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/sa-chat-epp") is not None
    # and the route switched off, it may delete what it made
    _reconcile(operator, "sa-chat", OperatorConfig())
    assert kube.get(f"{rbac}/namespaces/{NS}/roles/sa-chat-epp") is None
