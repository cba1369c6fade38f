"""One reconcile of one ModelDeployment: read, decide, apply, write status. Blocking I/O, no Kopf.

Level-triggered: whatever woke it (a spec change, a node change, a Deployment's status), it reads the
ModelDeployment fresh (one GET, so status and generation are never stale), reads the Deployment, takes
the node facts the caller copied from the index, and converges. Idempotent by construction: re-applying
identical content is a no-op on the apiserver and the status is written only when it differs.

The rules that protect running workloads (issue 3, selection.md):
- a spec only the operator can refuse, or no eligible engine: nothing is applied; the Deployment, when
  there is one, is left exactly as it is (never deleted or replaced);
- the running engine is kept while it stays possible (`current`), unless the spec changed (generation
  moved since the status was written) or `modeldeploy.io/reselect: "true"` asks for a fresh choice;
- the running engine became impossible: the Deployment is kept and the status turns Degraded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import model_cache, scaling
from modeldeploy.controller.apply import (
    Applied,
    ApplyError,
    ChildConflict,
    Kube,
    KubeError,
    apply_children,
    md_path,
)
from modeldeploy.controller.pod_report import has_auto_ngl, n_gpu_layers, pods_query, unschedulable
from modeldeploy.controller.status import (
    ENGINE_LABEL,
    INVALID_SPEC,
    DeploymentView,
    EventSpec,
    Observation,
    compute_status,
    events_for,
    status_patch,
)
from modeldeploy.engines import registry
from modeldeploy.loader import describe_validation_error
from modeldeploy.render import RenderError, render
from modeldeploy.selection import select_engine
from modeldeploy.selection.types import Decision, NodeFacts

RESELECT_ANNOTATION = "modeldeploy.io/reselect"
APPLY_FAILED = "ApplyFailed"
PORT = 8000


def utc_now() -> str:
    """RFC 3339, second precision (what metav1.Time serialises to)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def endpoint(namespace: str, name: str) -> str:
    """The OpenAI-compatible base URL of the Service (api.md)."""
    return f"http://{name}.{namespace}.svc:{PORT}/v1"


