"""Where the time goes from zero replicas to the first token (docs/autoscaling.md, bench/scale_from_zero.py).

A watcher polls the Deployment and its pod every 0.1 s from the moment the request is sent and notes when
each step is first seen: KEDA raising the Deployment to one replica, the pod created, bound to the node,
each init container done (fetch, auto-NGL), the server's container running, the pod Ready. The first
token's time comes from the streamed reply. Polling gives a resolution of about 0.1 s plus one request's
round trip, finer than the whole seconds the apiserver stamps in a pod's status.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

STEPS = ("replicas", "pod", "scheduled", "fetch", "auto-ngl", "running", "ready")
# (label, from step, to step): the parts a report prints, in order; "sent" is the request's start.
PARTS = (
    ("KEDA + HPA: 0 -> 1 replica", "sent", "replicas"),
    ("Deployment -> pod", "replicas", "pod"),
    ("scheduling", "pod", "scheduled"),
    ("fetch (init)", "scheduled", "fetch"),
    ("auto-NGL (init)", "fetch", "auto-ngl"),
    ("server container start", "auto-ngl", "running"),
    ("model load + readiness", "running", "ready"),
    ("Ready -> first token", "ready", "first_token"),
)


@dataclass
class Watch:
    """Polls one ModelDeployment's Deployment and pod in a thread; `seen` maps step -> seconds since start."""

    api: client.ApiClient
    namespace: str
    name: str
    interval: float = 0.1
    seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0

    def start(self) -> Watch:
        self.started = time.monotonic()
        self.seen = {"sent": 0.0}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.seen

    def mark(self, step: str) -> None:
        self.seen.setdefault(step, time.monotonic() - self.started)

    def _run(self) -> None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        while not self._stop.is_set() and "ready" not in self.seen:
            with contextlib.suppress(client.ApiException):
                self._poll(apps, core)
            self._stop.wait(self.interval)

    def _poll(self, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
        if (apps.read_namespaced_deployment(self.name, self.namespace).spec.replicas or 0) >= 1:
            self.mark("replicas")
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}")
        live = [p for p in pods.items if not p.metadata.deletion_timestamp]
        if not live:
            return
        pod: Any = live[0]
        self.mark("pod")
        if pod.spec.node_name:
            self.mark("scheduled")
        for init in pod.status.init_container_statuses or ():
            if init.state and init.state.terminated and init.state.terminated.exit_code == 0:
                self.mark(init.name)
        for c in pod.status.container_statuses or ():
            if c.state and c.state.running:
                self.mark("running")
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()):
            self.mark("ready")


def parts(seen: dict[str, float]) -> list[tuple[str, float | None]]:
    """The report's parts, in seconds (None where a step was not seen).

    A step that did not happen (no `fetch` init container where the shared model cache's claim already
    holds the file, docs/model-cache.md) is None, and the next part is counted from the step before it,
    so the parts still add up to the whole.
    """
    out: list[tuple[str, float | None]] = []
    last: float | None = None
    for label, start, end in PARTS:
        a, b = seen.get(start, last), seen.get(end)
        out.append((label, None if a is None or b is None else max(0.0, b - a)))
        last = b if b is not None else a
    return out


def report(seen: dict[str, float]) -> str:
    measured = parts(seen)
    lines = []
    for n, (label, took) in enumerate(measured):
        later = any(t is not None for _, t in measured[n + 1 :])
        shown = f"{took:5.1f} s" if took is not None else "  none" if later else "     ?"
        lines.append(f"  {label:<28} {shown}")
    total = seen.get("first_token")
    lines.append(f"  {'zero -> first token':<28} {'?' if total is None else f'{total:5.1f} s'}")
    return "\n".join(lines)
