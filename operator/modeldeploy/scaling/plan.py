"""The autoscaling and routing decision: spec + operator settings + installed CRDs in, a plan out. Pure.

Why a plan separate from the objects: the same facts decide what is rendered AND what status says, so
the two can never disagree (e.g. an HPA rendered while status claims KEDA). Every fallback carries the
sentence status shows (docs/autoscaling.md, docs/gateway.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.config.scaling import AutoscalingSettings, GatewaySettings

# CRDs (plural.group) the plan may need; discovery reports which of them the apiserver serves.
SCALED_OBJECT = "scaledobjects.keda.sh"
HTTP_SCALED_OBJECT = "httpscaledobjects.http.keda.sh"
HTTP_ROUTE = "httproutes.gateway.networking.k8s.io"
INFERENCE_POOL = "inferencepools.inference.networking.k8s.io"

Autoscaler = Literal["none", "keda", "hpa", "fixed"]


@dataclass(frozen=True)
class Note:
    """A condition the plan asks status to show: type, True/False, CamelCase reason, sentence."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str


@dataclass(frozen=True)
class ScalingPlan:
    """What to render beside the Deployment and Service."""

    autoscaler: Autoscaler = "none"
    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None  # None: the Deployment keeps spec.replicas
    scale_from_zero: bool = False  # ScaledObject gets the HTTP add-on trigger, HTTPScaledObject rendered
    route: bool = False  # InferencePool + HTTPRoute
    notes: list[Note] = field(default_factory=list)

    @property
    def owns_replicas(self) -> bool:
        """Whether an autoscaler, not `spec.replicas`, sets the Deployment's replica count."""
        return self.autoscaler in ("keda", "hpa")


def plan_scaling(
    spec: AutoscalingSpec | None,
    has_load_signal: bool,
    engine: str,
    settings: AutoscalingSettings,
    gateway: GatewaySettings,
    crds: frozenset[str],
) -> ScalingPlan:
    """Decide the autoscaler and the routing objects.

    - KEDA when its ScaledObject CRD is served (and not switched off): it reads the engine's load
      through Prometheus and may scale to zero.
    - Otherwise an HPA (autoscaling/v2, a Pods metric through a custom-metrics adapter), which cannot
      go below 1.
    - minReplicas 0 only when KEDA's HTTP add-on is enabled and its CRD served: its interceptor holds the
      first request while a replica starts. Without it the minimum is raised to 1, so no request ever
      meets a Service without endpoints (a 503).
    - Engines that export no load signal (transformers, MLX) keep a fixed count.
    """
    notes: list[Note] = []
    route = False
    if gateway.enabled:
        missing = [c for c in (HTTP_ROUTE, INFERENCE_POOL) if c not in crds]
        if missing:
            notes.append(
                Note(
                    "Routed",
                    "False",
                    "CRDMissing",
                    f"gateway {gateway.name} is configured but the apiserver "
                    f"lacks the CRD {', '.join(missing)}; no InferencePool or HTTPRoute was rendered",
                )
            )
        else:
            route = True
            where = f"{gateway.namespace}/{gateway.name}" if gateway.namespace else gateway.name
            notes.append(
                Note(
                    "Routed",
                    "True",
                    "InferencePool",
                    f"requests naming this model on gateway {where} reach its InferencePool",
                )
            )
    if spec is None:
        return ScalingPlan(route=route, notes=notes)

    lo, hi = spec.min_replicas, spec.max_replicas
    if not has_load_signal:
        fixed = max(lo, 1)
        notes.append(
            Note(
                "Autoscaling",
                "False",
                "NoLoadSignal",
                f"{engine} exports no request-queue metric to scale on; running a fixed {fixed} replica(s)",
            )
        )
        return ScalingPlan("fixed", fixed, fixed, initial_replicas=fixed, route=route, notes=notes)

    use_keda = settings.keda and SCALED_OBJECT in crds
    raised = ""
    from_zero = False
    if lo == 0:
        if not use_keda:
            raised = "an HPA cannot scale to zero (KEDA is not installed)"
        elif not settings.http_addon.enabled:
            raised = "no component holds requests while the first replica starts (enable KEDA's HTTP add-on)"
        elif HTTP_SCALED_OBJECT not in crds:
            raised = f"the KEDA HTTP add-on is enabled but the CRD {HTTP_SCALED_OBJECT} is absent"
        else:
            from_zero = True
    effective_min = 1 if raised else lo
    if use_keda:
        reason, what = "KEDA", "a KEDA ScaledObject"
    else:
        why = (
            "KEDA is switched off in the operator's settings"
            if not settings.keda
            else (f"the CRD {SCALED_OBJECT} is absent (KEDA not installed)")
        )
        reason, what = "HPAFallback", f"a HorizontalPodAutoscaler because {why}"
    message = f"{what} scales {effective_min}..{hi} replicas at {spec.target_requests} requests in flight each"
    if from_zero:
        message += "; from zero through the KEDA HTTP add-on's interceptor"
    if raised:
        message += f"; minReplicas 0 was raised to 1 because {raised}"
    notes.append(Note("Autoscaling", "True", reason, message))
    return ScalingPlan(
        "keda" if use_keda else "hpa",
        effective_min,
        hi,
        initial_replicas=max(effective_min, 1),
        scale_from_zero=from_zero,
        route=route,
        notes=notes,
    )
