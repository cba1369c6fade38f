"""What the operator knows about nodes: a Kopf index of NodeFacts, and change detection.

Why an index and not a LIST per reconcile: Kopf keeps one watch on Nodes and the index in memory, so a
reconcile reads all facts for free, and Kopf holds every handler back until the index is filled at
start-up (a decision is never taken on a half-known cluster).

Why NodeFacts and not Node bodies: nodes post heartbeats (status conditions' timestamps, images) every few
seconds; facts are what selection reads, so comparing facts tells a real change (a GPU node joined, one
went NotReady or was cordoned) from noise, and only a real change re-evaluates ModelDeployments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modeldeploy.config import LabelMappings
from modeldeploy.selection.node_classes import NodeClass, group_by_key, shape
from modeldeploy.selection.nodes import node_facts
from modeldeploy.selection.types import NodeFacts

ALL = "all"  # the single index key: selection always looks at every node


def index_entry(body: Mapping[str, Any], mappings: LabelMappings) -> dict[str, NodeFacts]:
    """What the Kopf index keeps for one Node: {ALL: facts}."""
    return {ALL: node_facts(body, mappings)}


def snapshot(index: Mapping[str, Iterable[NodeFacts]] | None) -> tuple[NodeFacts, ...]:
    """All known facts, sorted by node name, copied out of the live index (safe to hand to a thread)."""
    if not index:
        return ()
    return tuple(sorted(index.get(ALL, ()), key=lambda f: f.name))


class FactsMemory:
    """The last facts seen per node, to tell real changes from heartbeats, and a version of them all.

    `version` moves on every real change, so a decision made at one version is reused until the nodes
    change (reconciles that only follow a Deployment's status do not run the selection again), and the
    sorted snapshot and its classes of identical nodes are built once per version, not once per reconcile.

    `kinds_version` moves only when the set of node kinds changes (a class appears or its last member
    goes): a decision that reads kinds only (plan.still_holds) holds across the churn inside a pool.
    """

    # Distinct shapes remembered before the table starts over (a cluster has a few; this bounds a long life).
    SHAPES_MAX = 4096

    def __init__(self) -> None:
        self._facts: dict[str, NodeFacts] = {}
        self.version = 0
        # Per node, the facts its shape was taken from and the number standing for that shape; the numbers
        # hold for one label mapping (`_shaped_for`). Regrouping after one node changed then shapes one node.
        self._shape_ids: dict[str, tuple[NodeFacts, int]] = {}
        self._shapes: dict[tuple[object, ...], int] = {}
        self._shape_list: list[tuple[object, ...]] = []  # the shapes by their numbers
        self._shaped_for: LabelMappings | None = None
        self._snapshot: tuple[int, tuple[NodeFacts, ...]] = (0, ())
        self._classes: tuple[int, LabelMappings | None, tuple[NodeClass, ...]] = (0, None, ())
        self._kinds: frozenset[tuple[object, ...]] = frozenset()
        self.kinds_version = 0

    def observe(self, name: str, facts: NodeFacts | None) -> bool:
        """Record a node's facts (None: deleted); True when they differ from what was known."""
        before = self._facts.get(name)
        if facts is None:
            changed = self._facts.pop(name, None) is not None
            self._shape_ids.pop(name, None)
        else:
            changed = before != facts
            if changed:
                self._facts[name] = facts  # an equal copy keeps the object its shape was taken from
        if changed:
            self.version += 1
        return changed

    def snapshot(self) -> tuple[NodeFacts, ...]:
        """All known facts, sorted by node name (built once per version)."""
        if self._snapshot[0] != self.version:
            self._snapshot = (self.version, tuple(sorted(self._facts.values(), key=lambda f: f.name)))
        return self._snapshot[1]

    def classes(self, mappings: LabelMappings) -> tuple[NodeClass, ...]:
        """The snapshot grouped into classes of identical nodes (node_classes.py), once per version."""
        version, mapped, classes = self._classes
        if version != self.version or mapped is not mappings:
            if mappings is not self._shaped_for or len(self._shapes) > self.SHAPES_MAX:
                self._shape_ids.clear()  # numbers hold for one mapping; start over before this pass
                self._shapes.clear()
                self._shape_list.clear()
                self._shaped_for = mappings
            nodes = self.snapshot()
            numbers = [self._shape_id(node, mappings) for node in nodes]
            classes = group_by_key(nodes, numbers)
            self._classes = (self.version, mappings, classes)
            kinds = frozenset(self._shape_list[n] for n in set(numbers))
            if kinds != self._kinds or mapped is not mappings:
                self._kinds = kinds
                self.kinds_version = self.version
        return classes

    def _shape_id(self, node: NodeFacts, mappings: LabelMappings) -> int:
        """The number standing for the node's shape (node_classes.shape): equal shapes, equal numbers."""
        known = self._shape_ids.get(node.name)
        if known is not None and known[0] is node:
            return known[1]
        found = shape(node, mappings)
        number = self._shapes.get(found)
        if number is None:
            number = self._shapes[found] = len(self._shape_list)
            self._shape_list.append(found)
        self._shape_ids[node.name] = (node, number)
        return number

    def __len__(self) -> int:
        return len(self._facts)
