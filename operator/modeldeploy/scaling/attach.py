"""Rendered objects + a ModelDeployment + the CRDs served -> those objects with autoscaling and routing. Pure.

Shared by the operator (on the CRDs API discovery reports) and `modeldeploy render` (on the add-ons the
user names), so what the CLI prints is what the operator applies on such a cluster.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
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
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    service = next(o for o in objects if o["kind"] == "Service")
    if plan.initial_replicas is not None:
        deployment["spec"]["replicas"] = plan.initial_replicas
    spec = md.spec.autoscaling
    extra = scaling_objects(
        meta=deployment["metadata"],
        selector=deployment["spec"]["selector"]["matchLabels"],
        served_name=md.spec.model.name,
        port=int(service["spec"]["ports"][0]["port"]),
        metrics=metrics,
        target=spec.target_requests if spec else 1,
        delay_s=spec.scale_down_delay_seconds if spec else 0,
        plan=plan,
        settings=config.autoscaling,
        gateway=config.gateway,
        engine=engine,
    )
    return objects + extra, plan
