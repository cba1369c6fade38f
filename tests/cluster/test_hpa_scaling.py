"""Replicas follow load: the real HPA controller scales the operator's Deployment on the engines' gauges.

What is real: the kube-apiserver (with the custom.metrics.k8s.io API aggregated into it), the
kube-controller-manager's HPA controller, the scheduler, the HorizontalPodAutoscaler and Deployment the
operator's reconcile applies (the fallback when KEDA is absent, docs/autoscaling.md), and every pod: a real
node of this module's own (kubelet, containerd, runc, the CNI bridge, kube-proxy; docs/real-node.md) runs
each replica from our images (fetch from the local Hub server, auto-NGL, our llama.cpp entrypoint serving
SmolLM2-135M, probes). The load is real chat requests sent, as a user's client sends them, to the
Deployment's Service ClusterIP, which kube-proxy spreads over the Ready pods' endpoints (each request on a
connection of its own, so a new replica gets its share as soon as it is an endpoint).

What stands in: Prometheus + prometheus-adapter (not built here) are a loop that scrapes each Ready pod's
/metrics at its pod IP every half second and writes its `llamacpp:requests_processing + requests_deferred`
as that pod's `modeldeploy_requests_in_flight` into the Kubernetes project's own custom-metrics test
adapter (sigs.k8s.io/custom-metrics-apiserver/test-adapter), a process on this machine that the
APIService reaches through an ExternalName Service `localhost`. The node stands in for a GPU node
(nodeconfig.STAND_IN_GPU, no device behind it), so the replicas take the GPU path and auto-NGL decides 0
layers.

The module starts its own control plane (it aggregates an API into it) and its own real node, so it runs
before the session's cluster takes the host's one node (`own_node`).
"""

from __future__ import annotations

import contextlib
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

from modeldeploy.config import EnvVar, LabelMappings, OperatorConfig
from modeldeploy.config.scaling import AutoscalingSettings
from modeldeploy.controller.blocking import Kube, KubeError
from modeldeploy.controller.reconcile import reconcile_once
from modeldeploy.controller.scaling import forget_discovery
from modeldeploy.scaling.objects import HPA_METRIC
from modeldeploy.selection.nodes import NodeFacts, node_facts
from modeldeploy_dev import BuildError, LocalCluster, addon_crds, ensure_binaries, images, realnode, testmodel
from modeldeploy_dev.cluster import SERVICE_CIDR
from modeldeploy_dev.dev import on_the_real_node
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.realnode import NodeError, RealNode
from tests.support.tools import ensure_metrics_adapter, unavailable

pytest.importorskip("xllamacpp")
# No pytest timeout: the first run on a fresh machine builds the control plane, the metrics adapter and our
# images inside the fixture (minutes); every wait below is bounded.
# Its own control plane and real node: it runs before the session's cluster takes the host's one node.
pytestmark = [pytest.mark.cluster, pytest.mark.own_node]

REPO = Path(__file__).resolve().parents[2]
NS = "scaling"
NAME = "chat"
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
MD_CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
TARGET, MAX = 2, 4
# Tokens per chat request (ignore_eos: exactly this many). Short: on a 2-core machine one replica serves
# the 8 users one at a time (n_parallel 1) while the others start, so a user waits for the 7 before it.
TOKENS = 32
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


def _in_flight(base: str) -> int:
    """A pod's requests running plus waiting, from its own /metrics (what Prometheus would scrape)."""
    total = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            total += float(value)
    return int(total)


