"""The operator against a real control plane: `modeldeploy run` as a process, the CRD applied from crds/.

One cluster and one operator for the module; the tests run in file order and build on each other like a
user's day: a CPU-only cluster with a pending vLLM deployment, the first GPU node, one ModelDeployment per
engine, spec changes, edits only the operator can refuse, idempotent re-applies, the GPU node leaving,
an operator restart, deletion. Everything is polled with deadlines; no sleep is an assertion.

Nodes are plain Node objects (no kubelet); their Leases are renewed so the node lifecycle controller keeps
them Ready, and pods bound to them are marked Running/Ready by the test, which is what a kubelet would do.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION, ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller.blocking import Kube
from modeldeploy.render import render
from modeldeploy.selection import node_facts, select_engine
from modeldeploy_dev import LocalCluster
from modeldeploy_dev.nodes import FakeKubelet
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NS = f"md-e2e-{uuid.uuid4().hex[:6]}"  # a fresh namespace per run: nothing left over from an earlier one
MANAGED = "app.kubernetes.io/managed-by=modeldeploy"
T = TypeVar("T")


# --- small helpers -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subset(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` differs from `expected` (fields only in `actual` are the apiserver's defaults)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, got {actual!r}"]
        out: list[str] = []
        for key, value in expected.items():
            out += subset(value, actual.get(key), f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in subset(e, a, f"{path}[{i}]")]
    if str(expected) != str(actual):  # quantities: 1 == "1"
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def md_doc(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": model, **spec},
    }


QWEN = {"name": "qwen2.5-instruct", "sizeInBillions": "0_5", "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"}
VLLM_ONLY = md_doc("vllm-only", {**QWEN, "format": "pytorch", "quantization": "none"}, engine={"name": "vllm"})
LLAMACPP = md_doc(
    "gguf",
    {**QWEN, "format": "ggufv2", "quantization": "Q4_K_M", "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf"},
    engine={"args": {"n_ctx": 4096, "n_parallel": 1}},
)
MLX = md_doc("mlx", {**QWEN, "format": "mlx", "quantization": "4bit", "uri": "hf://mlx-community/Qwen2.5-0.5B-4bit"})
CUSTOM = md_doc(
    "custom",
    {"name": "my-finetune", "family": "my-private-family", "format": "pytorch", "quantization": "none", "uri": "/m"},
)
SGLANG = md_doc("sglang", {**QWEN, "format": "pytorch", "quantization": "none"}, engine={"name": "sglang"})
EXPECTED = {"vllm-only": "vllm", "gguf": "llama.cpp", "mlx": "mlx", "custom": "transformers", "sglang": "sglang"}


# --- the world: client, nodes, pods, the operator process ---------------------------------------------------


class World:
    """Clients for one cluster plus the fake kubelet chores (leases, pod status)."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.crs = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.nodes: set[str] = set()
        self.kubelet = FakeKubelet(self.api, [])
        self.kubelet.nodes = self.nodes  # one set: nodes added or removed here are the kubelet's too

    # nodes
    def add_node(
        self, name: str, *, gpus: int = 0, apple: bool = False, gpu_labels: dict[str, str] | None = None
    ) -> None:
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "darwin" if apple else "linux",
            "kubernetes.io/arch": "arm64" if apple else "amd64",
        }
        taints = []
        if gpus:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.memory": "81559",
                "nvidia.com/gpu.compute.major": "9",
                "nvidia.com/gpu.compute.minor": "0",
            } | (gpu_labels or {})
            taints = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        if apple:
            labels["modeldeploy.io/accelerator"] = "apple-silicon"
        node = {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}
        try:
            self.core.create_node(node)
        except ApiException as exc:  # left by an interrupted run: start from a clean Node
            if exc.status != 409:
                raise
            self.core.delete_node(name)
            eventually(lambda: self._gone(name), f"the old node {name} to go")
            self.core.create_node(node)
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fake kubelet",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
        self.core.patch_node_status(name, {"status": status})
        self.nodes.add(name)
        self.kubelet.renew_lease(name)

    def _gone(self, name: str) -> bool:
        try:
            self.core.read_node(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    def delete_node(self, name: str) -> None:
        self.nodes.discard(name)
        with contextlib.suppress(ApiException):
            self.core.delete_node(name)

    def start(self) -> None:
        self.kubelet.start()

    def stop(self) -> None:
        self.kubelet.stop()

    # ModelDeployments
    def md(self, name: str) -> dict[str, Any]:
        return self.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

    def create_md(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, copy.deepcopy(doc))

    def patch_md(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, patch)

    def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(self.apps.read_namespaced_deployment(name, NS))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def service(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(self.core.read_namespaced_service(name, NS))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def node_facts(self) -> list[Any]:
        cfg = OperatorConfig()
        nodes = self.api.sanitize_for_serialization(self.core.list_node())["items"]
        return [node_facts(n, cfg.label_mappings) for n in nodes]

    def condition(self, name: str, kind: str) -> tuple[str, str] | None:
        for c in (self.md(name).get("status") or {}).get("conditions") or ():
            if c["type"] == kind:
                return c["status"], c["reason"]
        return None


class OperatorProcess:
    """`modeldeploy run` as a real process (what the image runs), restartable."""

    def __init__(self, kubeconfig: str, log: Path, *args: str) -> None:
        self.kubeconfig, self.log, self.args = kubeconfig, log, args or ("--standalone",)
        self.metrics_port, self.health_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "modeldeploy.controller.run",
            *(() if any(a.startswith(("--namespace", "-n")) for a in self.args) else ("--all-namespaces",)),
            *self.args,
            "--verbose",
            f"--metrics-port={self.metrics_port}",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
        ]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(REPO / "operator")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        eventually(self.healthy, "the operator's liveness endpoint", timeout=60)
        # client certificates: read by credentials.py, the process never imports the kubernetes package
        assert "(without the kubernetes package)" in self.log.read_text()

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"operator exited; see {self.log}"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
            return r.status == 200

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def world(local_cluster: LocalCluster) -> Iterator[World]:  # tests/cluster/conftest.py
    w = World(str(local_cluster.kubeconfig_path))
    # The CRD, applied as a user would (`kubectl apply -f crds/`), then Established.
    crd = yaml.safe_load(CRD_FILE.read_text())
    try:
        w.ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = crd["metadata"]["name"]

    def established() -> bool:
        got = w.ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or ())

    eventually(established, "the CRD to be established")
    with contextlib.suppress(ApiException):
        w.core.create_namespace({"metadata": {"name": NS}})
    # A CPU-only cluster to begin with: one Linux CPU node and one Mac.
    w.add_node("e2e-cpu-1")
    w.add_node("e2e-mac-1", apple=True)
    w.start()
    yield w
    w.stop()
    for node in list(w.nodes):
        w.delete_node(node)
    if not os.environ.get("MODELDEPLOY_KEEP_TEST_NAMESPACE"):
        with contextlib.suppress(ApiException):
            w.core.delete_namespace(NS)
            w.core.delete_collection_namespaced_pod(NS, grace_period_seconds=0)


