"""KEDA, its HTTP add-on and Prometheus as processes beside the local control plane (docs/autoscaling.md).

Why processes on the host and not pods on the real node: the interceptor must reach the model's Service
and Prometheus the pods' IPs on the node's bridge (10.244.0.0/24) — both are reachable from the host,
where kube-proxy's rules apply — and each binary then needs only a kubeconfig, with no image to build
and no in-cluster DNS (the dev cluster runs none). Each has its own, in the name of its upstream
ServiceAccount, with the upstream roles (stack_rbac.py). The pieces that address each other by in-cluster
names get loopback addresses instead:

- KEDA's metrics adapter is the `v1beta1.external.metrics.k8s.io` APIService; the Service it names is
  an ExternalName `localhost`, so the apiserver (a host process) proxies to the adapter on loopback, and
  authenticates with its front-proxy client certificate (cluster.py), which the adapter trusts through
  the `extension-apiserver-authentication` ConfigMap, as in any cluster.
- KEDA's operator and adapter talk gRPC over mutual TLS with certificates from the cluster's CA.
- The operator's ScaledObjects name Prometheus and the add-on's scaler by loopback address
  (OperatorConfig: `autoscaling.prometheusAddress`, `httpAddon.scalerAddress`).
- The add-on's scaler finds the interceptor's admin port through the EndpointSlices of a Service
  without selector whose one endpoint is the bridge address the interceptor listens on.
- The interceptor forwards to `<service>.<namespace>:<port>`: it runs in a mount namespace of its own
  where /etc/hosts is a file a small process of this module keeps (`keep_routes`), mapping every
  Service's names to its ClusterIP.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.controller.blocking import Kube, KubeError
from modeldeploy_dev import addon_crds, certs, stack_rbac
from modeldeploy_dev.build import KEDA, KEDA_HTTP, ensure_autoscaling, module_source
from modeldeploy_dev.cluster import free_port, kubeconfig_for

NAMESPACE = "keda"
STATE_FILE = "autoscaling.json"  # the ports, for `modeldeploy dev chat` (the interceptor's)
INTERCEPTOR_ADMIN_SERVICE = "keda-add-ons-http-interceptor-admin"
INTERCEPTOR_DEPLOYMENT = "keda-add-ons-http-interceptor"
APISERVICE = "v1beta1.external.metrics.k8s.io"
ENGINES = ("vllm", "sglang", "llama.cpp")  # the engines with a load signal (the chart's PodMonitors)
SCRAPE_INTERVAL = "1s"

Log = Callable[[str], None]


class StackError(RuntimeError):
    """A component did not start; the message ends with the tail of its log."""


def prometheus_config(kubeconfig: Path, interval: str = SCRAPE_INTERVAL) -> dict[str, object]:
    """The scrape configuration the chart's PodMonitors amount to: pods labelled managed-by modeldeploy
    with one of the engines that export a load signal, port `http` (or `metrics` where the pod says so),
    /metrics, labelled namespace and pod
    (the labels the ScaledObject's query matches on, scaling/objects.py)."""
    keep = "|".join(e.replace(".", r"\.") for e in ENGINES)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "modeldeploy-engines",
                "metrics_path": "/metrics",
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"],
                        "regex": "modeldeploy",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_label_modeldeploy_io_engine"],
                        "regex": keep,
                        "action": "keep",
                    },
                    {
                        # Port `http`, or `metrics` for a pod labelled to be scraped there: llama.cpp with an
                        # API key asks for it on /metrics too, and its entrypoint relays /metrics alone on the
                        # port named `metrics` (docs/security.md, "API keys"), as the chart's PodMonitor does.
                        "source_labels": [
                            "__meta_kubernetes_pod_label_modeldeploy_io_metrics_port",
                            "__meta_kubernetes_pod_container_port_name",
                        ],
                        "regex": ";http|metrics;metrics",
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


@dataclass
class Stack:
    """The processes in `workdir`; start() after the cluster, stop() before it."""

    workdir: Path
    kubeconfig: Path
    ca: certs.CertificateAuthority
    node_address: str  # the bridge address: pods and the scaler reach the interceptor here
    log: Log = lambda _m: None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def scaler_address(self) -> str:
        return f"127.0.0.1:{self.ports['scaler']}"

    @property
    def interceptor_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def hosts_file(self) -> Path:
        return self.workdir / "interceptor-hosts"

    def start(self, api: client.ApiClient) -> Stack:
        """Build (first run only), install KEDA's and the add-on's CRDs, write the Services, EndpointSlice
        and APIService they need, then start Prometheus, KEDA and the add-on."""
        bins = ensure_autoscaling(log=self.log)
        crds = addon_crds.ensure_addon_crds((addon_crds.KEDA, addon_crds.KEDA_HTTP))
        addon_crds.install(api, addon_crds.load_crds(crds))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        names = ("prometheus", "keda-metrics", "keda-probe", "grpc", "adapter", "adapter-metrics")
        self.ports = {name: free_port() for name in names}
        for name in ("scaler", "scaler-probe", "interceptor-metrics", "addon-metrics", "addon-probe"):
            self.ports[name] = free_port()
        self.ports["proxy"] = free_port()
        self.ports["admin"] = free_port(self.node_address)
        grpc_dir = self.workdir / "keda-certs"
        grpc_dir.mkdir(exist_ok=True)
        # One pair for the gRPC link both ways and the adapter's serving side (the APIService's caBundle is the
        # cluster CA; the apiserver checks the Service's name).
        pair = self.ca.issue(
            "keda", "keda-operator", server=True, client=True, dns=(f"keda-metrics-apiserver.{NAMESPACE}.svc",)
        )
        for src, dst in ((self.ca.pair.cert, "ca.crt"), (pair.cert, "tls.crt"), (pair.key, "tls.key")):
            (grpc_dir / dst).write_bytes(src.read_bytes())
        self.hosts_file.write_text("127.0.0.1 localhost\n")
        self._objects(api)
        self._apply(api, stack_rbac.upstream_rbac(module_source(KEDA), module_source(KEDA_HTTP)))
        own = self._identities()

        def kube_env(component: str) -> dict[str, str]:
            return {"KUBECONFIG": str(own[component])}

        prom = self.workdir / "prometheus.yml"
        prom.write_text(yaml.safe_dump(prometheus_config(own["prometheus"])))
        self._spawn(
            "prometheus",
            [
                str(bins["prometheus"]["prometheus"]),
                f"--config.file={prom}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
                "--storage.tsdb.retention.time=1d",
            ],
            {},
        )
        keda_env = {**kube_env("keda-operator"), "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE, "WATCH_NAMESPACE": ""}
        keda_env["POD_NAMESPACE"] = NAMESPACE
        self._spawn(
            "keda-operator",
            [
                str(bins["keda"]["operator"]),
                f"--metrics-bind-address=127.0.0.1:{self.ports['keda-metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{self.ports['keda-probe']}",
                f"--metrics-service-bind-address=127.0.0.1:{self.ports['grpc']}",
                f"--cert-dir={grpc_dir}",
                f"--ca-dir={grpc_dir}",
                "--zap-log-level=info",
            ],
            keda_env,
        )
        self._spawn(
            "keda-adapter",
            [
                str(bins["keda"]["adapter"]),
                f"--secure-port={self.ports['adapter']}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={grpc_dir}",
                f"--tls-cert-file={pair.cert}",
                f"--tls-private-key-file={pair.key}",
                f"--lister-kubeconfig={own['keda-adapter']}",
                f"--authentication-kubeconfig={own['keda-adapter']}",
                f"--authorization-kubeconfig={own['keda-adapter']}",
                f"--metrics-service-address=127.0.0.1:{self.ports['grpc']}",
                "--metrics-service-grpc-authority=localhost",
                f"--port={self.ports['adapter-metrics']}",
            ],
            {**keda_env, **kube_env("keda-adapter")},
        )
        addon_env = {"KEDA_HTTP_CURRENT_NAMESPACE": NAMESPACE}
        self._spawn(
            "interceptor",
            [
                # Its own mount namespace, where /etc/hosts is ours (see the module docstring).
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount --bind "{self.hosts_file}" /etc/hosts && exec "$0"',
                str(bins["keda-http-add-on"]["interceptor"]),
            ],
            {
                **addon_env,
                **kube_env("interceptor"),
                "KEDA_HTTP_PROXY_PORT": str(self.ports["proxy"]),
                "KEDA_HTTP_ADMIN_PORT": str(self.ports["admin"]),
                "OTEL_PROM_EXPORTER_PORT": str(self.ports["interceptor-metrics"]),
            },
        )
        # The add-on's operator: HTTPScaledObjects' status (ours ask it to create no ScaledObject).
        self._spawn(
            "addon-operator",
            [
                str(bins["keda-http-add-on"]["operator"]),
                f"--metrics-bind-address=127.0.0.1:{self.ports['addon-metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{self.ports['addon-probe']}",
            ],
            {
                **kube_env("addon-operator"),
                "KEDA_HTTP_OPERATOR_NAMESPACE": NAMESPACE,
                "KEDAHTTP_INTERCEPTOR_SERVICE": "keda-add-ons-http-interceptor-proxy",
                "KEDAHTTP_INTERCEPTOR_PROXY_PORT": str(self.ports["proxy"]),
                "KEDAHTTP_INTERCEPTOR_ADMIN_PORT": str(self.ports["admin"]),
                "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE": "keda-add-ons-http-external-scaler",
                "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT": str(self.ports["scaler"]),
            },
        )
        self._spawn(
            "scaler",
            [str(bins["keda-http-add-on"]["scaler"])],
            {
                **addon_env,
                **kube_env("scaler"),
                "KEDA_HTTP_SCALER_PORT": str(self.ports["scaler"]),
                "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE": NAMESPACE,
                "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE": INTERCEPTOR_ADMIN_SERVICE,
                "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT": INTERCEPTOR_DEPLOYMENT,
                "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT": str(self.ports["admin"]),
            },
        )
        self._spawn(
            "routes",
            [sys.executable, "-m", "modeldeploy_dev.autoscaling", str(self.kubeconfig), str(self.hosts_file)],
            {},
        )
        (self.workdir / STATE_FILE).write_text(json.dumps(self.ports))
        self._wait_http("prometheus", f"{self.prometheus_url}/-/ready")
        self._wait_http("keda-operator", f"http://127.0.0.1:{self.ports['keda-probe']}/readyz")
        return self

    def _objects(self, api: client.ApiClient) -> None:
        kube = Kube(api)

        def request(method: str, path: str, body: dict[str, object]) -> None:
            try:
                kube.request(method, path, body=body)
            except KubeError as exc:
                if exc.status != 409:  # already there (a second stack on the same cluster)
                    raise

        request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        request(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/services",
            body={
                "metadata": {"name": INTERCEPTOR_ADMIN_SERVICE},
                "spec": {"ports": [{"name": "admin", "port": self.ports["admin"]}]},
            },
        )
        request(
            "POST",
            f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
            body={
                "metadata": {
                    "name": f"{INTERCEPTOR_ADMIN_SERVICE}-host",
                    "labels": {"kubernetes.io/service-name": INTERCEPTOR_ADMIN_SERVICE},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.node_address], "conditions": {"ready": True}}],
                "ports": [{"name": "admin", "port": self.ports["admin"], "protocol": "TCP"}],
            },
        )
        request(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/services",
            body={
                "metadata": {"name": "keda-metrics-apiserver"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"port": self.ports["adapter"]}],
                },
            },
        )
        request(
            "POST",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            body={
                "metadata": {"name": APISERVICE},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {
                        "namespace": NAMESPACE,
                        "name": "keda-metrics-apiserver",
                        "port": self.ports["adapter"],
                    },
                    "caBundle": _b64(self.ca.pair.cert.read_bytes()),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        )

    def _apply(self, api: client.ApiClient, docs: list[dict[str, object]]) -> None:
        """Create the stack's roles and bindings (kept when there: a second stack on the same cluster)."""
        kube = Kube(api)
        for doc in docs:
            meta: dict[str, str] = doc["metadata"]  # type: ignore[assignment]
            plural = f"{str(doc['kind']).lower()}s"
            where = f"namespaces/{meta['namespace']}/" if "namespace" in meta else ""
            try:
                kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/{where}{plural}", body=doc)
            except KubeError as exc:
                if exc.status != 409:
                    raise

    def _identities(self) -> dict[str, Path]:
        """A kubeconfig per process, with a client certificate in its ServiceAccount's name (stack_rbac)."""
        cluster = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]
        out: dict[str, Path] = {}
        for component in stack_rbac.IDENTITIES:
            pair = self.ca.issue(f"sa-{component}", stack_rbac.user(component), org="system:serviceaccounts")
            path = self.workdir / f"{component}.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig_for(cluster["server"], self.ca.pair.cert, pair, component)))
            out[component] = path
        return out

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )

    def _wait_http(self, name: str, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for other, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{other} exited ({proc.returncode}):\n{self.log_tail(other)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise StackError(f"{name} not ready at {url} after {timeout:.0f} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def interceptor_url(workdir: Path) -> str | None:
    """The interceptor's proxy URL of the stack started in `workdir`, None when none was."""
    try:
        ports = json.loads((workdir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return f"http://127.0.0.1:{ports['proxy']}"


def hosts_text(services: list[client.V1Service]) -> str:
    """/etc/hosts for the interceptor: each Service's in-cluster names at its ClusterIP."""
    lines = ["127.0.0.1 localhost"]
    for svc in services:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None":
            continue
        name, ns = svc.metadata.name, svc.metadata.namespace
        lines.append(f"{ip} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local")
    return "\n".join(lines) + "\n"


def keep_routes(kubeconfig: Path, hosts: Path, interval: float = 0.5) -> None:
    """Rewrite `hosts` whenever the Services change. In place: the bind mount follows the inode."""
    from kubernetes import config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    while True:
        try:
            text = hosts_text(core.list_service_for_all_namespaces().items)
            if text != hosts.read_text():
                with hosts.open("r+") as f:
                    f.write(text)
                    f.truncate()
        except (ApiException, OSError):
            pass  # the apiserver restarting or going away with the cluster: try again
        time.sleep(interval)


if __name__ == "__main__":
    keep_routes(Path(sys.argv[1]), Path(sys.argv[2]))
