"""Who may set which field of a ModelDeployment, against a real apiserver (docs/security.md, "Pod policy" and
"Admission").

The ValidatingAdmissionPolicy, its binding and the aggregated ClusterRoles come from deploy/operator.yaml,
as `kubectl apply -k deploy/` installs them. Two users, by impersonation: alice holds the chart's
`modeldeploy-edit` role only (ModelDeployments, no pods); bob holds Kubernetes' own `edit`, which may create
pods and gets ModelDeployments through aggregation. Then the operator, as a process with its default
config: a spec its policy refuses gets one sentence in status and nothing in the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import LocalCluster
from tests.cluster.test_operator import OperatorProcess, eventually

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
DEPLOY = REPO / "deploy" / "operator.yaml"
ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
NS = f"md-admission-{uuid.uuid4().hex[:6]}"
MANAGED = "app.kubernetes.io/managed-by=modeldeploy"
MODEL = {
    "name": "qwen2.5-instruct",
    "format": "ggufv2",
    "quantization": "Q4_K_M",
    "sizeInBillions": "0_5",
    "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
}
SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "password"}}}


def md_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": MODEL, **spec},
    }


class As:
    """The ModelDeployment API as one user (impersonated by the admin's kubeconfig)."""

    def __init__(self, kubeconfig: str, user: str | None) -> None:
        api = config.new_client_from_config(config_file=kubeconfig)
        if user:
            api.set_default_header("Impersonate-User", user)
        self.crs = client.CustomObjectsApi(api)

    def create(self, doc: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kwargs = {"dry_run": "All"} if dry_run else {}
        return dict(self.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc, **kwargs))

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(self.crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, patch))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name))

    def refusal(self, call: Any) -> str:
        """The apiserver's message for a request it refused with 403; fails when it went through."""
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 403, info.value.body
        return str(json.loads(info.value.body)["message"])


def _admin(local_cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(local_cluster.kubeconfig_path))


def _apply(api: client.ApiClient, doc: dict[str, Any]) -> None:
    """Create (or replace) one cluster-scoped object of deploy/ or an RBAC object."""
    kind = doc["kind"]
    if kind in ADMISSION_KINDS:
        adm = client.AdmissionregistrationV1Api(api)
        create = getattr(adm, "create_validating_admission_policy" + ("_binding" if "Binding" in kind else ""))
        with contextlib.suppress(ApiException):
            getattr(adm, "delete_validating_admission_policy" + ("_binding" if "Binding" in kind else ""))(
                doc["metadata"]["name"]
            )
        create(doc)
        return
    rbac = client.RbacAuthorizationV1Api(api)
    try:
        if kind == "ClusterRole":
            rbac.create_cluster_role(doc)
        elif kind == "Role":
            rbac.create_namespaced_role(NS, doc)
        else:
            rbac.create_namespaced_role_binding(NS, doc)
    except ApiException as exc:
        if exc.status != 409:
            raise


