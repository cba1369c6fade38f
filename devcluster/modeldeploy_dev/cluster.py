"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes.

Everything listens on 127.0.0.1 only, on ports picked free at start, unless `address` names another
local address: with a real node, the bridge address its pods reach (realnode.py), which netguard.py
keeps unreachable from outside the machine. The cluster directory holds the
credentials, the data, one log per component and `cluster.json` (pids and ports), so another process
(`modeldeploy dev down`, `dev status`) can find and stop a cluster started with `--keep`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

from modeldeploy_dev import certs
from modeldeploy_dev.build import K8S_VERSION, ensure_binaries

# A /16: 65,534 ClusterIPs. A /24 holds 253 Services, and the 254th ModelDeployment's Service was refused
# with "range is full" (a scale run creates thousands); 10.0.0.1 stays the `kubernetes` Service's address.
SERVICE_CIDR = "10.0.0.0/16"
STATE_FILE = "cluster.json"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


class ClusterError(RuntimeError):
    """A component did not start; the message ends with the tail of its log."""


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone: its parent has simply not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def kubeconfig_for(server: str, ca: Path, client: certs.Pair, user: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modeldeploy-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "modeldeploy-local", "context": {"cluster": "modeldeploy-local", "user": user}}],
        "current-context": "modeldeploy-local",
    }