class World:
    """The module's cluster: the operator's client, the metrics adapter, the Hub server's config, and the
    real node's facts as the operator sees them (its live Node object)."""

    def __init__(self, kube: Kube, adapter: Adapter, config: OperatorConfig, nodes: list[NodeFacts]) -> None:
        self.kube, self.adapter, self.config, self.nodes = kube, adapter, config, nodes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    why = realnode.available()
    if why:
        unavailable(f"no real node on this host: {why}")
    try:
        ensure_binaries(log=_say)
    except BuildError as exc:
        unavailable(f"the local control plane cannot be built: {exc}")
    try:
        repo_dir = testmodel.ensure_hub_repo() / testmodel.HUB_REPO
    except testmodel.ModelUnavailable as exc:
        unavailable(str(exc))
    binary = ensure_metrics_adapter()
    try:
        archives = images.ensure_images(images.NAMES, log=_say)
    except images.ImageBuildError as exc:
        unavailable(f"our images cannot be built here: {exc}")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", WRITE_PORT)) == 0:
            unavailable(f"port {WRITE_PORT} is taken; the custom-metrics test adapter takes metric values there")
    workdir = tmp_path_factory.mktemp("hpa")
    # The node's bridge first: the apiserver listens on its address, where the pods reach it.
    try:
        node = RealNode(workdir / "node", images.PAUSE_IMAGE, log=_say).prepare(SERVICE_CIDR)
    except NodeError as exc:
        unavailable(f"no real node on this host: {exc}")
    cluster = LocalCluster(workdir / "cluster", log=_say, address=node.address)
    stack = contextlib.ExitStack()
    stack.callback(cluster.stop)

    def stop_node() -> None:
        left = node.stop()
        assert not left, f"the real node left the host changed: {left}"

    stack.callback(stop_node)  # before the control plane stops (unwound last in, first out)
    try:
        cluster.start()
        assert cluster.ca is not None
        node.join(cluster.ca, cluster.server, list(archives.values()))
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        core = client.CoreV1Api(api)
        node.wait_ready(core)
        live = api.sanitize_for_serialization(core.read_node(node.name))
        nodes = [node_facts(live, LabelMappings())]
        hub = stack.enter_context(HubServer({testmodel.HUB_REPO: repo_dir}, host=node.address))
        kube = Kube(api)
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
        scale = AutoscalingSettings(keda=False)
        cfg = OperatorConfig(autoscaling=scale, fetch_env=[EnvVar(name="HF_ENDPOINT", value=hub.url)])
        yield World(kube, adapter, cfg, nodes)
        kube.request("DELETE", f"/api/v1/namespaces/{NS}")
        _wait("the pods to be gone", lambda: not _pods(kube), 120)
    finally:
        stack.close()


def _replicas(kube: Kube) -> int:
    dep = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}") or {}
    return int((dep.get("spec") or {}).get("replicas") or 0)


def _pods(kube: Kube) -> list[dict[str, Any]]:
    query = [("labelSelector", f"app.kubernetes.io/instance={NAME}")]
    return kube.request("GET", f"/api/v1/namespaces/{NS}/pods", query=query).get("items") or []


def _live_pods(kube: Kube) -> list[dict[str, Any]]:
    return [p for p in _pods(kube) if not p["metadata"].get("deletionTimestamp")]


def _engine_port(pod: dict[str, Any]) -> int:
    (engine,) = [c for c in pod["spec"]["containers"] if c["name"] == "engine"]
    return int(engine["ports"][0]["containerPort"])


def _ready_pods(kube: Kube) -> dict[str, str]:
    """Ready pod name -> its engine's base URL at the pod's IP (where Prometheus would scrape it)."""
    out = {}
    for pod in _live_pods(kube):
        status = pod.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or ()}
        if conds.get("Ready") == "True" and status.get("podIP"):
            out[pod["metadata"]["name"]] = f"http://{status['podIP']}:{_engine_port(pod)}"
    return out


def _service_base(kube: Kube) -> str:
    """The Deployment's Service at its ClusterIP: where a user's client sends its requests."""
    service = kube.get(f"/api/v1/namespaces/{NS}/services/{NAME}") or {}
    spec = service.get("spec") or {}
    assert spec.get("clusterIP") and spec.get("ports"), service
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def _reconcile(kube: Kube, cfg: OperatorConfig, nodes: list[NodeFacts]) -> None:
    for _ in range(20):
        try:
            result = reconcile_once(kube.api.configuration, NS, NAME, nodes, cfg)
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


