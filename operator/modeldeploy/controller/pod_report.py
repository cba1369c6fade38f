"""What only the pods know, for the ModelDeployment's status: the auto-NGL decision and why pods wait.

- status.nGpuLayers: the auto-NGL init container runs on the node that serves the model, so only it
  knows the GPUs' free memory; it writes its decision for the engine (ngl.json in a shared emptyDir)
  and, compactly, to its termination message, which the kubelet copies into the pod's status.
- Unschedulable pods: the scheduler's own sentence ("0/7 nodes are available: 1 Insufficient
  nvidia.com/gpu, …") goes into the Ready condition, so a user sees why a rollout does not move.

Read from pod status only: no exec, no log scraping; one `list pods` by the Deployment's selector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy.render.pod import NGL_CONTAINER


def has_auto_ngl(deployment: Mapping[str, Any]) -> bool:
    """The Deployment's pods run the auto-NGL init container (llama.cpp with engine.nGpuLayers -1)."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return any(c.get("name") == NGL_CONTAINER for c in spec.get("initContainers") or ())


def pods_query(deployment: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The REST path and query that list this Deployment's pods, by its own selector's matchLabels."""
    meta = deployment.get("metadata") or {}
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"/api/v1/namespaces/{meta.get('namespace')}/pods", [("labelSelector", selector)]


def parse_message(message: str | None) -> int | None:
    """n_gpu_layers from the init container's termination message (JSON), else None."""
    if not message:
        return None
    try:
        value = json.loads(message).get("n_gpu_layers")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def n_gpu_layers(pods: Sequence[Mapping[str, Any]]) -> int | None:
    """The decision of the newest live pod whose init container finished well; None when none has."""
    found: list[tuple[str, int]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        for status in (pod.get("status") or {}).get("initContainerStatuses") or ():
            if status.get("name") != NGL_CONTAINER:
                continue
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") != 0:
                continue
            value = parse_message(terminated.get("message"))
            if value is not None:
                found.append((str(meta.get("creationTimestamp") or ""), value))
    return max(found)[1] if found else None


def unschedulable(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The scheduler's message for a live pod it could not place, else None."""
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or ():
            not_placed = cond.get("type") == "PodScheduled" and cond.get("status") == "False"
            if not_placed and cond.get("reason") == "Unschedulable":
                return str(cond.get("message") or "the scheduler found no node for the pod")
    return None


def worth_a_reconcile(pod: Mapping[str, Any]) -> bool:
    """Pod events that change what the status says: a placement failure, or auto-NGL having decided."""
    return unschedulable([pod]) is not None or n_gpu_layers([pod]) is not None