@dataclass
class LocalCluster:
    """One control plane in `workdir`. Use as a context manager, or start()/stop()."""

    workdir: Path
    log: Callable[[str], None] = lambda _m: None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    apiserver_args: list[str] = field(default_factory=list)  # extra flags (the scale bench's audit log)
    argvs: dict[str, list[str]] = field(default_factory=dict)  # how each component was started
    detached: bool = False
    address: str = "127.0.0.1"  # where the apiserver listens (a real node's pods must reach it)
    ca: certs.CertificateAuthority | None = None

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports['apiserver']}"

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 180, detach: bool = False) -> LocalCluster:
        """Build (first run only), write credentials, start the four components, wait until usable.

        `detach` puts the processes in their own session so they outlive this Python process.
        """
        binaries = ensure_binaries(log=self.log)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        ca = self.ca = certs.CertificateAuthority(pki)
        serving = ca.issue("apiserver", "kube-apiserver", server=True, ips=(self.address,))
        # The apiserver's identity towards kubelets (logs, exec, port-forward, the node proxy): bound to
        # system:kubelet-api-admin once the apiserver runs; kubelets check it with webhook authorization.
        kubelet_client = ca.issue("apiserver-kubelet-client", KUBELET_CLIENT_USER)
        admin = ca.issue("admin", "modeldeploy-admin", org="system:masters")
        kcm = ca.issue("controller-manager", "system:kube-controller-manager")
        sched = ca.issue("scheduler", "system:kube-scheduler")
        sa = certs.service_account_keys(pki)
        # Aggregation (an extension API server such as KEDA's metrics adapter, docs/autoscaling.md): the
        # apiserver proxies with this client certificate and the user in X-Remote-* headers; extension
        # servers trust those headers from this CA's `front-proxy-client` only (the CA and names reach
        # them through the kube-system/extension-apiserver-authentication ConfigMap).
        (pki / "front-proxy").mkdir(exist_ok=True)
        front_ca = certs.CertificateAuthority(pki / "front-proxy")
        front = front_ca.issue("client", "front-proxy-client")
        self.ports = {name: free_port() for name in ("etcd", "etcd-peer", "kcm", "scheduler")}
        self.ports["apiserver"] = free_port(self.address)
        for stem, pair, user in (
            ("kubeconfig", admin, "admin"),
            ("kcm.kubeconfig", kcm, "kcm"),
            ("scheduler.kubeconfig", sched, "scheduler"),
        ):
            (self.workdir / stem).write_text(yaml.safe_dump(kubeconfig_for(self.server, ca.pair.cert, pair, user)))
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        try:
            self._spawn(
                "etcd",
                [
                    str(binaries["etcd"]),
                    "--name=local",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=local={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                detach,
            )
            self._wait("etcd", lambda: self._http_ok(f"{etcd_url}/health"), timeout)
            self._spawn(
                "apiserver",
                [
                    str(binaries["kube-apiserver"]),
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self.address}",
                    f"--advertise-address={self.address}",
                    f"--secure-port={self.ports['apiserver']}",
                    f"--tls-cert-file={serving.cert}",
                    f"--tls-private-key-file={serving.key}",
                    f"--client-ca-file={ca.pair.cert}",
                    "--authorization-mode=Node,RBAC",
                    # What hardened clusters add: setting blockOwnerDeletion needs update on the owner's finalizers.
                    # NodeRestriction: a kubelet changes only its own Node and the pods bound to it.
                    "--enable-admission-plugins=OwnerReferencesPermissionEnforcement,NodeRestriction",
                    f"--kubelet-client-certificate={kubelet_client.cert}",
                    f"--kubelet-client-key={kubelet_client.key}",
                    f"--kubelet-certificate-authority={ca.pair.cert}",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={sa.cert}",
                    f"--service-account-signing-key-file={sa.key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--allow-privileged=true",
                    # The `kubernetes` Service gets this address as its endpoint (pods of a real node
                    # reach it); a loopback address is no endpoint, so then none is published.
                    f"--endpoint-reconciler-type={'none' if self.address.startswith('127.') else 'lease'}",
                    "--profiling=false",
                    "--enable-priority-and-fairness=false",
                    f"--requestheader-client-ca-file={front_ca.pair.cert}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={front.cert}",
                    f"--proxy-client-key-file={front.key}",
                    "--v=1",
                    *self.apiserver_args,
                ],
                detach,
            )
            self._wait("apiserver", lambda: self._api_ok("/readyz"), timeout)
            self._spawn(
                "controller-manager",
                [
                    str(binaries["kube-controller-manager"]),
                    f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                    f"--authentication-kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                    f"--authorization-kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.ports['kcm']}",
                    "--use-service-account-credentials=true",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={sa.key}",
                    f"--root-ca-file={ca.pair.cert}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--controllers=*,-nodeipam",
                    "--profiling=false",
                    "--v=1",
                ],
                detach,
            )
            self._spawn(
                "scheduler",
                [
                    str(binaries["kube-scheduler"]),
                    f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                    f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                    f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.ports['scheduler']}",
                    "--leader-elect=false",
                    "--profiling=false",
                    "--v=1",
                ],
                detach,
            )
            # The controller-manager is working once it has made the default ServiceAccount; pods need it.
            self._wait(
                "controller-manager",
                lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                timeout,
            )
            self._bind_kubelet_client()
        except BaseException:
            self.stop()
            raise
        self._save_state()
        return self

    def _bind_kubelet_client(self) -> None:
        """What a kubeadm cluster binds: the apiserver's kubelet client may use every kubelet API."""
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "modeldeploy-local:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}],
        }
        self._api_request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)

    def stop(self) -> None:
        """Stop the components one by one, newest first (the apiserver drains fast while etcd still
        answers, slowly once it is gone); SIGKILL what lingers. Keeps the directory."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    # --- a cluster started by another process -------------------------------------------------------------

    def _save_state(self) -> None:
        state = {"version": K8S_VERSION, "ports": self.ports, "pids": {n: p.pid for n, p in self.procs.items()}}
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @staticmethod
    def saved_state(workdir: Path) -> dict[str, object] | None:
        """cluster.json of a cluster started with detach, or None."""
        try:
            return json.loads((workdir / STATE_FILE).read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def alive_pids(workdir: Path) -> dict[str, int]:
        state = LocalCluster.saved_state(workdir) or {}
        alive = {}
        for name, pid in dict(state.get("pids") or {}).items():  # type: ignore[call-overload]
            if is_alive(int(pid)):
                alive[name] = int(pid)
        return alive

    @staticmethod
    def stop_detached(workdir: Path, timeout: float = 15) -> list[str]:
        """Stop the components a detached start left running; the names stopped."""
        alive = LocalCluster.alive_pids(workdir)
        order = ["scheduler", "controller-manager", "apiserver", "etcd"]
        for name in sorted(alive, key=lambda n: order.index(n) if n in order else -1):
            pid = alive[name]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and is_alive(pid):
                time.sleep(0.1)
            if is_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (workdir / STATE_FILE).unlink()
        return list(alive)

    # --- helpers -----------------------------------------------------------------------------------------

    # --- one component down and up again (the fault tests) -------------------------------------------

    def stop_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one component (etcd, apiserver, ...) and wait for it; the others keep running."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_component(self, name: str, timeout: float = 60) -> None:
        """Start a stopped component again with the same flags; wait until etcd or the apiserver answers."""
        self._spawn(name, self.argvs[name], self.detached)
        if name == "etcd":
            url = f"http://127.0.0.1:{self.ports['etcd']}/health"
            self._wait(name, lambda: self._http_ok(url), timeout)
        elif name == "apiserver":
            self._wait(name, lambda: self._api_ok("/readyz"), timeout)
        self._save_state()

    def _spawn(self, name: str, argv: list[str], detach: bool) -> None:
        self.argvs[name], self.detached = argv, detach
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.log(f"starting {name}")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
        )
        log.close()

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc_name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{proc_name} exited with {proc.returncode}\n{self.log_tail(proc_name)}")
            with contextlib.suppress(OSError, ssl.SSLError):
                if ready():
                    return
            time.sleep(0.25)
        raise ClusterError(f"{name} was not ready after {timeout:.0f} s\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return False

    def _admin_context(self) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _api_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.server + path, timeout=3, context=self._admin_context()) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return False

    def _api_request(self, method: str, path: str, body: dict[str, object]) -> None:
        """One admin request; 409 (exists already) is fine."""
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._admin_context()):
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise ClusterError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