@pytest.fixture(scope="module")
def operator(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(world.kubeconfig, log)
    op.start()
    yield op
    op.stop()
    if os.environ.get("MODELDEPLOY_SHOW_OPERATOR_LOG"):
        print("operator log:", log)
        print(log.read_text()[-20000:])


def expect_rendered(world: World, name: str) -> dict[str, Any]:
    """The live Deployment and Service hold exactly what `render` makes for this spec and these nodes."""
    live_md = world.md(name)
    md = ModelDeployment.model_validate({k: live_md[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    current = live_md.get("status", {}).get("engine")
    decision = select_engine(md.spec, world.node_facts(), OperatorConfig(), current=None)
    if current and decision.engine and decision.engine != current:
        decision = select_engine(md.spec, world.node_facts(), OperatorConfig(), current=current)
    deployment, service = render(md, decision, OperatorConfig())[:2]  # then its NetworkPolicy
    live_dep, live_svc = world.deployment(name), world.service(name)
    problems = subset(deployment, live_dep) + subset(service, live_svc)
    assert not problems, "\n".join(problems[:20])
    return live_dep  # type: ignore[return-value]


def ready(world: World, name: str) -> bool:
    return world.condition(name, "Ready") == ("True", "ReplicasReady")


def pods_of(world: World, name: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={name}"
    return [
        p
        for p in world.core.list_namespaced_pod(NS, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def gpu_limit(pod: Any) -> int:
    return sum(int((c.resources.limits or {}).get("nvidia.com/gpu", 0)) for c in pod.spec.containers)


# --- the tests, in the order of a user's day -------------------------------------------------------------


def test_apiserver_rejects_invalid_objects(world: World) -> None:
    """What the CRD can judge alone never reaches the operator: the apiserver refuses it with its message."""
    cases = {
        "bad-enum": (md_doc("bad-enum", {**QWEN, "format": "safetensors"}), "Unsupported value"),
        "gguf-int4": (md_doc("gguf-int4", {**QWEN, "format": "ggufv2", "quantization": "Int4"}), "GGUF"),
        "mlx-awq": (
            md_doc("mlx-awq", {**QWEN, "format": "awq", "quantization": "Int4"}, engine={"name": "mlx"}),
            "mlx",
        ),
        "ngl": (md_doc("ngl", {**QWEN, "format": "ggufv2"}, engine={"nGpuLayers": -2}), "nGpuLayers"),
    }
    for name, (doc, words) in cases.items():
        with pytest.raises(ApiException) as caught:
            world.create_md(doc)
        assert caught.value.status == 422, name
        message = json.loads(caught.value.body)["message"]
        assert words in message, f"{name}: {message}"
    # Xinference's own spellings pass the CRD's CEL rules (server-side dry run: nothing is stored).
    for i, (fmt, quant) in enumerate([("pytorch", "4-bit"), ("bnb", "8-bit"), ("gptq", "8bits"), ("mlx", "BF16")]):
        doc = md_doc(f"xinf-spelling-{i}", {**QWEN, "format": fmt, "quantization": quant})
        world.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc, dry_run="All")


def test_pending_vllm_gets_its_deployment_when_the_first_gpu_node_joins(
    world: World, operator: OperatorProcess
) -> None:
    world.create_md(VLLM_ONLY)
    eventually(
        lambda: world.condition("vllm-only", "EngineSelected") == ("False", "NoEligibleEngine"), "NoEligibleEngine"
    )
    status = world.md("vllm-only")["status"]
    assert status["ready"] == "0/1" and status["reason"] == "NoEligibleEngine" and "engine" not in status
    assert world.condition("vllm-only", "Stalled") == ("True", "NoEligibleEngine")
    assert world.deployment("vllm-only") is None  # nothing deployed for an engine that cannot run

    world.add_node("e2e-gpu-1", gpus=8)
    eventually(lambda: world.deployment("vllm-only"), "the vLLM Deployment after the GPU node joined")
    eventually(lambda: world.md("vllm-only")["status"].get("engine") == "vllm", "status.engine vllm")
    expect_rendered(world, "vllm-only")
    eventually(lambda: ready(world, "vllm-only"), "vllm-only Ready", timeout=90)
    status = world.md("vllm-only")["status"]
    assert status["ready"] == "1/1" and status["endpoint"] == f"http://vllm-only.{NS}.svc:8000/v1"
    assert status["observedGeneration"] == world.md("vllm-only")["metadata"]["generation"]
    assert [p.spec.node_name for p in pods_of(world, "vllm-only")] == ["e2e-gpu-1"]


def test_one_modeldeployment_per_engine_on_a_mixed_cluster(world: World, operator: OperatorProcess) -> None:
    world.add_node("e2e-cpu-2")
    for doc in (LLAMACPP, MLX, CUSTOM, SGLANG):
        world.create_md(doc)
    for name, engine in EXPECTED.items():
        eventually(lambda n=name, e=engine: world.md(n).get("status", {}).get("engine") == e, f"{name} on {engine}")
        eventually(lambda n=name: world.service(n), f"the Service of {name}")
        expect_rendered(world, name)
    for name in EXPECTED:
        eventually(lambda n=name: ready(world, n), f"{name} Ready", timeout=90)
        pods = pods_of(world, name)
        assert pods, name
        for pod in pods:
            if gpu_limit(pod):
                assert pod.spec.node_name == "e2e-gpu-1", f"{name}: GPU pod on {pod.spec.node_name}"
            if name == "mlx":
                assert pod.spec.node_name == "e2e-mac-1"
            if name in ("vllm-only", "sglang"):
                assert gpu_limit(pod) >= 1
    printed = world.md("gguf")
    assert printed["status"]["ready"] == "1/1" and printed["status"]["engine"] == "llama.cpp"


def test_auto_ngl_decision_reaches_the_status(
    world: World, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The real init container runs on a GGUF; its termination message, as a kubelet reports it, becomes
    status.nGpuLayers."""
    from tests.support.tiny_gguf import write_tiny_llama

    (pod,) = pods_of(world, "gguf")
    init = next(c for c in pod.spec.init_containers or () if c.name == "auto-ngl")
    tmp = tmp_path_factory.mktemp("ngl")
    model, termination = write_tiny_llama(tmp / "tiny.gguf"), tmp / "termination-log"
    termination.touch()
    args = list(init.command[3:] if init.command[:3] == ["python", "-m", "modeldeploy.ngl.initcontainer"] else ())
    assert args, init.command  # the renderer runs our init container's module
    args[args.index("--model") + 1] = str(model)
    args[args.index("--output") + 1] = str(tmp / "ngl.json")
    cmd = [sys.executable, "-m", "modeldeploy.ngl.initcontainer", *args]
    cmd += ["--gpu-free-mib=8000", f"--termination-log={termination}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=60)
    message = termination.read_text()
    expected = json.loads(message)["n_gpu_layers"]
    assert expected == json.loads((tmp / "ngl.json").read_text())["n_gpu_layers"] > 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": 0, "reason": "Completed", "message": message, "startedAt": now, "finishedAt": now}
    # What the kubelet reports when the pod restarts: init container done, the engine not ready yet. The
    # readiness flip changes the Deployment's status, which is what wakes the operator.
    status = {
        "initContainerStatuses": [
            {"name": "auto-ngl", "image": init.image, "imageID": "", "ready": True, "restartCount": 0,
             "state": {"terminated": terminated}}
        ],
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
    }  # fmt: skip
    world.core.patch_namespaced_pod_status(pod.metadata.name, NS, {"status": status})
    eventually(lambda: world.md("gguf")["status"].get("nGpuLayers") == expected, "status.nGpuLayers", timeout=60)
    eventually(lambda: ready(world, "gguf"), "gguf Ready again")
    assert world.md("gguf")["status"]["nGpuLayers"] == expected  # kept while the pod runs


def test_pods_that_cannot_be_placed_say_why(world: World, operator: OperatorProcess) -> None:
    """More GPUs asked than the cluster has: Ready=False, reason Unschedulable, with the scheduler's words."""
    doc = md_doc("too-big", {**QWEN, "format": "pytorch", "quantization": "none"}, engine={"name": "vllm"})
    doc["spec"] |= {"replicas": 3, "resources": {"gpus": 8}}  # eligible (a node has 8), but not three times
    world.create_md(doc)
    try:
        eventually(lambda: world.condition("too-big", "Ready") == ("False", "Unschedulable"), "Ready: Unschedulable")
        ready = next(c for c in world.md("too-big")["status"]["conditions"] if c["type"] == "Ready")
        assert "Insufficient nvidia.com/gpu" in ready["message"], ready
        assert world.md("too-big")["status"]["reason"] == "Unschedulable"
    finally:
        world.crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "too-big")
        eventually(lambda: world.deployment("too-big") is None, "too-big collected")


def metric(operator: OperatorProcess, name: str, *label_parts: str) -> int:
    """The sum of a counter's samples whose labels contain every `label_parts` string."""
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith(name + "{") and all(part in line for part in label_parts):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_reapplying_changes_nothing(world: World, operator: OperatorProcess) -> None:
    """SSA of identical content is a no-op: no new resourceVersion on children, no status churn."""

    def children() -> dict[str, tuple[str, str]]:
        return {
            n: (world.deployment(n)["metadata"]["resourceVersion"], world.service(n)["metadata"]["resourceVersion"])  # type: ignore[index]
            for n in EXPECTED
        }

    def transitions() -> dict[str, list[str]]:
        return {n: [c["lastTransitionTime"] for c in world.md(n)["status"]["conditions"]] for n in EXPECTED}

    before, times = children(), transitions()
    writes = metric(operator, "modeldeploy_writes_total")
    # A user (or a GitOps tool) applies the same ModelDeployment twice with server-side apply: the second
    # apply is a no-op for the apiserver, so the operator is not even woken.
    kube = Kube(world.api)
    for name, doc in {"vllm-only": VLLM_ONLY, "gguf": LLAMACPP}.items():
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}"
        query = [("fieldManager", "gitops"), ("force", "true")]
        current = world.md(name)
        doc = {**copy.deepcopy(doc), "spec": current["spec"]}  # what the earlier tests left
        first = kube.request("PATCH", path, query=query, body=doc, content_type="application/apply-patch+yaml")
        second = kube.request("PATCH", path, query=query, body=doc, content_type="application/apply-patch+yaml")
        assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        assert first["metadata"]["generation"] == current["metadata"]["generation"]

    # Force a reconcile of every MD (an annotation the operator does not read), and wait until it ran:
    # it applies both children again and computes the status again; nothing may change.
    start = metric(operator, "modeldeploy_reconciles_total", 'trigger="update"')
    for name in EXPECTED:
        world.patch_md(name, {"metadata": {"annotations": {"example.com/touched": "yes"}}})
    eventually(
        lambda: metric(operator, "modeldeploy_reconciles_total", 'trigger="update"') >= start + len(EXPECTED),
        "a reconcile per ModelDeployment",
    )
    assert children() == before
    assert transitions() == times
    assert metric(operator, "modeldeploy_writes_total") == writes


def test_fields_others_own_are_left_to_them(world: World, operator: OperatorProcess) -> None:
    """An autoscaler's replicas and a GitOps tool's label on our Deployment survive our re-applies."""
    world.apps.patch_namespaced_deployment_scale("custom", NS, {"spec": {"replicas": 3}}, field_manager="autoscaler")
    world.apps.patch_namespaced_deployment(
        "custom", NS, {"metadata": {"labels": {"argocd.argoproj.io/instance": "models"}}}, field_manager="argocd"
    )
    start = metric(operator, "modeldeploy_reconciles_total", 'trigger="update"')
    world.patch_md("custom", {"metadata": {"annotations": {"example.com/touched": "again"}}})
    eventually(lambda: metric(operator, "modeldeploy_reconciles_total", 'trigger="update"') > start, "a reconcile")
    live = world.deployment("custom")
    assert live["spec"]["replicas"] == 3  # type: ignore[index]
    assert live["metadata"]["labels"]["argocd.argoproj.io/instance"] == "models"  # type: ignore[index]
    world.apps.patch_namespaced_deployment_scale("custom", NS, {"spec": {"replicas": 1}}, field_manager="autoscaler")
    eventually(lambda: world.md("custom")["status"].get("ready") == "1/1" and ready(world, "custom"), "settled")


def test_spec_changes_are_followed(world: World, operator: OperatorProcess) -> None:
    uid = world.deployment("sglang")["metadata"]["uid"]  # type: ignore[index]
    # Forced engine: sglang -> vllm, same Deployment object (patched, not replaced).
    md = world.patch_md("sglang", {"spec": {"engine": {"name": "vllm"}}})
    generation = md["metadata"]["generation"]
    eventually(lambda: world.md("sglang")["status"].get("observedGeneration") == generation, "observedGeneration")
    eventually(lambda: world.deployment("sglang")["metadata"]["labels"]["modeldeploy.io/engine"] == "vllm", "vllm")  # type: ignore[index]
    assert world.md("sglang")["status"]["engine"] == "vllm"
    assert world.deployment("sglang")["metadata"]["uid"] == uid  # type: ignore[index]
    expect_rendered(world, "sglang")
    # Format and quantization: pytorch/none -> awq/Int4 on the vLLM deployment.
    md = world.patch_md("vllm-only", {"spec": {"model": {"format": "awq", "quantization": "Int4"}}})
    generation = md["metadata"]["generation"]
    eventually(lambda: world.md("vllm-only")["status"].get("observedGeneration") == generation, "observedGeneration")
    expect_rendered(world, "vllm-only")
    # Events are posted from a queue after the status write (event_poster.py): wait for them, do not race them.
    eventually(lambda: {"EngineSelected", "EngineChanged"} <= event_reasons(world, "sglang"), "EngineChanged event")
    # As `kubectl describe` reads them: about this very object, from the operator, with their times.
    changed = next(e for e in events_of(world, "sglang") if e.reason == "EngineChanged")
    involved = changed.involved_object
    md_uid = world.md("sglang")["metadata"]["uid"]
    assert (involved.kind, involved.api_version, involved.uid) == ("ModelDeployment", "modeldeploy.io/v1alpha1", md_uid)
    assert changed.source.component == changed.reporting_component == "modeldeploy"
    assert changed.type == "Normal" and changed.message == "engine changed from sglang to vllm"
    assert changed.last_timestamp is not None and changed.event_time is not None


def events_of(world: World, name: str) -> list[Any]:
    """The Events posted about the ModelDeployment `name`."""
    return list(world.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items)


def event_reasons(world: World, name: str) -> set[str]:
    """The reasons of the Events posted about the ModelDeployment `name`."""
    return {e.reason for e in events_of(world, name)}


def untouched_view(deployment: dict[str, Any] | None) -> tuple[Any, ...]:
    """What a write of ours would change: generation, labels, spec (status is the controller's business)."""
    assert deployment is not None
    meta = deployment["metadata"]
    return meta["uid"], meta["generation"], meta["labels"], deployment["spec"]


def test_what_only_the_operator_refuses_keeps_the_workload(world: World, operator: OperatorProcess) -> None:
    before = untouched_view(world.deployment("custom"))
    # vLLM does not serve this custom family: a forced vllm cannot run; the transformers workload stays.
    md = world.patch_md("custom", {"spec": {"engine": {"name": "vllm"}}})
    eventually(lambda: world.condition("custom", "EngineSelected") == ("False", "NoEligibleEngine"), "refused")
    status = world.md("custom")["status"]
    assert status["observedGeneration"] == md["metadata"]["generation"]
    assert world.condition("custom", "Ready") == ("False", "NoEligibleEngine")
    assert untouched_view(world.deployment("custom")) == before
    assert status["engine"] == "transformers"
    eventually(lambda: "NoEligibleEngine" in event_reasons(world, "custom"), "NoEligibleEngine event")
    # Back to auto: transformers again, Ready again.
    world.patch_md("custom", {"spec": {"engine": {"name": "auto"}}})
    eventually(lambda: ready(world, "custom"), "custom Ready again")
    # An engine argument ModelDeploy sets itself: selection refuses it as the renderer would (every engine
    # sets --port), so no engine can run it; the running workload is untouched.
    before = untouched_view(world.deployment("custom"))
    md = world.patch_md("custom", {"spec": {"engine": {"args": {"port": 9000}}}})
    eventually(lambda: world.condition("custom", "EngineSelected") == ("False", "NoEligibleEngine"), "refused")
    message = next(c["message"] for c in world.md("custom")["status"]["conditions"] if c["type"] == "EngineSelected")
    assert "engine.args must not set --port: ModelDeploy sets it for transformers" in message, message
    assert world.md("custom")["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert untouched_view(world.deployment("custom")) == before
    world.patch_md("custom", {"spec": {"engine": {"args": None}}})
    eventually(lambda: ready(world, "custom"), "custom Ready after the bad argument is gone")


def test_removing_the_gpu_node_degrades_and_keeps_the_workload(world: World, operator: OperatorProcess) -> None:
    uid = world.deployment("vllm-only")["metadata"]["uid"]  # type: ignore[index]
    world.delete_node("e2e-gpu-1")
    eventually(lambda: world.condition("vllm-only", "Degraded") == ("True", "EngineNoLongerPossible"), "Degraded")
    status = world.md("vllm-only")["status"]
    assert status["engine"] == "vllm" and status["reason"] == "EngineNoLongerPossible"
    assert world.deployment("vllm-only")["metadata"]["uid"] == uid  # type: ignore[index]
    # CPU engines are untouched by the GPU node leaving.
    assert ready(world, "custom") or world.md("custom")["status"]["engine"] == "transformers"
    # The GPU comes back: the same engine is possible again, Degraded clears.
    world.add_node("e2e-gpu-1", gpus=8)
    eventually(lambda: world.condition("vllm-only", "Degraded") == ("False", "AsExpected"), "recovered")


def test_restart_converges_without_duplicates(world: World, operator: OperatorProcess) -> None:
    operator.stop()
    # While the operator is away: a new ModelDeployment, a spec change, a deleted child.
    world.create_md(md_doc("late", {**QWEN, "format": "ggufv2", "quantization": "Q8_0", "file": "q8.gguf"}))
    md = world.patch_md("gguf", {"spec": {"engine": {"args": {"n_ctx": 8192}}}})
    world.core.delete_namespaced_service("mlx", NS)
    operator.start()
    eventually(lambda: world.deployment("late"), "the Deployment of a ModelDeployment created while down")
    eventually(lambda: world.md("gguf")["status"]["observedGeneration"] == md["metadata"]["generation"], "gguf gen")
    eventually(lambda: world.service("mlx"), "the deleted Service re-created")
    expect_rendered(world, "gguf")
    expect_rendered(world, "late")
    names = {d.metadata.name for d in world.apps.list_namespaced_deployment(NS, label_selector=MANAGED).items}
    services = [s.metadata.name for s in world.core.list_namespaced_service(NS, label_selector=MANAGED).items]
    assert names == {*EXPECTED, "late"} and sorted(services) == sorted(names)


def test_deleting_collects_the_children(world: World, operator: OperatorProcess) -> None:
    world.crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "late")
    eventually(lambda: world.deployment("late") is None and world.service("late") is None, "garbage collection")


def test_metrics_and_liveness(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert "modeldeploy_reconciles_total{" in text
    assert 'modeldeploy_decisions_total{engine="vllm"}' in text
    assert "modeldeploy_reconcile_duration_seconds_count" in text
    assert operator.healthy()


# Three kinds of GPU node as GPU Feature Discovery labels them (docs/memory-placement.md).
GPU_CLASSES = {
    "e2e-t4-1": (1, ("Tesla-T4", "15360", "7", "5")),
    "e2e-l4-1": (1, ("NVIDIA-L4", "23034", "8", "9")),
    "e2e-a100-1": (8, ("NVIDIA-A100-SXM4-80GB", "81920", "8", "0")),
}
BY_MEMORY = {
    # name: (spec, nodes it must not land on, a sentence of status.selection's vLLM reasons, which name kinds of
    # node, not nodes: docs/operator-at-scale.md, "Node churn")
    "qwen7b-bf16": (
        md_doc(
            "qwen7b-bf16",
            {
                "name": "qwen2.5-instruct",
                "format": "pytorch",
                "quantization": "none",
                "uri": "hf://Qwen/Qwen2.5-7B-Instruct",
            },
            engine={"name": "vllm", "args": {"max-model-len": 8192}},
        ),
        {"e2e-t4-1"},
        "with [Tesla-T4, 1 GPU(s)] cannot hold it: compute capability 7.5 < 8.0 that vLLM's bfloat16 weights need",
    ),
    "qwen7b-fp8": (
        md_doc(
            "qwen7b-fp8",
            {"name": "qwen2.5-instruct", "format": "fp8", "uri": "hf://RedHatAI/Qwen2.5-7B-Instruct-FP8-dynamic"},
            engine={"name": "vllm", "args": {"max-model-len": 8192}},
        ),
        {"e2e-t4-1"},
        "nodes with [Tesla-T4, 1 GPU(s)] cannot hold it: compute capability 7.5 < 8.0 that vLLM's FP8 weights need",
    ),
    "qwen72b-awq": (
        md_doc(
            "qwen72b-awq",
            {
                "name": "qwen2.5-instruct",
                "format": "awq",
                "quantization": "Int4",
                "uri": "hf://Qwen/Qwen2.5-72B-Instruct-AWQ",
            },
            engine={"name": "vllm", "args": {"max-model-len": 8192}},
        ),
        {"e2e-t4-1", "e2e-l4-1"},
        "nodes with [NVIDIA-L4, 1 GPU(s)] cannot hold it: 1 × 22.5 GiB × 0.9 = 20.2 GiB < 38.6 GiB weights",
    ),
    "llama70b": (
        md_doc(
            "llama70b",
            {
                "name": "llama-3.1-instruct",
                "format": "pytorch",
                "quantization": "none",
                "uri": "hf://meta-llama/Llama-3.1-70B-Instruct",
            },
            engine={"name": "vllm"},
        ),
        {"e2e-t4-1", "e2e-l4-1"},
        "tensor parallel 4: the smallest that holds Llama-3.1-70B (resources.gpus not set)",
    ),
}


def test_vllm_lands_only_where_the_model_fits_with_the_arithmetic_in_status(
    world: World, operator: OperatorProcess
) -> None:
    """T4, L4 and A100 nodes: each model's pod is scheduled on a node that can hold it, the GPU request is
    the tensor-parallel size, and status.selection says why the others cannot."""
    for node, (gpus, (product, memory, major, minor)) in GPU_CLASSES.items():
        labels = {
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.memory": memory,
            "nvidia.com/gpu.compute.major": major,
            "nvidia.com/gpu.compute.minor": minor,
        }
        world.add_node(node, gpus=gpus, gpu_labels=labels)
    # Only these three kinds of node: the session's cluster may hold others (the real node, earlier tests'
    # GPU nodes), and status.selection lists a few kinds of node only.
    on_these = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": sorted(GPU_CLASSES)}
                        ]
                    }
                ]
            }
        }
    }
    for doc, _, _ in BY_MEMORY.values():
        world.create_md({**doc, "spec": {**doc["spec"], "affinity": on_these}})
    for name, (_, avoided, sentence) in BY_MEMORY.items():
        eventually(lambda n=name: world.md(n).get("status", {}).get("engine") == "vllm", f"{name} on vLLM")
        expect_rendered(world, name)

        def says_why(n: str = name, wanted: str = sentence) -> bool:
            # The nodes' GPU facts may reach the operator after its first decision: the sweep that follows
            # them re-decides, and the status says it then.
            vllm = next(c for c in world.md(n)["status"]["selection"] if c["engine"] == "vllm")
            return any(wanted in reason for reason in vllm["reasons"])

        eventually(says_why, f"{name}'s status saying why: {sentence}")

        def placed(n: str = name) -> list[Any]:
            pods = pods_of(world, n)
            return pods if pods and all(p.spec.node_name for p in pods) else []

        for pod in eventually(placed, f"{name}'s pod scheduled"):
            assert pod.spec.node_name not in avoided, f"{name} on {pod.spec.node_name}"
            assert gpu_limit(pod) == (4 if name == "llama70b" else 1)