def parse(body: Mapping[str, Any]) -> tuple[ModelDeployment | None, str | None]:
    """The object as the API models read it, or why not (the CRD lets through what only pydantic refuses)."""
    doc = {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec")}
    try:
        return ModelDeployment.model_validate(doc), None
    except ValidationError as exc:
        return None, describe_validation_error(exc)


def current_engine(status: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> str | None:
    """The engine running now: the Deployment's label first (the truth), else what the status says.

    A name no registered engine answers to (an engine removed since) is skipped.
    """
    label = ((deployment or {}).get("metadata") or {}).get("labels", {}).get(ENGINE_LABEL)
    for value in (label, status.get("engine")):
        if value and value in registry.names():
            return str(value)
    return None


def stability_inputs(body: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> tuple[str | None, bool]:
    """(`current`, `reselect`) for select_engine.

    `current` only while the spec is the one the status last described: a spec change re-selects freely,
    as does the reselect annotation. The annotation is not removed afterwards: that would be a write to
    the user's object that GitOps tools report as drift; while it is set, every decision is fresh.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    reselect = str((meta.get("annotations") or {}).get(RESELECT_ANNOTATION, "")).lower() == "true"
    same_spec = status.get("observedGeneration") is not None and status.get("observedGeneration") == meta.get(
        "generation"
    )
    current = current_engine(status, deployment) if same_spec and not reselect else None
    return current, reselect


@dataclass
class Result:
    """What a reconcile did, for events, metrics and logs."""

    outcome: str  # applied, kept, pending, invalid, gone
    engine: str | None = None
    decision: Decision | None = None
    status_written: bool = False
    children_changed: list[str] = field(default_factory=list)  # kinds whose object the apply changed
    events: list[EventSpec] = field(default_factory=list)
    owner: dict[str, Any] = field(default_factory=dict)  # a body reference for posting Events
    failed: ApplyError | None = None  # an apply the apiserver refused: in status already, to be retried


def list_pods(kube: Kube, deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's pods; empty when they cannot be read.

    A missing `list pods` permission (an older chart) must not stop the reconcile: what the pods would
    have told the status is just left out.
    """
    try:
        path, query = pods_query(deployment)
        return list(kube.request("GET", path, query=query).get("items") or [])
    except KubeError as exc:
        if exc.transient:
            raise
        return []


def reconcile(
    kube: Kube,
    namespace: str,
    name: str,
    nodes: Sequence[NodeFacts],
    config: OperatorConfig,
    now: Callable[[], str] = utc_now,
) -> Result:
    """Converge one ModelDeployment. Raises KubeError for transient apiserver trouble (the caller retries)."""
    body = kube.get(md_path(namespace, name))
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return Result("gone")  # garbage collection takes the children; nothing to do
    meta = body["metadata"]
    owner = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }
    old_status = body.get("status") or {}
    live = kube.get(deployment_path(namespace, name))
    deployment = DeploymentView.from_object(live) if live else None

    md, invalid = parse(body)
    decision: Decision | None = None
    problem: tuple[str, str] | None = (INVALID_SPEC, invalid) if invalid else None
    applied: list[Applied] = []
    failed: ApplyError | None = None
    cache: model_cache.CacheState | None = None
    extra_conditions: tuple[tuple[str, str, str, str], ...] = ()
    if md is not None:
        current, reselect = stability_inputs(body, live)
        decision = select_engine(md.spec, nodes, config, current=current, reselect=reselect)
        if decision.engine is not None:
            try:
                objects = render(md, decision, config)
                cache, objects = _model_cache(kube, md, config, objects)
                objects, plan = scaling.add_scaling(kube, md, decision.engine, objects, config)
                extra_conditions = scaling.conditions(plan) + ((cache.condition,) if cache else ())
                applied = apply_children(kube, objects, meta.get("uid"))
                if plan.notes or scaling.had_scaling(old_status):
                    scaling.prune(kube, md, objects, meta.get("uid"))
            except RenderError as exc:
                problem = (INVALID_SPEC, str(exc))
            except ChildConflict as exc:
                problem = ("ChildConflict", str(exc))
            except ApplyError as exc:
                # Said in status first, whatever the cause (quota, webhook, 5xx, timeout), then retried.
                failed, applied = exc, exc.applied
                problem = (APPLY_FAILED, f"the apiserver refused {exc}")
            deployments = [a.obj for a in applied if a.obj.get("kind") == "Deployment"]
            if deployments:
                live = deployments[0]
                deployment = DeploymentView.from_object(live)

    # Only an engine with an init command (llama.cpp's auto-NGL) renders that init container.
    auto_ngl = deployment is not None and has_auto_ngl(live or {})
    waiting = deployment is not None and deployment.ready_replicas < deployment.replicas
    # Pods are read only when they can say something new: while replicas wait (placement, a restarted pod's
    # auto-NGL), or before the first auto-NGL report. A steady Deployment costs no LIST per reconcile.
    need_pods = waiting or (auto_ngl and old_status.get("nGpuLayers") is None)
    pods = list_pods(kube, live) if live and need_pods else []

    spec_replicas = md.spec.replicas if md is not None else (body.get("spec") or {}).get("replicas")
    observation = Observation(
        generation=meta.get("generation"),
        decision=decision,
        deployment=deployment,
        endpoint=endpoint(namespace, name),
        problem=problem,
        spec_replicas=spec_replicas if isinstance(spec_replicas, int) else None,
        auto_ngl=auto_ngl,
        n_gpu_layers=n_gpu_layers(pods) if auto_ngl else None,
        unschedulable=unschedulable(pods) if waiting else None,
        retrying=failed is not None and failed.transient,
        extra_conditions=extra_conditions,
    )
    new_status = compute_status(observation, old_status, now())
    if md is not None and (weights := model_cache.model_status(md, cache)):
        new_status["model"] = weights
    patch = model_cache.fix_model_patch(old_status, status_patch(old_status, new_status))
    if patch:
        try:
            kube.merge_patch_status(md_path(namespace, name), patch)
        except KubeError as exc:
            if exc.status == 404:
                return Result("gone")  # deleted while we worked: its children go with it
            raise

    events = events_for(old_status, new_status)
    if failed is not None and (old_status.get("reason"), _message(old_status)) != (APPLY_FAILED, problem[1]):  # type: ignore[index]
        events.append(EventSpec("Warning", APPLY_FAILED, problem[1]))  # type: ignore[index]
    for child in applied:
        if child.changed:
            kind, child_name = child.obj.get("kind", "object"), child.obj["metadata"]["name"]
            verb = "Created" if child.created else "Updated"
            events.append(EventSpec("Normal", verb, f"{verb.lower()} {kind} {child_name} ({new_status.get('engine')})"))

    if problem is not None:
        outcome = "invalid"
    elif decision is not None and decision.engine is not None:
        outcome = "applied"
    elif deployment is not None:
        outcome = "kept"
    else:
        outcome = "pending"
    return Result(
        outcome=outcome,
        engine=decision.engine if decision is not None else None,
        decision=decision,
        status_written=patch is not None,
        children_changed=[str(child.obj.get("kind")) for child in applied if child.changed],
        events=events,
        owner=owner,
        failed=failed,
    )


def _model_cache(
    kube: Kube, md: ModelDeployment, config: OperatorConfig, objects: list[dict[str, Any]]
) -> tuple[model_cache.CacheState | None, list[dict[str, Any]]]:
    """The shared cache's state; the Deployment is held back (a running one left as it is) until it is Ready."""
    cache = model_cache.converge(kube, md, config)
    if cache is None or cache.ready:
        return cache, objects
    return cache, [o for o in objects if o.get("kind") != "Deployment"]


def _message(status: Mapping[str, Any]) -> str | None:
    """The message of the condition that carries an apply failure (Reconciling or Stalled), if any."""
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("Reconciling", "Stalled") and condition.get("reason") == APPLY_FAILED:
            return str(condition.get("message", "")).removesuffix("; retrying")
    return None
