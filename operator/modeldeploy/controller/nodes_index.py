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
from modeldeploy.selection.node_classes import NodeClass, group_nodes, shape
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

    def __init__(self) -> None:
        self._facts: dict[str, NodeFacts] = {}
        self.version = 0
        self._snapshot: tuple[int, tuple[NodeFacts, ...]] = (0, ())
        self._classes: tuple[int, LabelMappings | None, tuple[NodeClass, ...]] = (0, None, ())
        self._kinds: frozenset[tuple[object, ...]] = frozenset()
        self.kinds_version = 0

    def observe(self, name: str, facts: NodeFacts | None) -> bool:
        """Record a node's facts (None: deleted); True when they differ from what was known."""
        before = self._facts.get(name)
        if facts is None:
            changed = self._facts.pop(name, None) is not None
        else:
            self._facts[name] = facts
            changed = before != facts
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
            classes = group_nodes(self.snapshot(), mappings)
            self._classes = (self.version, mappings, classes)
            kinds = frozenset(shape(c.facts, mappings) for c in classes)
            if kinds != self._kinds or mapped is not mappings:
                self._kinds = kinds
                self.kinds_version = self.version
        return classes

    def __len__(self) -> int:
        return len(self._facts)
