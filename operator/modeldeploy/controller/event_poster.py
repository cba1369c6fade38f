"""The Events the reconciles post (events.py says which), sent by the operator's one API client (kube.py).

Why not Kopf's poster (`kopf.event`): it keeps one worker per object alive for a second after that
object's last Event (`settings.posting.idle_timeout`), and its workers are bounded, so with eight workers
it posted for at most eight objects a second. A burst of 25 new ModelDeployments a second left about 1,400
of their 2,000 Events queued when the last status was written, posted over the next minute and a half:
`kubectl describe` showed a decision a minute after the status had it, and the operator was busy long
after convergence (docs/operator-at-scale.md, "Events"). Here the Events of one reconcile are one item of
one queue, posted in order by one of a few workers as soon as one is free, through the client that makes
every other write (docs/architecture.md, "One ModelDeployment, from event to status").

Best effort, as client-go's event recorder is: an Event the apiserver refuses, or one that finds the
queue full, is counted (`modeldeploy_events_total{result}`) and logged, never retried for long and never
allowed to hold a reconcile up. Each Event carries the time the reconcile decided it, not the time it was
posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modeldeploy.controller.events import EventSpec
from modeldeploy.controller.kube import AsyncKube, KubeError

WORKERS = 8  # Events posted at once (half the API client's connections: reconciles keep the rest)
CAPACITY = 10_000  # reconciles' Events waiting; beyond it they are dropped (client-go's recorder buffers 1,000)
MAX_MESSAGE = 1024  # longer messages are cut in the middle (the events.k8s.io limit; Kopf cuts the same)
CUT = "..."
NAME_PREFIX = "modeldeploy-"  # the apiserver appends a random suffix (generateName)

log = logging.getLogger(__name__)


def cut(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message`, or its head and tail around "..." when longer than `limit` (both ends say something)."""
    if len(message) <= limit:
        return message
    keep = limit - len(CUT)
    return message[: keep - keep // 2] + CUT + message[len(message) - keep // 2 :]


def event_body(
    involved: Mapping[str, Any], spec: EventSpec, *, component: str, instance: str, at: dt.datetime
) -> dict[str, Any]:
    """A core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid), as `kubectl describe`
    and `kubectl get events` read it. Pure."""
    seconds = at.strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": NAME_PREFIX, "namespace": involved["namespace"]},
        "involvedObject": dict(involved),
        "type": spec.type,
        "reason": spec.reason,
        "message": cut(spec.message),
        "action": spec.reason,
        "count": 1,
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # metav1.MicroTime
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
    }


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


class EventPoster:
    """A queue of the reconciles' Events and the workers that post them. Create it on the running loop."""

    def __init__(
        self,
        kube: AsyncKube,
        *,
        component: str,
        instance: str,
        workers: int = WORKERS,
        capacity: int = CAPACITY,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self.clock = clock
        self.counts: Counter[str] = Counter()  # posted, refused, dropped (the metrics endpoint's)
        self._queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=capacity)
        self._workers = [asyncio.create_task(self._work(), name=f"event poster {i}") for i in range(workers)]

    def post(self, involved: Mapping[str, Any], specs: Sequence[EventSpec]) -> None:
        """Queue one reconcile's Events about `involved`, stamped now; they are posted in this order."""
        if not specs:
            return
        at = self.clock()
        bodies = [event_body(involved, s, component=self.component, instance=self.instance, at=at) for s in specs]
        try:
            self._queue.put_nowait(bodies)
        except asyncio.QueueFull:
            self.counts["dropped"] += len(bodies)
            log.warning("%d Events about %s/%s dropped: %d reconciles' Events already wait", len(bodies),
                        involved.get("namespace"), involved.get("name"), self._queue.qsize())  # fmt: skip

    @property
    def waiting(self) -> int:
        """Reconciles whose Events are not all posted yet."""
        return self._queue.qsize()

    async def _work(self) -> None:
        while True:
            bodies = await self._queue.get()
            try:
                for body in bodies:
                    await self._post_one(body)
            finally:
                self._queue.task_done()

    async def _post_one(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            await self.kube.request("POST", events_path(namespace), body=body)
        except KubeError as exc:
            # Refused (a namespace being deleted, a policy) or no answer: an Event is not worth a retry storm.
            self.counts["refused"] += 1
            involved = body["involvedObject"]
            log.warning("Event %s about %s/%s not posted: %s", body["reason"], namespace, involved.get("name"), exc)
        else:
            self.counts["posted"] += 1

    async def close(self, timeout_s: float = 2.0) -> None:
        """Post what is queued for up to `timeout_s`, then stop the workers (at the operator's shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
