"""One reconcile of one ModelDeployment: plan, execute, report (docs/architecture.md).

Level-triggered: whatever woke it (a spec change, a node change, a Deployment's status), it reads the
world from the watches (`World`: the ModelDeployment, its Deployment and Service, its pods, the node
facts) and converges. `plan` (plan.py) decides, purely, what should exist and how each object is
brought about; `execute` (execute.py, the one module that writes to the apiserver) does it; `report`
(report.py) says, purely, what status and Events that makes. Reads cost no API call; writes are
server-side applies of children whose watch view differs from what would be applied and one status merge
patch when the status differs. A steady reconcile (nothing changed) makes no request at all.

`Memory` (plan.py) is what one operator process remembers between reconciles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import scaling
from modeldeploy.controller.apply import Applied, ApplyError
from modeldeploy.controller.children import Child
from modeldeploy.controller.events import EventSpec
from modeldeploy.controller.execute import execute, write_status
from modeldeploy.controller.indexes import owner_name
from modeldeploy.controller.kube import AsyncKube
from modeldeploy.controller.plan import Key, Memory, World, plan
from modeldeploy.controller.report import Report, report
from modeldeploy.controller.routing import claimants
from modeldeploy.controller.status import reconcile_inputs
from modeldeploy.controller.views import ENGINE_LABEL, ChildView, PodView, md_view, newer_status, rv_int, shared
from modeldeploy.render.labels import MANAGED_BY, MANAGER
from modeldeploy.scaling.conflicts import served_name
from modeldeploy.selection.types import Decision, NodeFacts


def utc_now() -> str:
    """RFC 3339, second precision (what metav1.Time serialises to)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Result:
    """What a reconcile did, for events, metrics and logs."""

    outcome: str  # applied, kept, pending, invalid, failed, gone
    engine: str | None = None
    decision: Decision | None = None
    status_written: bool = False
    events: list[EventSpec] = field(default_factory=list)
    owner: dict[str, Any] = field(default_factory=dict)  # the Events' involvedObject
    failed: ApplyError | None = None  # an apply the apiserver refused: in status already, to be retried
    requests: int = 0  # API requests this reconcile made
    applied: list[Applied] = field(default_factory=list)  # its children, as the applies answered

    @property
    def children_changed(self) -> list[str]:
        """The kinds whose object the apply changed."""
        return [child.kind for child in self.applied if child.changed]


async def reconcile(
    kube: AsyncKube,
    namespace: str,
    name: str,
    world: World,
    config: OperatorConfig,
    memory: Memory,
    now: Callable[[], str] = utc_now,
) -> Result:
    """Converge one ModelDeployment. Raises KubeError when the status cannot be written (the caller retries)."""
    key = (namespace, name)
    body = world.body
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        memory.forget(key)
        return Result("gone")  # garbage collection takes the children; nothing to do
    crds = await scaling.served_crds(kube) if scaling.wanted(body.get("spec"), config) else frozenset()
    planned = plan(world, newer_status(body, memory.written.get(key)), config, memory, key, crds)
    done = await execute(kube, planned, config, memory.applied)
    if done.failed is not None and done.failed.error.namespace_terminating:
        # Its namespace is being deleted, children first: re-creating them is refused, and writing that to
        # a status about to go (then retrying) is only load on the apiserver.
        memory.forget(key)
        return Result("gone", requests=done.requests)
    said = report(planned, done, world, now())
    # Before the status write: the ADDED event of a Deployment just created arrives while it is under
    # way, and shows the view this status is computed from (handlers.deployment_event drops it).
    memory.seen[key] = said.deployment
    stored = None
    if said.patch:
        memory.writing[key] = (reconcile_inputs(body), said.status)
        try:
            stored = await write_status(kube, namespace, name, said.patch)
        finally:
            memory.writing.pop(key, None)
    requests = done.requests + (1 if said.patch else 0)
    if said.patch and stored is None:
        memory.forget(key)
        return Result("gone", requests=requests)  # deleted while we worked: its children go with it
    remember(memory, key, body, stored, said)
    decision = planned.planned.decision
    return Result(
        outcome=said.outcome,
        engine=decision.engine if decision is not None else None,
        decision=decision,
        status_written=said.patch is not None,
        events=list(said.events),
        owner={"apiVersion": API_VERSION, "kind": KIND, **owner_ref(body)},
        failed=done.failed,
        requests=requests,
        applied=done.applied,
    )


