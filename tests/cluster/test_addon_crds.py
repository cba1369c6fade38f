"""The autoscaling and gateway objects we render, accepted by a real kube-apiserver holding the real CRDs.

KEDA's, the HTTP add-on's, Gateway API's, the Inference Extension's and the Prometheus operator's CRDs
come from their Go modules (modeldeploy.localcluster.addon_crds), so the apiserver validates our objects
against exactly the schemas (and CEL rules) a user's cluster has. A control plane of its own: the
session cluster stays without these CRDs, as a cluster without KEDA or a gateway is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import config

from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.controller.apply import Kube, KubeError
from modeldeploy.localcluster import BuildError, LocalCluster, addon_crds, ensure_binaries
from modeldeploy.scaling import objects as so
from modeldeploy.scaling.plan import (
    HTTP_ROUTE,
    HTTP_SCALED_OBJECT,
    INFERENCE_POOL,
    SCALED_OBJECT,
    plan_scaling,
)
from modeldeploy.scaling.settings import AutoscalingSettings, GatewaySettings, HttpAddonSettings
from tests.support.tools import unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

NS = "addons"
ALL_CRDS = frozenset({SCALED_OBJECT, HTTP_SCALED_OBJECT, HTTP_ROUTE, INFERENCE_POOL})
METRICS = ("llamacpp:requests_processing", "llamacpp:requests_deferred")


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
    )


def _path(obj: dict[str, Any]) -> str:
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
    assert [o["kind"] for o in objs] == ["ScaledObject", "HTTPScaledObject", "InferencePool", "HTTPRoute"]
    for obj in objs:
        stored = _apply(kube, obj)
        assert stored["metadata"]["uid"] and stored["kind"] == obj["kind"]
    scaled = kube.get(_path(objs[0]))
    assert scaled is not None and scaled["spec"]["minReplicaCount"] == 0
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["prometheus", "external-push"]


def test_keda_and_pool_without_addon_are_accepted(kube: Kube) -> None:
    objs = _objects("warm", AutoscalingSpec(min_replicas=0, max_replicas=3), False, GatewaySettings(name="gw"))
    assert [o["kind"] for o in objs] == ["ScaledObject", "InferencePool", "HTTPRoute"]
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