def test_replicas_follow_the_engines_requests_in_flight(world: World) -> None:
    kube, adapter, cfg, nodes = world.kube, world.adapter, world.config, world.nodes
    forget_discovery()
    md = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
    md["metadata"] = {"name": NAME}
    md["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": MAX,
        "targetRequests": TARGET,
        "scaleDownDelaySeconds": 0,
    }
    kube.request("POST", f"/apis/modeldeploy.io/v1alpha1/namespaces/{NS}/modeldeployments", body=md)
    _reconcile(kube, cfg, nodes)
    assert kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") is not None
    _wait("the first pod to be Ready (fetch, auto-NGL, llama.cpp)", lambda: _ready_pods(kube), 240)
    service = _service_base(kube)

    stop_feed, stop_load = threading.Event(), threading.Event()
    seen: list[tuple[float, int, int, int]] = []  # (time, in flight, replicas, ready pods)
    errors: list[str] = []
    ready: dict[str, str] = {}
    busy: set[str] = set()  # pods seen with a request in flight: the Service sent them some
    answered: list[int] = []  # one entry per chat request answered through the Service
    failed: list[tuple[bool, str]] = []  # (while the load was on, why)
    started = time.monotonic()

    def feed() -> None:
        """Prometheus + adapter's part: each Ready pod's own gauges, as that pod's metric."""
        while not stop_feed.is_set():
            try:
                current = _ready_pods(kube)
                total = 0
                for pod, base in current.items():
                    value = _in_flight(base)
                    adapter.write(NS, pod, value)
                    total += value
                    if value:
                        busy.add(pod)
                ready.clear()
                ready.update(current)
                seen.append((time.monotonic() - started, total, _replicas(kube), len(current)))
            except (httpx.HTTPError, KubeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            stop_feed.wait(0.5)

    def load() -> None:
        """One user asking again and again at the Service's ClusterIP; kube-proxy picks a Ready pod for each
        connection, and each request opens its own (no keep-alive), so new replicas get their share."""
        with httpx.Client(timeout=300, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not stop_load.is_set():
                try:
                    reply = http.post(
                        f"{service}/v1/chat/completions",
                        json={
                            "model": md["spec"]["model"]["name"],
                            "messages": [{"role": "user", "content": "Count from one to fifty in words."}],
                            "max_tokens": TOKENS,
                            "ignore_eos": True,
                        },
                    )
                    reply.raise_for_status()
                    answered.append(reply.json()["usage"]["completion_tokens"])
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    failed.append((not stop_load.is_set(), f"{type(exc).__name__}: {exc}"))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    users = [threading.Thread(target=load, daemon=True) for _ in range(4 * TARGET)]
    try:
        for u in users:
            u.start()
        try:
            _wait(f"{MAX} Ready replicas under load", lambda: len(ready) == MAX, 240)
        except AssertionError as exc:
            hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") or {}
            raise AssertionError(
                f"{exc}; HPA status {hpa.get('status')}; fed {seen[-5:]}; feed errors {errors[-2:]}"
            ) from None
        up = time.monotonic() - started
        scaled_at = next(t for t, _, replicas, _ in seen if replicas == MAX)
        # The operator re-applies its Deployment: the HPA's replica count stays (a field it yields).
        _reconcile(kube, cfg, nodes)
        assert _replicas(kube) == MAX
        # The Service spreads the load over every replica: each Ready pod gets requests of its own.
        try:
            _wait("every replica to get requests through the Service", lambda: set(ready) <= busy, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; busy {sorted(busy)}, Ready {sorted(ready)}") from None
        time.sleep(5)  # the load spread over every replica a while
        stop_load.set()  # each user finishes the request it is in, and asks no more
        load_ended = time.monotonic() - started
        for u in users:
            u.join(timeout=300)
        _wait("1 replica once idle", lambda: _replicas(kube) == 1, 120)
        down = time.monotonic() - started - load_ended
    finally:
        stop_load.set()
        stop_feed.set()
        feeder.join(timeout=10)
    peak = max(total for _, total, _, _ in seen)
    _say(
        f"load on: the HPA asked for {MAX} replicas after {scaled_at:.0f} s, all {MAX} Ready after {up:.0f} s "
        f"(peak {peak} requests in flight, target {TARGET} per replica)"
    )
    timeline = [(round(t), n, r, k) for t, n, r, k in seen[:: max(1, len(seen) // 15)]]
    _say(f"load off: back to 1 replica {down:.0f} s later; (s, in flight, replicas, Ready): {timeline}")
    _say(
        f"{len(answered)} chat requests answered through the Service ClusterIP {service}, {len(failed)} failed"
        + (f" (first: {failed[0]})" if failed else "")
    )
    assert peak >= TARGET * (MAX - 1) + 1
    # The users' requests went through the Service and were answered in full by the replicas serving it.
    assert answered and all(tokens == TOKENS for tokens in answered), answered[:10]
    # None failed while the load was on (scale-up included). Once it is off, a replica the HPA removes may
    # drop the last request it serves: that is reported above, not asserted.
    assert not [why for during, why in failed if during], failed[:3]
    hpa = kube.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}") or {}
    conds = {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or []}
    assert conds["ScalingActive"]["status"] == "True", conds
