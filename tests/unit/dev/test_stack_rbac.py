"""The autoscaling stack's identities: the add-on's roles renamed as its kustomization does, and each
process's user name the one its upstream binding names (RBAC matches ServiceAccounts by it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from modeldeploy_dev import stack_rbac


def _write(path: Path, *docs: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))


def _addon(root: Path) -> Path:
    for c in stack_rbac.ADDON_COMPONENTS:
        _write(root / "config" / c / "role.yaml", {"kind": "ClusterRole", "metadata": {"name": c}, "rules": []})
        binding = {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": c},
            "roleRef": {"kind": "ClusterRole", "name": c},
            "subjects": [{"kind": "ServiceAccount", "name": c, "namespace": "keda"}],
        }
        delegator = {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"keda-http-{c}-auth-delegator"},
            "roleRef": {"kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": f"keda-add-ons-http-{c}", "namespace": "keda"}],
        }
        _write(root / "config" / c / "role_binding.yaml", binding, delegator)
    return root


def _keda(root: Path) -> Path:
    for f in stack_rbac.KEDA_FILES + stack_rbac.KEDA_ADAPTER_FILES:
        _write(root / f, {"kind": "ClusterRole", "metadata": {"name": f"keda-{Path(f).parent.name}"}, "rules": []})
    return root


def test_the_addons_roles_are_renamed_and_its_bindings_follow(tmp_path: Path) -> None:
    docs = stack_rbac.upstream_rbac(_keda(tmp_path / "keda"), _addon(tmp_path / "addon"))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for c in stack_rbac.ADDON_COMPONENTS:
        binding = by_name[("ClusterRoleBinding", f"keda-add-ons-http-{c}")]
        assert binding["roleRef"]["name"] == f"keda-add-ons-http-{c}"
        assert ("ClusterRole", f"keda-add-ons-http-{c}") in by_name
        # The binding's subject is the user the process authenticates as.
        (subject,) = binding["subjects"]
        assert f"system:serviceaccount:{subject['namespace']}:{subject['name']}" in {
            stack_rbac.user(p) for p in stack_rbac.IDENTITIES
        }
        # A reference outside the set, and a name already prefixed, stay as written.
        delegator = by_name[("ClusterRoleBinding", f"keda-add-ons-http-keda-http-{c}-auth-delegator")]
        assert delegator["roleRef"]["name"] == "system:auth-delegator"
        assert delegator["subjects"][0]["name"] == f"keda-add-ons-http-{c}"
    # KEDA's own come as its config writes them; Prometheus may list pods only.
    assert ("ClusterRole", "keda-rbac") in by_name and ("ClusterRole", "keda-metrics-server") in by_name
    (rule,) = by_name[("ClusterRole", "modeldeploy-dev-prometheus")]["rules"]
    assert rule["resources"] == ["pods"] and set(rule["verbs"]) == {"get", "list", "watch"}


def test_every_process_has_the_identity_its_upstream_deployment_runs_as() -> None:
    assert stack_rbac.user("keda-operator") == "system:serviceaccount:keda:keda-operator"
    assert stack_rbac.user("keda-adapter") == stack_rbac.user("keda-operator")  # one ServiceAccount upstream
    assert stack_rbac.user("interceptor") == "system:serviceaccount:keda:keda-add-ons-http-interceptor"
