"""Kopf settings: where Kopf keeps its bookkeeping, what it posts, how it pairs with other replicas.

Every choice here is about staying quiet for GitOps tools (Argo CD, Flux) that diff the user's objects:
- No Kopf change handlers, so no diff base ("last handled configuration") is kept anywhere
  (`NoDiffBase`): ModelDeployments are handled level-triggered by an event handler (handlers.py).
  Handler progress, should a change handler ever come back, lives in `status.kopf`, never in
  annotations; the CRD keeps declaring `status.kopf` as a preserved object (objects written by older
  versions carry one, which the reconcile ignores).
- No finalizers: children are owned through ownerReferences, so the garbage collector deletes them and a
  ModelDeployment can be deleted while the operator is down. That is also why no Kopf daemon or timer is
  used (Kopf puts a finalizer on every object that has one): node and Deployment changes reach
  ModelDeployments through event handlers instead (see handlers.py).
- Events: only the ones the operator posts on purpose (decisions, failures), posted by its own API
  client (event_poster.py); Kopf posts none, log lines included.
- Peering: Kopf's own. With `--peering NAME` (and the KopfPeering/ClusterKopfPeering CRD installed), only
  the highest-priority replica works, the others pause; `--standalone` skips peering.

And about staying up under load and faults (Kopf's docs on configuration and scaling):
- Watches of our children and pods are filtered by label on the apiserver (a cluster's other pods never
  reach the operator); every watch has a server timeout, a client timeout and Kopf's inactivity timeout
  (a stream with no event or bookmark for that long is reconnected: Kopf issues #585, #957).
- API requests (Kopf's own: status.kopf) have request and connect timeouts.
- Concurrency is bounded where it costs: the operator's API client keeps at most kube.LIMIT requests in
  flight, and Events are posted by at most event_poster.WORKERS of them. Kopf's per-object worker limit
  (`settings.queueing.worker_limit`) is deliberately left unbounded: with indexes, each object's worker
  indexes its object and then waits until every object is indexed, so a limit below the number of
  Nodes (or ModelDeployments) deadlocks the start-up (measured: 64 workers, 200 nodes, nothing ever ran).
- Failed change handlers back off (retries.retry_delay); Kopf's own error backoffs stay.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from modeldeploy.render.labels import MANAGED_BY, MANAGER

COMPONENT = "modeldeploy"
KOPF_STATUS_NAME = "kopf"  # -> status.kopf.progress, status.kopf.last-handled-configuration
OURS_SELECTOR = f"{MANAGED_BY}={MANAGER}"
# The children beside a model's Deployment and Service: its NetworkPolicies (render/network.py) and the
# autoscaling and routing objects (controller/scaling.py); child_handlers.py watches them. The endpoint
# picker's Deployment and Service come through the Deployment and Service watches.
SCALING_CHILDREN: tuple[tuple[str, ...], ...] = (
    ("keda.sh", "v1alpha1", "scaledobjects"),
    ("http.keda.sh", "v1alpha1", "httpscaledobjects"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("inference.networking.k8s.io", "v1", "inferencepools"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
)
# Resources whose watch streams only our objects (the handlers' `labels=` filter, applied server-side).
LABELLED = (
    ("apps", "v1", "deployments"),
    ("v1", "services"),
    ("v1", "pods"),
    *SCALING_CHILDREN,
    # the shared model cache's claims and Jobs (cache_handlers.py)
    ("v1", "persistentvolumeclaims"),
    ("batch", "v1", "jobs"),
)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base at all: every handler of this operator is an event or index handler.

    Kopf builds the diff base (a deep copy of the whole body, managedFields and status included) for
    every event of every watched resource, whether or not a change handler needs it; with thousands of
    ModelDeployments, Deployments and pods that copy was the largest single cost of an event (measured
    with a sampling profiler: an eighth of the operator's CPU in a burst). Only Kopf's change handlers
    (on.create/update/resume/field) read it, and tests/unit/controller check that none is registered.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


def configure(
    settings: kopf.OperatorSettings,
    *,
    peering_name: str | None = None,
    priority: int | None = None,
) -> None:
    """Apply the operator's settings to Kopf's (called from the start-up handler)."""
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = kopf.StatusProgressStorage(name=KOPF_STATUS_NAME)

    settings.posting.enabled = False  # the operator posts its Events itself (event_poster.py)

    if peering_name:
        settings.peering.name = peering_name
    if priority is not None:
        settings.peering.priority = priority
    settings.peering.stealth = True  # keep-alives are not worth a log line every minute

    # Watches: the apiserver closes a watch after a while; reconnect quickly and notice dead connections.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 90  # bookmarks come about every minute
    for resource in LABELLED:
        settings.watching.label_selectors[cast(Any, resource)] = OURS_SELECTOR  # (group, version, plural)
    # Kopf's own requests (status.kopf): never wait forever on an apiserver that does not answer.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # A failed change handler is retried after this, unless it raised kopf.TemporaryError with its own delay.
    settings.execution.default_backoff = 10
