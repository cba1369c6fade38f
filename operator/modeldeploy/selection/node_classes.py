"""Nodes grouped into classes of identical facts, so that selection costs O(node shapes), not O(nodes). Pure.

A cluster of 500 nodes is usually a few pools: every node of a pool has the same OS, GPUs, readiness,
cordon and taints, which is all the node rules read (node_rules.py), apart from names and per-node
labels. Those matter only to `spec.nodeSelector` and `spec.affinity` (which may name a host), so a
spec with either is judged node by node (`by_host`: each node its own class). The one label placement
reads (`gpu_present`, node_rules.placement_for) is part of the class, so a class's representative
answers for every member.

A class keeps its members' positions in the node list (sorted by name), so every reason built from
classes lists the same names, in the same order, and counts problems in the same order of first
appearance as a node-by-node pass would: the decisions and their reasons do not change, byte for byte.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from modeldeploy.config import LabelMappings
from modeldeploy.selection.types import NodeFacts


@dataclass(frozen=True, slots=True)
class NodeClass:
    """Nodes the node rules cannot tell apart: a representative and the members' positions."""

    facts: NodeFacts  # the first member (in node-list order): what the rules read of every member
    members: tuple[int, ...]  # positions in the node list, ascending

    @property
    def first(self) -> int:
        return self.members[0]


def shape(node: NodeFacts, mappings: LabelMappings, by_host: bool = False) -> tuple[object, ...]:
    """What the node rules read of a node; with `by_host`, also what a nodeSelector or affinity may read."""
    key: tuple[object, ...] = (
        node.os,
        node.gpus,
        node.apple_silicon,
        node.ready,
        node.unschedulable,
        node.taints,
        node.label(mappings.gpu_present),
        node.gpu_memory_mib,  # what memory_fit.py judges
        node.compute_capability,
        node.gpu_product,
        node.gpu_memory_label,  # where placement pins by memory (memory_fit._pinning)
        node.compute_labels,
    )
    if by_host:
        key += (node.name, node.labels)
    return key


def group_nodes(nodes: Sequence[NodeFacts], mappings: LabelMappings, by_host: bool = False) -> tuple[NodeClass, ...]:
    """The classes of `nodes`, ordered by their first member (so problems are counted in node order)."""
    return group_by_key(nodes, [shape(node, mappings, by_host) for node in nodes])


def group_by_key(nodes: Sequence[NodeFacts], keys: Sequence[Hashable]) -> tuple[NodeClass, ...]:
    """The classes of `nodes` whose `keys` (one per node, in order) are equal, ordered by first member.

    With the keys of `shape`, the classes of `group_nodes`; a caller that keeps each node's shape from one
    change of the node to the next (nodes_index.FactsMemory) passes a small number standing for it, so a
    regrouping after one node changed does not build and hash every node's shape again."""
    groups: dict[Hashable, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return tuple(NodeClass(nodes[members[0]], tuple(members)) for members in groups.values())


def member_names(nodes: Sequence[NodeFacts], classes: Sequence[NodeClass]) -> tuple[str, ...]:
    """The names of every member of `classes`, in node-list order."""
    if len(classes) == 1:
        return tuple(nodes[i].name for i in classes[0].members)
    return tuple(nodes[i].name for i in sorted(i for c in classes for i in c.members))


def count_by_text(judged: Sequence[tuple[str, NodeClass]], total: int, counts: bool = True) -> str:
    """'N nodes: a <text>, b <text>', texts in order of first appearance in the node list.

    Without `counts`: 'nodes: <text>, <text>', the distinct texts sorted, which depends only on which
    kinds of node exist, not on how many nodes each has (the operator's status: a node joining a pool
    does not rewrite it, docs/operator-at-scale.md).
    """
    if total == 0:
        return "the cluster has no nodes"
    if not counts:
        return "nodes: " + ", ".join(sorted({text for text, _ in judged}))
    tally: dict[str, int] = {}
    for text, cls in sorted(judged, key=lambda pair: pair[1].first):
        tally[text] = tally.get(text, 0) + len(cls.members)
    parts = ", ".join(f"{n} {text}" for text, n in tally.items())
    return f"{total} node{'s' if total != 1 else ''}: {parts}"
