"""Nodes of one pool are judged once; what tells them apart (names, per-node labels) still counts."""

from __future__ import annotations

from selection_factories import CONFIG, gpu, spec

from modeldeploy.selection import select_engine
from modeldeploy.selection.node_rules import tier_problems


def test_a_pool_of_identical_nodes_all_count() -> None:
    pool = [gpu(f"gpu-{i}", gpus=2) for i in range(50)]
    decision = select_engine(spec(), pool, CONFIG)
    chosen = next(c for c in decision.candidates if c.engine == decision.engine)
    assert len(chosen.nodes) == 50


def test_a_host_named_by_node_selector_is_told_apart_from_its_twins() -> None:
    pool = [gpu("gpu-a", gpus=2), gpu("gpu-b", gpus=2), gpu("gpu-c", gpus=2)]
    decision = select_engine(spec(nodeSelector={"kubernetes.io/hostname": "gpu-b"}), pool, CONFIG)
    chosen = next(c for c in decision.candidates if c.engine == decision.engine)
    assert chosen.nodes == ("gpu-b",)


def test_affinity_by_name_is_told_apart_too() -> None:
    pool = [gpu("gpu-a", gpus=2), gpu("gpu-b", gpus=2)]
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-a"]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    decision = select_engine(spec(affinity=affinity), pool, CONFIG)
    chosen = next(c for c in decision.candidates if c.engine == decision.engine)
    assert chosen.nodes == ("gpu-a",)


def test_pool_judgement_equals_one_by_one() -> None:
    from modeldeploy.engines.registry import get
    from modeldeploy.selection.node_rules import node_problem

    nodes = [gpu("g1", gpus=1), gpu("g2", gpus=4), gpu("g3", gpus=4, cordoned=True), gpu("g4", gpus=4, ready=False)]
    s = spec(gpus=2)
    for need in (*get("vllm").node_needs(2), *get("llama.cpp").node_needs(None)):
        assert tier_problems(nodes, s, need, CONFIG.label_mappings) == [
            node_problem(n, s, need, CONFIG.label_mappings) for n in nodes
        ]
