"""The local control plane itself: loopback (or the real node's own bridge address) only, and Deployments
really become bound, running Pods."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kubernetes import client

from modeldeploy_dev import LocalCluster
from modeldeploy_dev.nodes import FakeKubelet, create_node, load_node_set

NODES = Path(__file__).resolve().parents[2] / "examples" / "nodes" / "gpu-cluster.yaml"


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets `pid` listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex[:width])
            if width == 8:
                addr = ".".join(str(b) for b in raw[::-1])
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                addr = b"".join(words).hex()
            found.add((addr, int(port_hex, 16)))
    return found


def test_every_component_listens_on_loopback_or_the_node_bridge_only(local_cluster: LocalCluster) -> None:
    """With a real node the apiserver listens on the node's bridge address, where pods reach it; netguard.py
    drops packets for that address from any other interface, so nothing outside the machine does."""
    loopback_v6 = "00000000000000000000000000000001"
    allowed = {"127.0.0.1", loopback_v6, local_cluster.address}
    for name, proc in local_cluster.procs.items():
        sockets = _listening(proc.pid)
        assert sockets, f"{name} listens nowhere?"
        assert all(addr in allowed for addr, _ in sockets), (name, sockets)


def test_a_deployment_becomes_pods_bound_to_matching_nodes(kube_api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    nodes = load_node_set(NODES)
    names = [create_node(core, n) for n in nodes]
    kubelet = FakeKubelet(kube_api, names, interval=0.5).start()
    ns = "lc-smoke"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        labels = {"app": "gpu-smoke"}
        pod = {
            "metadata": {"labels": labels},
            "spec": {
                "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
        apps.create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "gpu-smoke"},
                "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": pod},
            },
        )
        gpu_nodes = {n["metadata"]["name"] for n in nodes if "nvidia.com/gpu" in (n["status"].get("allocatable") or {})}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            dep = apps.read_namespaced_deployment("gpu-smoke", ns)
            if (dep.status.ready_replicas or 0) == 2:
                break
            time.sleep(0.5)
        assert dep.status.ready_replicas == 2, dep.status
        pods = core.list_namespaced_pod(ns, label_selector="app=gpu-smoke").items
        assert len(pods) == 2
        assert {p.spec.node_name for p in pods} <= gpu_nodes  # the scheduler honoured the GPU resource
    finally:
        core.delete_namespace(ns)
        deadline = time.monotonic() + 30  # the fake kubelet confirms the pods' deletion, as a kubelet would
        while core.list_namespaced_pod(ns).items and time.monotonic() < deadline:
            time.sleep(0.5)
        kubelet.stop()
        for name in names:
            core.delete_node(name)
