"""The reconcile as every handler runs it: serialised per object, measured, its Events posted, and retried
with backoff when the apiserver refuses (Kopf never retries event handlers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from modeldeploy.controller import tuning
from modeldeploy.controller.indexes import keep_created_children, world_of
from modeldeploy.controller.kube import KubeError
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.state import State, state_of


async def run_reconcile(
    memo: Any,
    namespace: str,
    name: str,
    indexes: Mapping[str, Any],
    logger: logging.Logger,
    *,
    trigger: str,
    coalesce: bool,
    retry: int = 0,
    unless: Callable[[], bool] | None = None,
) -> None:
    """Serialised, measured reconcile of one ModelDeployment, with its Events posted.

    On apiserver trouble (a status that cannot be written, an apply refused: the status says so when it
    can), a retry is scheduled with backoff (every trigger is a Kopf event handler, which Kopf never
    retries), so no failure is left to the next event that may never come. `coalesce=False` waits for
    its turn even when another reconcile of the object is already queued. `unless`, asked when the turn
    comes, says the event that asked is already handled: the reconcile it waited for saw the same (the
    ADDED event of a Deployment that reconcile created, the echo of its status write). It is skipped then,
    unless other requests were folded into it (serializer.py).
    """
    state = state_of(memo)
    assert state.kube is not None
    key = (namespace, name)
    async with state.serializer.turn(key, coalesce=coalesce) as go:
        if go and unless is not None and not state.serializer.joined(key) and unless():
            go = False
        if not go:
            state.metrics.reconciled(trigger, "skipped", 0.0, None)
            return
        async with state.slots:
            state.busy += 1
            try:
                failure = await reconcile_in_slot(state, namespace, name, indexes, logger, trigger)
            finally:
                state.busy -= 1
                state.since_release += 1
                release_after_burst(state)
    if failure is None:
        state.failures.pop(key, None)
        return
    attempt = max(retry, state.failures.get(key, 0))
    state.failures[key] = attempt + 1
    delay = retry_delay(attempt)
    logger.warning("%s/%s (%s): %s; retrying in %.0f s", namespace, name, trigger, failure, delay)
    schedule_retry(memo, key, indexes, logger, delay)


BURST = 200  # reconciles since the last release that make a burst worth giving memory back after
QUIET_S = 5.0  # ...once no reconcile has run for this long


def release_after_burst(state: State) -> None:
    """Once a burst of reconciles is over (none running for QUIET_S), give its memory back
    (tuning.release_memory): a full collection and a trim cost tens of milliseconds, once per burst."""
    if state.busy or state.since_release < BURST or (state.release is not None and not state.release.done()):
        return

    async def when_quiet() -> None:
        while True:
            seen = state.since_release
            await asyncio.sleep(QUIET_S)
            if not state.busy and state.since_release == seen:
                break
        state.since_release = 0
        tuning.release_memory()

    state.release = asyncio.create_task(when_quiet())


async def reconcile_in_slot(
    state: State, namespace: str, name: str, indexes: Mapping[str, Any], logger: logging.Logger, trigger: str
) -> str | None:
    """One reconcile, holding one of `state.slots`: why it failed, or None.

    The slots bound the reconciles at once to the API client's connections. Without them every new
    object's reconcile queued its apply at once, and each status write, the second request of its
    reconcile, waited behind the applies of every object created since: in a burst the status followed its
    Deployment by seconds (docs/operator-at-scale.md, "Node churn").
    """
    assert state.kube is not None
    world = world_of(state, namespace, name, indexes)  # inside the lock and the slot: the newest views
    started = time.monotonic()
    try:
        result = await reconcile(state.kube, namespace, name, world, state.config, state.memory)
    except KubeError as exc:
        state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
        return f"apiserver: {exc}"
    except Exception:
        state.metrics.reconciled(trigger, "error", time.monotonic() - started, None)
        raise
    state.metrics.reconciled(trigger, result.outcome, time.monotonic() - started, result.engine)
    state.metrics.wrote([*(["status"] if result.status_written else []), *result.children_changed])
    state.metrics.requested(result.requests)
    keep_created_children(state, namespace, name, result.applied)
    post_events(state, result)
    if result.failed is not None:
        return f"apply failed: {result.failed}"
    if result.status_written or result.events:
        summary = f", {result.decision.summary}" if result.decision else ""
        logger.info("%s/%s (%s): %s%s", namespace, name, trigger, result.outcome, summary)
    return None


def schedule_retry(
    memo: Any, key: tuple[str, str], indexes: Mapping[str, Any], logger: logging.Logger, delay: float
) -> None:
    """Reconcile `key` again after `delay` (one pending retry per object)."""
    state = state_of(memo)
    pending = state.retries.get(key)
    if pending is not None and not pending.done():
        return

    async def later() -> None:
        await asyncio.sleep(delay)
        state.retries.pop(key, None)
        await run_reconcile(memo, key[0], key[1], indexes, logger, trigger="retry", coalesce=True)

    state.retries[key] = asyncio.create_task(later())


def post_events(state: State, result: Any) -> None:
    """Queue the reconcile's Events (event_poster.py); the reconcile does not wait for them."""
    if state.events is not None:  # None only where a test runs reconciles without the start-up handler
        state.events.post(result.owner, result.events)
    result.events = []  # posted once, even when the reconcile is retried


def retry_delay(retry: int) -> float:
    """Backoff of a failed reconcile: 2 s, 4 s, 8 s, ... at most a minute.

    Capped at a minute, not more: under a storm of transient refusals (a loaded apiserver, a CRD's
    RESTMapping not yet known) a five-minute cap left objects waiting minutes after the cause had passed
    (measured: p99 create -> Deployment 545 s at 500 x 1,000 on the loaded machine).
    """
    return float(min(60, 2 * 2 ** min(retry, 5)))
