"""A ModelDeployment's status, computed from what was decided and what the Deployment reports. Pure.

No I/O and no clock: the caller passes `now`, so the same inputs give the same dict and the tests need no
cluster. The handlers write the result only when `status_patch` says something differs, which is what
keeps a quiet cluster quiet (no resourceVersion churn, no watch events for GitOps tools to chew on).

Conditions (docs/api.md), with kstatus semantics so Argo CD and Flux read health without custom code:
- `EngineSelected`: the selection for the current generation found an engine (False: NoEligibleEngine,
  InvalidSpec, RefusedByPolicy, EngineNoLongerPossible).
- `Ready`: the Deployment for the current spec is rolled out and its replicas are ready.
- `Progressing`: True while the Deployment rolls out.
- `Degraded`: True when something is wrong but the workload is kept (EngineNoLongerPossible, a rollout
  past its deadline, the seed's llama.cpp config risks).
- `Reconciling` / `Stalled`: kstatus' own "abnormal-true" types, present only while True (kstatus reads
  them, not Progressing/Degraded): Reconciling while rolling out, Stalled when nothing will progress
  without a change from the user or the cluster.
`lastTransitionTime` changes only when a condition's status flips; reason and message may change under it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.controller.views import PROGRESS_DEADLINE_EXCEEDED, DeploymentView
from modeldeploy.selection.types import Decision

ENGINE_SELECTED = "EngineSelected"
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RECONCILING = "Reconciling"
STALLED = "Stalled"
# Autoscaling and Routed: what was rendered for spec.autoscaling and the gateway, and why (controller/scaling.py).
CONDITION_ORDER = (
    ENGINE_SELECTED,
    READY,
    PROGRESSING,
    DEGRADED,
    "ModelReady",  # the shared model cache (modelcache/status.py), when used
    "Autoscaling",
    "Routed",
    RECONCILING,
    STALLED,
)
ABNORMAL_TRUE = frozenset({RECONCILING, STALLED})  # written only while True (kstatus convention)

# Reasons users and tests match on.
NO_ELIGIBLE_ENGINE = "NoEligibleEngine"
INVALID_SPEC = "InvalidSpec"
REFUSED_BY_POLICY = "RefusedByPolicy"  # the operator's pod policy (docs/security.md, "Pod policy")
ENGINE_NO_LONGER_POSSIBLE = "EngineNoLongerPossible"
LLAMACPP_CONFIG_RISK = "LlamaCppConfigRisk"

# The status keys this module owns; anything else under status (Kopf's `status.kopf`) is left alone.
OWNED_KEYS = (
    "observedGeneration",
    "engine",
    "image",
    "selection",
    "endpoint",
    "replicas",
    "readyReplicas",
    "ready",
    "reason",
    "nGpuLayers",
    "model",  # written by reconcile from modelcache (the weights), not computed here
    "conditions",
)


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands, the way `kubectl rollout status` judges it."""

    state: str  # "progressing", "complete" or "failed"
    message: str


def rollout(d: DeploymentView) -> Rollout:
    """kubectl's rollout-status rules: controller caught up, all updated, old ones gone, updated available.

    While no replica of an older template is left (a new Deployment, a scale-up), the message counts
    available replicas only: the controller's bookkeeping steps in between (observing a just-created
    Deployment, counting its new ReplicaSet's pods as updated) would each change the message, and so cost a
    status write and its watch event per ModelDeployment, without telling the user anything new
    (docs/operator-at-scale.md). A rolling update keeps kubectl's steps, which are its progress.
    """
    created = d.observed_generation == 0 and d.status_replicas == 0 and d.replicas > 0  # not observed yet
    if d.observed_generation < d.generation and not created:
        return Rollout("progressing", "waiting for the Deployment controller to observe the new spec")
    if d.deadline_exceeded:
        return Rollout("failed", "the rollout exceeded its progress deadline")
    if d.status_replicas <= d.updated_replicas:  # no replica of an older template left
        if d.updated_replicas < d.replicas or d.available_replicas < d.updated_replicas:
            return Rollout("progressing", f"{min(d.available_replicas, d.replicas)} of {d.replicas} replicas available")
        return Rollout("complete", f"{d.ready_replicas}/{d.replicas} replicas ready")
    if d.updated_replicas < d.replicas:
        return Rollout("progressing", f"{d.updated_replicas} of {d.replicas} replicas updated")
    return Rollout("progressing", f"{d.status_replicas - d.updated_replicas} old replicas pending termination")


