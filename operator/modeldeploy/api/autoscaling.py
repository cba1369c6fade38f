"""`spec.autoscaling`: replicas that follow the engine's own load signal (docs/autoscaling.md).

The operator does not scale anything itself: it renders a KEDA ScaledObject (or, without KEDA, a
HorizontalPodAutoscaler) whose trigger is the engine's count of requests in flight, read through
Prometheus. These types are only the user's intent; what was actually rendered, and why (no KEDA, no
component that holds requests while the first replica starts), is reported in status.
"""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

MAX_REPLICAS = 1000

# CEL rules on `spec.autoscaling` (the apiserver refuses the same inputs the model validator does).
AUTOSCALING_RULES = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "fieldPath": ".minReplicas",
        "reason": "FieldValueInvalid",
    }
]


class AutoscalingSpec(BaseModel):
    """Scale the engine's replicas with demand, between minReplicas and maxReplicas.

    When set, `replicas` is ignored: the autoscaler owns the Deployment's replica count.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        json_schema_extra={"x-kubernetes-validations": cast(list[JsonValue], AUTOSCALING_RULES)},
    )

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=MAX_REPLICAS,
        description="Fewest replicas. 0 scales to zero when idle, which needs a component that holds the "
        "first request while a replica starts (the KEDA HTTP add-on, enabled in the operator's Helm values); "
        "without one the operator keeps 1 and says why in status.",
    )
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS, description="Most replicas.")
    target_requests: int = Field(
        default=4,
        ge=1,
        le=100000,
        description="Requests in flight (running plus waiting in the engine's queue) per replica that the "
        "autoscaler aims for: vLLM num_requests_running + num_requests_waiting, SGLang num_running_reqs + "
        "num_queue_reqs, llama.cpp requests_processing + requests_deferred.",
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long load must stay low before replicas are removed (KEDA's cooldown and the "
        "HPA's scale-down stabilization window); a model takes long to load, so flapping is costly.",
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas {self.min_replicas} must not exceed autoscaling.maxReplicas "
                f"{self.max_replicas}"
            )
        return self
