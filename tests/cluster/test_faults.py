"""The operator under faults, on the real control plane: the operator killed mid-burst, kube-apiserver and
etcd stopped and started again, a quota that forbids Services, an admission webhook that is down, and a
watch that goes silent behind a connection that stays open.

Each burst creates ModelDeployments copied from examples/modeldeployments/ (replicas 0, so the tier
stays fast: every object still gets its Deployment, Service and full status). What every test asserts:
- every object converges: its status describes its generation, its Deployment and Service exist, each
  with one controller owner (no duplicates, nothing adopted twice);
- nothing running is deleted: Deployments that existed before the fault keep their uid;
- a child the apiserver refuses is said in status (ApplyFailed, with the apiserver's words), and the
  operator gets there by itself once the cause is gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import LocalCluster
from modeldeploy_dev.nodes import FakeKubelet, create_node, is_ready, load_node_set
from tests.cluster.test_operator import CRD_FILE, OperatorProcess, eventually, free_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "modeldeployments").glob("*.yaml"))
NODES_FILE = REPO / "examples" / "nodes" / "demo-cluster.yaml"
PREFIX = f"faults-{uuid.uuid4().hex[:4]}"
MANAGED = "app.kubernetes.io/managed-by=modeldeploy"


class Fleet:
    """Clients, this module's nodes, and bursts of ModelDeployments into namespaces of its own."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.crs = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)
        self.adm = client.AdmissionregistrationV1Api(self.api)
        self.nodes: list[str] = []
        self.namespaces: list[str] = []

    def add_nodes(self) -> None:
        for node in load_node_set(NODES_FILE):
            if is_ready(node) and not (node.get("spec") or {}).get("unschedulable"):
                node = copy.deepcopy(node)
                node["metadata"]["name"] = f"{PREFIX}-{node['metadata']['name']}"
                self.nodes.append(create_node(self.core, node))

    def namespace(self, stem: str) -> str:
        name = f"{PREFIX}-{stem}"
        self.core.create_namespace({"metadata": {"name": name}})
        self.namespaces.append(name)
        return name

    def docs(self, namespace: str, count: int, start: int = 0) -> list[dict[str, Any]]:
        templates = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
        out = []
        for i in range(start, start + count):
            doc = copy.deepcopy(templates[i % len(templates)])
            doc["metadata"] = {"name": f"md-{i:04d}", "namespace": namespace}
            doc["spec"]["replicas"] = 0
            out.append(doc)
        return out

    def burst(self, docs: list[dict[str, Any]], rate: float = 40.0, during: Any = None) -> None:
        """Create `docs` at `rate` per second; `during(i)` is called before the i-th create."""
        started = time.monotonic()
        for i, doc in enumerate(docs):
            if during is not None:
                during(i)
            if (delay := started + i / rate - time.monotonic()) > 0:
                time.sleep(delay)
            self.create(doc)

    def create(self, doc: dict[str, Any]) -> None:
        """Create one ModelDeployment, waiting out an apiserver that is down (a user's client retries too)."""

        def attempt() -> bool:
            try:
                self.crs.create_namespaced_custom_object(GROUP, VERSION, doc["metadata"]["namespace"], PLURAL, doc)
            except ApiException as exc:
                if exc.status == 409:
                    return True
                raise
            except Exception as exc:  # noqa: BLE001 - connection refused while the apiserver restarts
                raise ApiException(status=0, reason=str(exc)) from exc
            return True

        eventually(attempt, f"creating {doc['metadata']['name']}", timeout=120, interval=0.5)

    def mds(self, namespace: str) -> dict[str, dict[str, Any]]:
        items = self.crs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return {i["metadata"]["name"]: i for i in items}

    def children(self, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
        deps = self.api.sanitize_for_serialization(
            self.apps.list_namespaced_deployment(namespace, label_selector=MANAGED)
        )
        svcs = self.api.sanitize_for_serialization(self.core.list_namespaced_service(namespace, label_selector=MANAGED))
        return (
            {d["metadata"]["name"]: d for d in deps["items"]},
            {s["metadata"]["name"]: s for s in svcs["items"]},
        )

    def unconverged(self, namespace: str, count: int) -> list[str]:
        """Names that are not converged yet (empty: all `count` objects are)."""
        mds = self.mds(namespace)
        deps, svcs = self.children(namespace)
        bad = [f"md-{i:04d} missing" for i in range(count) if f"md-{i:04d}" not in mds]
        for name, md in mds.items():
            status = md.get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or ()}
            selected = conditions.get("EngineSelected", {})
            if status.get("observedGeneration") != md["metadata"]["generation"] or not selected:
                bad.append(f"{name}: status not written for its generation")
            elif selected.get("status") == "True":
                if name not in deps or name not in svcs:
                    bad.append(f"{name}: Deployment {name in deps}, Service {name in svcs}")
                elif (conditions.get("Ready") or {}).get("status") != "True":
                    bad.append(f"{name}: Ready {conditions.get('Ready')}")
        return bad

    def assert_children_sound(self, namespace: str) -> None:
        """Exactly one Deployment and one Service per ModelDeployment with an engine, each controlled by it."""
        mds = self.mds(namespace)
        deps, svcs = self.children(namespace)
        engines = {n for n, md in mds.items() if (md.get("status") or {}).get("engine")}
        assert set(deps) == engines and set(svcs) == engines
        for kind, objects in (("Deployment", deps), ("Service", svcs)):
            for name, obj in objects.items():
                owners = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("controller")]
                assert [o["uid"] for o in owners] == [mds[name]["metadata"]["uid"]], f"{kind} {name}: {owners}"

    def uids(self, namespace: str) -> dict[str, str]:
        return {name: d["metadata"]["uid"] for name, d in self.children(namespace)[0].items()}

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        md = self.crs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return next((c for c in (md.get("status") or {}).get("conditions") or () if c["type"] == kind), None)


