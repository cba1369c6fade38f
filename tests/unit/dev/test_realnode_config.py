"""The real node's configuration and host bookkeeping, without a node: what each file says, and how a host
difference is found and described."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_dev import hoststate, netguard, nodeconfig, realnode
from modeldeploy_dev.hoststate import HostState


@pytest.fixture
def layout(tmp_path: Path) -> nodeconfig.Layout:
    return nodeconfig.Layout(root=tmp_path, pause_image="localhost/modeldeploy/pause:3.10.1")


def test_containerd_keeps_everything_under_the_node_directory(layout: nodeconfig.Layout) -> None:
    config = tomllib.loads(nodeconfig.containerd_config(layout, "/usr/sbin/runc", "/usr/lib/cni"))
    assert config["version"] == 3
    assert config["root"].startswith(str(layout.root)) and config["state"].startswith(str(layout.root))
    assert config["grpc"]["address"] == str(layout.containerd_socket)
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == layout.pause_image
    assert images["registry"]["config_path"] == str(layout.registry_hosts_dir)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    # no CAP_SYS_RESOURCE on some hosts; pod network namespaces under the node's state, not /run/netns
    assert runtime["restrict_oom_score_adj"] is True and runtime["netns_mounts_under_state_dir"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "/usr/sbin/runc"
    assert runtime["cni"]["conf_dir"] == str(layout.cni_conf_dir)


def test_every_registry_upstream_is_a_loopback_address_nothing_listens_on() -> None:
    hosts = tomllib.loads(nodeconfig.registry_hosts())
    assert hosts == {"server": nodeconfig.NO_REGISTRY}
    assert nodeconfig.NO_REGISTRY.startswith("http://127.")


def test_the_pod_network_stays_on_the_bridge(layout: nodeconfig.Layout) -> None:
    conf = json.loads(nodeconfig.cni_conflist(layout))
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == nodeconfig.BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": nodeconfig.POD_CIDR, "gateway": nodeconfig.NODE_IP}]]
    assert bridge["ipam"]["dataDir"].startswith(str(layout.root))  # not /var/lib/cni/networks


def test_the_kubelet_trusts_the_cluster_ca_and_asks_the_apiserver(layout: nodeconfig.Layout, tmp_path: Path) -> None:
    config = yaml.safe_load(
        nodeconfig.kubelet_config(layout, tmp_path / "ca.crt", tmp_path / "serving.crt", tmp_path / "serving.key")
    )
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": str(tmp_path / "ca.crt")},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["tlsCertFile"] == str(tmp_path / "serving.crt")
    assert config["address"] == nodeconfig.NODE_IP and config["readOnlyPort"] == 0
    assert config["registerWithTaints"] == [{"key": nodeconfig.TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
    assert config["imageGCHighThresholdPercent"] == 100  # imported images are never garbage-collected


def test_kube_proxy_leaves_conntrack_and_route_localnet_alone(tmp_path: Path) -> None:
    config = yaml.safe_load(nodeconfig.kube_proxy_config(tmp_path / "kubeconfig", 1111, 2222))
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["healthzBindAddress"] == "127.0.0.1:1111" and config["metricsBindAddress"] == "127.0.0.1:2222"


def test_a_pod_meant_for_the_real_node_tolerates_its_taint_and_selects_it() -> None:
    toleration = nodeconfig.toleration()
    assert toleration["key"] == nodeconfig.TAINT_KEY and toleration["operator"] == "Exists"
    assert nodeconfig.kubelet_labels().items() >= nodeconfig.node_labels().items()
    assert nodeconfig.kubelet_labels()["nvidia.com/gpu.count"] == nodeconfig.STAND_IN_GPU["nvidia.com/gpu"]


def test_guard_rules_drop_pod_traffic_off_the_bridge() -> None:
    rules = [" ".join(r) for r in netguard.guard_rules("10.0.0.0/16")]
    assert f"FORWARD -s {nodeconfig.CLUSTER_CIDR} ! -o {nodeconfig.BRIDGE}" in rules[0] and rules[0].endswith("DROP")
    assert f"FORWARD -d {nodeconfig.CLUSTER_CIDR} ! -i {nodeconfig.BRIDGE}" in rules[1]
    assert "FORWARD -d 10.0.0.0/16" in rules[2]
    assert rules[3].startswith(f"INPUT -d {nodeconfig.NODE_IP} ! -i {nodeconfig.BRIDGE}") and "LOCAL" in rules[3]
    assert all(netguard.COMMENT in r for r in rules)


def test_host_differences_name_each_kind_of_change() -> None:
    before = HostState(
        sysctls={"kernel/panic": "0\n", "vm/overcommit_memory": "0\n"},
        iptables={"iptables": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"},
        mounts=["/", "/proc"],
        links=["eth0", "lo"],
        cgroups=["/sys/fs/cgroup/memory/user"],
        paths=[],
    )
    after = HostState(
        sysctls={"kernel/panic": "10\n", "vm/overcommit_memory": "0\n", "kernel/new": "1\n"},
        iptables={"iptables": "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\nCOMMIT\n"},
        nft_tables=["table ip mangle"],
        mounts=["/", "/proc", "/tmp/node/kubelet"],
        links=["eth0", "lo", "mdnode0"],
        cgroups=["/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/memory/user"],
        paths=["/var/log/containers"],
    )
    assert before.differences(after) == [
        "sysctl kernel/panic: 0 -> 10",  # a sysctl that did not exist before is not the node's to restore
        "iptables rules changed",
        "new nft table ip mangle",
        "new mount /tmp/node/kubelet",
        "new link mdnode0",
        "new cgroup /sys/fs/cgroup/memory/kubepods",
        "new path /var/log/containers",
    ]
    assert before.differences(before) == []


def test_a_snapshot_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    state = HostState(sysctls={"kernel/panic": "1\n"}, links=["lo"], paths=["/run/containerd"])
    state.save(tmp_path / "host.json")
    assert HostState.load(tmp_path / "host.json") == state


def test_iptables_counters_and_timestamps_are_not_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = iter(
        [
            "# Generated by iptables-save on Sun\n*filter\n:INPUT ACCEPT [3157:1783681]\nCOMMIT\n# Completed\n",
            "# Generated by iptables-save on Mon\n*filter\n:INPUT ACCEPT [9:99]\nCOMMIT\n# Completed\n",
        ]
    )

    class Done:
        def __init__(self) -> None:
            self.stdout = next(outputs)

    monkeypatch.setattr(hoststate, "IPTABLES", ("iptables",))
    monkeypatch.setattr(hoststate.shutil, "which", lambda _tool: "/usr/sbin/iptables-save")
    monkeypatch.setattr(hoststate, "_run", lambda _argv, stdin=None: Done())
    assert (
        hoststate._iptables_rules()
        == hoststate._iptables_rules()
        == {"iptables": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"}
    )


def test_without_root_a_real_node_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 1000)
    why = realnode.available()
    assert why is not None and why.startswith("a real node (kubelet, containerd) needs root")


def test_the_image_store_outlives_the_node(tmp_path: Path) -> None:
    """containerd's root (content, snapshots) may be kept between nodes, so archives are imported once."""
    kept = nodeconfig.Layout(root=tmp_path / "node", pause_image="p", image_store=tmp_path / "store")
    config = tomllib.loads(nodeconfig.containerd_config(kept, "/usr/sbin/runc", "/usr/lib/cni"))
    assert config["root"] == str(tmp_path / "store")
    assert config["state"].startswith(str(tmp_path / "node"))  # running state goes with the node


