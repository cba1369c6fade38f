"""The endpoint picker rendered beside each InferencePool: what the gateway's picker needs to run."""

from __future__ import annotations

import pytest

from modeldeploy.config.scaling import EndpointPickerSettings, GatewaySettings
from modeldeploy.scaling import epp
from modeldeploy.scaling import objects as so

OWNER = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "qwen", "uid": "u-1"}
META = {
    "name": "qwen",
    "namespace": "ml",
    "labels": {"app.kubernetes.io/instance": "qwen", "app.kubernetes.io/managed-by": "modeldeploy"},
    "ownerReferences": [OWNER],
}
MODEL_SELECTOR = {"app.kubernetes.io/instance": "qwen", "app.kubernetes.io/component": "model-server"}
GW = GatewaySettings(name="gw")


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def test_picker_objects_are_owned_labelled_and_named_after_the_pool() -> None:
    objects = epp.epp_objects(META, "vllm", GW)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"]
    for o in objects:
        assert o["metadata"]["name"] == "qwen-epp" and o["metadata"]["namespace"] == "ml"
        assert o["metadata"]["ownerReferences"] == [OWNER]
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert o["metadata"]["labels"]["app.kubernetes.io/component"] == "endpoint-picker"


def test_the_service_is_what_the_pool_refers_to() -> None:
    pool = so.inference_pool(META, MODEL_SELECTOR, 8000, GW)
    kinds = _by_kind(epp.epp_objects(META, "vllm", GW))
    ref = pool["spec"]["endpointPickerRef"]
    service = kinds["Service"]
    assert ref["name"] == service["metadata"]["name"]
    assert ref["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
    pod = kinds["Deployment"]["spec"]["template"]
    assert service["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    # the model's Service and the pool must not select the picker's pod
    assert any(pod["metadata"]["labels"].get(k) != v for k, v in MODEL_SELECTOR.items())
    grpc = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert grpc["grpc"] == ref["port"]["number"]


def test_deployment_runs_the_pinned_image_for_this_pool() -> None:
    dep = _by_kind(epp.epp_objects(META, "vllm", GW))["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.k8s.io/gateway-api-inference-extension/epp:v1.6.0"
    args = container["args"]
    assert args[args.index("--pool-name") + 1] == "qwen" and args[args.index("--pool-namespace") + 1] == "ml"
    assert args[args.index("--grpc-port") + 1] == "9002"
    assert container["readinessProbe"]["grpc"]["port"] == epp.GRPC_HEALTH_PORT
    assert spec["serviceAccountName"] == "qwen-epp"
    assert "--total-queued-requests-metric" not in args  # vLLM: the picker's own defaults
    assert "--metrics-endpoint-auth=false" in args  # no cluster-wide TokenReview rights for a per-pool picker
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # one active picker at a time


@pytest.mark.parametrize(
    ("engine", "queued"), [("llama.cpp", "llamacpp:requests_deferred"), ("sglang", "sglang:num_queue_reqs")]
)
def test_other_engines_point_the_picker_at_their_gauges(engine: str, queued: str) -> None:
    args = _by_kind(epp.epp_objects(META, engine, GW))["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--total-queued-requests-metric") + 1] == queued
    assert args[args.index("--lora-info-metric") + 1] == ""


def test_rbac_reads_pods_pool_and_objectives_in_its_namespace_only() -> None:
    kinds = _by_kind(epp.epp_objects(META, "vllm", GW))
    grants = {
        (g, r): set(rule["verbs"])
        for rule in kinds["Role"]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert grants == {
        ("", "pods"): {"get", "list", "watch"},
        ("inference.networking.k8s.io", "inferencepools"): {"get", "list", "watch"},
        ("inference.networking.x-k8s.io", "inferenceobjectives"): {"get", "list", "watch"},
        ("inference.networking.x-k8s.io", "inferencemodelrewrites"): {"get", "list", "watch"},
    }
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "qwen-epp"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qwen-epp", "namespace": "ml"}]


def test_nothing_when_the_gateway_brings_its_own_picker_or_the_pool_has_none() -> None:
    assert (
        epp.epp_objects(META, "vllm", GatewaySettings(name="gw", endpoint_picker=EndpointPickerSettings(deploy=False)))
        == []
    )
    assert epp.epp_objects(META, "vllm", GatewaySettings(name="gw", endpoint_picker_port=0)) == []


def test_deterministic_and_the_caller_metadata_untouched() -> None:
    before = repr(META)
    assert epp.epp_objects(META, "llama.cpp", GW) == epp.epp_objects(META, "llama.cpp", GW)
    assert repr(META) == before


def test_queue_gauges_are_the_ones_the_engines_export() -> None:
    from modeldeploy.scaling.signals import load_metrics

    for engine, flags in epp.ENGINE_METRIC_FLAGS.items():
        queued = dict(flags)["--total-queued-requests-metric"]
        assert queued in load_metrics(engine), engine


def test_long_names_give_a_picker_name_within_63_characters() -> None:
    """A Service name is a DNS-1035 label (63 characters); a ModelDeployment name may be 63 itself."""
    assert epp.epp_name("qwen") == "qwen-epp"
    exactly = "m" * 59
    assert epp.epp_name(exactly) == exactly + "-epp"  # 63: kept as is
    long_a, long_b = "a" * 50 + "-model-one", "a" * 50 + "-model-two"
    name_a, name_b = epp.epp_name(long_a), epp.epp_name(long_b)
    assert len(name_a) == len(name_b) == 63 and name_a != name_b
    assert name_a == epp.epp_name(long_a) and name_a.endswith("-epp") and name_a.startswith("a" * 50)
    meta = {**META, "name": long_a}
    kinds = _by_kind(epp.epp_objects(meta, "vllm", GW))
    assert {o["metadata"]["name"] for o in kinds.values()} == {name_a}
    assert kinds["RoleBinding"]["subjects"][0]["name"] == name_a
    assert so.inference_pool(meta, MODEL_SELECTOR, 8000, GW)["spec"]["endpointPickerRef"]["name"] == name_a


def test_pruning_looks_for_the_picker_under_the_same_name() -> None:
    """The operator prunes the picker's objects by name; a shortened name must be the one it looks for."""
    from modeldeploy.controller.execute import MANAGED

    long_name = "b" * 63
    picker = {kind: name_of(long_name) for api, kind, name_of, _ in MANAGED if api in ("apps/v1", "v1")}
    assert picker == {
        "Deployment": epp.epp_name(long_name),
        "Service": epp.epp_name(long_name),
        "ServiceAccount": epp.epp_name(long_name),
    }
