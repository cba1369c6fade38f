"""The ValidatingAdmissionPolicy shipped with the chart: pod-shaping fields need the right to create pods.

A ModelDeployment's pods are created by the ReplicaSet and Job controllers under the operator's identity,
so Kubernetes never asks whether the ModelDeployment's author could have created them. This policy asks
at admission, without a webhook: where a create or update sets or changes a field that shapes the pods
(the image, the ServiceAccount, volumes, Secrets, scheduling, labels), the requester must be allowed to
create pods in that namespace (docs/security.md, "Admission"). Fields left as they were pass, so someone
with only ModelDeployment rights may still scale an object an administrator set up.

`make manifests` writes `policy_spec()` to charts/modeldeploy/files/ (the chart's template reads it), so
the field list lives here, beside the API it describes.
"""

from __future__ import annotations

from typing import Any

import yaml

from modeldeploy.api.v1alpha1 import GROUP, PLURAL

# (CEL variable, field as users name it, CEL "the field is set in {o}", CEL of its value in {o}); {o} is
# `object` or `oldObject`.
POD_SHAPING_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("images", "spec.images", "has({o}.spec.images) && size({o}.spec.images) > 0", "{o}.spec.images"),
    (
        "serviceAccountName",
        "spec.serviceAccountName",
        "has({o}.spec.serviceAccountName)",
        "{o}.spec.serviceAccountName",
    ),
    ("cachePvc", "spec.cache.pvc", "has({o}.spec.cache) && has({o}.spec.cache.pvc)", "{o}.spec.cache.pvc"),
    ("pvcUri", "spec.model.uri (pvc://)", "{o}.spec.model.uri.startsWith('pvc://')", "{o}.spec.model.uri"),
    (
        "credentialsSecret",
        "spec.model.credentialsSecret",
        "has({o}.spec.model.credentialsSecret)",
        "{o}.spec.model.credentialsSecret",
    ),
    ("auth", "spec.auth", "has({o}.spec.auth)", "{o}.spec.auth"),
    (
        "envValueFrom",
        "spec.env[].valueFrom",
        "has({o}.spec.env) && {o}.spec.env.exists(e, has(e.valueFrom))",
        "{o}.spec.env.filter(e, has(e.valueFrom))",
    ),
    (
        "tolerations",
        "spec.tolerations",
        "has({o}.spec.tolerations) && size({o}.spec.tolerations) > 0",
        "{o}.spec.tolerations",
    ),
    (
        "nodeSelector",
        "spec.nodeSelector",
        "has({o}.spec.nodeSelector) && size({o}.spec.nodeSelector) > 0",
        "{o}.spec.nodeSelector",
    ),
    ("affinity", "spec.affinity", "has({o}.spec.affinity) && size({o}.spec.affinity) > 0", "{o}.spec.affinity"),
    ("podLabels", "spec.podLabels", "has({o}.spec.podLabels) && size({o}.spec.podLabels) > 0", "{o}.spec.podLabels"),
    (
        "podAnnotations",
        "spec.podAnnotations",
        "has({o}.spec.podAnnotations) && size({o}.spec.podAnnotations) > 0",
        "{o}.spec.podAnnotations",
    ),
)

CAN_CREATE_PODS = "authorizer.group('').resource('pods').namespace(object.metadata.namespace).check('create').allowed()"
MESSAGE = (
    "setting or changing a field of a ModelDeployment that shapes its pods (images, serviceAccountName, "
    "cache.pvc, a pvc:// uri, credentialsSecret, auth, env valueFrom, tolerations, nodeSelector, affinity, podLabels, "
    "podAnnotations) needs the right to create pods in its namespace (docs/security.md, Admission)"
)


def set_or_changed(present: str, value: str) -> str:
    """CEL: the field is set, and this is a create, or the old object lacked it, or its value changed."""
    new, old = present.format(o="object"), present.format(o="oldObject")
    changed = f"{value.format(o='object')} != {value.format(o='oldObject')}"
    return f"{new} && (request.operation == 'CREATE' || !({old}) || {changed})"


def variables() -> list[dict[str, str]]:
    """One boolean variable per field, then `shaping`: the names of the fields this request sets or changes."""
    out = [{"name": var, "expression": set_or_changed(present, value)} for var, _, present, value in POD_SHAPING_FIELDS]
    listed = " + ".join(f"(variables.{var} ? ['{field}'] : [])" for var, field, _, _ in POD_SHAPING_FIELDS)
    return [*out, {"name": "shaping", "expression": listed}]


def policy_spec() -> dict[str, Any]:
    """The ValidatingAdmissionPolicy's spec (the chart adds its name, labels and the binding)."""
    return {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [PLURAL],
                }
            ]
        },
        "variables": variables(),
        "validations": [
            {
                "expression": f"size(variables.shaping) == 0 || {CAN_CREATE_PODS}",
                "message": MESSAGE,
                "messageExpression": "'spec fields that shape the pods the operator creates (' + "
                "variables.shaping.join(', ') + ') need the right to create pods in namespace ' + "
                "object.metadata.namespace + ' (docs/security.md, Admission)'",
                "reason": "Forbidden",
            }
        ],
    }


HEADER = "# Generated from operator/modeldeploy/api/admission.py by `make manifests`. Do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Expressions in double quotes (CEL's own quotes are single), each on one line."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if "'" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def policy_spec_yaml() -> str:
    return HEADER + yaml.dump(policy_spec(), Dumper=_Dumper, sort_keys=False, width=10_000)
