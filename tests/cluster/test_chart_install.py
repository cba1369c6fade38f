"""`helm install` of charts/modeldeploy into the local control plane: the operator runs from its image on
the real node, under the chart's ServiceAccount, and the chart's RBAC is enough for everything the
operator does, and no more.

The installed Deployment's pods run as they would on any cluster: the operator image (built here from
images/operator/Dockerfile), the chart's arguments, environment, config map and ServiceAccount token,
mounted by the kubelet; the operator reaches the apiserver through the `kubernetes` Service. Its log is
read back with the pods/log API (what `kubectl logs` reads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import LocalCluster, nodeconfig
from modeldeploy_dev.nodes import FakeKubelet, create_node
from modeldeploy_dev.realnode import RealNode
from tests.support.chart import CHART, run_helm
from tests.support.tools import ensure_helm
from tests.support.waiting import eventually

RELEASE, NS, APP_NS = "md", "modeldeploy-system", "chart-apps"
NODE = "chart-cpu-1"


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
    request: pytest.FixtureRequest,
    local_cluster: LocalCluster,
    kube_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
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
    # On the real node (tainted: only pods meant for it land there), from the image imported there.
    values = tmp_path_factory.mktemp("chart") / "values.yaml"
    values.write_text(
        yaml.safe_dump({"nodeSelector": nodeconfig.node_labels(), "tolerations": [nodeconfig.toleration()]})
    )
    proc = run_helm(
        helm, "install", RELEASE, str(CHART), "--namespace", NS, "--create-namespace",
        "--kubeconfig", kubeconfig, "--set", "replicas=2", "-f", str(values), *extra, "--wait=false", timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    apps = client.AppsV1Api(kube_api)
    deps = apps.list_namespaced_deployment(NS, label_selector="app.kubernetes.io/name=modeldeploy").items
    assert len(deps) == 1
    try:
        yield kube_api.sanitize_for_serialization(deps[0])
    finally:
        run_helm(helm, "uninstall", RELEASE, "--namespace", NS, "--kubeconfig", kubeconfig, timeout=120)
        # The next install has the same release name and labels: its pods' logs must not be these pods'.
        core = client.CoreV1Api(kube_api)
        selector = "app.kubernetes.io/name=modeldeploy"
        eventually(lambda: not core.list_namespaced_pod(NS, label_selector=selector).items, "the pods to go", 120)


def _operator_logs(core: client.CoreV1Api, deployment: dict[str, Any]) -> dict[str, str]:
    """Each operator pod's log, as `kubectl logs` reads it (the kubelet serves it through the apiserver)."""
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    logs = {}
    for pod in core.list_namespaced_pod(NS, label_selector=selector).items:
        with contextlib.suppress(ApiException):
            logs[pod.metadata.name] = core.read_namespaced_pod_log(pod.metadata.name, NS, container="operator")
    return logs


def test_operator_runs_from_its_image_under_the_charts_service_account(
    kube_api: client.ApiClient, installed: dict[str, Any], real_node: RealNode
) -> None:
    pod = installed["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "operator")
    assert any(a.startswith("--peering=") for a in container["args"])  # replicas=2: leader election
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    name = installed["metadata"]["name"]

    def both_ready() -> bool:
        dep = apps.read_namespaced_deployment(name, NS)
        return (dep.status.ready_replicas or 0) == 2

    try:
        eventually(both_ready, "both operator pods Ready on the real node", timeout=180)
    except AssertionError:
        pods = core.list_namespaced_pod(NS).items
        raise AssertionError(f"not Ready: {[(p.metadata.name, p.status.to_dict()) for p in pods]}") from None
    selector = ",".join(f"{k}={v}" for k, v in installed["spec"]["selector"]["matchLabels"].items())
    for running in core.list_namespaced_pod(NS, label_selector=selector).items:
        assert running.spec.node_name == real_node.name
        assert running.status.container_statuses[0].image in real_node.images()
        assert running.spec.security_context.run_as_non_root
    create_node(core, _cpu_node())
    kubelet = FakeKubelet(kube_api, [NODE], interval=0.5).start()
    with contextlib.suppress(ApiException):
        core.create_namespace({"metadata": {"name": APP_NS}})
    crs = client.CustomObjectsApi(kube_api)
    try:
        logs = _operator_logs(core, installed)
        # In-cluster credentials: the token, CA and namespace the kubelet mounted, read without the package.
        said = "credentials: the in-cluster service account (without the kubernetes package)"
        assert any(said in log for log in logs.values()), logs
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
        try:
            dep = eventually(lambda: apps.read_namespaced_deployment("rbac-check", APP_NS), "the Deployment", 90)
        except AssertionError:
            status = crs.get_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, "rbac-check").get("status")
            raise AssertionError(f"no Deployment; status: {status}; logs: {_operator_logs(core, installed)}") from None
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
        # The peering object carries the replicas' keep-alives (kopf.dev peerings: patch).
        peering = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--peering="))

        def keep_alive() -> dict[str, Any]:
            if any(a.startswith("--namespace=") for a in container["args"]):  # namespaced: one per namespace
                body = crs.get_namespaced_custom_object("kopf.dev", "v1", APP_NS, "kopfpeerings", peering)
            else:
                body = crs.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
            return dict(body.get("status") or {})

        eventually(keep_alive, "a replica's keep-alive in the peering's status", 60)
    finally:
        kubelet.stop()
        with contextlib.suppress(ApiException):
            crs.delete_namespaced_custom_object(GROUP, VERSION, APP_NS, PLURAL, "rbac-check")
        with contextlib.suppress(ApiException):
            core.delete_node(NODE)
    text = "\n".join(_operator_logs(core, installed).values())
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
