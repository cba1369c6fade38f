"""Toleration, nodeSelector and required node-affinity matching follow Kubernetes semantics."""

from __future__ import annotations

import pytest
from selection_factories import cpu

from modeldeploy.selection.scheduling import (
    format_taint,
    matches_affinity,
    matches_node_selector,
    tolerates,
    untolerated_taints,
)
from modeldeploy.selection.types import Taint

GPU = Taint("nvidia.com/gpu", "present", "NoSchedule")
BARE = Taint("dedicated", None, "NoExecute")


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, GPU, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, GPU, True),  # empty effect matches all effects
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, GPU, False),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}, GPU, True),
        ({"key": "nvidia.com/gpu", "value": "present"}, GPU, True),  # operator defaults to Equal
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "other"}, GPU, False),
        ({"key": "nvidia.com/gpu", "operator": "Equal"}, GPU, False),  # empty value vs "present"
        ({"key": "dedicated", "operator": "Equal"}, BARE, True),  # empty value vs no value
        ({"key": "other", "operator": "Exists"}, GPU, False),
        ({"operator": "Exists"}, GPU, True),  # empty key + Exists tolerates everything
        ({"operator": "Exists", "effect": "NoExecute"}, BARE, True),
        ({"operator": "Exists", "effect": "NoSchedule"}, BARE, False),
        ({"operator": "Equal", "value": "present"}, GPU, False),  # empty key needs Exists
        ({"key": "nvidia.com/gpu", "operator": "Bogus"}, GPU, False),
    ],
)
def test_tolerates(toleration: dict, taint: Taint, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_only_blocking_effects_count() -> None:
    soft = Taint("soft", None, "PreferNoSchedule")
    node = cpu(taints=[{"key": "soft", "effect": "PreferNoSchedule"}, {"key": "dedicated", "effect": "NoExecute"}])
    assert soft in node.taints
    assert untolerated_taints(node, []) == (BARE,)
    assert untolerated_taints(node, [{"key": "dedicated", "operator": "Exists"}]) == ()


def test_format_taint() -> None:
    assert format_taint(GPU) == "nvidia.com/gpu=present:NoSchedule"
    assert format_taint(BARE) == "dedicated:NoExecute"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"pool": "inference"}, True),
        ({"pool": "inference", "kubernetes.io/os": "linux"}, True),
        ({"pool": "training"}, False),
        ({"missing": "x"}, False),
    ],
)
def test_node_selector(selector: dict, expected: bool) -> None:
    assert matches_node_selector(cpu(labels={"pool": "inference"}), selector) is expected


def affinity(*terms: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


@pytest.mark.parametrize(
    ("aff", "expected"),
    [
        (None, True),
        ({}, True),
        ({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}, True),
        (affinity({"matchExpressions": [{"key": "pool", "operator": "In", "values": ["inference"]}]}), True),
        (affinity({"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["inference"]}]}), False),
        (affinity({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}), True),
        (affinity({"matchExpressions": [{"key": "pool", "operator": "Exists"}]}), True),
        (affinity({"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}), False),
        (affinity({"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["3"]}]}), True),
        (affinity({"matchExpressions": [{"key": "rank", "operator": "Lt", "values": ["3"]}]}), False),
        (affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["cpu-1"]}]}), True),
        (affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}), False),
        # terms are ORed, expressions ANDed; an empty term matches nothing
        (
            affinity(
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["x"]}]},
                {"matchExpressions": [{"key": "rank", "operator": "Exists"}]},
            ),
            True,
        ),
        (
            affinity(
                {
                    "matchExpressions": [
                        {"key": "pool", "operator": "In", "values": ["inference"]},
                        {"key": "rank", "operator": "In", "values": ["1"]},
                    ]
                }
            ),
            False,
        ),
        (affinity({}), False),
    ],
)
def test_required_node_affinity(aff: dict | None, expected: bool) -> None:
    assert matches_affinity(cpu(labels={"pool": "inference", "rank": "5"}), aff) is expected
