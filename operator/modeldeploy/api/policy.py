"""Which pod-shaping fields of a spec the operator's policy refuses (docs/security.md, "Pod policy").

Pure: a spec and the operator config in, one sentence per refused value out. The operator reports the
first in status and creates nothing for that ModelDeployment (controller/plan.py); `modeldeploy select`
and `render` exit 2 with it, so the same spec is refused the same way offline and in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import OperatorConfig, default_image
from modeldeploy.config.policy import PodPolicy

PVC_SCHEME = "pvc://"


def refusals(spec: ModelDeploymentSpec, config: OperatorConfig) -> list[str]:
    """Every value of `spec` the policy refuses, as sentences naming the field, the value and the config key."""
    policy = config.policy
    return [
        *_images(spec, config),
        *_service_account(spec, policy),
        *_claims(spec, policy),
        *_secrets(spec, policy),
        *_tolerations(spec, policy),
        *_node_keys(spec, policy),
        *_pod_labels(spec, policy),
    ]


def refusal(spec: ModelDeploymentSpec, config: OperatorConfig) -> str | None:
    """The first refusal (what status and the CLI say), or None when the policy allows the spec."""
    found = refusals(spec, config)
    return found[0] if found else None


def _not_allowed(what: str, key: str) -> str:
    return f'{what}, which the operator\'s policy does not allow (config.policy.{key}; docs/security.md, "Pod policy")'


def _images(spec: ModelDeploymentSpec, config: OperatorConfig) -> Iterator[str]:
    """An override equal to an image the operator runs anyway is harmless; any other must be allowed."""
    own = {*config.images.values(), *(default_image(k) for k in spec.images)}
    for key, image in sorted(spec.images.items()):
        if image not in own and image != config.image_for(key) and not config.policy.images.permits(image):
            yield _not_allowed(f"spec.images.{key} names image {image!r}", "images")


def _service_account(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    name = spec.service_account_name
    if name and not policy.service_account_names.permits(name):
        what = f"spec.serviceAccountName {name!r} would mount that ServiceAccount's token in the model pods"
        yield _not_allowed(what, "serviceAccountNames")


def _claims(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    pvc = spec.cache.pvc if spec.cache is not None else None
    if pvc and not policy.claims.permits(pvc):
        yield _not_allowed(f"spec.cache.pvc mounts claim {pvc!r} read-write", "claims")
    uri = spec.model.uri
    if uri.startswith(PVC_SCHEME):
        claim = uri.removeprefix(PVC_SCHEME).split("/", 1)[0]
        if claim and not policy.claims.permits(claim):
            yield _not_allowed(f"model.uri mounts claim {claim!r}", "claims")


def _secrets(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    secret = spec.model.credentials_secret
    if secret and not policy.credentials_secrets.permits(secret):
        yield _not_allowed(f"model.credentialsSecret names Secret {secret!r}", "credentialsSecrets")
    if spec.auth is not None and not policy.api_key_secrets.permits(spec.auth.api_key_secret.name):
        name = spec.auth.api_key_secret.name
        yield _not_allowed(f"spec.auth.apiKeySecret names Secret {name!r}", "apiKeySecrets")
    for i, item in enumerate(spec.env):
        ref = _mapping(_mapping(item.get("valueFrom")).get("secretKeyRef"))
        if ref:
            name = str(ref.get("name") or "")
            if not policy.env_secrets.permits(name):
                yield _not_allowed(f"spec.env[{i}] ({item.get('name')}) reads Secret {name!r}", "envSecrets")


def _tolerations(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    for i, toleration in enumerate(spec.tolerations):
        key = str(toleration.get("key") or "")
        if not policy.toleration_keys.permits(key):
            what = f"taint {key}" if key else "every taint (it has no key)"
            yield _not_allowed(f"spec.tolerations[{i}] tolerates {what}", "tolerationKeys")


def _node_keys(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    for key in sorted(spec.node_selector):
        if not policy.node_label_keys.permits(key):
            yield _not_allowed(f"spec.nodeSelector selects node label {key}", "nodeLabelKeys")
    for key in _affinity_node_keys(spec.affinity or {}):
        if not policy.node_label_keys.permits(key):
            yield _not_allowed(f"spec.affinity selects nodes by {key}", "nodeLabelKeys")


def _affinity_node_keys(affinity: Mapping[str, Any]) -> list[str]:
    """The keys of every node term: required and preferred, matchExpressions and matchFields."""
    node = _mapping(affinity.get("nodeAffinity"))
    required = _mapping(node.get("requiredDuringSchedulingIgnoredDuringExecution")).get("nodeSelectorTerms") or []
    preferred = [
        _mapping(p).get("preference") for p in node.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    ]
    keys: list[str] = []
    for term in [*required, *preferred]:
        for part in ("matchExpressions", "matchFields"):
            keys += [str(_mapping(e).get("key") or "") for e in _mapping(term).get(part) or []]
    return keys


def _pod_labels(spec: ModelDeploymentSpec, policy: PodPolicy) -> Iterator[str]:
    for key in sorted(spec.pod_labels):
        if not policy.pod_label_keys.permits(key):
            what = f"spec.podLabels sets {key} (a label another Service selects joins its endpoints)"
            yield _not_allowed(what, "podLabelKeys")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
