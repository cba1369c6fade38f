"""The operator's policy for the fields of a ModelDeployment that shape its pods (the chart's `config.policy`).

The ReplicaSet and Job controllers create the pods under the operator's identity, so Kubernetes checks
none of what a ModelDeployment puts in them: whoever may create a ModelDeployment would otherwise run any
image, as any ServiceAccount of the namespace, with any claim or Secret of it, on any node. The policy
says what the cluster allows at all; the admission policy shipped with the chart says who may use it
(docs/security.md, "Pod policy" and "Admission").

Each rule is a list of allowed and of refused patterns: a value passes when it matches an allowed one and
no refused one. A pattern is a name, a prefix ending in `*`, or `*` for anything. The defaults are the
safe ones: no image overrides beyond the operator's own images, no ServiceAccount, no claim, no Secret in
`env`, no pod label; tolerations and node keys except the control plane's and the node lifecycle's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def matches(pattern: str, value: str) -> bool:
    """`*` matches anything (an empty key too), `prefix*` what starts with prefix, any other pattern itself."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


class Names(_Model):
    """Which values a field may take: one matching an `allowed` pattern and no `refused` one."""

    allowed: list[str] = Field(default_factory=list, description="Patterns: a name, `prefix*`, or `*` (anything).")
    refused: list[str] = Field(default_factory=list, description="Patterns refused even when allowed matches.")

    def permits(self, value: str) -> bool:
        return any(matches(p, value) for p in self.allowed) and not any(matches(p, value) for p in self.refused)


def _names(allowed: list[str], refused: list[str] | None = None) -> Names:
    return Names(allowed=allowed, refused=refused or [])


# Taints a tenant's pod has no business tolerating: the control plane's, and the node lifecycle's
# (not-ready, unreachable, unschedulable, pressure; the kubelet and the node controller set them). The
# empty key is a toleration without a key: with `operator: Exists` it tolerates every taint.
CONTROL_PLANE_KEYS = ["node-role.kubernetes.io/*"]
REFUSED_TOLERATION_KEYS = ["", *CONTROL_PLANE_KEYS, "node.kubernetes.io/*", "node.cloudprovider.kubernetes.io/*"]


class PodPolicy(_Model):
    """What a ModelDeployment may put in the pods the operator creates (docs/security.md, "Pod policy")."""

    images: Names = Field(
        default_factory=lambda: _names([]),
        description="Images spec.images may name (`registry/path/*` for a prefix, or a whole reference, a "
        "digest `repo@sha256:...` included). The operator's own configured images are always allowed.",
    )
    service_account_names: Names = Field(
        default_factory=lambda: _names([]),
        description="ServiceAccounts spec.serviceAccountName may name (their token is mounted in the model pods).",
    )
    claims: Names = Field(
        default_factory=lambda: _names([]),
        description="PersistentVolumeClaims spec.cache.pvc (mounted read-write) and a pvc:// model.uri "
        "(read-only) may name.",
    )
    env_secrets: Names = Field(
        default_factory=lambda: _names([]),
        description="Secrets spec.env[].valueFrom.secretKeyRef may read.",
    )
    credentials_secrets: Names = Field(
        default_factory=lambda: _names(["*"]),
        description="Secrets model.credentialsSecret may name (given to the operator's fetcher only, and "
        "sent to the model's source).",
    )
    api_key_secrets: Names = Field(
        default_factory=lambda: _names(["*"]),
        description="Secrets spec.auth.apiKeySecret may name (the key reaches the model server only, which "
        "compares it with what clients send).",
    )
    toleration_keys: Names = Field(
        default_factory=lambda: _names(["*"], REFUSED_TOLERATION_KEYS),
        description="Taint keys spec.tolerations may tolerate; the empty key is a toleration without a key "
        "(it tolerates every taint).",
    )
    node_label_keys: Names = Field(
        default_factory=lambda: _names(["*"], CONTROL_PLANE_KEYS),
        description="Node label keys spec.nodeSelector and spec.affinity's node terms may name.",
    )
    pod_label_keys: Names = Field(
        default_factory=lambda: _names([]),
        description="Keys spec.podLabels may set (a label another Service selects joins its endpoints).",
    )
