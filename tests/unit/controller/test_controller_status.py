"""The pure status logic: conditions with kstatus semantics, timestamps only on flips, patches, events."""

from __future__ import annotations

from typing import Any

from modeldeploy.controller.events import events_for
from modeldeploy.controller.status import Observation, Rollout, compute_status, rollout, status_patch
from modeldeploy.controller.views import DeploymentView, engine_image
from modeldeploy.selection.types import Decision, EngineCandidate, Placement

T1, T2, T3 = "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z", "2025-01-01T00:02:00Z"
PLACEMENT = Placement(node_selector_terms=(), tolerations=(), gpus=1)


def decision(engine: str | None = "vllm", **kwargs: Any) -> Decision:
    candidates = (
        EngineCandidate("vllm", engine == "vllm", ("rule",), ("gpu-1",) if engine else ()),
        EngineCandidate("transformers", True, ("rule",), ("gpu-1", "cpu-1")),
    )
    summary = kwargs.pop("summary", f"{engine}: first eligible engine" if engine else "no engine can run")
    return Decision(
        engine=engine, candidates=candidates, placement=PLACEMENT if engine else None, summary=summary, **kwargs
    )


def deployment_obj(
    *, replicas: int = 1, ready: int = 0, updated: int | None = None, generation: int = 1, observed: int = 1, **kw: Any
) -> dict[str, Any]:
    conditions = kw.get("conditions", [])
    return {
        "metadata": {"generation": generation, "labels": {"modeldeploy.io/engine": kw.get("engine", "vllm")}},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "engine"}},
                "spec": {"containers": [{"name": "sidecar", "image": "side:1"}, {"name": "engine", "image": "vllm:1"}]},
            },
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


def view(**kw: Any) -> DeploymentView:
    return DeploymentView.from_object(deployment_obj(**kw))


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def obs(**kw: Any) -> Observation:
    kw.setdefault("generation", 1)
    kw.setdefault("endpoint", "http://m.ns.svc:8000/v1")
    kw.setdefault("spec_replicas", 1)
    kw.setdefault("deployment", None)
    return Observation(**kw)


