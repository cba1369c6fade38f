"""Rendered objects + a ModelDeployment + the CRDs served -> those objects with autoscaling and routing. Pure.

Shared by the operator (on the CRDs API discovery reports) and `modeldeploy render` (on the add-ons the
user names), so what the CLI prints is what the operator applies on such a cluster. The autoscaling and
routing objects are built from the same typed inputs the renderer built the Deployment and Service from
(their metadata, the pod selector, the port), never read back out of the rendered dicts.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import registry
from modeldeploy.render.containers import PORT
from modeldeploy.render.labels import selector_labels
from modeldeploy.render.objects import object_meta
from modeldeploy.scaling.objects import scaling_objects
from modeldeploy.scaling.plan import (
    HTTP_ROUTE,
    HTTP_SCALED_OBJECT,
    INFERENCE_POOL,
    SCALED_OBJECT,
    ScalingPlan,
    plan_scaling,
)
from modeldeploy.scaling.signals import load_metrics

# `modeldeploy render --addons` names -> the CRDs they install.
ADDONS: dict[str, frozenset[str]] = {
    "keda": frozenset({SCALED_OBJECT}),
    "keda-http-addon": frozenset({HTTP_SCALED_OBJECT}),
    "gateway-api": frozenset({HTTP_ROUTE}),
    "inference-extension": frozenset({INFERENCE_POOL}),
}


def with_scaling(
    md: ModelDeployment, engine: str, objects: list[dict[str, Any]], config: OperatorConfig, crds: frozenset[str]
) -> tuple[list[dict[str, Any]], ScalingPlan]:
    """The rendered objects plus the autoscaler and routing objects, and the Deployment's replicas set
    the way the plan says (the autoscaler's minimum on creation; afterwards the autoscaler owns them).
    """
    metrics = load_metrics(engine)
    plan = plan_scaling(md.spec.autoscaling, bool(metrics), engine, config.autoscaling, config.gateway, crds)
    if plan.autoscaler == "none" and not plan.route:
        return objects, plan
    if plan.initial_replicas is not None:
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        deployment["spec"]["replicas"] = plan.initial_replicas
    spec = md.spec.autoscaling
    # Where the picker scrapes /metrics: the serving port, or the relay an API key on llama.cpp needs.
    scraped = registry.get(engine).metrics_port(md.spec.auth is not None)
    extra = scaling_objects(
        meta=object_meta(md, engine),
        selector=selector_labels(md),
        served_name=md.spec.model.name,
        port=PORT,
        metrics=metrics,
        target=spec.target_requests if spec else 1,
        delay_s=spec.scale_down_delay_seconds if spec else 0,
        plan=plan,
        settings=config.autoscaling,
        gateway=config.gateway,
        engine=engine,
        metrics_port=scraped if scraped not in (None, PORT) else None,
        network=config.network_policies,
    )
    return objects + extra, plan
