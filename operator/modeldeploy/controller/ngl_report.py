"""status.nGpuLayers: what the auto-NGL init container decided, read back from its pods.

The init container runs on the node that serves the model, so only it knows the GPUs' free memory; it
writes its decision to the engine (ngl.json in a shared emptyDir) and, compactly, to its termination
message, which the kubelet copies into the pod's status. The operator reads it from there: no exec, no
log scraping, and nothing but a `list pods` in the ModelDeployment's namespace.
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
