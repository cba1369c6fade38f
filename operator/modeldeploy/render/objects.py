"""The Deployment and the Service, with metadata and owner references."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment
from modeldeploy.render import containers as c
from modeldeploy.render.labels import common_labels, selector_labels
from modeldeploy.render.pod import PROGRESS_DEADLINE_S
from modeldeploy.selection.types import Placement


def owner_references(md: ModelDeployment) -> list[dict[str, Any]]:
    """The ModelDeployment as controlling owner, so deleting it garbage-collects what we made.

    Without a uid (a file rendered offline, not yet in a cluster) there is nothing to point at, so the
    field is left out rather than written with an empty uid the apiserver would reject.
    """
    if not md.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": md.metadata.name,
            "uid": md.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(md: ModelDeployment, engine: str) -> dict[str, Any]:
    """name, namespace, labels and (when known) ownerReferences."""
    meta: dict[str, Any] = {
        "name": md.metadata.name,
        "namespace": md.metadata.namespace,
        "labels": common_labels(md, engine),
    }
    owners = owner_references(md)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def deployment(md: ModelDeployment, engine: str, placement: Placement, template: dict[str, Any]) -> dict[str, Any]:
    """The Deployment.

    GPU pods roll with maxSurge 0 / maxUnavailable 1: a surge pod would need GPUs beyond what the
    replicas hold, and on a full cluster it would stay Pending and stall the rollout forever. CPU and
    Apple-silicon pods keep Kubernetes' default rolling update.
    """
    spec: dict[str, Any] = {
        "replicas": md.spec.replicas,
        "selector": {"matchLabels": selector_labels(md)},
    }
    if placement.gpus > 0:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    spec["progressDeadlineSeconds"] = PROGRESS_DEADLINE_S
    spec["template"] = template
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": object_meta(md, engine), "spec": spec}


def service(md: ModelDeployment, engine: str) -> dict[str, Any]:
    """A ClusterIP Service on port 8000 → the container's `http` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(md, engine),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [{"name": c.PORT_NAME, "port": c.PORT, "targetPort": c.PORT_NAME, "protocol": "TCP"}],
        },
    }