def _binding(name: str, user: str, role_kind: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


@pytest.fixture(scope="module")
def users(local_cluster: LocalCluster) -> Iterator[tuple[As, As]]:  # tests/cluster/conftest.py
    api = _admin(local_cluster)
    ext = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(CRD_FILE.read_text())
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        got = ext.read_custom_resource_definition(crd["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or ())

    eventually(established, "the CRD to be established")
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    shipped = [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]
    admission = [d for d in shipped if d["kind"] in ADMISSION_KINDS]
    roles = [
        d
        for d in shipped
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] in ("modeldeploy-edit", "modeldeploy-view")
    ]
    assert len(admission) == 2 and len(roles) == 2
    for doc in [*roles, *admission]:
        _apply(api, doc)
    _apply(api, _binding("alice", "alice", "ClusterRole", "modeldeploy-edit"))
    _apply(api, _binding("bob", "bob", "ClusterRole", "edit"))  # Kubernetes' own: pods, and ours by aggregation
    kubeconfig = str(local_cluster.kubeconfig_path)
    alice, bob = As(kubeconfig, "alice"), As(kubeconfig, "bob")
    # The policy and the aggregation take effect a moment after they are created: probe with dry runs.
    probe = md_doc("probe", serviceAccountName="deployer")

    def policy_in_force() -> bool:
        try:
            alice.create(probe, dry_run=True)
        except ApiException as exc:
            return exc.status == 403 and "ValidatingAdmissionPolicy" in str(exc.body)
        return False

    eventually(policy_in_force, "the admission policy to refuse alice", timeout=60)
    eventually(lambda: bob.create(probe, dry_run=True), "bob's edit role to include ModelDeployments", timeout=60)
    yield alice, bob
    if not os.environ.get("MODELDEPLOY_KEEP_TEST_NAMESPACE"):
        with contextlib.suppress(ApiException):
            core.delete_namespace(NS)
    adm = client.AdmissionregistrationV1Api(api)
    for doc in admission:  # other modules of the session create ModelDeployments as admin; still, leave none
        with contextlib.suppress(ApiException):
            if doc["kind"] == "ValidatingAdmissionPolicyBinding":
                adm.delete_validating_admission_policy_binding(doc["metadata"]["name"])
            else:
                adm.delete_validating_admission_policy(doc["metadata"]["name"])


def test_without_the_right_to_create_pods_a_pod_shaping_field_is_refused(users: tuple[As, As]) -> None:
    alice, _ = users
    said = alice.refusal(lambda: alice.create(md_doc("sa", serviceAccountName="deployer")))
    assert "spec fields that shape the pods the operator creates (spec.serviceAccountName)" in said, said
    assert f"need the right to create pods in namespace {NS}" in said
    several = md_doc(
        "several",
        images={"llamacpp": "evil.example/llama:1"},
        env=[SECRET_ENV, {"name": "PLAIN", "value": "1"}],
        tolerations=[{"operator": "Exists"}],
        podLabels={"app": "payments"},
        cache={"pvc": "someone-elses-data"},
    )
    said = alice.refusal(lambda: alice.create(several))
    expected = "(spec.images, spec.cache.pvc, spec.env[].valueFrom, spec.tolerations, spec.podLabels)"
    assert expected in said, said
    uri = md_doc("uri", model={**MODEL, "uri": "pvc://weights/qwen", "credentialsSecret": "hf-token"})
    assert "(spec.model.uri (pvc://), spec.model.credentialsSecret)" in alice.refusal(lambda: alice.create(uri))


def test_without_the_right_to_create_pods_a_plain_modeldeployment_is_allowed(users: tuple[As, As]) -> None:
    alice, _ = users
    alice.create(md_doc("plain", env=[{"name": "PLAIN", "value": "1"}], resources={"gpus": 0}))
    assert alice.patch("plain", {"spec": {"replicas": 2}})["spec"]["replicas"] == 2
    assert alice.get("plain")["metadata"]["name"] == "plain"  # read through the same role
    said = alice.refusal(lambda: alice.patch("plain", {"spec": {"nodeSelector": {"zone": "a"}}}))
    assert "(spec.nodeSelector)" in said, said


def test_with_the_right_to_create_pods_pod_shaping_fields_are_allowed(users: tuple[As, As]) -> None:
    alice, bob = users
    bob.create(
        md_doc("shaped", serviceAccountName="deployer", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    )
    # alice may still change what is not pod-shaping on bob's object, and remove what is, not change it
    assert alice.patch("shaped", {"spec": {"replicas": 3}})["spec"]["replicas"] == 3
    said = alice.refusal(lambda: alice.patch("shaped", {"spec": {"serviceAccountName": "other"}}))
    assert "(spec.serviceAccountName)" in said, said
    assert "tolerations" not in alice.patch("shaped", {"spec": {"tolerations": None}})["spec"]


# --- the operator's policy: refused in status, nothing created ----------------------------------------------


@pytest.fixture(scope="module")
def operator(
    users: tuple[As, As], local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(str(local_cluster.kubeconfig_path), log)
    op.start()
    yield op
    op.stop()
    if os.environ.get("MODELDEPLOY_SHOW_OPERATOR_LOG"):
        print(log.read_text()[-20000:])


def test_a_spec_the_operators_policy_refuses_gets_one_sentence_and_nothing_else(
    users: tuple[As, As], operator: OperatorProcess, local_cluster: LocalCluster
) -> None:
    _, bob = users  # may create pods: the admission policy lets it through, the operator's policy does not
    created = bob.create(md_doc("refused", serviceAccountName="deployer"))

    def refused() -> dict[str, Any] | None:
        status = bob.get("refused").get("status") or {}
        if status.get("observedGeneration") != created["metadata"]["generation"]:
            return None
        return next((c for c in status.get("conditions") or [] if c["type"] == "EngineSelected"), None)

    selected = eventually(refused, "the operator's status for the refused spec")
    assert (selected["status"], selected["reason"]) == ("False", "RefusedByPolicy")
    assert selected["message"] == (
        "spec.serviceAccountName 'deployer' would mount that ServiceAccount's token in the model pods, which the "
        'operator\'s policy does not allow (config.policy.serviceAccountNames; docs/security.md, "Pod policy")'
    )
    api = _admin(local_cluster)
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    assert apps.list_namespaced_deployment(NS, label_selector=MANAGED).items == []
    assert core.list_namespaced_service(NS, label_selector=MANAGED).items == []
    assert batch.list_namespaced_job(NS, label_selector=MANAGED).items == []
    assert core.list_namespaced_persistent_volume_claim(NS).items == []
    assert [sa.metadata.name for sa in core.list_namespaced_service_account(NS).items] == ["default"]
