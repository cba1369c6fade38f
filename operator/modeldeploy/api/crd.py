"""Generate the ModelDeployment CRD from the pydantic models.

Pydantic emits JSON Schema; the apiserver wants a *structural* OpenAPI v3 schema: no `$ref`, no
`anyOf` with null, a type on every node, no `additionalProperties: false`. This module converts one into
the other and adds what only Kubernetes knows about: int-or-string, preserved unknown fields, list
types, CEL rules and printer columns. The CEL rules are built from the same facts the Python
validators use (the quantization tables in api/quantization.py, each engine's formats in the catalogue
the caller hands over), so the apiserver and the CLI refuse exactly the same pairs; a newly registered
engine gets its rule too.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from modeldeploy.api import quantization as quant
from modeldeploy.api import v1alpha1 as api
from modeldeploy.formats import EngineCatalogue, ModelFormat

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"

# JSON Schema keywords the apiserver's OpenAPI v3 subset accepts and we keep.
_KEEP = {
    "type",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "format",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-validations",
}


class SchemaError(ValueError):
    """The models produced a schema the converter cannot make structural."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`, keeping the referring node's own description over the definition's."""
    if "$ref" in node:
        target: dict[str, Any] = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return target
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one JSON Schema node (recursively) into a structural OpenAPI node."""
    node = _resolve(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
        if "description" in node:
            out["description"] = node["description"]
        return out
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            inner = _resolve(options[0], defs)
            return _structural({**inner, **merged}, defs)
        if node.get("x-kubernetes-preserve-unknown-fields"):
            out = {"x-kubernetes-preserve-unknown-fields": True}
            if "description" in node:
                out["description"] = node["description"]
            return out
        raise SchemaError(f"union without a Kubernetes equivalent: {node}")
    out = {k: v for k, v in node.items() if k in _KEEP}
    if "default" in out and out["default"] is None:
        del out["default"]  # "unset" is the absence of the field, never a null default
    if isinstance(out.get("additionalProperties"), bool):
        del out["additionalProperties"]  # structural schemas spell "any keys" as preserve-unknown-fields
    if "properties" in out:
        out["properties"] = {name: _structural(sub, defs) for name, sub in out["properties"].items()}
        out.setdefault("type", "object")
    if "propertyNames" in node:
        # A map whose keys are an enum: Kubernetes has no propertyNames, so spell each key out.
        value_schema = _structural(node.get("additionalProperties") or {"type": "string"}, defs)
        out["properties"] = {key: copy.deepcopy(value_schema) for key in node["propertyNames"]["enum"]}
        out.pop("additionalProperties", None)
        out["type"] = "object"
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"], defs)
        out["type"] = "object"
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
        out["type"] = "array"
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        if "enum" in out:
            out["type"] = "string"
        else:
            raise SchemaError(f"schema node without a type: {node}")
    return out


def _cel_list(values: frozenset[str] | set[str] | list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in sorted(values)) + "]"


def _model_rules() -> list[dict[str, str]]:
    """CEL on `spec.model`: format/quantization pairs that can never load (the tables of api/quantization.py)."""
    q = "self.quantization.lowerAscii()"
    pre = "!has(self.quantization) || "
    rules = [
        {
            "rule": f"{pre}self.format != 'ggufv2' || !({q} in {_cel_list(quant.GGUF_REFUSED)})",
            "message": f"model.quantization for ggufv2 must be {quant.allowed_text(ModelFormat.GGUFV2)}",
            "fieldPath": ".quantization",
            "reason": "FieldValueInvalid",
        }
    ]
    for fmt, accepted in quant.ACCEPTED.items():
        rules.append(
            {
                "rule": f"{pre}self.format != '{fmt.value}' || {q} in {_cel_list(set(accepted))}",
                "message": f"model.quantization for {fmt.value} must be {quant.allowed_text(fmt)}",
                "fieldPath": ".quantization",
                "reason": "FieldValueInvalid",
            }
        )
    return rules


def _path_rules() -> list[dict[str, str]]:
    """CEL on `spec.model`: file and multimodalProjector stay inside the repository (api.escapes_directory)."""
    rules = []
    for field, label in (("file", "model.file"), ("multimodalProjector", "model.multimodalProjector")):
        f = f"self.{field}"
        rules.append(
            {
                "rule": f"!has({f}) || !({f}.startsWith('/') || {f} == '..' || {f}.startsWith('../') "
                f"|| {f}.endsWith('/..') || {f}.contains('/../'))",
                "message": f"{label} must be a relative path inside the repository, without '..'",
                "fieldPath": f".{field}",
                "reason": "FieldValueInvalid",
            }
        )
    return rules


def _engine_rules(engines: EngineCatalogue) -> list[dict[str, str]]:
    """CEL on `spec`: a named engine must be able to load the model's format at all (one rule per engine)."""
    rules = []
    for name in engines.names():
        formats = sorted(f.value for f in engines.formats_of(name))
        rules.append(
            {
                "rule": f"!has(self.engine) || !has(self.engine.name) || self.engine.name != '{name}' "
                f"|| self.model.format in {_cel_list(formats)}",
                "messageExpression": f"'engine.name {name} cannot load model.format ' + self.model.format"
                f" + ' (it loads: {', '.join(formats)})'",
                "fieldPath": ".engine.name",
                "reason": "FieldValueInvalid",
            }
        )
    return rules


