"""The real node's configuration files, as pure functions of its layout (tested without a node).

Each setting that departs from a stock node says why: most keep the node from changing the host beyond
what hoststate.py can put back, or work around what this kind of machine lacks (cgroup v1 hybrid mode,
no CAP_SYS_RESOURCE; docs/real-node.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NODE_NAME = "real-cpu-1"
BRIDGE = "mdnode0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's gateway address: pods, the apiserver and the host all reach it
CLUSTER_CIDR = "10.244.0.0/16"
KUBELET_PORT = 10250
# Only pods meant for the real node land there: they tolerate this taint (and select the label).
TAINT_KEY = "modeldeploy.io/real-node"
NODE_LABEL = "modeldeploy.io/real-node"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# A stand-in for GPUs (no machine here has one): the node says it has eight NVIDIA GPUs, with the labels GPU
# Feature Discovery sets and the extended resource a device plugin advertises, so the GPU path of a
# llama.cpp pod (the auto-NGL init container, the GPU limit and toleration) runs on a real runtime. No
# device is behind it: NVML finds none in the pod and auto-NGL decides 0 layers (docs/real-node.md).
STAND_IN_GPU = {"nvidia.com/gpu": "8"}
STAND_IN_GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8"}


@dataclass(frozen=True)
class Layout:
    """Where one node keeps its files (all under one directory, removed with it)."""

    root: Path
    pause_image: str
    # containerd's content and snapshots, kept between nodes (images.py's archives imported once, not at
    # every start); everything else of a node lives under `root` and goes with it.
    image_store: Path | None = None

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.containerd_dir / "certs.d"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pki(self) -> Path:
        return self.root / "pki"


def containerd_config(layout: Layout, runc: str, cni_bin_dir: str) -> str:
    """containerd 2.x (config version 3), with its own root, state and socket beside the node's files."""
    d = layout.containerd_dir
    return f"""version = 3
root = "{layout.image_store or d / "root"}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{layout.containerd_socket}"
[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{layout.pause_image}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{layout.registry_hosts_dir}"
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Negative OOM scores need CAP_SYS_RESOURCE, which root lacks on some VMs: runc then fails to start the
  # pause container ("can't get final child's PID"). Clamped to 0 here; elsewhere harmless.
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin_dir}"]
    conf_dir = "{layout.cni_conf_dir}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


# Images are imported, never pulled: every registry's upstream is an address on this machine where nothing
# listens, so a pull of an image that was not built here fails at once and no packet leaves the machine.
NO_REGISTRY = "http://127.0.0.1:9"


def registry_hosts() -> str:
    """`_default/hosts.toml` under the registry config_path: the upstream of every registry."""
    return f'server = "{NO_REGISTRY}"\n'


def cni_conflist(layout: Layout) -> str:
    """A bridge (created beforehand with the node's address) and host-local IPAM; no masquerade: no pod
    packet is meant to leave the machine (netguard.py drops any that tries)."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "modeldeploy-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2)


def kubelet_config(layout: Layout, ca_file: Path, serving_cert: Path, serving_key: Path) -> str:
    """A kubelet that trusts the cluster CA: x509 and webhook authentication, webhook authorization."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 (hybrid) is what this kind of machine has; the kubelet refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "podLogsDir": str(layout.kubelet_dir / "pod-logs"),
        "resolvConf": "",
        "failSwapOn": False,
        # Images are imported, never pulled (no registry): garbage collection must never delete them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "maxPods": 30,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "serializeImagePulls": False,
        "containerLogMaxSize": "10Mi",
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    """iptables mode (IPVS needs kernel modules some hosts lack), leaving the host's conntrack and
    route_localnet settings alone, node ports on loopback only."""
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        "nodePortAddresses": ["127.0.0.1/32"],
    }
    return yaml.safe_dump(config, sort_keys=False)


def node_labels() -> dict[str, str]:
    """The label pods meant for this node select."""
    return {NODE_LABEL: "true"}


def kubelet_labels() -> dict[str, str]:
    """What the kubelet registers the node with (NodeRestriction lets a kubelet set these)."""
    return {**node_labels(), **STAND_IN_GPU_LABELS}


def toleration() -> dict[str, str]:
    """What a pod meant for the real node carries."""
    return {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
