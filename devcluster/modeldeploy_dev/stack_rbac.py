"""Each process of the autoscaling stack runs as the ServiceAccount its upstream manifests bind, with the
roles those manifests grant (docs/autoscaling.md).

With the cluster admin's kubeconfig a permission KEDA's or the add-on's own roles lack would never show
here, though it would in every user's cluster. So the roles and bindings come from the pinned modules'
`config/` folders (the ones their kustomizations install), the add-on's renamed as its kustomization
does (`namePrefix: keda-add-ons-http-`, namespace `keda`), and each process authenticates with a client
certificate whose name is its ServiceAccount's user name, `system:serviceaccount:keda:<name>`: RBAC
matches a ServiceAccount subject by that name, so the upstream bindings apply unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "keda"
ADDON_PREFIX = "keda-add-ons-http-"
# The process -> the ServiceAccount its upstream Deployment runs as (KEDA's adapter shares the operator's).
IDENTITIES = {
    "keda-operator": "keda-operator",
    "keda-adapter": "keda-operator",
    "addon-operator": f"{ADDON_PREFIX}operator",
    "interceptor": f"{ADDON_PREFIX}interceptor",
    "scaler": f"{ADDON_PREFIX}scaler",
    "prometheus": "prometheus",
}
KEDA_FILES = ("config/rbac/role.yaml", "config/rbac/role_binding.yaml")
KEDA_ADAPTER_FILES = ("config/metrics-server/role.yaml", "config/metrics-server/role_binding.yaml")
ADDON_COMPONENTS = ("interceptor", "operator", "scaler")
RBAC_KINDS = ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")


def user(component: str) -> str:
    """The user name a process's client certificate carries (its ServiceAccount's)."""
    return f"system:serviceaccount:{NAMESPACE}:{IDENTITIES[component]}"


def _docs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        out += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in RBAC_KINDS]
    return out


def prefixed(docs: list[dict[str, Any]], prefix: str, service_accounts: set[str]) -> list[dict[str, Any]]:
    """What kustomize's `namePrefix` and `namespace` make of these roles and bindings: every name gets the
    prefix, and so does a reference to a role of the set or to one of its ServiceAccounts (a reference to
    anything else, `system:auth-delegator` or an already prefixed name, stays as written)."""
    roles = {d["metadata"]["name"] for d in docs if d["kind"] in ("ClusterRole", "Role")}
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        meta = doc["metadata"]
        meta["name"] = prefix + meta["name"]
        if doc["kind"] in ("Role", "RoleBinding"):
            meta["namespace"] = NAMESPACE
        ref = doc.get("roleRef")
        if ref and ref["name"] in roles:
            ref["name"] = prefix + ref["name"]
        for subject in doc.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount":
                if subject["name"] in service_accounts:
                    subject["name"] = prefix + subject["name"]
                subject["namespace"] = NAMESPACE
        out.append(doc)
    return out


def prometheus_rbac() -> list[dict[str, Any]]:
    """Prometheus's pod discovery (what its own chart grants, cut to the pod role the scrape uses)."""
    name = "modeldeploy-dev-prometheus"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": IDENTITIES["prometheus"], "namespace": NAMESPACE}],
        },
    ]


def upstream_rbac(keda_src: Path, addon_src: Path) -> list[dict[str, Any]]:
    """KEDA's roles and bindings as its config installs them, the add-on's as its kustomization renames
    them, and Prometheus's."""
    docs = _docs(keda_src / f for f in KEDA_FILES + KEDA_ADAPTER_FILES)
    addon = _docs(addon_src / "config" / c / f for c in ADDON_COMPONENTS for f in ("role.yaml", "role_binding.yaml"))
    return docs + prefixed(addon, ADDON_PREFIX, set(ADDON_COMPONENTS)) + prometheus_rbac()
