"""A real node for the local cluster: kubelet, containerd, runc, the CNI bridge and kube-proxy.

Pods on it run from our images (built here, imported into containerd: images.py) with the security
contexts, limits, probes and volumes the operator renders, applied by a real runtime; `kubectl logs`,
`exec` and `port-forward` work, pods get IPs, and Services get endpoints and ClusterIPs that kube-proxy
routes. The fake GPU and Apple nodes stay beside it as Node objects for the selection rules; this one is
tainted (nodeconfig.TAINT_KEY) so only pods meant for it land on it.

Lifecycle, in two steps because the control plane must listen where pods can reach it:

    node = RealNode(directory)
    node.prepare()                  # host snapshot, the bridge with the node address, guard rules
    cluster = LocalCluster(..., address=node.address).start()
    node.join(cluster, images=[...])  # containerd, images, kubelet (Ready), kube-proxy
    ...
    node.stop()                     # pods killed, processes stopped, the host put back as found

One real node runs on a host at a time (kube-proxy's iptables chains and the kubelet's cgroups are
host-wide); a lock says so. Needs root, cgroups, runc, the CNI plugins and iptables: available() names
what is missing in one sentence (docs/real-node.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy_dev import certs, netguard, nodeconfig
from modeldeploy_dev.build import cache_root, ensure_binaries, ensure_containerd
from modeldeploy_dev.cluster import free_port
from modeldeploy_dev.hoststate import HostState, kill_cgroup_tree

Log = Callable[[str], None]
STATE_FILE = "node.json"
HOST_STATE_FILE = "host-state.json"
# Host-wide, whatever the cache directory: two nodes would share the bridge, iptables chains and cgroups.
HOST_LOCK = Path("/run/lock/modeldeploy-real-node.lock")
HOST_TOOLS = ("runc", "iptables", "iptables-save", "iptables-restore", "ip", "nft")


class NodeError(RuntimeError):
    """The real node could not start; the message says why (with the tail of the failing log)."""


def _which_runc() -> str | None:
    return shutil.which("runc") or next((p for p in ("/usr/sbin/runc", "/usr/bin/runc") if os.access(p, os.X_OK)), None)


def cni_bin_dir() -> str | None:
    return next((d for d in nodeconfig.CNI_BIN_DIRS if os.access(Path(d) / "bridge", os.X_OK)), None)


def available() -> str | None:
    """None when this host can run a real node, else one sentence saying what it lacks."""
    if os.geteuid() != 0:
        return "a real node (kubelet, containerd) needs root: it makes network namespaces, cgroups and mounts"
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists() and not Path("/sys/fs/cgroup/memory").is_dir():
        return "a real node needs cgroups (no cgroup v2 or v1 memory controller under /sys/fs/cgroup)"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None and not (tool == "runc" and _which_runc())]
    if cni_bin_dir() is None:
        missing.append("the CNI plugins (bridge, host-local, portmap)")
    if missing:
        return f"a real node needs {', '.join(missing)} (`make host-packages` installs them on Debian/Ubuntu)"
    return None


class RealNode:
    """One real node whose files live under `directory` (see the module docstring for the lifecycle)."""

    def __init__(
        self, directory: Path, pause_image: str, log: Log = lambda _m: None, image_store: Path | None = None
    ) -> None:
        self.directory = directory
        self.log = log
        # One node runs on a host at a time (HOST_LOCK), so one containerd at a time uses the image store.
        store = image_store or cache_root() / "node-image-store"
        self.layout = nodeconfig.Layout(root=directory, pause_image=pause_image, image_store=store)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.host: HostState | None = None
        self._lock: IO[str] | None = None
        self.service_cidr = ""

    name = nodeconfig.NODE_NAME
    address = nodeconfig.NODE_IP

    # --- before the control plane -------------------------------------------------------------------

    def prepare(self, service_cidr: str) -> RealNode:
        """Take the host lock, record the host, and make the bridge the control plane will listen on."""
        if why := available():
            raise NodeError(why)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.host = HostState.capture()
        self.host.save(self.directory / HOST_STATE_FILE)
        self.service_cidr = service_cidr
        try:
            netguard.up(service_cidr)
        except OSError as exc:
            self.stop()
            raise NodeError(f"the node's network could not be made: {exc}") from None
        return self

    def _take_lock(self) -> None:
        path = HOST_LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise NodeError(f"a real node already runs on this host ({holder}); one at a time") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}, {self.directory}")
        lock.flush()
        self._lock = lock

    # --- after it ----------------------------------------------------------------------------------

    def join(
        self, ca: certs.CertificateAuthority, server: str, images: Sequence[Path] = (), timeout: float = 120
    ) -> None:
        """Start containerd, import `images` (docker archives), start the kubelet and kube-proxy, and wait
        until the Node is Ready."""
        k8s = ensure_binaries(log=self.log)
        runtime = ensure_containerd(log=self.log)
        runc, cni = _which_runc(), cni_bin_dir()
        assert runc is not None and cni is not None  # available() checked both
        layout, pki = self.layout, self.layout.pki
        pki.mkdir(parents=True, exist_ok=True)
        serving = ca.issue(
            "kubelet-serving", nodeconfig.NODE_NAME, server=True, dns=(nodeconfig.NODE_NAME,), ips=(self.address,)
        )
        kubelet_client = ca.issue("kubelet-client", f"system:node:{nodeconfig.NODE_NAME}", org="system:nodes")
        proxy_client = ca.issue("kube-proxy", "system:kube-proxy")
        for stem, pair in (("kubelet", kubelet_client), ("kube-proxy", proxy_client)):
            (self.directory / f"{stem}.kubeconfig").write_text(yaml.safe_dump(_kubeconfig(server, ca.pair.cert, pair)))
        layout.containerd_dir.mkdir(parents=True, exist_ok=True)
        layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        layout.kubelet_dir.mkdir(parents=True, exist_ok=True)
        (layout.containerd_dir / "config.toml").write_text(nodeconfig.containerd_config(layout, runc, cni))
        (layout.cni_conf_dir / "10-modeldeploy.conflist").write_text(nodeconfig.cni_conflist(layout))
        kubelet_yaml = self.directory / "kubelet.yaml"
        kubelet_yaml.write_text(nodeconfig.kubelet_config(layout, ca.pair.cert, serving.cert, serving.key))
        proxy_yaml = self.directory / "kube-proxy.yaml"
        proxy_yaml.write_text(
            nodeconfig.kube_proxy_config(self.directory / "kube-proxy.kubeconfig", free_port(), free_port())
        )
        # containerd finds its shim on PATH; runc and the CNI plugins are named in its config.
        path = f"{runtime['containerd'].parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        (layout.registry_hosts_dir / "_default").mkdir(parents=True, exist_ok=True)
        (layout.registry_hosts_dir / "_default" / "hosts.toml").write_text(nodeconfig.registry_hosts())
        self._spawn(
            "containerd", [str(runtime["containerd"]), "--config", str(layout.containerd_dir / "config.toml")], path
        )
        self._wait("containerd", lambda: self._ctr("version").returncode == 0, 30)
        started = time.monotonic()
        imported = [archive for archive in images if self.import_image(archive)]
        if imported:
            self.log(f"imported {len(imported)} images into containerd in {time.monotonic() - started:.0f} s")
        self._spawn(
            "kubelet",
            [
                str(k8s["kubelet"]),
                f"--config={kubelet_yaml}",
                f"--kubeconfig={self.directory / 'kubelet.kubeconfig'}",
                f"--root-dir={layout.kubelet_dir}",
                f"--hostname-override={nodeconfig.NODE_NAME}",
                f"--node-ip={self.address}",
                f"--node-labels={','.join(f'{k}={v}' for k, v in nodeconfig.kubelet_labels().items())}",
                "--v=1",
            ],
            path,
        )
        self._spawn("kube-proxy", [str(k8s["kube-proxy"]), f"--config={proxy_yaml}", "--v=1"], path)
        self._save_state()

    def import_image(self, archive: Path) -> bool:
        """Import a docker archive, unless the image store already holds this very archive (its name is the
        content key images.py gave it); whether it was imported."""
        marker = self._imported_marker(archive)
        if marker is not None and marker.exists():
            return False
        proc = self._ctr("images", "import", str(archive))
        if proc.returncode != 0:
            raise NodeError(f"ctr images import {archive} failed: {proc.stderr.strip()[-2000:]}")
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(archive))
        return True

    def _imported_marker(self, archive: Path) -> Path | None:
        store = self.layout.image_store
        return None if store is None else store / "modeldeploy-imported" / f"{archive.parent.name}-{archive.name}"

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        ctr = ensure_containerd(log=self.log)["ctr"]
        argv = [str(ctr), "-a", str(self.layout.containerd_socket), "-n", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)

    def images(self) -> list[str]:
        """Image references containerd holds for the kubelet."""
        proc = self._ctr("images", "ls", "-q")
        return [line for line in proc.stdout.splitlines() if line and not line.startswith("sha256:")]

    # --- processes -------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], path: str) -> None:
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        out = (logs / f"{name}.log").open("ab")
        env = {**os.environ, "PATH": path}
        self.log(f"starting {name}")
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        out.close()

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc_name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise NodeError(f"{proc_name} exited with {proc.returncode}\n{self.log_tail(proc_name)}")
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                if ready():
                    return
            time.sleep(0.3)
        raise NodeError(f"{name} was not ready after {timeout:.0f} s\n{self.log_tail(name)}")

    def wait_ready(self, core: client.CoreV1Api, timeout: float = 120) -> None:
        """Wait until the Node is Ready, then advertise its stand-in GPU (nodeconfig.STAND_IN_GPU) as a device
        plugin would, through the status subresource."""
        self._wait("kubelet", lambda: node_ready(core, self.name), timeout)
        resources = dict(nodeconfig.STAND_IN_GPU)
        core.patch_node_status(self.name, {"status": {"capacity": resources, "allocatable": resources}})

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.directory / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _save_state(self) -> None:
        state = {"pids": {n: p.pid for n, p in self.procs.items()}, "socket": str(self.layout.containerd_socket)}
        (self.directory / STATE_FILE).write_text(json.dumps(state))

    # --- teardown --------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop everything and put the host back as found; what could not be put back (logged)."""
        pids = {name: proc.pid for name, proc in self.procs.items()}
        left = stop_node(self.directory, pids, self.host, self.log)
        self.procs.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return left


