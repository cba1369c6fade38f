"""`helm install` of charts/modeldeploy into the local control plane, and the operator run under the
chart's ServiceAccount token: the chart's RBAC is enough for everything the operator does, and no more.

The operator runs as a local process (there is no container runtime here) with exactly the arguments,
environment and config file of the installed Deployment, authenticated by a token the apiserver issues
for the chart's ServiceAccount (TokenRequest), so every request is authorized by the chart's Roles. As
root it finds that token in-cluster, where the kubelet mounts it (`_as_the_pod`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.controller import credentials
from modeldeploy_dev import LocalCluster, sandbox
from modeldeploy_dev.cluster import free_port
from modeldeploy_dev.nodes import FakeKubelet, create_node
from tests.support.chart import CHART, run_helm
from tests.support.tools import ensure_helm

RELEASE, NS, APP_NS = "md", "modeldeploy-system", "chart-apps"
NODE = "chart-cpu-1"


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if got := check():
                return got
        except (ApiException, OSError, AssertionError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def _cpu_node() -> dict[str, Any]:
    res = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    return {
        "metadata": {"name": NODE, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "status": {
            "capacity": res,
            "allocatable": res,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake"}],
        },
    }


@pytest.fixture(scope="module", params=["clusterwide", "namespaced"])
def installed(
    request: pytest.FixtureRequest, local_cluster: LocalCluster, kube_api: client.ApiClient
) -> Iterator[dict[str, Any]]:
    """The chart installed with two replicas (Kopf peering on), serving every namespace or only APP_NS;
    yields the operator Deployment."""
    helm = ensure_helm()
    kubeconfig = str(local_cluster.kubeconfig_path)
    extra = []
    if request.param == "namespaced":
        with contextlib.suppress(ApiException):  # the chart's Roles go into it: it must exist first
            client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": APP_NS}})
        extra = ["--set", f"watchNamespaces={{{APP_NS}}}"]
    proc = run_helm(
        helm, "install", RELEASE, str(CHART), "--namespace", NS, "--create-namespace",
        "--kubeconfig", kubeconfig, "--set", "replicas=2", *extra, "--wait=false", timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    apps = client.AppsV1Api(kube_api)
    deps = apps.list_namespaced_deployment(NS, label_selector="app.kubernetes.io/name=modeldeploy").items
    assert len(deps) == 1
    try:
        yield kube_api.sanitize_for_serialization(deps[0])
    finally:
        run_helm(helm, "uninstall", RELEASE, "--namespace", NS, "--kubeconfig", kubeconfig, timeout=120)


def _sa_token(kube_api: client.ApiClient, sa: str) -> str:
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        sa, NS, {"spec": {"expirationSeconds": 3600}}
    )
    return str(token.status.token)


def _as_the_pod(
    local_cluster: LocalCluster, token: str, cmd: list[str], env: dict[str, str], tmp: Path
) -> tuple[list[str], dict[str, str], str]:
    """The operator's command and environment, authenticated as the chart's pod would be, and the log line
    that says which credentials it took.

    Where this machine can (root: localcluster/sandbox.py), in-cluster exactly: $KUBERNETES_SERVICE_HOST/PORT
    and the token, CA and namespace files at the path the kubelet mounts them, in a mount namespace of the
    operator's own. Elsewhere a kubeconfig holding the same token.
    """
    ca = local_cluster.workdir / "pki" / "ca.crt"
    env = {k: v for k, v in env.items() if k != "KUBECONFIG"}
    if sandbox.available() is None:
        sa = tmp / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(token)
        (sa / "ca.crt").write_bytes(ca.read_bytes())
        (sa / "namespace").write_text(NS)
        host, port = local_cluster.server.removeprefix("https://").rsplit(":", 1)
        env |= {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        mount = {"source": str(sa), "target": str(credentials.SA_DIR), "readOnly": True}
        spec = tmp / "container.json"
        spec.write_text(json.dumps({"argv": cmd, "env": env, "root": str(tmp / "root"), "mounts": [mount]}))
        return (
            [sys.executable, "-m", "modeldeploy_dev.sandbox", "run", str(spec)],
            env,
            ("credentials: the in-cluster service account (without the kubernetes package)"),
        )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": local_cluster.server, "certificate-authority": str(ca)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
        "current-context": "sa",
    }
    (tmp / "sa.kubeconfig").write_text(yaml.safe_dump(doc))
    return cmd, {**env, "KUBECONFIG": str(tmp / "sa.kubeconfig")}, "credentials: context 'sa'"


def test_operator_under_the_charts_service_account(
    local_cluster: LocalCluster,
    kube_api: client.ApiClient,
    installed: dict[str, Any],
    tmp_path: Path,
) -> None:
    pod = installed["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "operator")
    args = [a for a in container["args"] if not a.startswith("--liveness=")]
    assert any(a.startswith("--peering=") for a in args)  # replicas=2: leader election between replicas
    core = client.CoreV1Api(kube_api)
    # The chart's config map, where the pod would mount it.
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(core.read_namespaced_config_map(cm_name, NS).data["config.yaml"])
    token = _sa_token(kube_api, pod["serviceAccountName"])

    create_node(core, _cpu_node())
    kubelet = FakeKubelet(kube_api, [NODE], interval=0.5).start()
    with contextlib.suppress(ApiException):
        core.create_namespace({"metadata": {"name": APP_NS}})
    health, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "MODELDEPLOY_CONFIG": str(cfg),
        "MODELDEPLOY_METRICS_PORT": str(metrics),
        "POD_NAME": "md-modeldeploy-0",
        "POD_ID": "md-modeldeploy-0",
    }
    log = tmp_path / "operator.log"
    cmd = [sys.executable, "-m", "modeldeploy.controller.run", *args, f"--liveness=http://127.0.0.1:{health}/healthz"]
    cmd, env, said = _as_the_pod(local_cluster, token, cmd, env, tmp_path)
    with log.open("wb") as out:
        op = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    crs = client.CustomObjectsApi(kube_api)
    try:

        def healthy() -> bool:
            assert op.poll() is None, log.read_text()[-3000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        eventually(healthy, "the operator's liveness endpoint")
        assert said in log.read_text()
        md = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "rbac-check", "namespace": APP_NS},
            "spec": {
                "model": {
                    "name": "my-finetune",
                    "family": "my-private-family",
                    "format": "pytorch",
                    "quantization": "none",
                    "uri": "/models/my-finetune",
                }
            },
        }
        crs.create_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, md)
        apps = client.AppsV1Api(kube_api)
        try:
            dep = eventually(lambda: apps.read_namespaced_deployment("rbac-check", APP_NS), "the Deployment", 90)
        except AssertionError:
            status = crs.get_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, "rbac-check").get("status")
            raise AssertionError(f"no Deployment; status: {status}") from None
        owner = dep.metadata.owner_references[0]
        assert owner.kind == "ModelDeployment" and owner.block_owner_deletion  # needs modeldeployments/finalizers
        eventually(lambda: core.read_namespaced_service("rbac-check", APP_NS), "the Service")

        def ready() -> bool:
            status = crs.get_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, "rbac-check").get("status", {})
            return status.get("engine") == "transformers" and status.get("ready") == "1/1"

        eventually(ready, "status written through the status subresource, Ready 1/1", 90)

        def selected_event() -> bool:  # events: create (Kopf posts them from its queue, after the status write)
            events = core.list_namespaced_event(APP_NS, field_selector="involvedObject.name=rbac-check").items
            return any(e.reason == "EngineSelected" for e in events)

        eventually(selected_event, "the EngineSelected Event", 30)
        # The peering object carries this replica's keep-alive (kopf.dev peerings: patch).
        peering = next(a.split("=", 1)[1] for a in args if a.startswith("--peering="))
        if any(a.startswith("--namespace=") for a in args):  # namespaced: one KopfPeering per namespace
            body = crs.get_namespaced_custom_object("kopf.dev", "v1", APP_NS, "kopfpeerings", peering)
        else:
            body = crs.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
        assert body.get("status"), body
    finally:
        op.send_signal(signal.SIGINT)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.kill()
        kubelet.stop()
        with contextlib.suppress(ApiException):
            crs.delete_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, "rbac-check")
        with contextlib.suppress(ApiException):
            core.delete_node(NODE)
    text = log.read_text()
    # RBAC denials read 'is forbidden: User "system:serviceaccount:…" cannot …' (a terminating namespace's
    # 403 is not about permissions).
    denied = [line for line in text.splitlines() if 'forbidden: User "system:serviceaccount' in line]
    assert not denied, "\n".join(denied[:10])


@pytest.mark.parametrize(
    ("verb", "group", "resource", "namespace"),
    [
        ("get", "", "secrets", APP_NS),  # model credentials are mounted by pods, never read by the operator
        ("create", "", "pods", APP_NS),
        ("delete", "apps", "deployments", APP_NS),  # the garbage collector deletes children
        ("update", "", "nodes", ""),
        # It creates Roles/RoleBindings for the model cache's download Jobs (one claim each), never cluster-wide
        # ones, and cannot bind or escalate beyond what it holds itself.
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
        ("create", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("escalate", "rbac.authorization.k8s.io", "roles", APP_NS),
        ("update", "rbac.authorization.k8s.io", "rolebindings", APP_NS),
        ("delete", GROUP, "modeldeployments", APP_NS),
    ],
)
def test_the_service_account_cannot(
    kube_api: client.ApiClient, installed: dict[str, Any], verb: str, group: str, resource: str, namespace: str
) -> None:
    assert not _allowed(kube_api, installed, verb, group, resource, namespace)


def test_the_install_scope_is_the_rbac_scope(kube_api: client.ApiClient, installed: dict[str, Any]) -> None:
    """Cluster-wide: every namespace. Namespaced (watchNamespaces): only those, and nothing elsewhere."""
    args = installed["spec"]["template"]["spec"]["containers"][0]["args"]
    namespaced = any(a.startswith("--namespace=") for a in args)
    assert _allowed(kube_api, installed, "list", GROUP, "modeldeployments", APP_NS)
    assert _allowed(kube_api, installed, "list", GROUP, "modeldeployments", "default") is not namespaced
    assert _allowed(kube_api, installed, "patch", "apps", "deployments", "default") is not namespaced
    assert _allowed(kube_api, installed, "list", "", "nodes", "")  # node facts are cluster-wide whatever the scope


def _allowed(
    kube_api: client.ApiClient, installed: dict[str, Any], verb: str, group: str, resource: str, namespace: str
) -> bool:
    sa = installed["spec"]["template"]["spec"]["serviceAccountName"]
    review = client.AuthorizationV1Api(kube_api).create_subject_access_review(
        {
            "spec": {
                "user": f"system:serviceaccount:{NS}:{sa}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "namespace": namespace,
                },
            }
        }
    )
    return bool(review.status.allowed)
