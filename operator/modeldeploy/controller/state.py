"""What the operator's handlers share, kept in Kopf's memo (so tests and `run.main` can inject it), and the
resources they watch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import liveness, nodes_index
from modeldeploy.controller import metrics as metrics_mod
from modeldeploy.controller.children import Children
from modeldeploy.controller.event_poster import EventPoster
from modeldeploy.controller.kube import LIMIT, AsyncKube
from modeldeploy.controller.plan import Memory
from modeldeploy.controller.serializer import Serializer
from modeldeploy.render.labels import MANAGED_BY, MANAGER

MD = (GROUP, VERSION, PLURAL)


OURS = {MANAGED_BY: MANAGER}


@dataclass
class State:
    """What the handlers share, kept in Kopf's memo (so tests and `run.main` can inject it)."""

    config: OperatorConfig
    kube: AsyncKube | None = None
    metrics: metrics_mod.Metrics = field(default_factory=metrics_mod.Metrics)
    serializer: Serializer = field(default_factory=Serializer)
    facts: nodes_index.FactsMemory = field(default_factory=nodes_index.FactsMemory)
    memory: Memory = field(default_factory=Memory)
    children: Children = field(default_factory=Children)  # autoscaling/routing children (child_handlers.py)
    served: dict[tuple[str, str], str] = field(default_factory=dict)  # model name each routes (child_handlers.py)
    watch: liveness.WatchClock = field(default_factory=liveness.WatchClock)
    node_changes: set[str] = field(default_factory=set)  # nodes whose facts the index saw change
    sweep: asyncio.Task[None] | None = None  # re-evaluation after a re-list of nodes (node_event)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # consecutive failed reconciles
    retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)  # pending retries
    metrics_runner: Any = None
    events: EventPoster | None = None  # posts the reconciles' Events (event_poster.py), from start-up
    # Reconciles at once (controller/retries.py): as many as the API client's connections, so a status
    # write never queues behind the applies of objects that arrived after it (docs/operator-at-scale.md).
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LIMIT))
    busy: int = 0  # reconciles holding a slot
    since_release: int = 0  # reconciles since memory was last given back (retries.release_after_burst)
    release: asyncio.Task[None] | None = None


def state_of(memo: Any) -> State:
    return memo["modeldeploy"]
