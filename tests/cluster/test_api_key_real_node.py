"""spec.auth on the real node: the llama.cpp pod asks for the key, and the key is nowhere to be read.

docs/security.md, "API keys". The operator runs as a process; the SmolLM2 example gets
`spec.auth.apiKeySecret` naming a Secret with a random key; the real node runs the pod from our images
(the llama.cpp entrypoint reads LLAMA_API_KEY, which the kubelet fills from the Secret). Then, as a client
reaches it through the Service's ClusterIP: 401 without the key or with a wrong one, 200 with it (the key
taken from the Secret, as `modeldeploy dev chat` takes it); /health (the probes) open;
/metrics refused on the serving port and open on the relay the picker and Prometheus scrape. And the key
appears in neither the Deployment, any container's log, the ModelDeployment's status, the namespace's
Events nor the operator's log.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import devchat, testmodel
from modeldeploy_dev.cluster import LocalCluster
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.realnode import RealNode
from tests.cluster.test_operator import CRD_FILE, OperatorProcess, eventually
from tests.support.tools import unavailable

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NS = f"md-apikey-{uuid.uuid4().hex[:6]}"
NAME = "smollm2-keyed"
KEY = f"sk-md-{secrets.token_hex(16)}"


def request(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    """One HTTP request as a client sends it; the status whatever it is."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class World:
    def __init__(self, api: client.ApiClient, cluster: LocalCluster, operator_log: Path) -> None:
        self.api, self.cluster, self.operator_log = api, cluster, operator_log
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.crs = client.CustomObjectsApi(api)

    def obj(self) -> dict[str, Any]:
        return dict(self.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME))

    def ready(self) -> bool:
        conditions = {c["type"]: c["status"] for c in (self.obj().get("status") or {}).get("conditions") or ()}
        return conditions.get("Ready") == "True"

    def explain(self) -> str:
        lines = [f"status: {self.obj().get('status')}"]
        for pod in self.core.list_namespaced_pod(NS).items:
            states = [(c.name, c.state.to_dict()) for c in (pod.status.init_container_statuses or [])]
            states += [(c.name, c.state.to_dict()) for c in (pod.status.container_statuses or [])]
            lines.append(f"{pod.metadata.name} {pod.status.phase}: {states}")
        lines.append(f"--- operator: {self.operator_log.read_text(errors='replace')[-1500:]}")
        return "\n".join(lines)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["kubectl", "--kubeconfig", str(self.cluster.kubeconfig_path), "-n", NS, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def world(
    kube_api: client.ApiClient,
    local_cluster: LocalCluster,
    real_node: RealNode,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    try:
        repo_dir = testmodel.ensure_hub_repo() / testmodel.HUB_REPO
    except testmodel.ModelUnavailable as exc:
        unavailable(str(exc))
    core = client.CoreV1Api(kube_api)
    with contextlib.suppress(ApiException):
        client.ApiextensionsV1Api(kube_api).create_custom_resource_definition(yaml.safe_load(CRD_FILE.read_text()))
    core.create_namespace({"metadata": {"name": NS}})
    work = tmp_path_factory.mktemp("api-key")
    with HubServer({testmodel.HUB_REPO: repo_dir}, host=real_node.address) as hub:
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({"fetchEnv": [{"name": "HF_ENDPOINT", "value": hub.url}]}))
        operator = OperatorProcess(
            str(local_cluster.kubeconfig_path), work / "operator.log", "--standalone", f"--config={config}"
        )
        operator.start()
        try:
            yield World(kube_api, local_cluster, work / "operator.log")
        finally:
            operator.stop()
            core.delete_namespace(NS)
            with contextlib.suppress(Exception):
                eventually(lambda: not core.list_namespaced_pod(NS).items, "the pods to go", timeout=90)


def test_the_llamacpp_pod_answers_only_with_the_key_and_the_key_is_nowhere(world: World) -> None:
    world.core.create_namespaced_secret(
        NS, {"metadata": {"name": "model-keys"}, "type": "Opaque", "stringData": {"api-key": KEY}}
    )
    doc = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
    doc["metadata"].update(name=NAME, namespace=NS)
    doc["spec"]["auth"] = {"apiKeySecret": {"name": "model-keys", "key": "api-key"}}
    world.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)
    deadline = time.monotonic() + 300
    while not world.ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{NAME} not Ready within 300 s (the probes must pass with a key set)\n{world.explain()}")
        time.sleep(0.5)
    status = world.obj()["status"]
    assert status["engine"] == "llama.cpp", status
    chosen = next(c for c in status["selection"] if c["engine"] == "llama.cpp")
    assert "llama.cpp reads spec.auth's API key from LLAMA_API_KEY, set from the Secret" in chosen["reasons"]

    # The Deployment carries a reference to the Secret, not the key; no argument names a key.
    deployment = world.api.sanitize_for_serialization(world.apps.read_namespaced_deployment(NAME, NS))
    (engine,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "LLAMA_API_KEY", "valueFrom": {"secretKeyRef": {"name": "model-keys", "key": "api-key",
            "optional": False}}} in engine["env"]  # fmt: skip
    assert not [a for a in engine["command"] + engine.get("args", []) if "api" in a.lower()], engine["command"]
    assert KEY not in json.dumps(deployment)

    # A client through the Service's ClusterIP.
    service = world.core.read_namespaced_service(NAME, NS)
    base = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    chat = {"model": NAME, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    # Ready is the kubelet's word; the ClusterIP answers once kube-proxy has the new endpoint (its next sync).
    eventually(lambda: request(f"{base}/health")[0] == 200, "the Service's ClusterIP to answer", timeout=30)
    assert request(f"{base}/v1/chat/completions", body=chat)[0] == 401
    assert request(f"{base}/v1/chat/completions", key="sk-wrong", body=chat)[0] == 401
    assert request(f"{base}/v1/chat/completions", key=KEY, body=chat)[0] == 200
    assert request(f"{base}/health")[0] == 200  # the probes' endpoint, open
    assert request(f"{base}/v1/models", key=KEY)[0] == 200
    # As `modeldeploy dev chat` does it: the key read from the Secret the ModelDeployment names.
    key = devchat.api_key(world.api, NAME, NS)
    assert key == KEY
    reply = devchat.chat(base, NAME, "What is the capital of France?", max_tokens=32, key=key)
    assert "paris" in reply.text.lower(), reply
    with pytest.raises(devchat.ChatError, match="HTTP 401"):
        devchat.chat(base, NAME, "What is the capital of France?", max_tokens=8)

    # /metrics: the key is asked for on the serving port; the relay (what the picker and Prometheus
    # scrape, on the port named `metrics`) serves the gauges without it.
    pod = next(p for p in world.core.list_namespaced_pod(NS).items if not p.metadata.deletion_timestamp)
    assert pod.metadata.labels["modeldeploy.io/metrics-port"] == "metrics"
    assert request(f"http://{pod.status.pod_ip}:8000/metrics")[0] == 401
    code, body = request(f"http://{pod.status.pod_ip}:8001/metrics")
    assert code == 200 and b"llamacpp:requests_processing" in body, body[:500]
    assert request(f"http://{pod.status.pod_ip}:8001/v1/models")[0] == 404

    # The key is in no log, status or Event.
    logs = {c: world.kubectl("logs", pod.metadata.name, "-c", c) for c in ("fetch", "auto-ngl", "engine")}
    for container, got in logs.items():
        assert got.returncode == 0, (container, got.stderr)
        assert KEY not in got.stdout + got.stderr, container
    assert '"api_key": true' in logs["engine"].stdout, logs["engine"].stdout[-2000:]
    assert "llamacpp.metrics_relay" in logs["engine"].stdout
    assert KEY not in json.dumps(world.obj())
    events = world.core.list_namespaced_event(NS).items
    assert events and KEY not in json.dumps(world.api.sanitize_for_serialization(events))
    assert KEY not in world.operator_log.read_text(errors="replace")
