"""charts/modeldeploy: lint, rendering (cluster-wide and namespaced), values schema, security, RBAC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.config import LabelMappings, OperatorConfig, default_images, load_config
from modeldeploy.engines import registry
from tests.support.chart import CHART, NAMESPACED_VALUES, REPO, by_kind, operator_roles, run_helm

NAMESPACED = ("-f", str(NAMESPACED_VALUES))
WATCHED = ["team-a", "team-b"]


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects, "Deployment")
    return deployment


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


# --- lint and CRDs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["default", "namespaced"])
def test_helm_lint_strict(helm: Path, values: tuple[str, ...]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_chart_crd_is_the_generated_one() -> None:
    """The chart ships a copy (helm packaging does not follow symlinks); it must equal crds/ at the root."""
    root = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
    chart = CHART / "crds" / "modeldeploy.io_modeldeployments.yaml"
    assert chart.read_text() == root.read_text(), "run: .venv/bin/python scripts/gen_manifests.py"


def test_peering_crds_are_the_ones_kopf_watches() -> None:
    from kopf._cogs.structs import references

    crds = {
        d["spec"]["names"]["plural"]: d
        for d in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())
    }
    for selector, scope in (
        (references.CLUSTER_PEERINGS_K, "Cluster"),
        (references.NAMESPACED_PEERINGS_K, "Namespaced"),
    ):
        crd = crds[selector.any_name]
        assert crd["spec"]["group"] == selector.group
        assert [v["name"] for v in crd["spec"]["versions"]] == [selector.version]
        assert crd["spec"]["scope"] == scope


def test_include_crds_renders_all_three(render) -> None:
    names = {o["metadata"]["name"] for o in by_kind(render("--include-crds"), "CustomResourceDefinition")}
    assert names == {"modeldeployments.modeldeploy.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


# --- rendering ----------------------------------------------------------------------------------------


ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def test_default_render_is_cluster_wide_single_replica(render) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ClusterRole",
        "ClusterRole",  # ModelDeployments in the default edit/admin roles
        "ClusterRole",  # and in view
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    deployment = _deployment(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two unpeered operators at once
    container = _container(objects)
    assert container["command"] == ["modeldeploy", "run"]
    assert container["args"] == [
        "--all-namespaces",
        "--standalone",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--watch-silence=300",
    ]
    assert container["image"] == "ghcr.io/modeldeploy/operator:0.1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELDEPLOY_CONFIG"]["value"] == "/etc/modeldeploy/config.yaml"
    assert env["MODELDEPLOY_METRICS_PORT"]["value"] == "9090"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/modeldeploy"]["readOnly"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", *ADMISSION_KINDS):
            assert obj["metadata"]["namespace"] == "modeldeploy-system", obj["kind"]


def test_namespaced_render_watches_only_its_namespaces(render) -> None:
    objects = render(*NAMESPACED)
    container = _container(objects)
    assert container["args"] == [
        "--namespace=team-a",
        "--namespace=team-b",
        "--peering=modeldeploy",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--watch-silence=300",
        "--verbose",
    ]
    assert container["image"].startswith("ghcr.io/modeldeploy/operator@sha256:")
    deployment = _deployment(objects)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == WATCHED
    assert not by_kind(objects, "ClusterKopfPeering")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")) == WATCHED
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objects, "RoleBinding")) == WATCHED


def test_replicas_turn_peering_on_cluster_wide(render) -> None:
    objects = render("--set", "replicas=3")
    assert "--peering=modeldeploy" in _container(objects)["args"]
    (peering,) = by_kind(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "modeldeploy"
    assert by_kind(objects, "PodDisruptionBudget")


def test_optional_objects_can_be_turned_off(render) -> None:
    settings = [
        "metrics.enabled=false",
        "networkPolicy.enabled=false",
        "serviceAccount.create=false",
        "serviceAccount.name=existing",
        "rbac.create=false",
        "admissionPolicy.enabled=false",
    ]
    objects = render("--set", ",".join(settings))
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Deployment"]
    container = _container(objects)
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert {"name": "MODELDEPLOY_METRICS_PORT", "value": "0"} in container["env"]
    assert _deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_rendering_is_deterministic(helm: Path) -> None:
    """Same values, same bytes: GitOps tools see no diff on re-sync."""
    args = ("template", "md", str(CHART), "--namespace", "modeldeploy-system", *NAMESPACED)
    first, second = run_helm(helm, *args), run_helm(helm, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def _empty_paths(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        found = [path] if not node else []
        for key, value in node.items():
            found += _empty_paths(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        found = [path] if not node else []
        for i, value in enumerate(node):
            if value != "":  # the core API group in RBAC rules is ""
                found += _empty_paths(value, f"{path}[{i}]")
        return found
    return [path] if node is None or node == "" else []


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["default", "namespaced"])
def test_no_empty_or_server_owned_fields(render, values: tuple[str, ...]) -> None:
    """Empty maps/lists/nulls are dropped or defaulted by the apiserver and show as endless diffs in Argo CD."""
    for obj in render(*values):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert _empty_paths(obj) == [], where
        assert "status" not in obj, where
        assert "creationTimestamp" not in obj["metadata"], where


# --- the operator's config file -------------------------------------------------------------------------


def _config(objects: list[dict[str, Any]]) -> OperatorConfig:
    (configmap,) = by_kind(objects, "ConfigMap")
    return OperatorConfig.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))


def test_default_config_keeps_the_operator_defaults(render, tmp_path: Path) -> None:
    (configmap,) = by_kind(render(), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    assert load_config(path, registry.image_keys()) == load_config(None, registry.image_keys())


def test_values_reach_the_operator_config(render, tmp_path: Path) -> None:
    (configmap,) = by_kind(render(*NAMESPACED), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    config = load_config(path, registry.image_keys())
    assert config.images == {
        **default_images(registry.image_keys()),
        "vllm": "vllm/vllm-openai:v0.8.5",
        "llamacpp": "registry.example.com/llamacpp:cuda-12",
    }
    assert config.label_mappings.gpu_resource == "amd.com/gpu"
    assert config.label_mappings.gpu_present == LabelMappings().gpu_present
    assert config.vllm_extra_families == ["my-custom-llama"]
    assert config.image_pull_policy == "Always"
    assert [(e.name, e.value) for e in config.fetch_env] == [("HF_ENDPOINT", "https://hub-mirror.example.com")]


def test_config_change_rolls_the_pods(render) -> None:
    def checksum(*args: str) -> str:
        return _deployment(render(*args))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("--set", "config.images.vllm=vllm/vllm-openai:v0.9.0")


def test_schema_and_values_name_every_operator_config_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    config_schema = schema["properties"]["config"]["properties"]
    label_keys = {f.alias for f in LabelMappings.model_fields.values()}
    assert set(config_schema["images"]["properties"]) == set(registry.image_keys()) == set(values["config"]["images"])
    assert set(config_schema["labelMappings"]["properties"]) == label_keys == set(values["config"]["labelMappings"])
    top_keys = {f.alias for f in OperatorConfig.model_fields.values()}
    assert set(config_schema) == top_keys == set(values["config"])


# --- values schema ----------------------------------------------------------------------------------------

BAD_VALUES = [
    ("replicas=-1", "/replicas"),
    ("replicas=two", "/replicas"),
    ("unknownKey=1", "unknownKey"),
    ("config.images.vlm=vllm/vllm-openai:v0.8.5", "vlm"),
    ("config.images.vllm=1", "/config/images/vllm"),
    ("config.images.vllm=not an image", "/config/images/vllm"),
    ("config.labelMappings.gpuResurce=amd.com/gpu", "gpuResurce"),
    ("config.imagePullPolicy=Sometimes", "/config/imagePullPolicy"),
    ("image.pullPolicy=sometimes", "/image/pullPolicy"),
    ("image.digest=latest", "/image/digest"),
    ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
    ("watchNamespaces={a,a}", "/watchNamespaces"),
    ("metrics.port=70000", "/metrics/port"),
    ("logLevel=trace", "/logLevel"),
    ("resources.limits.gpu=1", "gpu"),
]


@pytest.mark.parametrize(("setting", "where"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_schema_rejects_bad_values(helm: Path, setting: str, where: str) -> None:
    proc = run_helm(helm, "template", "md", str(CHART), "--set", setting)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr, proc.stderr


# --- Pod security (restricted) ------------------------------------------------------------------------------


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "Pod":
            out.append((obj["metadata"]["name"], spec))
        elif "template" in spec and "spec" in spec["template"]:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]["spec"]))
    return out


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["default", "namespaced"])
def test_every_pod_template_is_restricted(render, values: tuple[str, ...]) -> None:
    """The restricted Pod Security Standard, plus a read-only root filesystem."""
    pods = _pod_specs(render(*values))
    assert pods
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), where
        assert all("hostPath" not in v for v in pod.get("volumes", [])), where
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container["securityContext"]
            name = f"{where}:{container['name']}"
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx.get("privileged", False) is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, name
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert all("hostPort" not in p for p in container.get("ports", [])), name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name


# --- RBAC: exactly what the operator does ---------------------------------------------------------------------

CLUSTER_READS = {
    ("", "nodes"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("storage.k8s.io", "storageclasses"): {"get", "list"},  # a model cache claim that stays Pending
}
NAMESPACED_RULES = {
    ("modeldeploy.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modeldeploy.io", "modeldeployments/status"): {"get", "patch"},
    ("modeldeploy.io", "modeldeployments/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    # each model's and picker's NetworkPolicy (docs/security.md): watched, applied, deleted when switched off
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},  # read-only: auto-NGL's termination message, unschedulable pods
    ("", "events"): {"create"},
    # autoscaling and routing (docs/autoscaling.md, docs/gateway.md): watched, applied, deleted when unasked
    ("keda.sh", "scaledobjects"): {"get", "list", "watch", "create", "patch", "delete"},
    ("http.keda.sh", "httpscaledobjects"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch", "delete"},
    ("inference.networking.k8s.io", "inferencepools"): {"get", "list", "watch", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "delete"},
    # the shared model cache (docs/model-cache.md): created when absent, never updated or deleted
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},  # delete: a failed download, to retry
    ("", "serviceaccounts"): {"get", "list", "watch", "create"},  # watched: the endpoint picker's
    ("rbac.authorization.k8s.io", "roles"): {"get", "list", "watch", "create"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "list", "watch", "create"},
}
# Roles the operator may create: one per model cache, letting the download Job patch its one claim. The
# apiserver's escalation check limits any Role it creates to what it holds itself (never secrets or exec).
ROLE_MAKING = {("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings")}


PRUNABLE = {
    ("batch", "jobs"),  # a failed model download Job, made again after an edit (never a workload)
    ("keda.sh", "scaledobjects"),
    ("http.keda.sh", "httpscaledobjects"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("inference.networking.k8s.io", "inferencepools"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("networking.k8s.io", "networkpolicies"),  # ours, once the config switches them off
}


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(render) -> None:
    (role,) = operator_roles(render())
    assert _grants(role) == {**CLUSTER_READS, **NAMESPACED_RULES}
    (binding,) = by_kind(render(), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": "modeldeploy-system"}
    ]
    (peered,) = operator_roles(render("--set", "replicas=2"))
    assert _grants(peered) == {
        **CLUSTER_READS,
        **NAMESPACED_RULES,
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"},
    }


def test_namespaced_rbac_grants_workloads_only_in_watched_namespaces(render) -> None:
    objects = render(*NAMESPACED)
    (cluster_role,) = operator_roles(objects)
    assert _grants(cluster_role) == {**CLUSTER_READS, ("", "namespaces"): {"list", "watch"}}
    for role in by_kind(objects, "Role"):
        assert _grants(role) == {**NAMESPACED_RULES, ("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "md-modeldeploy"}
        assert binding["subjects"][0]["namespace"] == "modeldeploy-system"


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["default", "namespaced"])
def test_rbac_has_no_dangerous_grants(render, values: tuple[str, ...]) -> None:
    for role in operator_roles(render(*values)) + by_kind(render(*values), "Role"):
        for (group, resource), verbs in _grants(role).items():
            assert "*" not in verbs and resource != "*" and group != "*"
            assert resource not in ("secrets", "pods/exec", "serviceaccounts/token", "clusterroles")
            assert (group, resource) not in ROLE_MAKING or verbs == {"get", "list", "watch", "create"}  # + watched
            assert not verbs & {"deletecollection", "escalate", "bind", "impersonate"}
            # delete only for the autoscaler and routing objects the spec stopped asking for, never a workload
            assert "delete" not in verbs or (group, resource) in PRUNABLE


GATEWAY = ("--set", "config.gateway.name=inference")
# With a gateway, the per-pool endpoint picker (docs/gateway.md): applied, pruned, and the picker Role's
# reads, which the operator must hold to grant them (RBAC escalation prevention).
EPP_EXTRA = {
    ("apps", "deployments"): {"delete"},
    ("", "services"): {"delete"},
    ("", "serviceaccounts"): {"patch", "delete"},
    ("rbac.authorization.k8s.io", "roles"): {"patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"patch", "delete"},
    ("", "pods"): {"get"},
    ("inference.networking.k8s.io", "inferencepools"): {"list", "watch"},
    ("inference.networking.x-k8s.io", "inferenceobjectives"): {"get", "list", "watch"},
    ("inference.networking.x-k8s.io", "inferencemodelrewrites"): {"get", "list", "watch"},
}


def test_a_gateway_adds_exactly_what_the_endpoint_picker_needs(render) -> None:
    from modeldeploy.scaling.epp import EPP_RULES

    (role,) = operator_roles(render(*GATEWAY))
    grants = _grants(role)
    expected = {**CLUSTER_READS, **NAMESPACED_RULES}
    for key, verbs in EPP_EXTRA.items():
        expected[key] = expected.get(key, set()) | verbs
    assert grants == expected
    # the operator holds every right the picker's Role grants, so the apiserver lets it create that Role
    for rule in EPP_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= grants[(group, resource)], (group, resource)
    (off,) = operator_roles(render(*GATEWAY, "--set", "config.gateway.endpointPicker.deploy=false"))
    assert _grants(off) == {**CLUSTER_READS, **NAMESPACED_RULES}
    for namespaced in by_kind(render(*GATEWAY, *NAMESPACED), "Role"):
        assert set(EPP_RULES[0]["verbs"]) <= _grants(namespaced)[("", "pods")]


# --- the operator accepts what the chart passes ---------------------------------------------------------------


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["default", "namespaced"])
def test_modeldeploy_run_accepts_the_chart_arguments(render, values: tuple[str, ...]) -> None:
    from modeldeploy.controller.run import parser

    container = _container(render(*values))
    assert container["command"] == ["modeldeploy", "run"]
    args = parser().parse_args(container["args"])
    assert args.liveness == "http://0.0.0.0:8080/healthz" and args.watch_silence == 300
    if values:
        assert args.namespace == WATCHED and args.peering == "modeldeploy"
    else:
        assert args.all_namespaces and args.standalone and not args.namespace


def test_packaged_chart_holds_the_crds_and_not_the_test_files(helm: Path, tmp_path: Path) -> None:
    import tarfile

    proc = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("modeldeploy-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"modeldeploy/crds/modeldeploy.io_modeldeployments.yaml", "modeldeploy/crds/kopf.dev_peerings.yaml"} <= names
    assert "modeldeploy/values.schema.json" in names
    assert not [n for n in names if n.startswith("modeldeploy/ci/") or n.endswith(".checkov.yaml")]


def test_trust_remote_code_is_off_by_default_and_reaches_the_config(render) -> None:
    """engine.args trust-remote-code is refused unless the chart's config.allowTrustRemoteCode says otherwise."""
    assert _config(render()).allow_trust_remote_code is False
    assert _config(render("--set", "config.allowTrustRemoteCode=true")).allow_trust_remote_code is True


def test_model_network_policies_are_on_by_default_and_reach_the_config(render) -> None:
    """docs/security.md, "NetworkPolicies": safe by default; the chart's values reach the operator's config."""
    on = _config(render()).network_policies
    assert on.enabled and on.monitoring_namespace_selector == {"kubernetes.io/metadata.name": "monitoring"}
    off = _config(
        render("--set", "config.networkPolicies.enabled=false,config.networkPolicies.gatewayNamespaceSelector.gw=yes")
    )
    assert not off.network_policies.enabled and off.network_policies.gateway_namespace_selector == {"gw": "yes"}


def test_gateway_model_names_reach_the_config(render) -> None:
    grants = "config.gateway.modelNames[0].namespaces[0]=team-a,config.gateway.modelNames[0].names[0]=llama-*"
    config = _config(render("--set", f"config.gateway.name=gw,{grants}"))
    assert config.gateway.may_route("team-a", "llama-3") and not config.gateway.may_route("team-b", "llama-3")
