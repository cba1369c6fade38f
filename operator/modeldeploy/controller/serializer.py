"""Per-object serialisation of reconciles, with coalescing of requests that would only repeat a queued one.

Kopf runs one worker per object for that object's own events, but a ModelDeployment is also reconciled
from its children's events, node changes and retries. These share one lock per object; a request that
finds another already queued (not yet started) is dropped, since the queued one will read the newer
world anyway: a burst of node events costs one reconcile per ModelDeployment, not one per event.
`joined` tells the running reconcile whether such a request was folded into it: a reconcile that may
find, when its turn comes, that it has nothing left to do (retries.run_reconcile's `unless`) must still
run for the requests it stands for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Hashable


class Serializer:
    """One reconcile at a time per object, and coalescing of requests that would only repeat one queued."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._queued: Counter[Hashable] = Counter()
        self._joined: set[Hashable] = set()  # a request was folded into the queued one
        self._running_joined: set[Hashable] = set()  # ... into the one running now

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable, *, coalesce: bool) -> AsyncIterator[bool]:
        """Yield True when this caller should run now (holding the object's lock), False when redundant."""
        if coalesce and self._queued[key] > 0:
            self._joined.add(key)
            yield False
            return
        self._queued[key] += 1
        lock = self._locks.setdefault(key, asyncio.Lock())
        acquired = False
        try:
            async with lock:
                acquired = True
                self._dequeue(key)
                if key in self._joined:
                    self._joined.discard(key)
                    self._running_joined.add(key)
                try:
                    yield True
                finally:
                    self._running_joined.discard(key)
        finally:
            if not acquired:  # cancelled while waiting: do not leave a phantom "queued" behind
                self._dequeue(key)

    def joined(self, key: Hashable) -> bool:
        """Whether a request was folded into the reconcile of `key` running now (while holding its turn)."""
        return key in self._running_joined

    def _dequeue(self, key: Hashable) -> None:
        self._queued[key] -= 1
        if self._queued[key] <= 0:
            del self._queued[key]

    def forget(self, key: Hashable) -> None:
        """Drop the lock of a deleted object (unless a reconcile still holds or waits for it)."""
        lock = self._locks.get(key)
        if lock is not None and not lock.locked() and not self._queued.get(key):
            del self._locks[key]
