"""Replicas follow load: the real HPA controller scales the operator's Deployment on the real engine's gauges.

What is real: the kube-apiserver (with the custom.metrics.k8s.io API aggregated into it), the
kube-controller-manager's HPA controller, the HorizontalPodAutoscaler and Deployment the operator's
reconcile applies (the fallback when KEDA is absent, docs/autoscaling.md), and the llama.cpp server
(our entrypoint on the xllamacpp CPU wheel) whose `llamacpp:requests_processing` and
`llamacpp:requests_deferred` gauges carry the load of real concurrent requests.

What stands in: the pods are the local cluster's fake ones (no kubelet runs containers here), so one
real llama.cpp server takes all requests as the first pod; and Prometheus + prometheus-adapter (not
built here) are replaced by a loop that scrapes the server's /metrics every half second and writes the
sum as that pod's `modeldeploy_requests_in_flight` (0 for the others) into the Kubernetes project's own
custom-metrics test adapter (sigs.k8s.io/custom-metrics-apiserver/test-adapter). The HPA's average over
the pods is then sum/replicas, the same signal KEDA's Prometheus query gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.controller.apply import Kube, KubeError
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.scaling import forget_discovery
from modeldeploy.localcluster import BuildError, LocalCluster, addon_crds, ensure_binaries
from modeldeploy.localcluster.nodes import FakeKubelet, create_node, load_node_set
from modeldeploy.scaling.objects import HPA_METRIC
from modeldeploy.scaling.settings import AutoscalingSettings
from modeldeploy.selection.nodes import facts_from_document
from tests.support.tiny_gguf import write_tiny_llama
from tests.support.tools import ensure_metrics_adapter, unavailable

pytest.importorskip("xllamacpp")
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
NS = "scaling"
NAME = "chat"
NODES_FILE = REPO / "examples" / "nodes" / "cpu-cluster.yaml"
MD_CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
TARGET, MAX = 2, 4
# The test adapter takes metric values over plain HTTP on a fixed port (its main.go hard-codes :8080).
WRITE_PORT = 8080


def _say(message: str) -> None:
    print(f"[hpa cluster] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Adapter:
    """The custom-metrics test adapter as a process, registered as custom.metrics.k8s.io/v1beta2."""

    def __init__(self, binary: Path, kubeconfig: Path, workdir: Path) -> None:
        self.port = _free_port()
        self.log = workdir / "adapter.log"
        args = [
            str(binary),
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={workdir / 'adapter-certs'}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            # The apiserver here has no front-proxy certificates: the adapter is on loopback only and lets
            # the aggregated paths through without delegated authentication.
            "--authentication-skip-lookup",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/openapi/*,/apis,/apis/*",
            "--v=1",
        ]
        self.proc = subprocess.Popen(args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.base = f"https://127.0.0.1:{self.port}"

    def write(self, namespace: str, pod: str, value: int) -> None:
        url = f"http://127.0.0.1:{WRITE_PORT}/write-metrics/namespaces/{namespace}/pods/{pod}/{HPA_METRIC}"
        reply = httpx.post(url, json=str(value), timeout=5)
        reply.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Engine:
    """Our llama.cpp entrypoint with one slot, serving a tiny GGUF."""

    def __init__(self, workdir: Path) -> None:
        model = write_tiny_llama(workdir / "tiny-llama-f32.gguf")
        self.port = _free_port()
        argv = [sys.executable, "-m", "modeldeploy.engines.llamacpp", "--model", str(model), "--alias", "chat"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--n-gpu-layers", "0", "--preflight", "warn"]
        argv += ["--param", "n_ctx=2048", "--param", "n_parallel=1"]
        env = dict(os.environ, MODELDEPLOY_TERMINATION_LOG=str(workdir / "termination-log"))
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.base = f"http://127.0.0.1:{self.port}"

        def healthy() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
            return False

        _wait("the llama.cpp server", healthy, 60)

    def in_flight(self) -> int:
        total = 0.0
        for line in httpx.get(f"{self.base}/metrics", timeout=5).text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
                total += float(value)
        return int(total)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, Adapter, Engine]]:
    try:
        ensure_binaries(log=_say)
    except BuildError as exc:
        unavailable(f"the local control plane cannot be built: {exc}")
    binary = ensure_metrics_adapter()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", WRITE_PORT)) == 0:
            unavailable(f"port {WRITE_PORT} is taken; the custom-metrics test adapter takes metric values there")
    workdir = tmp_path_factory.mktemp("hpa")
    cluster = LocalCluster(workdir / "cluster", log=_say)
    cluster.start()
    stack = contextlib.ExitStack()
    stack.callback(cluster.stop)
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        kube = Kube(api)
        core = client.CoreV1Api(api)
        names = [create_node(core, n) for n in load_node_set(NODES_FILE)]
        kubelet = FakeKubelet(api, names).start()
        stack.callback(kubelet.stop)
        adapter = Adapter(binary, cluster.kubeconfig_path, workdir)
        stack.callback(adapter.stop)
        kube.request(
            "POST",
            "/api/v1/namespaces/kube-system/services",
            body={
                "metadata": {"name": "custom-metrics"},
                "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": adapter.port}]},
            },
        )
        kube.request(
            "POST",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            body={
                "metadata": {"name": "v1beta2.custom.metrics.k8s.io"},
                "spec": {
                    "group": "custom.metrics.k8s.io",
                    "version": "v1beta2",
                    "service": {"namespace": "kube-system", "name": "custom-metrics", "port": adapter.port},
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 200,
                },
            },
        )

        def available() -> bool:
            svc = kube.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io") or {}
            conds = (svc.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conds)

        try:
            _wait("the custom metrics API to be available", available, 60)
        except AssertionError:
            raise AssertionError(adapter.log.read_text()[-3000:]) from None
        # The adapter sees the aggregated requests as anonymous (this apiserver has no front-proxy client
        # certificate) and asks the apiserver whether that user may read custom metrics: allow exactly that.
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        kube.request(
            "POST",
            f"{rbac}/clusterroles",
            body={
                "metadata": {"name": "custom-metrics-read"},
                "rules": [{"apiGroups": ["custom.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}],
            },
        )
        kube.request(
            "POST",
            f"{rbac}/clusterrolebindings",
            body={
                "metadata": {"name": "custom-metrics-read-anonymous"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "custom-metrics-read",
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}],
            },
        )
        addon_crds.install(api, [yaml.safe_load(MD_CRD.read_text())])
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        engine = Engine(workdir)
        stack.callback(engine.stop)
        yield kube, adapter, engine
    finally:
        stack.close()


def _replicas(kube: Kube) -> int:
    dep = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}") or {}
    return int((dep.get("spec") or {}).get("replicas") or 0)


def _pods(kube: Kube) -> list[str]:
    query = [("labelSelector", f"app.kubernetes.io/instance={NAME}")]
    items = kube.request("GET", f"/api/v1/namespaces/{NS}/pods", query=query).get("items") or []
    items = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return [p["metadata"]["name"] for p in sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])]


def _reconcile(kube: Kube, cfg: OperatorConfig) -> None:
    nodes = facts_from_document(NODES_FILE.read_text(), LabelMappings())
    for _ in range(20):
        try:
            assert reconcile(kube, NS, NAME, nodes, cfg).outcome == "applied"
            return
        except KubeError as exc:
            if not exc.transient:
                raise
            time.sleep(0.5)
    raise AssertionError("reconcile kept failing transiently")


def test_replicas_follow_the_engines_requests_in_flight(world: tuple[Kube, Adapter, Engine]) -> None:
    kube, adapter, engine = world
    forget_discovery()
    cfg = OperatorConfig(autoscaling=AutoscalingSettings(keda=False))
    md = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"name": "chat", "format": "ggufv2", "quantization": "F32", "uri": "/models/tiny.gguf"},
            "engine": {"args": {"n_parallel": 1}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": MAX, "targetRequests": TARGET, "scaleDownDelaySeconds": 0},
        },
    }
    kube.request("POST", f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments", body=md)
    _reconcile(kube, cfg)
    assert kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") is not None
    _wait("the first pod", lambda: _pods(kube), 60)

    stop_feed, stop_load = threading.Event(), threading.Event()
    seen: list[tuple[float, int, int]] = []  # (time, in flight, replicas)
    started = time.monotonic()

    errors: list[str] = []

    def feed() -> None:
        while not stop_feed.is_set():
            try:
                total = engine.in_flight()
                pods = _pods(kube)
                for i, pod in enumerate(pods):
                    adapter.write(NS, pod, total if i == 0 else 0)
                seen.append((time.monotonic() - started, total, _replicas(kube)))
            except (httpx.HTTPError, KubeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            stop_feed.wait(0.5)

    def load() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop_load.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    http.post(
                        f"{engine.base}/v1/completions",
                        json={"model": "chat", "prompt": "Count:", "max_tokens": 256, "ignore_eos": True},
                    )

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    users = [threading.Thread(target=load, daemon=True) for _ in range(4 * TARGET)]
    try:
        for u in users:
            u.start()
        try:
            _wait(f"{MAX} replicas under load", lambda: _replicas(kube) == MAX, 120)
        except AssertionError as exc:
            hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") or {}
            raise AssertionError(
                f"{exc}; HPA status {hpa.get('status')}; fed {seen[-5:]}; feed errors {errors[-2:]}; adapter log: "
                f"{adapter.log.read_text()[-1500:]}"
            ) from None
        up = time.monotonic() - started
        # The operator re-applies its Deployment: the HPA's replica count stays (yielded field).
        _reconcile(kube, cfg)
        assert _replicas(kube) == MAX
        stop_load.set()
        for u in users:
            u.join(timeout=60)
        load_ended = time.monotonic() - started
        _wait("1 replica once idle", lambda: _replicas(kube) == 1, 120)
        down = time.monotonic() - started - load_ended
    finally:
        stop_load.set()
        stop_feed.set()
        feeder.join(timeout=10)
    peak = max(total for _, total, _ in seen)
    _say(f"load on: {MAX} replicas after {up:.0f} s (peak {peak} requests in flight, target {TARGET}/replica)")
    timeline = [(round(t), n, r) for t, n, r in seen[:: max(1, len(seen) // 12)]]
    _say(f"load off: back to 1 replica {down:.0f} s later; (s, requests in flight, replicas): {timeline}")
    assert peak >= TARGET * (MAX - 1) + 1
    hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") or {}
    conds = {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or []}
    assert conds["ScalingActive"]["status"] == "True", conds
