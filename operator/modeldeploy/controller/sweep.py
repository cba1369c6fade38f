"""Re-evaluating the ModelDeployments after the nodes changed: once per burst, a few at a time.

Node changes reach ModelDeployments through in-process calls, not writes (an annotation per object
would be churn for GitOps tools; Kopf daemons and timers would put a finalizer on every object).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from modeldeploy.controller.plan import still_holds
from modeldeploy.controller.retries import run_reconcile
from modeldeploy.controller.state import State, state_of

SWEEP_DELAY_S = 1.0  # a sweep starts once the nodes have not changed for this long...


SWEEP_MAX_DELAY_S = 10.0  # ...or once they have kept changing for this long


SWEEP_WORKERS = 8  # re-evaluations at once (each is a reconcile; most write nothing)


def stale_plans(state: State) -> list[tuple[str, str]]:
    """The ModelDeployments whose decision the node facts no longer give: those that read a node that
    changed, and all of them once the set of node kinds changed (plan.still_holds). Churn inside a pool
    (nodes of a kind joining, losing their not-ready taint) sweeps none."""
    state.facts.classes(state.config.label_mappings)  # brings kinds_version up to the current facts
    version, kinds = state.facts.version, state.facts.kinds_version
    return sorted(k for k, plan in state.memory.plans.items() if not still_holds(plan, version, kinds))


def schedule_sweep(memo: Any, indexes: Mapping[str, Any], logger: logging.Logger) -> None:
    """Once a burst of node changes is over, reconcile the ModelDeployments decided on older facts.

    One sweep at a time; changes that arrive while it runs are picked up by another pass. A ModelDeployment
    not decided yet is not swept: its own reconcile decides on the newest facts, and neither is one whose
    decision the change cannot move (`stale_plans`). While nodes keep changing
    (a pool joining a few nodes a second), a pass waits for a quiet second, at most SWEEP_MAX_DELAY_S: each
    pass rewrites every status whose selection moved, and one per second of churn was 2.8 status writes
    per ModelDeployment (docs/operator-at-scale.md).
    """
    state = state_of(memo)
    if state.sweep is not None and not state.sweep.done():
        return

    async def reconcile_each(keys: list[tuple[str, str]]) -> None:
        pending = iter(keys)

        async def worker() -> None:
            for namespace, name in pending:
                await run_reconcile(memo, namespace, name, indexes, logger, trigger="node", coalesce=True)

        await asyncio.gather(*(worker() for _ in range(min(SWEEP_WORKERS, len(keys)))))

    async def quiet_nodes() -> None:
        waited = 0.0
        while waited < SWEEP_MAX_DELAY_S:
            version = state.facts.version
            await asyncio.sleep(SWEEP_DELAY_S)
            waited += SWEEP_DELAY_S
            if state.facts.version == version:
                return

    async def sweep() -> None:
        while True:
            await quiet_nodes()
            version = state.facts.version
            stale = stale_plans(state)
            if stale:
                logger.info("nodes changed: re-evaluating %d ModelDeployments", len(stale))
                await reconcile_each(stale)
            if state.facts.version == version:
                return

    state.sweep = asyncio.create_task(sweep())
