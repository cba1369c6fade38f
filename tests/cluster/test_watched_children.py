"""The autoscaling and routing children are watched: one deleted or edited by someone is applied again.

On the session's control plane (no KEDA: the operator falls back to an HPA, docs/autoscaling.md), with the
operator as a process. The HPA controller of the local kube-controller-manager runs too; it writes the
HPA's status, never its spec, so what moves the spec here is the test's own edit.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import LocalCluster
from tests.cluster.test_operator import CRD_FILE, QWEN, OperatorProcess, World, eventually

pytestmark = pytest.mark.cluster

NS = f"md-children-{uuid.uuid4().hex[:6]}"
NAME = "scaled"
MAX = 3


class Env:
    def __init__(self, world: World, operator: OperatorProcess) -> None:
        self.world, self.operator = world, operator
        self.hpas = client.AutoscalingV2Api(world.api)

    def hpa(self) -> dict[str, Any] | None:
        try:
            got = self.hpas.read_namespaced_horizontal_pod_autoscaler(NAME, NS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.world.api.sanitize_for_serialization(got)

    def condition(self, kind: str) -> dict[str, Any] | None:
        md = self.world.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)
        return next((c for c in (md.get("status") or {}).get("conditions") or () if c["type"] == kind), None)


@pytest.fixture(scope="module")
def env(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    world = World(str(local_cluster.kubeconfig_path))
    with contextlib.suppress(ApiException):
        world.ext.create_custom_resource_definition(yaml.safe_load(CRD_FILE.read_text()))
    world.core.create_namespace({"metadata": {"name": NS}})
    world.add_node("ch-cpu-1")
    world.start()
    operator = OperatorProcess(world.kubeconfig, tmp_path_factory.mktemp("children") / "operator.log")
    operator.start()
    try:
        yield Env(world, operator)
    finally:
        operator.stop()
        world.stop()
        world.delete_node("ch-cpu-1")
        if os.environ.get("MODELDEPLOY_SHOW_OPERATOR_LOG"):
            print(operator.log.read_text()[-20000:])
        with contextlib.suppress(ApiException):
            world.core.delete_namespace(NS)


def test_a_deleted_or_edited_hpa_is_applied_again(env: Env) -> None:
    model = {**QWEN, "format": "ggufv2", "quantization": "Q4_K_M", "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf"}
    doc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"model": model, "autoscaling": {"minReplicas": 1, "maxReplicas": MAX}},
    }
    env.world.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)
    first = eventually(env.hpa, "the operator's HPA", timeout=90)
    assert first["spec"]["maxReplicas"] == MAX
    autoscaling = eventually(lambda: env.condition("Autoscaling"), "the Autoscaling condition")
    assert (autoscaling["status"], autoscaling["reason"]) == ("True", "HPAFallback")

    # Someone deletes it: the watch sees it go, the reconcile applies it again.
    env.hpas.delete_namespaced_horizontal_pod_autoscaler(NAME, NS)

    def recreated() -> dict[str, Any] | None:
        hpa = env.hpa()
        return hpa if hpa and hpa["metadata"]["uid"] != first["metadata"]["uid"] else None

    second = eventually(recreated, "the HPA to be re-created", timeout=90)
    assert second["spec"]["maxReplicas"] == MAX

    # Someone edits it (another field manager, our field): our intent is applied again.
    env.hpas.patch_namespaced_horizontal_pod_autoscaler(
        NAME, NS, {"spec": {"maxReplicas": 10}}, field_manager="someone"
    )

    def repaired() -> bool:
        hpa = env.hpa()
        assert hpa is not None and hpa["metadata"]["uid"] == second["metadata"]["uid"]  # patched, not replaced
        return hpa["spec"]["maxReplicas"] == MAX and int(hpa["metadata"]["resourceVersion"]) > int(
            second["metadata"]["resourceVersion"]
        )

    eventually(repaired, "the edited HPA to be repaired", timeout=90)


def test_a_deleted_or_edited_network_policy_is_applied_again(env: Env) -> None:
    """The model's NetworkPolicy (docs/security.md, "NetworkPolicies") is watched like the HPA."""
    net = client.NetworkingV1Api(env.world.api)

    def policy() -> dict[str, Any] | None:
        try:
            return env.world.api.sanitize_for_serialization(net.read_namespaced_network_policy(NAME, NS))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    if env.condition("Autoscaling") is None:  # run alone: the ModelDeployment of the test above
        test_a_deleted_or_edited_hpa_is_applied_again(env)
    first = eventually(policy, "the operator's NetworkPolicy", timeout=90)
    assert first["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    net.delete_namespaced_network_policy(NAME, NS)

    def recreated() -> dict[str, Any] | None:
        got = policy()
        return got if got and got["metadata"]["uid"] != first["metadata"]["uid"] else None

    second = eventually(recreated, "the NetworkPolicy to be re-created", timeout=90)
    assert second["spec"] == first["spec"]
    wide_open = {"spec": {"ingress": [{}]}}  # someone lets everything in
    net.patch_namespaced_network_policy(NAME, NS, wide_open, field_manager="someone")

    def repaired() -> bool:
        got = policy()
        assert got is not None and got["metadata"]["uid"] == second["metadata"]["uid"]
        return bool(got["spec"] == first["spec"])

    eventually(repaired, "the edited NetworkPolicy to be repaired", timeout=90)
