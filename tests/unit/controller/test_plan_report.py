"""plan() and report() without a cluster: given a world, the plan's objects and how each is brought about;
given a plan and what execute did, the status and Events (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.config import LabelMappings, OperatorConfig
from modeldeploy.controller.apply import Applied, ApplyError
from modeldeploy.controller.children import Child
from modeldeploy.controller.execute import APPLY_FAILED, Executed
from modeldeploy.controller.kube import KubeError
from modeldeploy.controller.plan import Memory, Mode, Step, World, plan
from modeldeploy.controller.report import report
from modeldeploy.controller.routing import claimants
from modeldeploy.controller.views import md_view
from modeldeploy.scaling.conflicts import served_name
from modeldeploy.scaling.plan import HTTP_ROUTE, INFERENCE_POOL
from modeldeploy.selection import facts_from_document

CONFIG = OperatorConfig()
KEY = ("team", "smollm2")
NOW = "2026-01-01T00:00:00Z"


def nodes(repo_root: Path, cluster: str = "cpu-cluster") -> Any:
    text = (repo_root / "examples/nodes" / f"{cluster}.yaml").read_text()
    return tuple(facts_from_document(text, LabelMappings()))


def body(repo_root: Path, **spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load((repo_root / "examples/modeldeployments/llamacpp-smollm2.yaml").read_text())
    doc["metadata"].update(name=KEY[1], namespace=KEY[0], uid="u-1", generation=1, resourceVersion="7")
    doc["spec"].update(spec)
    return md_view(doc)


def world(repo_root: Path, md: dict[str, Any], **fields: Any) -> World:
    found = nodes(repo_root)
    return World(body=md, deployment=None, service=None, pods=(), nodes=found, facts_version=hash(found), **fields)


def test_a_new_model_plans_its_deployment_and_service_to_apply(repo_root: Path) -> None:
    w = world(repo_root, body(repo_root))
    made = plan(w, {}, CONFIG, Memory(), KEY)
    assert made.planned.decision is not None and made.planned.decision.engine == "llama.cpp"
    assert [(s.mode, s.kind, s.name) for s in made.steps] == [
        (Mode.APPLY, "Deployment", "smollm2"),
        (Mode.APPLY, "Service", "smollm2"),
        (Mode.APPLY, "NetworkPolicy", "smollm2"),
    ]
    assert all(s.hash for s in made.steps)  # each carries its rendered object's hash
    assert made.deletes == () and made.cache is None and made.conditions == () and made.prune is False
    assert made.made is not None  # rendered now, once


def test_the_same_world_plans_the_same_objects_without_rendering_again(repo_root: Path) -> None:
    memory, w = Memory(), world(repo_root, body(repo_root))
    first = plan(w, {}, CONFIG, memory, KEY)
    again = plan(w, {}, CONFIG, memory, KEY)
    assert again.steps == first.steps and again.planned is first.planned
    assert again.made is None  # kept: nothing parsed or rendered a second time


def test_a_spec_only_the_operator_refuses_plans_nothing(repo_root: Path) -> None:
    bad = body(repo_root, engine={"name": "mlx"})  # MLX cannot load GGUF: pydantic refuses it, as CEL would
    made = plan(world(repo_root, bad), {}, CONFIG, Memory(), KEY)
    assert made.steps == ()
    assert made.planned.problem is not None and made.planned.problem[0] == "InvalidSpec"


def test_a_route_an_older_model_holds_is_deleted_not_applied(repo_root: Path) -> None:
    config = OperatorConfig.model_validate({"gateway": {"name": "gw"}})
    md = body(repo_root)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": KEY[1], "namespace": KEY[0], "labels": {"app.kubernetes.io/instance": KEY[1]}},
    }
    others = {("HTTPRoute", KEY[1]): Child.from_object(KEY[1], route)}
    older = {
        "metadata": {"name": "first", "namespace": KEY[0], "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": md["spec"],
    }
    md["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    rivals = claimants([older], served_name(md))
    crds = frozenset({HTTP_ROUTE, INFERENCE_POOL})
    alone = plan(world(repo_root, md), {}, config, Memory(), KEY, crds)
    assert (Mode.APPLY, "HTTPRoute") in {(s.mode, s.kind) for s in alone.steps}  # routed while nobody else is
    made = plan(world(repo_root, md, others=others, rivals=rivals), {}, config, Memory(), KEY, crds)
    assert (Mode.APPLY, "HTTPRoute") not in {(s.mode, s.kind) for s in made.steps}
    assert made.deletes == (Step(Mode.DELETE, "HTTPRoute", KEY[1]),)
    assert [(c.type, c.status) for c in made.conditions if c.type == "Routed"] == [("Routed", "False")]


def test_a_namespace_not_granted_its_model_name_plans_no_route(repo_root: Path) -> None:
    grants = [{"namespaces": ["other-team"], "names": ["*"]}]
    config = OperatorConfig.model_validate({"gateway": {"name": "gw", "namespace": "gws", "modelNames": grants}})
    made = plan(world(repo_root, body(repo_root)), {}, config, Memory(), KEY, frozenset({HTTP_ROUTE, INFERENCE_POOL}))
    assert (Mode.APPLY, "HTTPRoute") not in {(s.mode, s.kind) for s in made.steps}
    assert (Mode.APPLY, "InferencePool") in {(s.mode, s.kind) for s in made.steps}
    assert [(c.type, c.reason) for c in made.conditions if c.type == "Routed"] == [("Routed", "ModelNameNotAllowed")]


def test_policies_switched_off_are_pruned_and_not_applied(repo_root: Path) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": KEY[1], "namespace": KEY[0], "labels": {"app.kubernetes.io/instance": KEY[1]}},
    }
    others = {("NetworkPolicy", KEY[1]): Child.from_object(KEY[1], policy)}
    on = plan(world(repo_root, body(repo_root), others=others), {}, CONFIG, Memory(), KEY)
    assert (Mode.APPLY, "NetworkPolicy") in {(s.mode, s.kind) for s in on.steps} and on.prune is False
    off_config = OperatorConfig.model_validate({"networkPolicies": {"enabled": False}})
    off = plan(world(repo_root, body(repo_root), others=others), {}, off_config, Memory(), KEY)
    assert "NetworkPolicy" not in {s.kind for s in off.steps} and off.prune is True
    gone = plan(world(repo_root, body(repo_root)), {}, off_config, Memory(), KEY)
    assert gone.prune is False  # nothing of ours left to remove: no request for it


def test_report_of_a_first_apply_says_what_was_created(repo_root: Path) -> None:
    w = world(repo_root, body(repo_root))
    made = plan(w, {}, CONFIG, Memory(), KEY)
    done = Executed(
        applied=[
            Applied("Deployment", "smollm2", None, changed=True, created=True),
            Applied("Service", "smollm2", None, changed=True, created=True),
        ]
    )
    said = report(made, done, w, NOW)
    assert said.outcome == "applied"
    assert said.patch == said.status  # nothing written before: all of it is new
    assert [c["engine"] for c in said.status["selection"] if c["eligible"]][0] == "llama.cpp"
    created = [e for e in said.events if e.reason == "Created"]
    assert [e.message for e in created] == ["created Deployment smollm2, Service smollm2 (llama.cpp)"]
    assert report(made, done, w, NOW) == said  # pure: the same inputs, the same status and Events


def test_report_of_a_refused_apply_warns_once_and_says_failed(repo_root: Path) -> None:
    w = world(repo_root, body(repo_root))
    made = plan(w, {}, CONFIG, Memory(), KEY)
    refusal = ApplyError("Deployment", "smollm2", KubeError(403, "Forbidden", "exceeded quota"), [])
    done = Executed(failed=refusal, problem=(APPLY_FAILED, f"the apiserver refused {refusal}"))
    said = report(made, done, w, NOW)
    assert said.outcome == "failed"
    warnings = [e for e in said.events if e.type == "Warning" and e.reason == APPLY_FAILED]
    assert len(warnings) == 1 and "exceeded quota" in warnings[0].message
    # The next reconcile reads that status back: the same refusal is not announced again.
    later = replace(made, status=said.status)
    assert not [e for e in report(later, done, w, NOW).events if e.reason == APPLY_FAILED]


def test_with_autoscaling_the_replica_count_of_a_live_deployment_is_the_autoscalers(repo_root: Path) -> None:
    """KEDA's scale to zero leaves no managedFields entry of its own: the plan yields spec.replicas anyway, so a
    reconcile at zero does not set the minimum back (docs/autoscaling.md)."""
    from modeldeploy.controller.views import ChildView

    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": KEY[1], "namespace": KEY[0], "uid": "d-1", "generation": 3, "managedFields": []},
        "spec": {"replicas": 0},
    }
    scaled = body(repo_root, autoscaling={"minReplicas": 0, "maxReplicas": 2})
    view = ChildView.from_object(live)
    made = plan(replace(world(repo_root, scaled), deployment=view), {}, CONFIG, Memory(), KEY)
    assert made.live["Deployment"] is not None and "spec.replicas" in made.live["Deployment"].yielded
    fixed = plan(replace(world(repo_root, body(repo_root)), deployment=view), {}, CONFIG, Memory(), KEY)
    assert fixed.live["Deployment"] is not None and fixed.live["Deployment"].yielded == ()


def test_the_shared_caches_listing_sizes_a_model_of_unknown_size(repo_root: Path) -> None:
    """A model the estimate knows nothing of (no known repository, no sizeInBillions) is sized by its files'
    total once the listing has put it in status (docs/memory-placement.md); before, it is not judged."""
    found = nodes(repo_root, "gpu-classes")
    md = body(
        repo_root,
        model={"name": "qwen2.5-instruct", "format": "pytorch", "quantization": "none", "uri": "hf://acme/in-house"},
        engine={"name": "vllm", "args": {"max-model-len": 4096}},
        cache={"shared": {}},
    )
    w = World(body=md, deployment=None, service=None, pods=(), nodes=found, facts_version=hash(found))
    memory = Memory()
    before = plan(w, {}, CONFIG, memory, KEY).planned.decision
    assert before is not None and before.placement is not None
    listed = {"model": {"phase": "Ready", "bytesTotal": 40 << 30}}
    after = plan(w, listed, CONFIG, memory, KEY).planned.decision
    assert after is not None and after is not before  # the listing is an input of the decision
    vllm = next(c for c in after.candidates if c.engine == "vllm")
    text = " ".join(vllm.reasons)
    # The status names kinds of node, not nodes (docs/operator-at-scale.md, "Node churn").
    assert "[NVIDIA-L4, 1 GPU(s)] cannot hold it" in text, text
    assert "[NVIDIA-A100-SXM4-80GB, 8 GPU(s)] hold it" in text, text