def test_a_cgroup_tree_walk_kills_what_it_lists_and_skips_what_vanished(tmp_path: Path) -> None:
    """The runtime removes a container's cgroup while its processes die: a directory or file gone
    during the walk is skipped, not an error that stops a teardown half way."""
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    try:
        nested = tmp_path / "kubepods" / "besteffort" / "pod1" / "c1"
        nested.mkdir(parents=True)
        (nested / "cgroup.procs").write_text(f"{child.pid}\n")
        gone = tmp_path / "kubepods" / "besteffort" / "pod2"
        gone.mkdir()
        (gone / "cgroup.procs").write_text("")
        real_scandir = os.scandir

        class ListedThenGone:
            """os.scandir of pod2's parent, after which pod2 is removed (before the walk enters it)."""

            def __init__(self, path: Any) -> None:
                self.entries = iter(list(real_scandir(path)))
                if Path(path) == gone.parent and gone.exists():
                    (gone / "cgroup.procs").unlink()
                    gone.rmdir()

            def __enter__(self) -> ListedThenGone:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def __iter__(self) -> Iterator[os.DirEntry[str]]:
                return self

            def __next__(self) -> os.DirEntry[str]:
                return next(self.entries)

            def close(self) -> None:
                return None

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "scandir", ListedThenGone)
            assert hoststate.kill_cgroup_tree(tmp_path / "kubepods") == 1
        assert child.wait(timeout=10) == -9
        assert hoststate.kill_cgroup_tree(tmp_path / "no-such-tree") == 0
    finally:
        child.kill()