def node_ready(core: client.CoreV1Api, name: str) -> bool:
    try:
        got = core.read_node(name)
    except ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in got.status.conditions or ())


def stop_node(directory: Path, pids: dict[str, int], host: HostState | None, log: Log) -> list[str]:
    """Teardown shared by RealNode.stop and a detached node (`dev down` from another process).

    Order matters: the kubelet first (it would restart what we kill), then every container process (their
    cgroups under kubepods), then kube-proxy and containerd and the shims it left, then the host.
    """
    for name in ("kubelet", "kube-proxy"):
        if name in pids:
            _terminate(pids[name])
    for hierarchy in Path("/sys/fs/cgroup").glob("*/kubepods"):
        kill_cgroup_tree(hierarchy)
    if (Path("/sys/fs/cgroup") / "kubepods").is_dir():
        kill_cgroup_tree(Path("/sys/fs/cgroup") / "kubepods")
    if "containerd" in pids:
        _terminate(pids["containerd"])
    _kill_shims(directory)
    if host is None and (directory / HOST_STATE_FILE).exists():
        host = HostState.load(directory / HOST_STATE_FILE)
    left: list[str] = []
    if host is not None:
        time.sleep(0.5)  # killed container processes leave their cgroups
        left = host.restore(log)
        with contextlib.suppress(FileNotFoundError):
            (directory / HOST_STATE_FILE).unlink()
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()
    return left


def detached_pids(directory: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads((directory / STATE_FILE).read_text())["pids"].items()}
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _terminate(pid: int, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_shims(directory: Path) -> None:
    """containerd's shims outlive containerd: end those started for this node (their argv names its socket)."""
    marker = str(directory).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in argv and marker in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)


def _kubeconfig(server: str, ca: Path, client: certs.Pair) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "node", "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
        "current-context": "local",
    }
