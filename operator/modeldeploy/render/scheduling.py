"""Pod scheduling fields: the engine's Placement merged with the user's nodeSelector/tolerations/affinity.

The rule is "both hold, nothing dropped". Kubernetes ORs the terms of a required node affinity and ANDs
the expressions inside one term, so to require (any user term) AND (any engine term) every user term is
combined with every engine term (the cross product), each combined term holding the expressions of both.
Everything else the user wrote (preferred terms, pod affinity and anti-affinity, nodeSelector, their
tolerations) is kept as written, only put in a canonical key order so the output is byte-stable.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modeldeploy.selection.types import Placement

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
TERMS = "nodeSelectorTerms"
_TERM_LISTS = ("matchExpressions", "matchFields")
_TOLERATION_ORDER = ("key", "operator", "value", "effect", "tolerationSeconds")


def canonical(value: Any) -> Any:
    """A deep copy with dict keys sorted; list order is kept (it can mean something, e.g. term order).

    User-written structures reach us in whatever key order the YAML file or the apiserver used; sorting
    keys makes the rendered bytes depend on content only.
    """
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return copy.deepcopy(value)


def _fingerprint(value: Any) -> str:
    """Content identity for de-duplication (never used for output order)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _dedupe(items: Iterable[Any]) -> list[Any]:
    """Items in first-seen order, later duplicates (by content) dropped."""
    seen: set[str] = set()
    out: list[Any] = []
    for item in items:
        fp = _fingerprint(item)
        if fp not in seen:
            seen.add(fp)
            out.append(item)
    return out


def _and_terms(engine_term: Mapping[str, Any], user_term: Mapping[str, Any]) -> dict[str, Any]:
    """One NodeSelectorTerm requiring both: the engine's expressions first, then the user's."""
    merged: dict[str, Any] = {}
    for key in _TERM_LISTS:
        items = _dedupe([*engine_term.get(key, []), *user_term.get(key, [])])
        if items:
            merged[key] = items
    # Unknown keys in a user term (a future API field) are kept, not dropped.
    for key in sorted(set(user_term) - set(_TERM_LISTS)):
        merged[key] = user_term[key]
    return merged


def merge_node_selector_terms(
    engine_terms: Sequence[Mapping[str, Any]], user_terms: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Required terms such that an engine term AND a user term both hold (cross product of the two ORs).

    With no user terms the engine's stand alone, and the reverse. Order: for each engine term, each user
    term, which keeps the engine's preference order first and is stable for the same input.
    """
    engine = [canonical(t) for t in engine_terms]
    user = [canonical(t) for t in user_terms]
    if not user:
        return engine
    if not engine:
        return user
    return _dedupe(_and_terms(e, u) for e in engine for u in user)


def merge_affinity(user_affinity: Mapping[str, Any] | None, placement: Placement) -> dict[str, Any] | None:
    """The pod affinity: the user's, with its required node terms ANDed with the engine's.

    Returns None when neither side asks for anything, so the field is left out of the pod spec.
    """
    affinity = canonical(user_affinity or {})
    node_affinity = affinity.get("nodeAffinity") or {}
    required = node_affinity.get(REQUIRED) or {}
    terms = merge_node_selector_terms(placement.node_selector_terms, required.get(TERMS) or [])
    if terms:
        required = {**required, TERMS: terms}
        node_affinity = {**node_affinity, REQUIRED: required}
    if placement.preferred_terms:
        # The user's preferences first, then the engine's (docs/memory-placement.md, "llama.cpp").
        preferred = _dedupe([*(node_affinity.get(PREFERRED) or []), *(canonical(t) for t in placement.preferred_terms)])
        node_affinity = {**node_affinity, PREFERRED: preferred}
    if node_affinity:
        # nodeAffinity first for readability, then the user's other kinds in key order.
        affinity = {
            "nodeAffinity": canonical(node_affinity),
            **{k: v for k, v in affinity.items() if k != "nodeAffinity"},
        }
    return affinity or None


def _ordered_toleration(toleration: Mapping[str, Any]) -> dict[str, Any]:
    """Toleration keys in the order Kubernetes documents them, anything else after, sorted."""
    out = {k: canonical(toleration[k]) for k in _TOLERATION_ORDER if k in toleration}
    out.update({k: canonical(toleration[k]) for k in sorted(toleration) if k not in out})
    return out


def merge_tolerations(
    engine_tolerations: Sequence[Mapping[str, Any]], user_tolerations: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The engine's tolerations, then every user toleration not already present (by content)."""
    return _dedupe(_ordered_toleration(t) for t in [*engine_tolerations, *user_tolerations])


def scheduling_fields(
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    affinity: Mapping[str, Any] | None,
    placement: Placement,
) -> dict[str, Any]:
    """The pod-spec keys `nodeSelector`, `affinity`, `tolerations`, each present only when non-empty.

    The user's nodeSelector is passed through as is: Kubernetes already ANDs it with node affinity.
    """
    fields: dict[str, Any] = {}
    if node_selector:
        fields["nodeSelector"] = {k: node_selector[k] for k in sorted(node_selector)}
    merged_affinity = merge_affinity(affinity, placement)
    if merged_affinity:
        fields["affinity"] = merged_affinity
    merged_tolerations = merge_tolerations(placement.tolerations, tolerations)
    if merged_tolerations:
        fields["tolerations"] = merged_tolerations
    return fields