# The peering test stops the module's operator: it stays last.
PEERING_CRDS = REPO / "deploy" / "crds" / "kopf.dev_peerings.yaml"


def test_peering_one_active_replica(
    world: World, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas with Kopf peering: the higher priority works, the other pauses, and takes over."""
    operator.stop()
    for crd in yaml.safe_load_all(PEERING_CRDS.read_text()):
        with contextlib.suppress(ApiException):
            world.ext.create_custom_resource_definition(crd)
    peering = "modeldeploy-e2e"

    def peering_object() -> bool:
        with contextlib.suppress(ApiException):
            world.crs.create_cluster_custom_object(
                "kopf.dev",
                "v1",
                "clusterkopfpeerings",
                {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}},
            )
        return bool(world.crs.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering))

    eventually(peering_object, "the ClusterKopfPeering object (its CRD established)")
    logs = tmp_path_factory.mktemp("peering")
    high = OperatorProcess(world.kubeconfig, logs / "high.log", f"--peering={peering}", "--priority=20")
    low = OperatorProcess(world.kubeconfig, logs / "low.log", f"--peering={peering}", "--priority=10")
    try:
        high.start()
        low.start()

        # Both replicas publish keep-alives; the low one starts paused and stays so while the high one lives.
        def peers() -> int:
            body = world.crs.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
            return len(body.get("status") or {})

        eventually(lambda: peers() == 2, "both replicas in the peering object")
        world.create_md(md_doc("peered", {**CUSTOM["spec"]["model"]}))
        eventually(lambda: world.deployment("peered"), "the Deployment, made by the active replica")
        assert metric(high, "modeldeploy_reconciles_total", 'trigger="create"') >= 1
        assert metric(low, "modeldeploy_reconciles_total") == 0
        high.stop()  # a graceful exit leaves the peering: the low replica resumes at once
        eventually(lambda: "Resuming operations" in low.log.read_text(), "the low replica to resume", timeout=90)
        md = world.patch_md("peered", {"spec": {"replicas": 2}})
        eventually(
            lambda: world.md("peered")["status"].get("observedGeneration") == md["metadata"]["generation"],
            "the spec change handled by the remaining replica",
        )
        assert world.deployment("peered")["spec"]["replicas"] == 2  # type: ignore[index]
        assert metric(low, "modeldeploy_reconciles_total", 'trigger="update"') >= 1
    finally:
        low.stop()
        high.stop()
