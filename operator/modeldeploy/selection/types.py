"""Values passed between node reading, selection and rendering.

Frozen dataclasses rather than pydantic models: they never come from users, so they need no
validation, and being hashable and immutable keeps the pure functions honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Taint:
    """A node taint (key, value, effect)."""

    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class NodeFacts:
    """What the selection needs to know about one node, read from its Node object, never guessed."""

    name: str
    os: str | None
    arch: str | None
    gpus: int  # CUDA GPUs: allocatable count, else the count label, else 1 when only `gpu.present`
    gpu_memory_mib: int | None
    gpu_product: str | None
    compute_capability: tuple[int, int] | None
    apple_silicon: bool
    ready: bool
    unschedulable: bool
    taints: tuple[Taint, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs, hashable
    # The labels that gave gpu_memory_mib (in MiB) and compute_capability (major, minor), so placement
    # can pin by them; None when the fact came from a label no affinity can compare (AMD's "16G").
    gpu_memory_label: str | None = None
    compute_labels: tuple[str, str] | None = None

    def label(self, key: str) -> str | None:
        """The value of one label, or None."""
        for k, v in self.labels:
            if k == key:
                return v
        return None


@dataclass(frozen=True)
class EngineCandidate:
    """One engine as the selection judged it: the `status.selection[]` entry."""

    engine: str  # the engine's name (engines.registry)
    eligible: bool
    reasons: tuple[str, ...]
    nodes: tuple[str, ...]  # names of the usable nodes that satisfy the engine's node rules

    def as_status(self) -> dict[str, Any]:
        """The JSON shape documented for `status.selection[]` and `select -o json`."""
        return {
            "engine": self.engine,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
            "nodes": len(self.nodes),
        }

    def status_entry(self) -> dict[str, Any]:
        """The `status.selection[]` entry the operator writes: no node count, which every node joining or
        leaving would move, rewriting the status of every ModelDeployment (docs/operator-at-scale.md)."""
        return {"engine": self.engine, "eligible": self.eligible, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Placement:
    """Where and how the chosen engine runs; the renderer turns this into pod scheduling fields.

    `node_selector_terms` are the required node-affinity terms (ORed) that express the engine's node
    rules by labels, so that adding a similar node does not change the rendered Deployment.
    """

    node_selector_terms: tuple[dict[str, Any], ...]
    tolerations: tuple[dict[str, Any], ...]  # what the engine needs (e.g. the nvidia.com/gpu taint)
    gpus: int  # nvidia.com/gpu limit per replica; 0 = CPU only
    gpu_resource: str = "nvidia.com/gpu"
    apple_silicon: bool = False
    # Preferred node-affinity terms (weight, preference): llama.cpp toward the nodes whose GPUs hold the
    # most of the model (docs/memory-placement.md, "llama.cpp").
    preferred_terms: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Decision:
    """The outcome of selection for one ModelDeployment and one set of nodes."""

    engine: str | None  # the chosen engine's name; None: nothing can run
    candidates: tuple[EngineCandidate, ...]
    placement: Placement | None  # None when engine is None
    summary: str  # one sentence: why this engine, or why none
    warnings: tuple[str, ...] = field(default=())  # e.g. the seed's llama.cpp common issues
    # Stability (docs/selection.md): the running engine was kept although an earlier one in the order could run.
    kept_current: bool = False
    # The running engine (`current`) can no longer run and reselection was not asked for: engine and
    # placement are None so nothing is rendered; the operator leaves the Deployment as it is, keeps
    # status.engine, and reports Degraded with `summary` (also in `warnings`).
    current_impossible: bool = False

    def as_json(self) -> dict[str, Any]:
        """The stable `modeldeploy select -o json` document."""
        return {
            "engine": self.engine,
            "candidates": [c.as_status() for c in self.candidates],
        }
