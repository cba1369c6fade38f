"""The demo's llama.cpp model runs and answers in a namespace that enforces Pod Security "restricted".

docs/security.md ("Restricted pods"): every pod the operator renders meets the standard. The render side
is checked container by container in tests/unit/render/test_pod_security.py; here the apiserver's own
PodSecurity admission judges the pods, and the real node's kubelet runs them: the example
`examples/modeldeployments/llamacpp-smollm2.yaml`, rendered as the operator renders it for the real node
(dev.on_the_real_node), is applied to a namespace labelled `pod-security.kubernetes.io/enforce:
restricted`; its pod (fetch and auto-NGL init containers, then llama.cpp) is admitted, becomes Ready and
answers a chat request through its Service. A pod that breaks the standard is refused in the same
namespace first, so the test shows admission is on, not merely absent.

The shared model cache's download and listing Jobs would run in that namespace too when a
ModelDeployment there uses `cache.shared`; they are checked by the render test, not run here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.config import EnvVar, OperatorConfig
from modeldeploy.loader import parse_model_deployment
from modeldeploy.render import render
from modeldeploy.selection import node_facts, select_engine
from modeldeploy_dev import devchat, testmodel
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.realnode import RealNode
from tests.support.tools import unavailable
from tests.support.waiting import eventually, http_status

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NS = f"md-restricted-{uuid.uuid4().hex[:6]}"
ENFORCE = "pod-security.kubernetes.io/enforce"


@pytest.fixture(scope="module")
def hub(kube_api: client.ApiClient, real_node: RealNode) -> Iterator[HubServer]:
    try:
        repo_dir = testmodel.ensure_hub_repo() / testmodel.HUB_REPO
    except testmodel.ModelUnavailable as exc:
        unavailable(str(exc))
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": NS, "labels": {ENFORCE: "restricted"}}})
    with HubServer({testmodel.HUB_REPO: repo_dir}, host=real_node.address) as server:
        try:
            yield server
        finally:
            core.delete_namespace(NS)
            eventually(lambda: not core.list_namespaced_pod(NS).items, "the pods to go", timeout=120)


def rendered(api: client.ApiClient, node: RealNode, hub: HubServer, name: str) -> list[dict[str, Any]]:
    """The example's objects as the operator renders them for the real node, named `name`."""
    doc = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
    doc["metadata"].update(name=name, namespace=NS)
    md = parse_model_deployment(doc, str(EXAMPLE))
    config = OperatorConfig(fetch_env=[EnvVar(name="HF_ENDPOINT", value=hub.url)])
    live = api.sanitize_for_serialization(client.CoreV1Api(api).read_node(node.name))
    decision = select_engine(md.spec, [node_facts(live, config.label_mappings)], config)
    return render(md, decision, config)


def test_a_pod_breaking_the_standard_is_refused_there(kube_api: client.ApiClient, hub: HubServer) -> None:
    core = client.CoreV1Api(kube_api)
    pod = {
        "metadata": {"name": "root-pod"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(NS, pod)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and 'violates PodSecurity "restricted:' in message, message


def test_the_demo_model_runs_and_answers_in_a_restricted_namespace(
    kube_api: client.ApiClient, real_node: RealNode, hub: HubServer
) -> None:
    objects = rendered(kube_api, real_node, hub, "smollm2")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    service = next(o for o in objects if o["kind"] == "Service")
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["initContainers"]] == ["fetch", "auto-ngl"]
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment)
    core.create_namespaced_service(NS, service)

    def ready() -> dict[str, Any] | None:
        live = [p for p in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=smollm2").items]
        assert live, "no pod yet (a pod the namespace refuses shows as a ReplicaSet FailedCreate)"
        pod = dict(kube_api.sanitize_for_serialization(live[0]))
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or ()}
        return pod if conds.get("Ready") == "True" else None

    def refusals() -> list[str]:
        events = core.list_namespaced_event(NS, field_selector="reason=FailedCreate").items
        return [str(e.message) for e in events]

    try:
        pod = eventually(ready, "the SmolLM2 pod to be Ready in the restricted namespace", timeout=240)
    except BaseException:
        print("FailedCreate events:", refusals())
        raise
    assert not refusals()
    assert pod["spec"]["nodeName"] == real_node.name
    live = core.read_namespaced_service("smollm2", NS)
    base = f"http://{live.spec.cluster_ip}:{live.spec.ports[0].port}"
    # Ready is the kubelet's word; the Service answers once kube-proxy has the new endpoint (its next sync).
    eventually(lambda: http_status(f"{base}/v1/models") == 200, "the model to answer through its Service", timeout=30)
    reply = devchat.chat(base, "smollm2", "What is the capital of France?", max_tokens=32)
    assert "paris" in reply.text.lower(), reply
