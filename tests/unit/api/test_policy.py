"""The operator's pod policy (docs/security.md, "Pod policy"): each pod-shaping field refused by default and
allowed by config, the same sentence from the operator's plan, its status and `modeldeploy select`/`render`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api.admission import POD_SHAPING_FIELDS, policy_spec_yaml
from modeldeploy.api.policy import refusal, refusals
from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.cli import main
from modeldeploy.config import LabelMappings, OperatorConfig, default_image
from modeldeploy.config.policy import PodPolicy
from modeldeploy.controller.execute import Executed
from modeldeploy.controller.plan import Memory, World, plan
from modeldeploy.controller.report import report
from modeldeploy.controller.views import md_view
from modeldeploy.selection import facts_from_document
from modeldeploy_dev.dev import on_the_real_node

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NODES = REPO / "examples" / "nodes" / "cpu-cluster.yaml"
SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "password"}}}
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
AFFINITY = {
    "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": CONTROL_PLANE, "operator": "Exists"}]}}
        ]
    }
}

# (spec fields, the policy rule that allows them, what the refusal says)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "image": (
        {"images": {"llamacpp": "evil.example/llama:1"}},
        {"images": {"allowed": ["evil.example/*"], "refused": []}},
        "spec.images.llamacpp names image 'evil.example/llama:1', which the operator's policy does not allow "
        "(config.policy.images;",
    ),
    "service account": (
        {"serviceAccountName": "deployer"},
        {"serviceAccountNames": {"allowed": ["deployer"], "refused": []}},
        "spec.serviceAccountName 'deployer' would mount that ServiceAccount's token in the model pods, which the "
        "operator's policy does not allow (config.policy.serviceAccountNames;",
    ),
    "cache claim": (
        {"cache": {"pvc": "someone-elses-data"}},
        {"claims": {"allowed": ["*"], "refused": []}},
        "spec.cache.pvc mounts claim 'someone-elses-data' read-write, which the operator's policy does not allow "
        "(config.policy.claims;",
    ),
    "env secret": (
        {"env": [SECRET_ENV]},
        {"envSecrets": {"allowed": ["db-*"], "refused": []}},
        "spec.env[0] (TOKEN) reads Secret 'db-password', which the operator's policy does not allow "
        "(config.policy.envSecrets;",
    ),
    "toleration without a key": (
        {"tolerations": [{"operator": "Exists"}]},
        {"tolerationKeys": {"allowed": ["*"], "refused": []}},
        "spec.tolerations[0] tolerates every taint (it has no key), which the operator's policy does not allow "
        "(config.policy.tolerationKeys;",
    ),
    "control-plane toleration": (
        {"tolerations": [{"key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule"}]},
        {"tolerationKeys": {"allowed": ["*"], "refused": []}},
        f"spec.tolerations[0] tolerates taint {CONTROL_PLANE}, which",
    ),
    "control-plane node selector": (
        {"nodeSelector": {CONTROL_PLANE: ""}},
        {"nodeLabelKeys": {"allowed": ["*"], "refused": []}},
        f"spec.nodeSelector selects node label {CONTROL_PLANE}, which the operator's policy does not allow "
        "(config.policy.nodeLabelKeys;",
    ),
    "control-plane affinity": (
        {"affinity": AFFINITY},
        {"nodeLabelKeys": {"allowed": ["*"], "refused": []}},
        f"spec.affinity selects nodes by {CONTROL_PLANE}, which",
    ),
    "pod label": (
        {"podLabels": {"app": "payments"}},
        {"podLabelKeys": {"allowed": ["app"], "refused": []}},
        "spec.podLabels sets app (a label another Service selects joins its endpoints), which the operator's "
        "policy does not allow (config.policy.podLabelKeys;",
    ),
}


def example_spec(**fields: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].update(fields)
    return dict(doc["spec"])


def spec_of(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(example_spec(**fields))


def config_with(rules: dict[str, Any]) -> OperatorConfig:
    return OperatorConfig.model_validate({"policy": rules})


@pytest.mark.parametrize("case", CASES)
def test_each_pod_shaping_field_is_refused_by_default(case: str) -> None:
    fields, _, said = CASES[case]
    found = refusal(spec_of(**fields), OperatorConfig())
    assert found is not None and said in found, found
    assert 'docs/security.md, "Pod policy"' in found


@pytest.mark.parametrize("case", CASES)
def test_each_pod_shaping_field_is_allowed_by_config(case: str) -> None:
    fields, rules, _ = CASES[case]
    assert refusals(spec_of(**fields), config_with(rules)) == []


def test_claims_of_pvc_uris_and_credentials_secrets_follow_their_rules() -> None:
    uri = spec_of(model={**example_spec()["model"], "uri": "pvc://weights/smollm2"})
    assert "model.uri mounts claim 'weights'" in (refusal(uri, OperatorConfig()) or "")
    assert refusal(uri, config_with({"claims": {"allowed": ["weights"], "refused": []}})) is None
    creds = spec_of(model={**example_spec()["model"], "credentialsSecret": "hf-token"})
    assert refusal(creds, OperatorConfig()) is None  # allowed by default: only the operator's fetcher gets it
    narrowed = config_with({"credentialsSecrets": {"allowed": ["other"], "refused": []}})
    assert "model.credentialsSecret names Secret 'hf-token'" in (refusal(creds, narrowed) or "")


def test_the_api_key_secret_follows_its_rule() -> None:
    keyed = spec_of(auth={"apiKeySecret": {"name": "model-keys", "key": "api-key"}})
    assert refusal(keyed, OperatorConfig()) is None  # allowed by default: only the model server gets the key
    narrowed = config_with({"apiKeySecrets": {"allowed": ["serving-*"], "refused": []}})
    assert "spec.auth.apiKeySecret names Secret 'model-keys'" in (refusal(keyed, narrowed) or "")
    assert refusal(spec_of(auth={"apiKeySecret": {"name": "serving-keys", "key": "k"}}), narrowed) is None


def test_the_operators_own_images_pass_and_patterns_match_prefixes_and_digests() -> None:
    own = {"llamacpp": default_image("llamacpp"), "fetch": "mirror.internal/fetch:1"}
    config = OperatorConfig.model_validate({"images": {"fetch": "mirror.internal/fetch:1"}})
    assert refusal(spec_of(images=own), config) is None
    digest = "registry.example.com/llama@sha256:" + "a" * 64
    rules = {"images": {"allowed": ["team.example.com/models/*", digest], "refused": ["team.example.com/models/old*"]}}
    allowed = config_with(rules)
    assert refusal(spec_of(images={"llamacpp": "team.example.com/models/llama:2"}), allowed) is None
    assert refusal(spec_of(images={"llamacpp": digest}), allowed) is None
    for refused in ("team.example.com/models/old-llama:1", "team.example.com/modelsX/llama:1", digest[:-1] + "b"):
        assert refusal(spec_of(images={"llamacpp": refused}), allowed) is not None, refused


def test_tolerations_and_node_keys_outside_the_control_plane_pass_by_default() -> None:
    fields = {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}],
        "nodeSelector": {"topology.kubernetes.io/zone": "a"},
        "podAnnotations": {"team": "a"},
    }
    assert refusal(spec_of(**fields), OperatorConfig()) is None


def test_the_examples_and_the_dev_demo_pass_the_default_policy() -> None:
    docs = [
        d
        for p in sorted((REPO / "examples" / "modeldeployments").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
    ]
    mds = [d for d in docs if d and d.get("kind") == "ModelDeployment"]
    assert mds
    for doc in mds:
        for shaped in (doc, on_the_real_node(doc)):
            spec = ModelDeploymentSpec.model_validate(shaped["spec"])
            assert refusals(spec, OperatorConfig()) == [], doc["metadata"]["name"]


def test_the_charts_policy_values_are_the_operators_defaults() -> None:
    values = yaml.safe_load((REPO / "charts" / "modeldeploy" / "values.yaml").read_text())
    assert PodPolicy.model_validate(values["config"]["policy"]) == PodPolicy()


def test_every_policed_field_is_one_the_admission_policy_guards() -> None:
    """The admission policy asks for the right to create pods wherever the operator's policy has a rule."""
    guarded = {field for _, field, _, _ in POD_SHAPING_FIELDS}
    policed = {
        "spec.images",
        "spec.serviceAccountName",
        "spec.cache.pvc",
        "spec.model.uri (pvc://)",
        "spec.model.credentialsSecret",
        "spec.auth",
        "spec.env[].valueFrom",
        "spec.tolerations",
        "spec.nodeSelector",
        "spec.affinity",
        "spec.podLabels",
    }
    assert policed <= guarded
    generated = REPO / "charts" / "modeldeploy" / "files" / "admission-policy.yaml"
    assert generated.read_text() == policy_spec_yaml(), "stale: run make manifests"