def converged(fleet: Fleet, namespace: str, count: int, timeout: float = 240) -> None:
    def check() -> bool:
        bad = fleet.unconverged(namespace, count)
        assert not bad, f"{len(bad)} not converged, e.g. {bad[:3]}"
        return True

    eventually(check, f"{count} ModelDeployments in {namespace} to converge", timeout=timeout, interval=1.0)
    fleet.assert_children_sound(namespace)


@pytest.fixture(scope="module")
def fleet(local_cluster: LocalCluster) -> Iterator[Fleet]:
    f = Fleet(str(local_cluster.kubeconfig_path))
    crd = yaml.safe_load(CRD_FILE.read_text())
    with contextlib.suppress(ApiException):
        f.ext.create_custom_resource_definition(crd)

    def established() -> bool:
        got = f.ext.read_custom_resource_definition(crd["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or ())

    eventually(established, "the CRD to be established")
    f.add_nodes()
    kubelet = FakeKubelet(f.api, f.nodes).start()
    yield f
    kubelet.stop()
    for name in f.nodes:
        with contextlib.suppress(ApiException):
            f.core.delete_node(name)
    for ns in f.namespaces:
        with contextlib.suppress(ApiException):
            f.core.delete_namespace(ns)


@pytest.fixture(scope="module")
def operator(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("faults") / "operator.log"
    op = OperatorProcess(fleet.kubeconfig, log)
    op.start()
    yield op
    op.stop()
    if os.environ.get("MODELDEPLOY_SHOW_OPERATOR_LOG"):
        print(log.read_text()[-20000:])


# --- the tests ---------------------------------------------------------------------------------------------


def test_operator_killed_mid_burst_converges_without_duplicates(fleet: Fleet, operator: OperatorProcess) -> None:
    ns = fleet.namespace("kill")
    count = 200
    killed: list[int] = []

    def kill_at_half(i: int) -> None:
        if i == count // 2 and operator.proc is not None:
            killed.append(operator.proc.pid)
            operator.proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
            operator.proc.wait()
            operator.proc = None

    fleet.burst(fleet.docs(ns, count), during=kill_at_half)
    assert killed
    before = fleet.uids(ns)  # what the first operator made
    operator.start()
    converged(fleet, ns, count)
    after = fleet.uids(ns)
    assert {n: after[n] for n in before} == before  # nothing it made was replaced


def test_apiserver_restart_during_a_burst(fleet: Fleet, operator: OperatorProcess, local_cluster: LocalCluster) -> None:
    ns = fleet.namespace("apiserver")
    count = 80

    def restart_at_half(i: int) -> None:
        if i == count // 2:
            local_cluster.stop_component("apiserver")
            time.sleep(3)
            local_cluster.start_component("apiserver")

    fleet.burst(fleet.docs(ns, count), during=restart_at_half)
    converged(fleet, ns, count)
    assert operator.proc is not None and operator.proc.poll() is None  # it rode the outage out
    eventually(lambda: answered(operator), "the operator's liveness after the outage")


def test_etcd_restart_during_a_burst(fleet: Fleet, operator: OperatorProcess, local_cluster: LocalCluster) -> None:
    ns = fleet.namespace("etcd")
    count = 80
    first = fleet.docs(ns, count // 2)
    fleet.burst(first)
    converged(fleet, ns, len(first))
    before = fleet.uids(ns)
    local_cluster.stop_component("etcd")
    time.sleep(3)
    local_cluster.start_component("etcd")
    fleet.burst(fleet.docs(ns, count - len(first), start=len(first)))
    converged(fleet, ns, count)
    after = fleet.uids(ns)
    assert {n: after[n] for n in before} == before
    assert operator.proc is not None and operator.proc.poll() is None


def test_a_quota_that_forbids_services_is_said_in_status(fleet: Fleet, operator: OperatorProcess) -> None:
    ns = fleet.namespace("quota")
    quota = {"metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}}
    fleet.core.create_namespaced_resource_quota(ns, quota)
    eventually(
        lambda: fleet.core.read_namespaced_resource_quota("no-services", ns).status.hard, "the quota to be counted"
    )
    count = 12
    fleet.burst(fleet.docs(ns, count))

    def refused() -> bool:
        for i in range(count):
            stalled = fleet.condition(ns, f"md-{i:04d}", "Stalled")
            assert stalled is not None and stalled["reason"] == "ApplyFailed", stalled
            assert "exceeded quota" in stalled["message"] and "Service" in stalled["message"], stalled
        return True

    eventually(refused, "ApplyFailed with the quota's words in every status", timeout=120)
    md = fleet.crs.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "md-0000")
    assert md["status"]["reason"] == "ApplyFailed" and md["status"]["engine"]  # the decision is there
    before = fleet.uids(ns)
    assert len(before) == count  # the Deployments (applied before the Service) run
    fleet.core.delete_namespaced_resource_quota("no-services", ns)
    converged(fleet, ns, count, timeout=180)  # the operator retries by itself, with backoff
    assert fleet.uids(ns) == before


def test_an_admission_webhook_that_is_down_is_said_in_status(fleet: Fleet, operator: OperatorProcess) -> None:
    ns = fleet.namespace("webhook")
    closed = free_port()  # nothing listens there: every call to the webhook fails
    webhook = {
        "metadata": {"name": f"{PREFIX}-services"},
        "webhooks": [
            {
                "name": "services.policy.example.com",
                "clientConfig": {"url": f"https://127.0.0.1:{closed}/validate"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["services"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            }
        ],
    }
    fleet.adm.create_validating_webhook_configuration(webhook)
    try:
        count = 12
        fleet.burst(fleet.docs(ns, count))

        def reported() -> bool:
            for i in range(count):
                reconciling = fleet.condition(ns, f"md-{i:04d}", "Reconciling")
                assert reconciling is not None and reconciling["reason"] == "ApplyFailed", reconciling
                assert "failed calling webhook" in reconciling["message"], reconciling
                assert fleet.condition(ns, f"md-{i:04d}", "Stalled") is None  # still being retried
            return True

        eventually(reported, "ApplyFailed (Reconciling) with the webhook's failure in every status", timeout=120)
        before = fleet.uids(ns)
    finally:
        fleet.adm.delete_validating_webhook_configuration(webhook["metadata"]["name"])
    converged(fleet, ns, count, timeout=180)
    assert fleet.uids(ns) == before


def etcd_delete(local_cluster: LocalCluster, key: str) -> int:
    """Delete one key straight from etcd (its JSON gateway), behind the apiserver's back; how many went."""
    url = f"http://127.0.0.1:{local_cluster.ports['etcd']}/v3/kv/deleterange"
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(json.loads(reply.read()).get("deleted", 0))


def test_children_deleted_while_the_operator_cannot_watch_are_re_created(
    fleet: Fleet, operator: OperatorProcess, local_cluster: LocalCluster
) -> None:
    """No DELETED event ever reaches the operator: the children go from etcd while the apiserver is down, so
    the restarted apiserver answers the operator's watch with 410 Gone and Kopf lists again (relist.py)."""
    ns = fleet.namespace("relist")
    count = 3
    fleet.burst(fleet.docs(ns, count))
    converged(fleet, ns, count)
    deps, svcs = fleet.children(ns)
    name = sorted(deps)[0]
    before = (deps[name]["metadata"]["uid"], svcs[name]["metadata"]["uid"])
    local_cluster.stop_component("apiserver")
    try:
        assert etcd_delete(local_cluster, f"/registry/deployments/{ns}/{name}") == 1
        assert etcd_delete(local_cluster, f"/registry/services/specs/{ns}/{name}") == 1
    finally:
        local_cluster.start_component("apiserver")

    def recreated() -> bool:
        deps, svcs = fleet.children(ns)
        assert name in deps and name in svcs, f"Deployment {name in deps}, Service {name in svcs}"
        return (deps[name]["metadata"]["uid"], svcs[name]["metadata"]["uid"]) != before

    eventually(recreated, f"the Deployment and Service of {name} to be re-created", timeout=120, interval=1.0)
    converged(fleet, ns, count)
    assert operator.proc is not None and operator.proc.poll() is None


def answered(op: OperatorProcess) -> bool:
    """The liveness endpoint answered 200 (a slow answer on a busy machine is asked again)."""
    try:
        return op.healthy()
    except OSError:
        return False


class FreezableProxy:
    """A TCP proxy to the apiserver whose open connections can be frozen: bytes stop flowing back to the
    client while the connections stay open (a half-dead watch); new connections still work."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host, self.target_port, self.port = target_host, target_port, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.generation = 0

    def start(self) -> FreezableProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = {"born": self.generation, "thawed": False}
        up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, back: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if not back and conn["born"] < self.generation:
                        conn["thawed"] = True  # a new request on a kept-alive connection: not a watch
                    while back and conn["born"] < self.generation and not conn["thawed"]:
                        await asyncio.sleep(0.2)  # a stream from before the freeze: open, and silent
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))

    def freeze(self) -> None:
        self.generation += 1

    def stop(self) -> None:
        self.generation = -1  # frozen streams flow again (and end)
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_watch_that_goes_silent_fails_the_liveness_probe(
    fleet: Fleet, local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Kopf issues #585 and #957: a watch that stays open and delivers nothing. The probe notices."""
    # The apiserver listens on loopback, or on the real node's address where there is one.
    proxy = FreezableProxy(local_cluster.address, local_cluster.ports["apiserver"]).start()
    tmp = tmp_path_factory.mktemp("silent")
    kubeconfig = yaml.safe_load(local_cluster.kubeconfig_path.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    (tmp / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    ns = fleet.namespace("silent")
    fleet.burst(fleet.docs(ns, 3))
    # Serving this namespace only: this test is about one operator's watch. The earlier fault tests leave hundreds
    # of objects in other namespaces; with them in its scope the probe did not fail within the 120 s below (seen
    # in full runs only; why is not found yet, docs/operator-at-scale.md), while alone it fails in about 25 s.
    op = OperatorProcess(
        str(tmp / "kubeconfig"), tmp / "operator.log", "--standalone", "--watch-silence=3", f"--namespace={ns}"
    )
    try:
        op.start()
        converged(fleet, ns, 3)
        time.sleep(4)  # quiet: the probe checks the watch against the apiserver and finds it current
        eventually(lambda: answered(op), "the liveness probe to pass while the watch is current", timeout=30)
        proxy.freeze()
        fleet.crs.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "md-0000", {"spec": {"replicas": 1}})

        def failing() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5):
                    return False
            except urllib.error.HTTPError as exc:  # type: ignore[attr-defined]
                return exc.code == 500
            except OSError:  # a slow answer on a busy machine: ask again
                return False

        # Worst case by design: silence (3 s) + a metadata LIST + the grace before judging suspects (10 s)
        # + Kopf's cached probe answer (10 s), each stretched on a loaded 2-core machine.
        eventually(failing, "the liveness probe to fail", timeout=120, interval=1.0)
    except pytest.fail.Exception as exc:  # which step, and what the operator saw
        tail = "".join(op.log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        pytest.fail(f"{exc}\noperator log (last 40 lines):\n{tail}")
    finally:
        op.stop()
        proxy.stop()
