"""Scheduling merge: the engine's node rules and the user's fields both hold; nothing the user wrote is lost."""

from __future__ import annotations

from render_cases import (
    CONFIG,
    GPU_PRESENT,
    GPU_TOLERATION,
    LINUX,
    VLLM_SPEC,
    decision,
    gpu_placement,
    md,
    with_spec,
)

from modeldeploy.render import render
from modeldeploy.render.scheduling import merge_node_selector_terms, merge_tolerations
from modeldeploy.selection.types import Placement

ZONE_A = {"key": "zone", "operator": "In", "values": ["a"]}
ZONE_B = {"key": "zone", "operator": "In", "values": ["b"]}
HOST_FIELD = {"key": "metadata.name", "operator": "In", "values": ["n1"]}


def pod_spec(spec: dict, placement: Placement | None = None) -> dict:
    objs = render(md(spec), decision("vllm", placement or gpu_placement(1)), CONFIG)
    return objs[0]["spec"]["template"]["spec"]


def test_cross_product_ands_every_user_term_with_every_engine_term() -> None:
    engine = [{"matchExpressions": [LINUX, GPU_PRESENT]}, {"matchExpressions": [LINUX]}]
    user = [{"matchExpressions": [ZONE_A]}, {"matchExpressions": [ZONE_B], "matchFields": [HOST_FIELD]}]
    terms = merge_node_selector_terms(engine, user)
    assert len(terms) == 4
    for term in terms:
        keys = {e["key"] for e in term["matchExpressions"]}
        assert "kubernetes.io/os" in keys  # the engine rule holds in every alternative
        assert keys & {"zone"}  # and so does one of the user's
    assert [t.get("matchFields") for t in terms] == [None, [HOST_FIELD], None, [HOST_FIELD]]


def test_terms_alone_when_the_other_side_has_none() -> None:
    engine = [{"matchExpressions": [LINUX]}]
    assert merge_node_selector_terms(engine, []) == engine
    assert merge_node_selector_terms([], engine) == engine
    assert merge_node_selector_terms([], []) == []


def test_duplicate_expressions_are_merged_once() -> None:
    terms = merge_node_selector_terms([{"matchExpressions": [LINUX]}], [{"matchExpressions": [LINUX, ZONE_A]}])
    assert terms == [{"matchExpressions": [LINUX, ZONE_A]}]


def test_user_affinity_kept_and_required_terms_combined() -> None:
    preferred = [{"weight": 5, "preference": {"matchExpressions": [ZONE_B]}}]
    pod_anti = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"x": "y"}}}
        ]
    }
    pod_aff = {"preferredDuringSchedulingIgnoredDuringExecution": []}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [ZONE_A]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": preferred,
        },
        "podAntiAffinity": pod_anti,
        "podAffinity": pod_aff,
    }
    spec = pod_spec(with_spec(VLLM_SPEC, affinity=affinity, nodeSelector={"disk": "ssd"}))
    node = spec["affinity"]["nodeAffinity"]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [LINUX, GPU_PRESENT, ZONE_A]}
    ]
    assert spec["affinity"]["podAntiAffinity"] == pod_anti
    assert spec["affinity"]["podAffinity"] == pod_aff
    assert spec["nodeSelector"] == {"disk": "ssd"}


def test_user_preferred_only_still_gets_engine_required() -> None:
    preferred = [{"weight": 1, "preference": {"matchExpressions": [ZONE_A]}}]
    spec = pod_spec(
        with_spec(VLLM_SPEC, affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}})
    )
    node = spec["affinity"]["nodeAffinity"]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [LINUX, GPU_PRESENT]}]
    }
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == preferred


def test_tolerations_deduplicated_and_user_ones_kept() -> None:
    user = [
        {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
        {"effect": "NoSchedule", "operator": "Exists", "key": "nvidia.com/gpu"},  # same as the engine's
        {"operator": "Exists"},
    ]
    spec = pod_spec(with_spec(VLLM_SPEC, tolerations=user))
    assert spec["tolerations"] == [GPU_TOLERATION, user[0], {"operator": "Exists"}]
    assert merge_tolerations([], []) == []


def test_no_scheduling_fields_when_nothing_asked() -> None:
    spec = pod_spec(with_spec(VLLM_SPEC, tolerations=[]), Placement(node_selector_terms=(), tolerations=(), gpus=1))
    assert "affinity" not in spec and "tolerations" not in spec and "nodeSelector" not in spec


def test_engine_placement_is_not_mutated() -> None:
    placement = gpu_placement(1)
    before = repr(placement)
    pod_spec(with_spec(VLLM_SPEC, affinity={"nodeAffinity": {}}), placement)
    assert repr(placement) == before


def test_preferred_terms_of_the_placement_follow_the_users() -> None:
    from modeldeploy.render.scheduling import merge_affinity
    from modeldeploy.selection.types import Placement

    ours = {
        "weight": 40,
        "preference": {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["23033"]}]},
    }
    theirs = {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
    placement = Placement(node_selector_terms=(), tolerations=(), gpus=1, preferred_terms=(ours,))
    user = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [theirs]}}
    merged = merge_affinity(user, placement)
    assert merged is not None
    assert merged["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [theirs, ours]
    assert merge_affinity(None, Placement(node_selector_terms=(), tolerations=(), gpus=1)) is None
