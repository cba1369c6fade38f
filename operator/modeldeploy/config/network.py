"""Which traffic the NetworkPolicies of each ModelDeployment let in and out (the chart's `networkPolicy` key).

The policies themselves are rendered by render/network.py (docs/security.md, "NetworkPolicies"). What the
operator cannot discover is configured here: where the Gateway's proxies and the Prometheus that scrapes
the engines run. Selectors are `matchLabels` of namespaces; `kubernetes.io/metadata.name` (which the
apiserver sets on every namespace) selects one by name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

NAMESPACE_NAME = "kubernetes.io/metadata.name"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class NetworkPolicySettings(_Model):
    """Per ModelDeployment, a NetworkPolicy for its model pods and one for its endpoint picker."""

    enabled: bool = Field(
        default=True,
        description="Render a NetworkPolicy per ModelDeployment (and per endpoint picker); false removes ours.",
    )
    gateway_namespace_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the namespaces the Gateway's proxies run in; empty: the Gateway's namespace "
        "(gateway.namespace, else the ModelDeployment's own).",
    )
    monitoring_namespace_selector: dict[str, str] = Field(
        default_factory=lambda: {NAMESPACE_NAME: "monitoring"},
        description="Labels of the namespaces whose pods may scrape the engines' and pickers' metrics; empty: none.",
    )