def _env_item_schema(item: dict[str, Any]) -> dict[str, Any]:
    """An env item keeps unknown fields but declares `name`: CEL cannot read fields the schema does not name."""
    return {
        **item,
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "description": "Name of the variable."}},
    }


def _gpu_env_rule() -> dict[str, str]:
    """CEL on `spec.env`: the GPU isolation variables are the operator's (api.gpu_env_refused says the same)."""
    prefixes = " || ".join(f"e.name.startsWith('{p}')" for p in api.GPU_ENV_PREFIXES)
    return {
        "rule": f"self.all(e, !({prefixes} || e.name in {_cel_list(list(api.GPU_ENV_NAMES))}))",
        "message": api.GPU_ENV_ALLOWED_TEXT,
        "reason": "FieldValueForbidden",
    }


def spec_schema(engines: EngineCatalogue) -> dict[str, Any]:
    """The structural schema of `spec`, with Kubernetes extensions and CEL rules."""
    raw = api.ModelDeploymentSpec.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    schema.pop("title", None)
    schema["description"] = "ModelDeploymentSpec: the model to serve and how; the engine is chosen by the operator."
    # No CEL rule reads engine.args: its values are free-form (x-kubernetes-preserve-unknown-fields), which
    # CEL cannot type, and the apiserver refuses to compile such a rule. The refused keys are the
    # operator's to refuse (api.refused_args_problem, select, render: docs/security.md).
    schema["x-kubernetes-validations"] = _engine_rules(engines)
    props = schema["properties"]
    props["model"]["x-kubernetes-validations"] = _model_rules() + _path_rules()
    props["engine"]["properties"]["preference"]["x-kubernetes-list-type"] = "set"
    props["cache"]["x-kubernetes-validations"] = [
        {
            "rule": "(has(self.pvc) ? 1 : 0) + (has(self.emptyDir) ? 1 : 0) + (has(self.shared) ? 1 : 0) == 1",
            "message": "cache needs exactly one of pvc, emptyDir or shared",
        }
    ]
    props["engine"]["properties"]["args"]["maxProperties"] = 128
    props["env"]["items"] = _env_item_schema(props["env"]["items"])
    props["env"]["x-kubernetes-validations"] = [_gpu_env_rule()]
    props["images"] = {
        "type": "object",
        "description": props["images"]["description"],
        "properties": {
            key: {"type": "string", "minLength": 1, "description": f"Image for {key}, replacing the operator's."}
            for key in engines.image_keys()
        },
    }
    return schema


def status_schema() -> dict[str, Any]:
    """The structural schema of `status` (written by the operator through the status subresource)."""
    raw = api.ModelDeploymentStatus.model_json_schema(by_alias=True, mode="serialization")
    schema = _structural(raw, raw.get("$defs", {}))
    schema["description"] = "What the operator observed and decided."
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    # Kopf keeps its handler progress here (not in annotations), so GitOps tools see no drift.
    schema["properties"]["kopf"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "Handler bookkeeping of the operator framework (Kopf).",
    }
    return schema


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def build_crd(engines: EngineCatalogue) -> dict[str, Any]:
    """The whole CustomResourceDefinition object, its engine enums and CEL rules from `engines` (the caller's
    registry: the API does not import the engines)."""
    api.use_engines(engines)  # the models' engine enums are read from the catalogue while their schema is built
    root = {
        "type": "object",
        "description": "ModelDeployment deploys one LLM; the operator picks the engine (vLLM, SGLang, llama.cpp, "
        "transformers, MLX) by Xinference's rules against the cluster's nodes and explains why in status.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec_schema(engines),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS-1035 label (lower case, starts with a letter, at most 63 "
                "characters): it names the Service",
            }
        ],
    }
    columns = [
        {"name": "Engine", "type": "string", "jsonPath": ".status.engine", "description": "Chosen engine."},
        {"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "readyReplicas/replicas."},
        {
            "name": "Model",
            "type": "string",
            "jsonPath": ".status.model.summary",
            "description": "The shared model cache: Pending, Downloading 42%, Ready or Failed.",
        },
        {
            "name": "Endpoint",
            "type": "string",
            "jsonPath": ".status.endpoint",
            "priority": 1,
            "description": "OpenAI-compatible base URL.",
        },
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "description": "Why it is not ready."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _strip_titles(root)},
                }
            ],
        },
    }


def crd_yaml(engines: EngineCatalogue) -> str:
    """The CRD as the YAML committed in `crds/` (deterministic)."""
    header = "# Generated by `modeldeploy crd` from operator/modeldeploy/api/v1alpha1.py. Do not edit.\n"
    return header + str(yaml.safe_dump(build_crd(engines), sort_keys=False, width=120))
