"""Fake nodes for a local control plane, and the kubelet chores nobody else does there.

A node set is what `kubectl get nodes -o yaml` prints (examples/nodes/*.yaml): each Node is created
with its labels, annotations and spec, then its status (capacity, allocatable, conditions) is written
through the status subresource, as a kubelet would. The FakeKubelet thread then keeps the Ready ones
Ready (node leases), reports bound pods Running and Ready, and confirms the deletion of terminating
pods, so Deployments on the local cluster roll out as they would on real nodes. Nothing here is ever
pointed at a cluster that `LocalCluster` did not start (see dev.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

LEASE_NAMESPACE = "kube-node-lease"
KEPT_METADATA = ("name", "labels", "annotations")
KEPT_SPEC = ("taints", "unschedulable", "podCIDR", "podCIDRs")
# A real kubelet renews its node Lease every 10 s (a quarter of the 40 s lease duration). Renewing faster
# costs the apiserver one write per node per renewal: 500 nodes at 2 s were 250 writes/s.
LEASE_RENEW_S = 10.0


def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return dt.datetime.now(dt.UTC).strftime(fmt)


def load_node_set(path: Path) -> list[dict[str, Any]]:
    """The Node documents of a `kubectl get nodes -o yaml` file (a List or a stream of Nodes)."""
    nodes: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        for item in doc.get("items", [doc]) if doc.get("kind") != "Node" else [doc]:
            if item.get("kind", "Node") == "Node":
                nodes.append(item)
    return nodes


def is_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def create_node(core: client.CoreV1Api, node: dict[str, Any]) -> str:
    """Create the Node (replacing one of the same name) and write its status; the node's name."""
    meta = {k: v for k, v in node["metadata"].items() if k in KEPT_METADATA}
    spec = {k: v for k, v in (node.get("spec") or {}).items() if k in KEPT_SPEC}
    name = meta["name"]
    body = {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec}
    try:
        core.create_node(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_node(name, {**body, "metadata": {**meta, "resourceVersion": _rv(core, name)}})
    status = dict(node.get("status") or {})
    now = _now()
    status["conditions"] = [
        {**c, "lastHeartbeatTime": now, "lastTransitionTime": now} for c in status.get("conditions") or []
    ]
    keep = ("capacity", "allocatable", "conditions", "addresses", "nodeInfo")
    core.patch_node_status(name, {"status": {k: v for k, v in status.items() if k in keep}})
    return str(name)


def _rv(core: client.CoreV1Api, name: str) -> str:
    return str(core.read_node(name).metadata.resource_version)


class FakeKubelet:
    """Node leases for the Ready nodes, and pod status for the pods bound to any fake node: Running, with a
    status message saying that nothing runs (pods that run go to the real node, realnode.py).

    Pods are followed by a watch, as a kubelet follows its node's pods, not by listing every pod every few
    seconds: at 1,000 pods a listing every 2 s was ~500 pods serialised by the apiserver per second,
    work no real cluster asks of it, which the benches then billed to the workload. A full pass runs once
    at the start, after a watch lost its place, when the set of fake nodes changed, and every RESYNC_S.
    """

    RESYNC_S = 60.0  # a full pass of the pods at least this often (a pod missed by the watch is caught)
    WATCH_S = 5  # each watch request ends after this long (server side), so stop() returns promptly

    def __init__(self, api: client.ApiClient, nodes: list[str], interval: float = 2.0) -> None:
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.nodes = set(nodes)
        self.interval = interval
        self._renewed = 0.0  # time.monotonic() of the last round of lease renewals
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._pods = threading.Thread(target=self._pod_loop, name="fake-kubelet-pods", daemon=True)

    def start(self) -> FakeKubelet:
        self._thread.start()
        self._pods.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._pods):
            if thread.is_alive():
                thread.join(timeout=10)

    def tick(self) -> None:
        """The leases' chore (the thread calls it every `interval` seconds): a renewal every LEASE_RENEW_S."""
        if time.monotonic() - self._renewed >= LEASE_RENEW_S:
            self._renewed = time.monotonic()
            for name in list(self.nodes):
                with contextlib.suppress(ApiException):
                    self.renew_lease(name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a transient apiserver error must not end the thread
                self.tick()

    def _pod_loop(self) -> None:
        """A full pass, then the pods' watch from where the listing ended; again on any trouble."""
        version: str | None = None
        passed, nodes = 0.0, frozenset[str]()
        while not self._stop.is_set():
            try:
                if version is None or time.monotonic() - passed >= self.RESYNC_S or nodes != self.nodes:
                    nodes, passed = frozenset(self.nodes), time.monotonic()
                    version = self.report_pods()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector="spec.nodeName!=",
                    resource_version=version,
                    timeout_seconds=self.WATCH_S,
                )
                for event in stream:
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.report_pod(pod)
                    if self._stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:  # the watch lost its place: list again
                    version = None
                self._stop.wait(self.interval)
            except Exception:  # noqa: BLE001 - a transient apiserver error must not end the thread
                version = None
                self._stop.wait(self.interval)

    def renew_lease(self, name: str) -> None:
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _now(micro=True)}
        try:
            self.coord.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease(LEASE_NAMESPACE, {"metadata": {"name": name}, "spec": spec})

    def report_pods(self) -> str:
        """Every pod bound to a fake node, reported (report_pod); the listing's resourceVersion."""
        listing = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
        for pod in listing.items:
            self.report_pod(pod)
        return str(listing.metadata.resource_version)

    def report_pod(self, pod: Any) -> bool:
        """A bound pod becomes Running and Ready; a terminating one is confirmed gone. Whether it was touched."""
        node = pod.spec.node_name
        if not node or node not in self.nodes:
            return False
        ns, name = pod.metadata.namespace, pod.metadata.name
        images = [c.image for c in (pod.spec.init_containers or []) + pod.spec.containers]
        if pod.metadata.deletion_timestamp:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
                return True
            return False
        conditions = pod.status.conditions or []
        if pod.status.phase in ("Succeeded", "Failed"):
            return False  # a finished pod (a Job's) stays finished, as on a kubelet
        if pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions):
            return False
        now = _now()
        status = {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod.spec.containers
            ],
        }
        status["message"] = (
            f"fake node {node}: nothing runs here ({', '.join(sorted(set(images)))}); reported Running "
            "so Deployments roll out. Pods that run go to the real node (docs/real-node.md)"
        )
        status["reason"] = "FakeNode"
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(name, ns, {"status": status})
            return True
        return False
