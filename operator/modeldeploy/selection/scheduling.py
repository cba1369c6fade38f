"""The scheduler's own matching rules, re-implemented so selection agrees with where pods can land.

If selection counted a node the scheduler would refuse (an untolerated taint, a nodeSelector mismatch), the
operator would pick an engine whose pods then stay Pending. These functions follow Kubernetes semantics:
`ToleratesTaint` (k8s.io/api/core/v1/toleration.go) and required node affinity (nodeSelectorTerms ORed,
matchExpressions ANDed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modeldeploy.selection.types import NodeFacts, Taint

# PreferNoSchedule only lowers a score; these two keep pods off a node.
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes `Toleration.ToleratesTaint`)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    key = toleration.get("key") or ""
    if key and key != taint.key:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        # An empty key with Exists tolerates every taint; a key with Exists tolerates any value.
        return True
    if operator == "Equal":
        # Empty key is only valid with Exists; with Equal it matches no real taint (taint keys are non-empty).
        return bool(key) and (toleration.get("value") or "") == (taint.value or "")
    return False


def untolerated_taints(node: NodeFacts, tolerations: Iterable[Mapping[str, Any]]) -> tuple[Taint, ...]:
    """The node's NoSchedule/NoExecute taints that none of `tolerations` tolerates."""
    tols = list(tolerations)
    return tuple(t for t in node.taints if t.effect in BLOCKING_EFFECTS and not any(tolerates(x, t) for x in tols))


def format_taint(taint: Taint) -> str:
    """`key=value:Effect` (or `key:Effect`), as kubectl prints taints."""
    return f"{taint.key}={taint.value}:{taint.effect}" if taint.value else f"{taint.key}:{taint.effect}"


def matches_node_selector(node: NodeFacts, selector: Mapping[str, str]) -> bool:
    """Whether the node's labels carry every key=value of a PodSpec nodeSelector."""
    return all(node.label(k) == v for k, v in selector.items())


def _expression_holds(value: str | None, expr: Mapping[str, Any]) -> bool:
    operator = expr.get("operator")
    values = [str(v) for v in expr.get("values") or ()]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def _term_holds(node: NodeFacts, term: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # Kubernetes: an empty term matches no objects
    for expr in expressions:
        if not _expression_holds(node.label(expr.get("key", "")), expr):
            return False
    for expr in fields:
        value = node.name if expr.get("key") == "metadata.name" else None
        if not _expression_holds(value, expr):
            return False
    return True


def required_node_terms(affinity: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The required nodeSelectorTerms of a PodSpec affinity (empty when there are none)."""
    node_affinity = (affinity or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return list(required.get("nodeSelectorTerms") or [])


def matches_affinity(node: NodeFacts, affinity: Mapping[str, Any] | None) -> bool:
    """Whether the node satisfies the required node affinity (any term; no terms: any node)."""
    terms = required_node_terms(affinity)
    return not terms or any(_term_holds(node, t) for t in terms)