def owner_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {k: meta.get(k) for k in ("name", "namespace", "uid")}


def remember(memory: Memory, key: Key, body: Mapping[str, Any], stored: Mapping[str, Any] | None, said: Report) -> None:
    """What the next reconcile needs of this one: the status written (the watch may lag it), the version
    handled (an event for it brings nothing new), the Deployment the status describes."""
    meta = body.get("metadata") or {}
    version = ((stored or {}).get("metadata") or {}).get("resourceVersion")
    if stored is not None and version:
        # Kept until a newer event passes the watch (its echo stops at the event gate): strings shared.
        written = shared({k: v for k, v in (stored.get("status") or {}).items() if k != "kopf"})
        memory.written[key] = (str(version), written)
        memory.handled[key] = str(version)
    elif stored is None and meta.get("resourceVersion"):
        before = rv_int(memory.handled.get(key))
        read = rv_int(str(meta["resourceVersion"]))
        if before is None or read is None or read > before:  # not behind our own write the watch lags on
            memory.handled[key] = str(meta["resourceVersion"])
    memory.seen[key] = said.deployment


def deployment_engine_label(deployment: Mapping[str, Any] | None) -> str | None:
    """The engine label of a Deployment body (for callers holding a whole object)."""
    return ((deployment or {}).get("metadata") or {}).get("labels", {}).get(ENGINE_LABEL)


async def read_world(kube: AsyncKube, namespace: str, name: str, nodes: tuple[NodeFacts, ...]) -> World:
    """The World read from the apiserver (GETs and a LIST) rather than the watches: for tools and tests
    that reconcile one object outside the operator."""
    from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION

    body = await kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    served = served_name(body) if body else None
    every: list[dict[str, Any]] = []
    if served:  # the ModelDeployments that may hold its model name on the Gateway (routing.py)
        every = (await kube.request("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}")).get("items") or []
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    service = await kube.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    pods = await kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", f"app.kubernetes.io/instance={name}")]
    )
    # Its NetworkPolicies (the model's and the picker's), so that ones the config no longer asks for go.
    policies = await kube.request(
        "GET",
        f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
        query=[("labelSelector", f"app.kubernetes.io/instance={name},{MANAGED_BY}={MANAGER}")],
    )
    others = {
        ("NetworkPolicy", str(p["metadata"]["name"])): Child.from_object(name, p)
        for p in policies.get("items") or ()
        if owner_name(p) == name
    }
    # KEDA's conditions on the ScaledObject feed the Autoscaling condition (scaling/keda_status.py); the
    # operator has them from its watch, a reconcile outside it reads them here (absent CRD: a 404 too).
    scaled = await kube.get(f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}")
    if scaled:
        others[("ScaledObject", name)] = Child.from_object(name, scaled)
    return World(
        body=md_view(body) if body else None,
        deployment=ChildView.from_object(deployment) if deployment else None,
        service=ChildView.from_object(service) if service else None,
        pods=tuple(PodView.from_object(p) for p in pods.get("items") or ()),
        nodes=nodes,
        facts_version=hash(nodes),
        rivals=claimants(every, served),
        others=others,
    )


def reconcile_once(
    configuration: Any, namespace: str, name: str, nodes: Sequence[NodeFacts], config: OperatorConfig
) -> Result:
    """One reconcile outside the operator (blocking): the world read fresh, nothing remembered.

    `configuration` is the `kubernetes` package's client configuration (credentials, TLS). For tools
    and tests that drive one reconcile by hand; the operator itself runs `reconcile` on its watches.
    """
    import asyncio

    async def once() -> Result:
        client = AsyncKube(configuration)
        try:
            world = await read_world(client, namespace, name, tuple(nodes))
            return await reconcile(client, namespace, name, world, config, Memory())
        finally:
            await client.close()

    return asyncio.run(once())