def shown(d: DeploymentView) -> tuple[Any, ...]:
    """Everything a ModelDeployment's status and its reconcile read of a Deployment's view, with the
    controller's bookkeeping counts folded into the rollout they amount to (`rollout`).

    Two views with the same `shown` give the same status, so a Deployment event that leaves it where it
    was (the controller observing a new Deployment, counting its new ReplicaSet's pods as updated) wakes
    nothing: the event gate stops it (event_gate.py, docs/operator-at-scale.md).
    """
    return (d.engine, d.image, d.generation, d.replicas, d.ready_replicas, d.deadline_exceeded, d.failure, rollout(d))


@dataclass(frozen=True)
class Observation:
    """Everything one reconcile learned, the input of `compute_status`.

    `problem` is what stopped this generation from being applied: (reason, message) for a spec only the
    operator can refuse (InvalidSpec, RefusedByPolicy) or an apply the apiserver refused. The Deployment,
    when one exists, is the one running now (just applied, or left as it was). `retrying` says the apply failed for a
    reason that may pass on its own (5xx, 429, a timeout, a webhook that is down): kstatus Reconciling,
    not Stalled, since the operator keeps trying with backoff.
    """

    generation: int | None
    decision: Decision | None
    deployment: DeploymentView | None
    endpoint: str | None = None
    problem: tuple[str, str] | None = None
    spec_replicas: int | None = None
    auto_ngl: bool = False  # the running Deployment has the auto-NGL init container
    n_gpu_layers: int | None = None  # what its newest pod's init container decided, when one has
    unschedulable: str | None = None  # the scheduler's message for a pod it cannot place
    retrying: bool = False  # the problem is an apply the operator retries by itself (Reconciling)
    extra_conditions: tuple[Condition, ...] = ()  # Autoscaling / Routed, when asked for


def _condition(kind: str, ok: bool, reason: str, message: str) -> Condition:
    return Condition(kind, "True" if ok else "False", reason, message)


