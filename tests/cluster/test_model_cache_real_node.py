"""The shared model cache with every pod run for real: one download for two replicas and a second model.

The operator runs as a process; the real node runs the download Job's pod (the fetcher) and the llama.cpp
pods (auto-NGL and the server, SmolLM2-135M) from our images; the local provisioner binds the claim; the
local Hub server serves the model and counts every byte it sends. Two replicas of one ModelDeployment and
a second ModelDeployment of the same model must cost exactly one download, and every pod must read the
weights from the one claim.

The Job's pod reaches the apiserver through the `kubernetes` Service with its ServiceAccount token, as on
any cluster, so its progress reaches the claim and the `Model` column moves meanwhile.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.modelcache.plan import SHARED_VOLUME
from modeldeploy_dev import testmodel
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.realnode import RealNode
from tests.cluster.test_operator import CRD_FILE, OperatorProcess, eventually
from tests.support.tools import unavailable

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NS = f"md-cache-pods-{uuid.uuid4().hex[:6]}"


class World:
    def __init__(self, api: client.ApiClient, hub: HubServer, operator_log: Path) -> None:
        self.api, self.hub, self.operator_log = api, hub, operator_log
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.crs = client.CustomObjectsApi(api)

    def create(self, name: str, replicas: int) -> None:
        # On the (tainted) real node: the download Job goes where the model's nodeSelector and tolerations
        # say, like its pods.
        doc = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
        doc["metadata"].update(name=name, namespace=NS)
        doc["spec"].update(replicas=replicas, cache={"shared": {}})
        self.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)

    def status(self, name: str) -> dict[str, Any]:
        return self.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name).get("status") or {}

    def ready(self, name: str) -> bool:
        conditions = {c["type"]: c["status"] for c in self.status(name).get("conditions") or ()}
        return conditions.get("Ready") == "True"

    def explain(self, name: str) -> str:
        """What a failure message needs: the status and every pod's phase and container states."""
        lines = [f"status: {self.status(name)}"]
        for pod in self.core.list_namespaced_pod(NS).items:
            states = [
                (c.name, c.state.to_dict(), c.last_state.to_dict()) for c in (pod.status.init_container_statuses or [])
            ]
            states += [(c.name, c.state.to_dict()) for c in (pod.status.container_statuses or [])]
            conditions = [(c.type, c.status, c.reason, c.message) for c in pod.status.conditions or ()]
            where = f"{pod.metadata.name} on {pod.spec.node_name} {pod.status.phase}"
            lines.append(f"{where} {pod.status.reason}: {pod.status.message} {conditions} {states}")
        lines.append(f"--- operator: {self.operator_log.read_text(errors='replace')[-1500:]}")
        return "\n".join(lines)

    def wait_ready(self, name: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready(name):
                return
            time.sleep(0.5)
        pytest.fail(f"{name} not Ready within {timeout:.0f}s\n{self.explain(name)}")


@pytest.fixture(scope="module")
def world(
    kube_api: client.ApiClient,
    local_cluster: Any,
    local_provisioner: object,
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
    work = tmp_path_factory.mktemp("cache-pods")
    # ~5 s for the 98 MB: long enough to see the progress column move (huggingface_hub writes 10 MB chunks)
    with HubServer({testmodel.HUB_REPO: repo_dir}, throttle=20 << 20, host=real_node.address) as hub:
        config = work / "config.yaml"
        settings = {
            "fetchEnv": [{"name": "HF_ENDPOINT", "value": hub.url}],
            "modelCache": {"progressIntervalSeconds": 0.5},
        }
        config.write_text(yaml.safe_dump(settings))
        operator = OperatorProcess(
            str(local_cluster.kubeconfig_path), work / "operator.log", "--standalone", f"--config={config}"
        )
        operator.start()
        try:
            yield World(kube_api, hub, work / "operator.log")
        finally:
            operator.stop()
            core.delete_namespace(NS)
            with contextlib.suppress(Exception):
                eventually(lambda: not core.list_namespaced_pod(NS).items, "the pods to go", timeout=90)


def test_two_replicas_and_a_second_modeldeployment_cost_one_download(world: World) -> None:
    started = time.monotonic()
    world.create("smol-a", replicas=2)
    seen: list[str] = []
    while time.monotonic() - started < 120 and (not seen or seen[-1] != "Ready"):
        summary = (world.status("smol-a").get("model") or {}).get("summary")
        if summary and (not seen or seen[-1] != summary):
            seen.append(summary)
        time.sleep(0.1)
    percents = [int(s.split()[1].rstrip("%")) for s in seen if s.startswith("Downloading ") and s.endswith("%")]
    assert any(0 < p < 100 for p in percents), f"the column showed no progress: {seen}"
    world.wait_ready("smol-a")  # two replicas served for real
    first = time.monotonic() - started
    started = time.monotonic()
    world.create("smol-b", replicas=1)
    world.wait_ready("smol-b")
    second = time.monotonic() - started

    model_a, model_b = world.status("smol-a")["model"], world.status("smol-b")["model"]
    assert model_a["phase"] == model_b["phase"] == "Ready" and model_a["claim"] == model_b["claim"]
    assert model_a["revision"] == world.hub.commit(testmodel.HUB_REPO)
    stats = world.hub.downloads(testmodel.HUB_REPO, testmodel.FILE)
    assert (stats.gets, stats.bytes) == (1, testmodel.SIZE), stats
    pods = world.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/managed-by=modeldeploy").items
    engine_pods = [p for p in pods if any(v.name == SHARED_VOLUME for v in p.spec.volumes or ())]
    assert len(engine_pods) == 3
    for pod in engine_pods:
        assert [c.name for c in pod.spec.init_containers or []] == ["auto-ngl"]  # nothing fetched in the pod
    print(
        f"\nshared model cache, pods run for real: {stats.bytes} bytes downloaded once for 3 replicas of 2 "
        f"ModelDeployments; apply to Ready: first {first:.1f} s, second {second:.1f} s"
    )
