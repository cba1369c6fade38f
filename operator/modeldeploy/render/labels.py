"""Labels and selectors shared by the Deployment, its pods and the Service.

The selector is deliberately the smallest stable set (instance + component): a Deployment's selector is
immutable, so anything that can change over the object's life (the engine, after a spec change or a
reselection) must stay out of it, or an engine switch would need the Deployment deleted and recreated.
"""

from __future__ import annotations

from modeldeploy.api.v1alpha1 import ModelDeployment

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
ENGINE = "modeldeploy.io/engine"
# On pods whose /metrics is relayed on the port named `metrics` (an API key on llama.cpp): the chart's
# PodMonitor scrapes that port and skips `http`, which asks for the key (docs/security.md, "API keys").
METRICS_PORT_LABEL = "modeldeploy.io/metrics-port"

MANAGER = "modeldeploy"
COMPONENT_VALUE = "model-server"

# `kubectl logs`/`exec` pick this container without `-c`, rather than the first init container.
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def common_labels(md: ModelDeployment, engine: str) -> dict[str, str]:
    """The labels every rendered object carries (rendering.md, "Every engine"); `engine` is its name."""
    return {
        NAME: engine,
        INSTANCE: md.metadata.name,
        MANAGED_BY: MANAGER,
        COMPONENT: COMPONENT_VALUE,
        ENGINE: engine,
    }


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """Deployment and Service selector: instance + component only, never the engine (immutable selector)."""
    return {INSTANCE: md.metadata.name, COMPONENT: COMPONENT_VALUE}


def pod_labels(md: ModelDeployment, engine: str) -> dict[str, str]:
    """Ours first, then the user's `podLabels` in key order; a user label cannot override ours.

    Overriding ours would let a user label break the selector (pods no longer matched) or lie about the
    engine, so user values for our keys are ignored rather than merged.
    """
    labels = common_labels(md, engine)
    for key in sorted(md.spec.pod_labels):
        labels.setdefault(key, md.spec.pod_labels[key])
    return labels


def pod_annotations(md: ModelDeployment, container_name: str) -> dict[str, str]:
    """The default-container hint, then the user's `podAnnotations` in key order."""
    annotations = {DEFAULT_CONTAINER_ANNOTATION: container_name}
    for key in sorted(md.spec.pod_annotations):
        annotations.setdefault(key, md.spec.pod_annotations[key])
    return annotations
