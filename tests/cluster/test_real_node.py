"""The pods the renderer writes meet our images, for real: containerd runs them on the real node.

The example ModelDeployment `examples/modeldeployments/llamacpp-smollm2.yaml` is rendered exactly as the
operator renders it (selection on the live cluster's real node, the operator config pointing the fetcher
at the local Hub server through `fetchEnv`), and the Deployment is applied to the real control plane. The
real node's kubelet runs the fetch and auto-NGL init containers and the llama.cpp server from our images
(built here with buildah from their Dockerfiles), with the rendered security contexts, limits, mounts,
env and probes applied by runc. One pod really serves SmolLM2-135M and answers through its Service; the
others carry one deliberate renderer/image disagreement each and must fail with the pod's own error: a
mount path, an environment variable, a port.

The only change made to the example is the one `modeldeploy dev demo` makes (dev.on_the_real_node): the
real node's toleration and label. The node stands in for a GPU node (nodeconfig.STAND_IN_GPU) so the
GPU path runs: auto-NGL finds no device and decides 0 layers.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modeldeploy.config import EnvVar, OperatorConfig
from modeldeploy.loader import parse_model_deployment
from modeldeploy.ngl.initcontainer import TERMINATION_LOG
from modeldeploy.render import render
from modeldeploy.selection import node_facts, select_engine
from modeldeploy_dev import devchat, testmodel
from modeldeploy_dev.cluster import LocalCluster
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.nodeconfig import NO_REGISTRY
from modeldeploy_dev.realnode import RealNode
from tests.support.tools import unavailable
from tests.support.waiting import eventually, http_status

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NS = f"md-pods-{uuid.uuid4().hex[:6]}"


class Pods:
    """The module's world: the Hub server on the node's address, the real node, and a namespace."""

    def __init__(self, api: client.ApiClient, hub: HubServer, node: RealNode, cluster: LocalCluster) -> None:
        self.api, self.hub, self.node, self.cluster = api, hub, node, cluster
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.services: dict[str, dict[str, Any]] = {}

    def rendered(self, name: str, cache_pvc: str | None = None) -> dict[str, Any]:
        """The example's Deployment as the operator renders it for the real node, named `name`."""
        doc = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
        doc["metadata"].update(name=name, namespace=NS)
        if cache_pvc:
            doc["spec"]["cache"] = {"pvc": cache_pvc}
        md = parse_model_deployment(doc, str(EXAMPLE))
        config = OperatorConfig(fetch_env=[EnvVar(name="HF_ENDPOINT", value=self.hub.url)])
        live = self.api.sanitize_for_serialization(self.core.read_node(self.node.name))
        decision = select_engine(md.spec, [node_facts(live, config.label_mappings)], config)
        objects = render(md, decision, config)
        self.services[name] = next(o for o in objects if o["kind"] == "Service")
        return next(o for o in objects if o["kind"] == "Deployment")

    def apply(self, deployment: dict[str, Any]) -> str:
        """The Deployment and the Service the operator renders with it."""
        name = str(deployment["metadata"]["name"])
        self.apps.create_namespaced_deployment(NS, deployment)
        self.core.create_namespaced_service(NS, self.services[name])
        return name

    def pod(self, name: str) -> dict[str, Any]:
        """The Deployment's live pod, as a dict (camelCase, as kubectl shows it)."""
        pods = self.core.list_namespaced_pod(NS, label_selector=f"app.kubernetes.io/instance={name}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        assert live, f"no pod for {name} yet"
        return dict(self.api.sanitize_for_serialization(live[0]))

    def events(self, pod: dict[str, Any]) -> list[str]:
        got = self.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod['metadata']['name']}")
        return [f"{e.reason}: {e.message}" for e in got.items]

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl as a user runs it, with the cluster's admin kubeconfig."""
        argv = ["kubectl", "--kubeconfig", str(self.cluster.kubeconfig_path), "-n", NS, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def pods(kube_api: client.ApiClient, real_node: RealNode, local_cluster: LocalCluster) -> Iterator[Pods]:
    try:
        repo_dir = testmodel.ensure_hub_repo() / testmodel.HUB_REPO
    except testmodel.ModelUnavailable as exc:
        unavailable(str(exc))
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": NS}})
    with HubServer({testmodel.HUB_REPO: repo_dir}, host=real_node.address) as hub:
        try:
            yield Pods(kube_api, hub, real_node, local_cluster)
        finally:
            core.delete_namespace(NS)
            eventually(lambda: not core.list_namespaced_pod(NS).items, "the pods to go", timeout=120)


def _init(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in pod["status"].get("initContainerStatuses") or () if s["name"] == name)


def _engine(pod: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in pod["status"].get("containerStatuses") or () if s["name"] == "engine")


def _terminated(status: dict[str, Any]) -> dict[str, Any] | None:
    """The container's last finished run: its current state if terminated, else its lastState."""
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def test_the_rendered_pod_serves_smollm2_for_real(pods: Pods) -> None:
    deployment = pods.rendered("smollm2")
    spec = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["fetch", "auto-ngl"]  # the path the issue describes
    name = pods.apply(deployment)

    def ready() -> dict[str, Any] | None:
        pod = pods.pod(name)
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or ()}
        return pod if conds.get("Ready") == "True" else None

    pod = eventually(ready, "the SmolLM2 pod to be Ready", timeout=240)
    fetch, ngl, engine = _init(pod, "fetch"), _init(pod, "auto-ngl"), _engine(pod)
    assert _terminated(fetch)["exitCode"] == 0 and fetch["restartCount"] == 0, fetch
    ngl_done = _terminated(ngl)
    assert ngl_done["exitCode"] == 0, ngl
    # The auto-NGL decision reaches the pod's status through the termination message at TERMINATION_LOG,
    # which is what the operator reads into status.nGpuLayers: no GPU on this machine, so 0 layers.
    assert json.loads(ngl_done["message"])["n_gpu_layers"] == 0, (TERMINATION_LOG, ngl_done)
    assert engine["ready"] and engine["started"] and "running" in engine["state"], engine
    assert pods.hub.stats()["repos"][testmodel.HUB_REPO]["files"][testmodel.FILE]["gets"] == 1
    # Our images, run by containerd on the real node: the image IDs are the ones imported there.
    assert pod["spec"]["nodeName"] == pods.node.name and pod["status"]["podIP"].startswith("10.244.")
    assert engine["image"] in pods.node.images() and engine["imageID"], engine

    # A user's client reaches it through the Service's ClusterIP (kube-proxy routes it to the pod). The route
    # appears on kube-proxy's next sync after the EndpointSlice marks the pod ready, which can trail the pod's
    # Ready condition by a moment: a client retries a refused connection until then.
    service = pods.core.read_namespaced_service(name, NS)
    base = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    assert eventually(lambda: http_status(f"{base}/v1/models") == 200, "the Service's ClusterIP to answer", 30)
    reply = devchat.chat(base, name, "What is the capital of France?", max_tokens=32)
    assert "paris" in reply.text.lower(), reply

    # kubectl works on it as on any node: the server's log, a process that is not root, port-forward.
    pod_name = pod["metadata"]["name"]
    logs = pods.kubectl("logs", pod_name, "-c", "engine")
    # the entrypoint's preflight line, then llama.cpp's own log of the request just answered
    assert logs.returncode == 0 and "llamacpp.preflight" in logs.stdout, logs.stderr
    assert "stop processing" in logs.stdout, logs.stdout[-2000:]
    uid = pods.kubectl("exec", pod_name, "-c", "engine", "--", "id", "-u")
    assert uid.returncode == 0 and uid.stdout.strip() not in ("", "0"), (uid.stdout, uid.stderr)
    readonly = pods.kubectl("exec", pod_name, "-c", "engine", "--", "touch", "/written-by-test")
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr, readonly
    forward = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(pods.cluster.kubeconfig_path), "-n", NS, "port-forward", f"pod/{pod_name}",
         "18765:8000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert eventually(lambda: http_status("http://127.0.0.1:18765/v1/models") == 200, "port-forward", 30)
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_a_cache_claim_is_the_bound_volumes_directory(pods: Pods, local_provisioner: object) -> None:
    """spec.cache.pvc: the claim binds to a local-path volume and the fetcher writes into its directory."""
    claim = {
        "metadata": {"name": "model-cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    pods.core.create_namespaced_persistent_volume_claim(NS, claim)
    name = pods.apply(pods.rendered("on-a-claim", cache_pvc="model-cache"))

    def fetched() -> dict[str, Any] | None:
        done = _terminated(_init(pods.pod(name), "fetch"))
        return done if done and done["exitCode"] == 0 else None

    eventually(fetched, "the fetch into the claim", timeout=120)
    pvc = pods.core.read_namespaced_persistent_volume_claim("model-cache", NS)
    directory = Path(pods.core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path)
    gguf = directory / "hf" / testmodel.HUB_REPO / "main" / testmodel.FILE
    assert gguf.stat().st_size == testmodel.SIZE


def test_a_wrong_mount_path_fails_with_the_engines_own_error(pods: Pods) -> None:
    """The engine's cache mounted elsewhere than the --model path the renderer wrote: the entrypoint's
    own sentence ends up in the container's termination message."""
    deployment = pods.rendered("bad-mount")
    (engine,) = deployment["spec"]["template"]["spec"]["containers"]
    for mount in engine["volumeMounts"]:
        if mount["mountPath"] == "/models":
            mount["mountPath"] = "/model-cache"
    name = pods.apply(deployment)

    def failed() -> dict[str, Any] | None:
        done = _terminated(_engine(pods.pod(name)))
        return done if done and done["exitCode"] != 0 else None

    done = eventually(failed, "the engine to fail on the missing model file", timeout=180)
    model = next(a for a in engine["command"] if a.endswith(".gguf"))
    assert done["exitCode"] == 2 and model in done.get("message", ""), done
    assert not _engine(pods.pod(name))["ready"]


def test_a_wrong_env_var_fails_the_fetch_with_its_own_error(pods: Pods) -> None:
    """The Hub endpoint under a name the fetcher does not read: it goes to the public Hub, which a pod of
    this cluster cannot reach, and says so in its termination message; the engine never starts."""
    deployment = pods.rendered("bad-env")
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]
    fetch["env"] = [{**e, "name": "HF_HUB_ENDPOINT"} if e["name"] == "HF_ENDPOINT" else e for e in fetch["env"]] + [
        {"name": "MODELDEPLOY_FETCH_ATTEMPTS", "value": "1"}
    ]
    name = pods.apply(deployment)

    def failed() -> dict[str, Any] | None:
        done = _terminated(_init(pods.pod(name), "fetch"))
        return done if done and done["exitCode"] != 0 else None

    done = eventually(failed, "the fetch init container to fail", timeout=120)
    # The pod's network has no route to the public Hub: the fetcher's one sentence names the repository and
    # the connection failure.
    message = done.get("message", "")
    assert done["exitCode"] == 1 and testmodel.HUB_REPO in message and "Connect" in message, done
    pod = pods.pod(name)
    assert pod["status"]["phase"] == "Pending"
    assert "waiting" in _engine(pod)["state"], _engine(pod)


def test_a_wrong_port_never_gets_ready_and_the_probe_says_why(pods: Pods) -> None:
    """The server told to listen on 8001 while the probes and the Service use 8000."""
    deployment = pods.rendered("bad-port")
    (engine,) = deployment["spec"]["template"]["spec"]["containers"]
    command = engine["command"]
    command[command.index("--port") + 1] = "8001"
    name = pods.apply(deployment)

    def refused() -> list[str]:
        return [e for e in pods.events(pods.pod(name)) if e.startswith("Unhealthy: Startup probe failed")]

    # The server does come up, on the port it was told: reached at the pod's IP from the host.
    def serving_on_8001() -> bool:
        ip = pods.pod(name)["status"].get("podIP")
        return bool(ip) and http_status(f"http://{ip}:8001/health") == 200

    eventually(serving_on_8001, "the server to answer on 8001", timeout=180)
    # ...and still the startup probe, on the rendered port, fails. It runs every second: several periods after
    # the server came up the pod is still not Ready, and the probe's Events say why. (Counting new Events does
    # not work at that period: the kubelet's Event spam filter lets 25 through per object, then one per 5 min.)
    time.sleep(5)
    events = refused()
    assert events and "connection refused" in events[-1] and ":8000/health" in events[-1], events
    pod = pods.pod(name)
    assert "running" in _engine(pod)["state"] and not _engine(pod)["ready"]
    conds = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False" and "engine" in conds["Ready"]["message"]


def test_an_image_that_was_not_built_here_is_never_pulled(pods: Pods) -> None:
    """No registry is reachable: every registry's upstream is a loopback address where nothing listens
    (nodeconfig.NO_REGISTRY), so the pull fails at once, no packet leaves the machine, and the pod says so."""
    deployment = pods.rendered("other-image")
    (engine,) = deployment["spec"]["template"]["spec"]["containers"]
    engine["image"] = "vllm/vllm-openai:v0.8.5"
    name = pods.apply(deployment)

    def pull_failed() -> str | None:
        waiting = (_engine(pods.pod(name)).get("state") or {}).get("waiting") or {}
        return waiting.get("reason") if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    eventually(pull_failed, "the pull to fail", timeout=180)
    events = pods.events(pods.pod(name))
    assert any(NO_REGISTRY.removeprefix("http://") in e for e in events if e.startswith("Failed")), "\n".join(events)