# --- the same refusal from the operator and the CLI ----------------------------------------------------


def operator_world(**fields: Any) -> World:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"].update(namespace="team", uid="u-1", generation=2, resourceVersion="7")
    doc["spec"].update(fields)
    nodes = tuple(facts_from_document(NODES.read_text(), LabelMappings()))
    return World(body=md_view(doc), deployment=None, service=None, pods=(), nodes=nodes, facts_version=1)


def test_the_operator_plans_nothing_and_says_one_sentence_in_status() -> None:
    w = operator_world(serviceAccountName="deployer")
    key = ("team", str(w.body["metadata"]["name"]))  # type: ignore[index]
    made = plan(w, {}, OperatorConfig(), Memory(), key)
    assert made.steps == () and made.planned.children == () and made.cache is None
    assert made.planned.decision is None  # not even selected
    said = report(made, Executed(), w, "2026-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in said.status["conditions"]}
    selected = conditions["EngineSelected"]
    assert (selected["status"], selected["reason"]) == ("False", "RefusedByPolicy")
    assert selected["message"] == refusal(spec_of(serviceAccountName="deployer"), OperatorConfig())
    assert conditions["Stalled"]["reason"] == "RefusedByPolicy"
    allowed = config_with({"serviceAccountNames": {"allowed": ["deployer"], "refused": []}})
    assert [s.kind for s in plan(w, {}, allowed, Memory(), key).steps] == ["Deployment", "Service", "NetworkPolicy"]


@pytest.mark.parametrize("command", ["select", "render"])
def test_select_and_render_refuse_the_same_spec_with_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["serviceAccountName"] = "deployer"
    md = tmp_path / "md.yaml"
    md.write_text(yaml.safe_dump(doc))
    args = [command, "-f", str(md), "--nodes", str(NODES)]
    assert main(args) == 2
    out, err = capsys.readouterr()
    sentence = refusal(spec_of(serviceAccountName="deployer"), OperatorConfig())
    assert out == "" and err == f"modeldeploy {command}: {md}: {doc['metadata']['name']}: {sentence}\n"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"policy": {"serviceAccountNames": {"allowed": ["deployer"], "refused": []}}}))
    assert main([*args, "--config", str(config)]) == 0
    assert "serviceAccountName: deployer" in capsys.readouterr().out or command == "select"
