"""What one reconcile says: the status it writes and the Events it posts, from the plan and what execute.py
did. Pure: the same plan, outcome and world give the same status and Events (the time is passed in).

The status itself is computed in status.py (conditions with kstatus semantics, docs/api.md); this module
gathers its inputs in one place: the decision and the problem from the plan, the Deployment as the
watch shows it or as the apply returned it, the pods' auto-NGL and scheduling news, the conditions of
autoscaling, routing and the model cache, and the shared cache's `status.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.controller import model_cache
from modeldeploy.controller.events import EventSpec, child_events, events_for
from modeldeploy.controller.execute import APPLY_FAILED, Executed
from modeldeploy.controller.plan import Plan, World
from modeldeploy.controller.status import Observation, compute_status, status_patch
from modeldeploy.controller.views import ChildView, DeploymentView, pods_n_gpu_layers, pods_unschedulable

PORT = 8000


@dataclass(frozen=True)
class Report:
    """The status to write (`patch`: None when it would not change), the Events, and how it went."""

    status: dict[str, Any]
    patch: dict[str, Any] | None
    events: tuple[EventSpec, ...]
    outcome: str  # applied, kept, pending, invalid, failed
    deployment: DeploymentView | None  # the Deployment this status describes


def endpoint(namespace: str, name: str) -> str:
    """The OpenAI-compatible base URL of the Service (docs/api.md)."""
    return f"http://{name}.{namespace}.svc:{PORT}/v1"


def report(plan: Plan, done: Executed, world: World, now: str) -> Report:
    """The status and Events of one reconcile (`now`: RFC 3339, for conditions that change)."""
    namespace, name = plan.key
    body, old_status, planned = plan.body, plan.status, plan.planned
    meta = body.get("metadata") or {}
    decision = planned.decision
    problem = done.problem or planned.problem
    deployment = world.deployment.deployment if world.deployment and not world.deployment.deleting else None
    auto_ngl = bool(world.deployment and world.deployment.auto_ngl)
    for child in done.applied:
        if child.kind == "Deployment" and child.name == name and child.obj is not None:
            deployment = DeploymentView.from_object(child.obj)
            auto_ngl = ChildView.from_object(child.obj).auto_ngl
    conditions = plan.conditions if done.cache is None else (*plan.conditions, done.cache.condition)
    waiting = deployment is not None and deployment.ready_replicas < deployment.replicas
    spec_replicas = planned.spec_replicas if planned.valid else (body.get("spec") or {}).get("replicas")
    observation = Observation(
        generation=meta.get("generation"),
        decision=decision,
        deployment=deployment,
        endpoint=endpoint(namespace, name),
        problem=problem,
        spec_replicas=spec_replicas if isinstance(spec_replicas, int) else None,
        auto_ngl=auto_ngl and deployment is not None and deployment.engine == "llama.cpp",
        n_gpu_layers=pods_n_gpu_layers(world.pods) if auto_ngl else None,
        unschedulable=pods_unschedulable(world.pods) if waiting else None,
        retrying=done.failed is not None and done.failed.transient,
        extra_conditions=conditions,
    )
    new_status = compute_status(observation, old_status, now)
    weights = model_cache.model_status(planned.md, done.cache) if planned.md is not None else dict(planned.model)
    if planned.valid and weights:
        new_status["model"] = weights
    patch = model_cache.fix_model_patch(old_status, status_patch(old_status, new_status))

    events = events_for(old_status, new_status)
    refused = done.problem[1] if done.failed is not None and done.problem is not None else None
    if refused is not None and (old_status.get("reason"), failure_message(old_status)) != (APPLY_FAILED, refused):
        events.append(EventSpec("Warning", APPLY_FAILED, refused))
    engine = new_status.get("engine") or (decision.engine if decision else None) or ""
    events.extend(child_events(done.applied, engine))
    return Report(new_status, patch, tuple(events), outcome(problem, done, decision, deployment), deployment)


def outcome(problem: Any, done: Executed, decision: Any, deployment: DeploymentView | None) -> str:
    """applied, kept, pending, invalid or failed: for metrics and logs."""
    if problem is not None:
        return "invalid" if done.failed is None else "failed"
    if decision is not None and decision.engine is not None:
        return "applied"
    return "kept" if deployment is not None else "pending"


def failure_message(status: Mapping[str, Any]) -> str | None:
    """The message of the condition that carries an apply failure (Reconciling or Stalled), if any."""
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("Reconciling", "Stalled") and condition.get("reason") == APPLY_FAILED:
            return str(condition.get("message", "")).removesuffix("; retrying")
    return None
