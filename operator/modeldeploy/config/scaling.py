"""The operator's autoscaling, gateway and metrics settings (the chart's `autoscaling`, `gateway` keys).

Whether KEDA, Gateway API and the Inference Extension are installed is not configured: the operator
discovers their CRDs (scaling/discovery.py). What cannot be discovered is configured here: where
Prometheus answers, which Gateway the routes attach to, and whether KEDA's HTTP add-on fronts the models
so that they may scale to zero (docs/autoscaling.md, docs/gateway.md).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class HttpAddonSettings(_Model):
    """KEDA's HTTP add-on: its interceptor holds requests while a model scales from zero."""

    enabled: bool = Field(default=False, description="The add-on is installed; minReplicas 0 becomes possible.")
    namespace: str = Field(default="keda", description="Namespace of the add-on's interceptor and scaler.")
    interceptor_service: str = Field(default="keda-add-ons-http-interceptor-proxy")
    interceptor_port: int = Field(default=8080, ge=1, le=65535)
    scaler_address: str = Field(
        default="keda-add-ons-http-external-scaler.keda:9090",
        description="The add-on's external scaler (KEDA external-push trigger).",
    )
    cold_start_timeout: str = Field(
        default="10m",
        pattern=r"^([0-9]+(ms|s|m|h))+$",
        description="How long the interceptor holds a request while the first replica loads the model.",
    )


class AutoscalingSettings(_Model):
    """How `spec.autoscaling` is carried out."""

    prometheus_address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus that scrapes the engines (the chart's PodMonitors); KEDA queries it.",
    )
    keda: bool = Field(
        default=True, description="Use KEDA when its ScaledObject CRD exists; false always renders an HPA."
    )
    http_addon: HttpAddonSettings = Field(default_factory=HttpAddonSettings)


class EndpointPickerSettings(_Model):
    """The per-pool endpoint picker the operator deploys (docs/gateway.md)."""

    deploy: bool = Field(
        default=True,
        description="Deploy an endpoint picker `<name>-epp` per InferencePool; false when the gateway brings "
        "its own (GKE).",
    )
    image: str = Field(
        default="registry.k8s.io/gateway-api-inference-extension/epp:v1.6.0",
        min_length=1,
        description="The picker's image, the Inference Extension release whose CRDs the pool uses.",
    )


class ModelNameGrant(_Model):
    """Namespaces that may route model names on the Gateway (shell-style patterns: `team-a`, `llama-*`)."""

    namespaces: list[str] = Field(min_length=1, description="Namespace names or patterns (`*`, `?`, `[...]`).")
    names: list[str] = Field(min_length=1, description="Model names (spec.model.name) or patterns they may route.")

    def grants(self, namespace: str, served: str) -> bool:
        return any(fnmatchcase(namespace, n) for n in self.namespaces) and any(
            fnmatchcase(served, n) for n in self.names
        )


class GatewaySettings(_Model):
    """The Gateway (API) that serves one OpenAI endpoint for every model; empty name = no gateway."""

    name: str = Field(default="", description="Gateway every ModelDeployment's HTTPRoute attaches to.")
    namespace: str = Field(default="", description="Its namespace (default: the ModelDeployment's).")
    section_name: str = Field(default="", description="A listener of the Gateway, when not all.")
    endpoint_picker_port: int = Field(
        default=9002,
        ge=0,
        le=65535,
        description="gRPC port of each InferencePool's endpoint picker Service `<name>-epp`; 0 renders "
        "the pool without an endpointPickerRef.",
    )
    endpoint_picker: EndpointPickerSettings = Field(default_factory=EndpointPickerSettings)
    model_names: list[ModelNameGrant] = Field(
        default_factory=list,
        description="Which namespaces may route which model names on the Gateway (docs/security.md, "
        "'Gateway model names'); empty: any namespace any name, the oldest ModelDeployment keeping a name.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.name)

    def may_route(self, namespace: str, served: str) -> bool:
        """Whether a ModelDeployment of `namespace` may route the model name `served` (no grants: any)."""
        return not self.model_names or any(g.grants(namespace, served) for g in self.model_names)
