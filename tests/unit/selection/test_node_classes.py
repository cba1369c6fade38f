"""Nodes grouped into classes of identical facts: judged once per class, decided as if node by node."""

from __future__ import annotations

import random

from selection_factories import CONFIG, facts, spec

from modeldeploy.selection import select_engine
from modeldeploy.selection.node_classes import count_by_text, group_nodes, member_names

MAPPINGS = CONFIG.label_mappings


def mixed_cluster(seed: int, size: int) -> list:
    """Pools of CPU, 1-GPU and 4-GPU nodes, some NotReady, cordoned or tainted, names shuffled across pools."""
    rng = random.Random(seed)
    nodes = []
    for _ in range(size):
        kind = rng.choice(["cpu", "gpu", "gpu4", "mac"])
        kw: dict = {"ready": rng.random() > 0.15, "cordoned": rng.random() < 0.1}
        if kind == "gpu":
            kw["gpus"] = 1
        elif kind == "gpu4":
            kw |= {"gpus": 4, "gfd": rng.random() < 0.7}
        elif kind == "mac":
            kw |= {"os": "darwin", "arch": "arm64"}
        if rng.random() < 0.1:
            kw["taints"] = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
        nodes.append(facts(f"node-{rng.randrange(10**6):06d}", **kw))
    return sorted(nodes, key=lambda f: f.name)


def test_a_pool_is_one_class_and_classes_keep_node_order() -> None:
    nodes = [facts("a", gpus=1), facts("b"), facts("c", gpus=1), facts("d", ready=False), facts("e")]
    classes = group_nodes(nodes, MAPPINGS)
    assert [c.members for c in classes] == [(0, 2), (1, 4), (3,)]
    assert [c.facts.name for c in classes] == ["a", "b", "d"]  # the first member represents the class
    assert member_names(nodes, [classes[0], classes[1]]) == ("a", "b", "c", "e")


def test_by_host_tells_every_node_apart() -> None:
    nodes = [facts(f"n{i}", gpus=1) for i in range(4)]
    assert len(group_nodes(nodes, MAPPINGS)) == 1
    assert [c.members for c in group_nodes(nodes, MAPPINGS, by_host=True)] == [(0,), (1,), (2,), (3,)]


def test_the_gpu_present_label_splits_a_class() -> None:
    """Placement pins to gpu.present only when every chosen node carries it, so it is part of the shape."""
    nodes = [facts("a", gpus=4), facts("b", gpus=4, gfd=False)]
    assert len(group_nodes(nodes, MAPPINGS)) == 2


def test_counts_follow_the_first_appearance_of_each_text() -> None:
    nodes = [facts(n) for n in "abcde"]
    classes = group_nodes(nodes, MAPPINGS, by_host=True)
    judged = [("CPU-only", classes[3]), ("not Ready", classes[1]), ("CPU-only", classes[0]), ("cordoned", classes[4])]
    assert count_by_text(judged, 5) == "5 nodes: 2 CPU-only, 1 not Ready, 1 cordoned"
    assert count_by_text([], 0) == "the cluster has no nodes"


def test_decisions_by_class_equal_decisions_node_by_node() -> None:
    """One node per class (what a node-by-node pass is) and pools give the same decisions, byte for byte."""
    for seed in range(6):
        nodes = mixed_cluster(seed, 80)
        pools = group_nodes(nodes, MAPPINGS)
        assert len(pools) < len(nodes)
        one_by_one = group_nodes(nodes, MAPPINGS, by_host=True)
        for s in (spec(), spec(gpus=2), spec(gpus=0), spec(tolerations=[{"key": "dedicated", "operator": "Exists"}])):
            for current in (None, "llama.cpp"):
                pooled = select_engine(s, nodes, CONFIG, current=current, classes=pools)
                single = select_engine(s, nodes, CONFIG, current=current, classes=one_by_one)
                assert pooled == single
                assert select_engine(s, nodes, CONFIG, current=current) == pooled