def desired_conditions(obs: Observation) -> list[Condition]:
    """(type, status, reason, message) for every condition, before timestamps. The heart of the module."""
    decision, dep = obs.decision, obs.deployment
    kept = "; the running Deployment is left as it is" if dep is not None else ""

    # EngineSelected: did this generation get an engine?
    if obs.problem is not None and obs.problem[0] in (INVALID_SPEC, REFUSED_BY_POLICY):
        selected = _condition(ENGINE_SELECTED, False, obs.problem[0], obs.problem[1] + kept)
    elif decision is None:
        selected = _condition(ENGINE_SELECTED, False, INVALID_SPEC, "the spec could not be read" + kept)
    elif decision.current_impossible:
        selected = _condition(ENGINE_SELECTED, False, ENGINE_NO_LONGER_POSSIBLE, decision.summary)
    elif decision.engine is None:
        selected = _condition(ENGINE_SELECTED, False, NO_ELIGIBLE_ENGINE, decision.summary + kept)
    else:
        reason = "KeptRunningEngine" if decision.kept_current else "EngineChosen"
        selected = _condition(ENGINE_SELECTED, True, reason, decision.summary)
    engine_ok = selected[1] == "True"
    # The spec of this generation is not what runs: the Deployment serves an older one (or nothing).
    spec_not_applied = (not engine_ok and selected[2] != ENGINE_NO_LONGER_POSSIBLE) or obs.problem is not None

    state = rollout(dep) if dep is not None else None

    # Ready
    if dep is None:
        reason = obs.problem[0] if obs.problem else (selected[2] if not engine_ok else "DeploymentMissing")
        ready = _condition(READY, False, reason, "no Deployment runs this model")
    elif spec_not_applied:
        reason = obs.problem[0] if obs.problem else selected[2]
        message = obs.problem[1] if obs.problem else selected[3]
        ready = _condition(READY, False, reason, f"the current spec is not deployed: {message}")
    elif state is not None and state.state == "complete" and dep.ready_replicas >= dep.replicas:
        ready = _condition(READY, True, "ScaledToZero" if dep.replicas == 0 else "ReplicasReady", state.message)
    elif state is not None and state.state == "failed":
        ready = _condition(READY, False, PROGRESS_DEADLINE_EXCEEDED, state.message)
    elif obs.unschedulable:
        ready = _condition(
            READY, False, "Unschedulable", f"{dep.ready_replicas}/{dep.replicas} replicas ready; {obs.unschedulable}"
        )
    elif state is not None and state.state == "progressing":
        ready = _condition(READY, False, "RollingOut", state.message)
    else:
        ready = _condition(READY, False, "ReplicasNotReady", f"{dep.ready_replicas}/{dep.replicas} replicas ready")

    # Progressing
    if state is None:
        progressing = _condition(PROGRESSING, False, ready[2], "nothing to roll out")
    elif state.state == "progressing":
        progressing = _condition(PROGRESSING, True, "RollingOut", state.message)
    elif state.state == "failed":
        progressing = _condition(PROGRESSING, False, PROGRESS_DEADLINE_EXCEEDED, state.message)
    else:
        progressing = _condition(PROGRESSING, False, "RolloutComplete", state.message)

    # Degraded: the workload is kept, but something needs attention.
    if decision is not None and decision.current_impossible:
        degraded = _condition(DEGRADED, True, ENGINE_NO_LONGER_POSSIBLE, decision.summary)
    elif state is not None and state.state == "failed":
        degraded = _condition(DEGRADED, True, PROGRESS_DEADLINE_EXCEEDED, dep.failure or state.message)  # type: ignore[union-attr]
    elif decision is not None and decision.engine is not None and decision.warnings:
        degraded = _condition(DEGRADED, True, LLAMACPP_CONFIG_RISK, " ".join(decision.warnings))
    else:
        degraded = _condition(DEGRADED, False, "AsExpected", "")

    conditions = [selected, ready, progressing, degraded, *obs.extra_conditions]
    if obs.problem is not None and obs.retrying:
        conditions.append(_condition(RECONCILING, True, obs.problem[0], obs.problem[1] + "; retrying"))
    elif progressing[1] == "True" and not spec_not_applied:
        conditions.append(_condition(RECONCILING, True, "RollingOut", progressing[3]))
    if obs.problem is not None and obs.retrying:
        pass  # not Stalled: the operator is still working on it
    elif obs.problem is not None:
        conditions.append(_condition(STALLED, True, obs.problem[0], obs.problem[1]))
    elif not engine_ok:
        conditions.append(_condition(STALLED, True, selected[2], selected[3]))
    elif state is not None and state.state == "failed":
        conditions.append(_condition(STALLED, True, PROGRESS_DEADLINE_EXCEEDED, state.message))
    return conditions


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None,
    desired: Sequence[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with timestamps: a condition keeps its lastTransitionTime unless its status flipped."""
    previous = {c.get("type"): c for c in old or ()}
    out: list[dict[str, Any]] = []
    for kind, status, reason, message in sorted(desired, key=lambda c: CONDITION_ORDER.index(c.type)):
        before = previous.get(kind)
        since = before.get("lastTransitionTime") if before and before.get("status") == status else None
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        out.append(condition)
    return out


def summary_reason(conditions: Sequence[Mapping[str, Any]]) -> str | None:
    """The printer column `Reason`: the most important condition that is not as it should be, or None."""
    by_type = {c["type"]: c for c in conditions}

    def bad(kind: str, healthy: str) -> str | None:
        c = by_type.get(kind)
        return c["reason"] if c is not None and c["status"] != healthy else None

    return (
        bad(ENGINE_SELECTED, "True")
        or bad(DEGRADED, "False")
        or bad(STALLED, "False")
        or bad("ModelReady", "True")
        or bad(READY, "True")
        or bad(RECONCILING, "False")
    )


def compute_status(obs: Observation, old: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status this module owns (OWNED_KEYS), camelCase, ready to compare and write."""
    old = old or {}
    dep, decision = obs.deployment, obs.decision
    conditions = merge_conditions(old.get("conditions"), desired_conditions(obs), obs.generation, now)
    status: dict[str, Any] = {}
    if obs.generation is not None:
        status["observedGeneration"] = obs.generation
    # `engine` is what runs: the Deployment's engine (just applied, or kept), empty when nothing runs.
    engine = dep.engine if dep is not None else None
    if engine:
        status["engine"] = engine
    if dep is not None and dep.image:
        status["image"] = dep.image
    # A refused spec has no selection of its own; keep explaining nothing rather than an older decision.
    status["selection"] = [c.status_entry() for c in decision.candidates] if decision is not None else []
    if obs.endpoint and dep is not None:
        status["endpoint"] = obs.endpoint
    if dep is not None:
        status["replicas"] = dep.replicas
        status["readyReplicas"] = dep.ready_replicas
        status["ready"] = f"{dep.ready_replicas}/{dep.replicas}"
    else:
        status["ready"] = f"0/{obs.spec_replicas if obs.spec_replicas is not None else 0}"
    reason = summary_reason(conditions)
    ready = next((c for c in conditions if c["type"] == READY), None)
    if reason is None and ready is not None and ready["reason"] == "ScaledToZero":
        # `kubectl get` shows 0/0 with a word for it: scaled to zero on purpose, not broken.
        reason = "ScaledToZero"
    if reason:
        status["reason"] = reason
    if obs.auto_ngl:
        # Reported by the auto-NGL init container (ngl_report), kept while no newer pod says otherwise;
        # dropped when the layers are set explicitly, so it never shows a stale decision.
        ngl = obs.n_gpu_layers if obs.n_gpu_layers is not None else old.get("nGpuLayers")
        if ngl is not None:
            status["nGpuLayers"] = ngl
    status["conditions"] = conditions
    return status


def reconcile_inputs(md: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile reads of a ModelDeployment besides its status: its identity, its spec (by its
    generation: a spec change moves it), its labels and annotations, whether it is being deleted."""
    meta = md.get("metadata") or {}
    return (meta.get("uid"), meta.get("generation"), meta.get("labels") or {}, meta.get("annotations") or {},
            meta.get("deletionTimestamp"))  # fmt: skip


def shows_written(md: Mapping[str, Any], inputs: tuple[Any, ...], status: Mapping[str, Any]) -> bool:
    """Whether `md` is what a status write under way leaves: the reconcile's inputs unchanged and every
    key the operator owns as it wrote them (status_patch). Pure.

    The event gate asks it of a ModelDeployment event that arrives before the write's answer, so before
    the write's resourceVersion is known (controller/indexes.py, own_status_echo)."""
    if reconcile_inputs(md) != inputs:
        return False
    stored = md.get("status") or {}
    return all(stored.get(key) == status.get(key) for key in OWNED_KEYS)


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` into `new` for OWNED_KEYS, or None when nothing differs.

    Keys we dropped are set to null; keys others own (Kopf's `status.kopf`) are never mentioned. Lists
    (conditions, selection) are replaced whole, as merge patch does anyway.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key in OWNED_KEYS:
        if key in new:
            if old.get(key) != new[key]:
                patch[key] = new[key]
        elif old.get(key) is not None:
            patch[key] = None
    return patch or None