def test_fresh_deployment_rolls_out_then_is_ready() -> None:
    rolling = compute_status(obs(decision=decision(), deployment=view(observed=0)), None, T1)
    assert conds(rolling) == {
        "EngineSelected": ("True", "EngineChosen"),
        "Ready": ("False", "RollingOut"),
        "Progressing": ("True", "RollingOut"),
        "Degraded": ("False", "AsExpected"),
        "Reconciling": ("True", "RollingOut"),
    }
    assert rolling["engine"] == "vllm" and rolling["image"] == "vllm:1"
    assert rolling["ready"] == "0/1" and rolling["reason"] == "RollingOut"
    assert rolling["endpoint"] == "http://m.ns.svc:8000/v1"
    assert rolling["observedGeneration"] == 1
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] == T1 for c in rolling["conditions"])
    # No node count: node churn would rewrite it (docs/operator-at-scale.md).
    assert rolling["selection"][0] == {"engine": "vllm", "eligible": True, "reasons": ["rule"]}

    ready = compute_status(obs(decision=decision(), deployment=view(ready=1)), rolling, T2)
    assert conds(ready) == {
        "EngineSelected": ("True", "EngineChosen"),
        "Ready": ("True", "ReplicasReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert "reason" not in ready and ready["ready"] == "1/1"
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    # Only the flipped conditions move their lastTransitionTime.
    assert times == {"EngineSelected": T1, "Ready": T2, "Progressing": T2, "Degraded": T1}


def test_same_world_twice_needs_no_write() -> None:
    first = compute_status(obs(decision=decision(), deployment=view(ready=1)), None, T1)
    again = compute_status(obs(decision=decision(), deployment=view(ready=1)), first, T3)
    assert again == first
    assert status_patch(first, again) is None
    assert events_for(first, again) == []


def test_generation_change_is_a_write_but_no_flip() -> None:
    first = compute_status(obs(decision=decision(), deployment=view(ready=1)), None, T1)
    second = compute_status(obs(generation=2, decision=decision(), deployment=view(ready=1)), first, T2)
    patch = status_patch(first, second)
    assert patch is not None and patch["observedGeneration"] == 2
    assert all(c["lastTransitionTime"] == T1 and c["observedGeneration"] == 2 for c in second["conditions"])


def test_no_eligible_engine_without_workload_is_stalled() -> None:
    status = compute_status(obs(decision=decision(None)), None, T1)
    assert conds(status) == {
        "EngineSelected": ("False", "NoEligibleEngine"),
        "Ready": ("False", "NoEligibleEngine"),
        "Progressing": ("False", "NoEligibleEngine"),
        "Degraded": ("False", "AsExpected"),
        "Stalled": ("True", "NoEligibleEngine"),
    }
    assert "engine" not in status and "endpoint" not in status and "replicas" not in status
    assert status["ready"] == "0/1" and status["reason"] == "NoEligibleEngine"


def test_engine_no_longer_possible_keeps_workload_and_degrades() -> None:
    gone = decision(None, current_impossible=True, summary="the running engine vllm can no longer run: no GPU")
    status = compute_status(obs(decision=gone, deployment=view(ready=1)), None, T1)
    c = conds(status)
    assert c["EngineSelected"] == ("False", "EngineNoLongerPossible")
    assert c["Degraded"] == ("True", "EngineNoLongerPossible")
    assert c["Ready"] == ("True", "ReplicasReady")  # the pods still serve until they go
    assert c["Stalled"] == ("True", "EngineNoLongerPossible")
    assert status["engine"] == "vllm" and status["endpoint"]
    assert status["reason"] == "EngineNoLongerPossible"


def test_invalid_spec_leaves_the_running_deployment_and_says_so() -> None:
    status = compute_status(
        obs(generation=3, decision=None, deployment=view(ready=1), problem=("InvalidSpec", "spec.x: bad")), None, T1
    )
    c = conds(status)
    assert c["EngineSelected"] == ("False", "InvalidSpec")
    assert c["Ready"] == ("False", "InvalidSpec")
    assert c["Stalled"] == ("True", "InvalidSpec")
    assert "Reconciling" not in c
    assert status["engine"] == "vllm" and status["selection"] == []
    selected = next(x for x in status["conditions"] if x["type"] == "EngineSelected")
    assert "spec.x: bad" in selected["message"] and "left as it is" in selected["message"]


def test_llamacpp_warnings_degrade_but_ready_follows_the_deployment() -> None:
    risky = decision("llama.cpp", warnings=("n_ctx / n_parallel is too small; raise n_ctx",))
    status = compute_status(obs(decision=risky, deployment=view(ready=1, engine="llama.cpp")), None, T1)
    c = conds(status)
    assert c["Degraded"] == ("True", "LlamaCppConfigRisk")
    assert c["Ready"] == ("True", "ReplicasReady")
    assert status["reason"] == "LlamaCppConfigRisk"
    degraded = next(x for x in status["conditions"] if x["type"] == "Degraded")
    assert "raise n_ctx" in degraded["message"]


def test_progress_deadline_exceeded_is_stalled_and_degraded() -> None:
    dep = view(ready=0, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    c = conds(compute_status(obs(decision=decision(), deployment=dep), None, T1))
    assert c["Ready"] == ("False", "ProgressDeadlineExceeded")
    assert c["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert c["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert c["Stalled"] == ("True", "ProgressDeadlineExceeded")


def test_apply_refused_by_apiserver_is_reported() -> None:
    status = compute_status(
        obs(decision=decision(), deployment=None, problem=("ApplyFailed", "the apiserver refused it")), None, T1
    )
    c = conds(status)
    assert c["EngineSelected"] == ("True", "EngineChosen")
    assert c["Ready"] == ("False", "ApplyFailed") and c["Stalled"] == ("True", "ApplyFailed")


def test_scaled_to_zero_is_ready() -> None:
    status = compute_status(obs(decision=decision(), deployment=view(replicas=0), spec_replicas=0), None, T1)
    c = conds(status)
    assert c["Ready"] == ("True", "ScaledToZero")
    # The printer columns say so: 0/0, ScaledToZero (not an empty reason beside 0 ready replicas).
    assert status["ready"] == "0/0" and status["reason"] == "ScaledToZero"


def test_rollout_rules_follow_kubectl() -> None:
    assert rollout(view(observed=0)).state == "progressing"
    assert rollout(view(replicas=2, updated=1, ready=1)).state == "progressing"
    assert rollout(view(ready=1)).state == "complete"
    d = DeploymentView.from_object({"metadata": {"generation": 1}, "spec": {}, "status": {"observedGeneration": 1}})
    assert d.replicas == 1 and rollout(d).state == "progressing"


def raw_view(desired: int, generation: int = 1, **status: int) -> DeploymentView:
    obj = {"metadata": {"generation": generation}, "spec": {"replicas": desired}, "status": status}
    return DeploymentView.from_object(obj)


def test_a_new_deployments_controller_steps_leave_the_message_as_it_is() -> None:
    """Created, observed, pods counted as updated: one message until a replica is available (each change
    of message would be a status write and its watch event)."""
    steps = [
        raw_view(2),  # as our apply returned it: no status yet
        raw_view(2, observedGeneration=1),
        raw_view(2, observedGeneration=1, replicas=2, updatedReplicas=2),
    ]
    assert {(r.state, r.message) for r in map(rollout, steps)} == {("progressing", "0 of 2 replicas available")}
    one = raw_view(2, observedGeneration=1, replicas=2, updatedReplicas=2, availableReplicas=1, readyReplicas=1)
    assert rollout(one) == Rollout("progressing", "1 of 2 replicas available")
    done = raw_view(2, observedGeneration=1, replicas=2, updatedReplicas=2, availableReplicas=2, readyReplicas=2)
    assert rollout(done) == Rollout("complete", "2/2 replicas ready")


def test_a_rolling_update_keeps_kubectls_steps() -> None:
    running = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}
    assert rollout(raw_view(2, generation=2, observedGeneration=1, **running)).message == (
        "waiting for the Deployment controller to observe the new spec"
    )
    started = {**running, "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}
    assert rollout(raw_view(2, generation=2, **started)) == Rollout("progressing", "1 of 2 replicas updated")
    old_left = {**running, "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2}
    assert rollout(raw_view(2, generation=2, **old_left)).message == "1 old replicas pending termination"
    scaled_to_zero = raw_view(0)  # never observed, nothing to run: waits for the controller
    assert rollout(scaled_to_zero).message == "waiting for the Deployment controller to observe the new spec"


def test_engine_image_prefers_the_default_container() -> None:
    assert engine_image(deployment_obj()) == "vllm:1"
    assert engine_image({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}) == "x"
    assert engine_image({}) is None


def test_status_patch_nulls_dropped_keys_and_leaves_kopf_alone() -> None:
    old = {"engine": "vllm", "endpoint": "http://x", "kopf": {"progress": {}}, "conditions": []}
    new = {"conditions": [], "ready": "0/1"}
    assert status_patch(old, new) == {"engine": None, "endpoint": None, "ready": "0/1"}


def test_events_once_per_transition() -> None:
    first = compute_status(obs(decision=decision(), deployment=view(ready=1)), None, T1)
    reasons = [(e.type, e.reason) for e in events_for(None, first)]
    assert reasons == [("Normal", "EngineSelected"), ("Normal", "Ready")]

    gone = decision(None, current_impossible=True, summary="the running engine vllm can no longer run")
    degraded = compute_status(obs(decision=gone, deployment=view(ready=1)), first, T2)
    reasons = [(e.type, e.reason) for e in events_for(first, degraded)]
    assert reasons == [("Warning", "EngineNoLongerPossible")]  # one Event, not one per condition
    assert events_for(degraded, compute_status(obs(decision=gone, deployment=view(ready=1)), degraded, T3)) == []

    back = compute_status(obs(decision=decision(), deployment=view(ready=1)), degraded, T3)
    reasons = [(e.type, e.reason) for e in events_for(degraded, back)]
    assert reasons == [("Normal", "EngineSelected"), ("Normal", "Recovered")]


def test_engine_change_event() -> None:
    first = compute_status(obs(decision=decision(), deployment=view(ready=1)), None, T1)
    other = decision("transformers")
    second = compute_status(
        obs(generation=2, decision=other, deployment=view(ready=1, engine="transformers")), first, T2
    )
    assert ("Normal", "EngineChanged") in [(e.type, e.reason) for e in events_for(first, second)]


def test_ready_says_why_pods_cannot_be_placed() -> None:
    why = "0/3 nodes are available: 1 Insufficient nvidia.com/gpu."
    status = compute_status(obs(decision=decision(), deployment=view(ready=0), unschedulable=why), {}, T1)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable") and why in ready["message"]
    assert status["reason"] == "Unschedulable"  # the printer column says it too
    assert conds(status)["Progressing"] == ("True", "RollingOut")  # still within its deadline: kstatus InProgress


def test_an_apply_that_is_retried_is_reconciling_not_stalled() -> None:
    """A 5xx (a webhook that is down, a full Service range) is said in status while the operator retries."""
    problem = ("ApplyFailed", "the apiserver refused Service m: 500 InternalError: range is full")
    status = compute_status(
        obs(decision=decision(), deployment=view(ready=1), problem=problem, retrying=True), None, T1
    )
    c = conds(status)
    assert c["EngineSelected"] == ("True", "EngineChosen") and status["engine"] == "vllm"
    assert c["Ready"] == ("False", "ApplyFailed") and c["Reconciling"] == ("True", "ApplyFailed")
    assert "Stalled" not in c and status["reason"] == "ApplyFailed"
    message = next(x["message"] for x in status["conditions"] if x["type"] == "Reconciling")
    assert "range is full" in message and message.endswith("; retrying")
