"""ModelDeploy's operator beside a peer's controller (KServe) on one local control plane.

    .venv/bin/python bench/peer.py --nodes 500 --objects 1000 [--rate 25] [--order ours,kserve] [--json]

A user choosing between controllers asks how many models one controller carries, how fast a change shows
and what the controller costs. This measures both on the same cluster, in one run:

1. starts the local control plane with the same fake nodes as bench/scale.py (copied round-robin from
   examples/nodes/demo-cluster.yaml, a fake kubelet, the burst only once every not-ready taint is gone),
   with an apiserver audit log that records the two controllers' requests, each under a client
   certificate of its own (`modeldeploy-operator`, `kserve-controller`);
2. installs KServe's CRDs, its `inferenceservice-config` ConfigMap (Standard, i.e. raw Deployment, mode:
   there is no Knative here) and its Hugging Face ClusterServingRuntime, all from the pinned release's Go
   module (modeldeploy_dev/build.py builds its controller manager from the same module), and registers
   its admission webhooks (InferenceService defaulting and validation, pod mutation) with the apiserver
   at the manager's loopback address, as its chart registers them at its Service;
3. one phase per controller, one after the other (`--order`): only that controller runs, so each has the
   two cores to itself and neither is billed for watching the other's burst. Each phase starts the
   controller, measures it idle, creates M objects at `--rate` per second (ours: the llama.cpp SmolLM2
   example as a ModelDeployment; KServe: an InferenceService for the same model with its Hugging Face
   runtime), records when each object's Deployment appears and when its status is first written for
   its generation, then measures the 30 s after convergence, the burst's whole cost once the controller
   has gone quiet (no request for `--settle` s: a controller may work through a backlog after its
   objects converged), a node relabelled twice (what node churn costs each), and idle again. The
   phase's namespace is then deleted, and waited for, so the next controller starts on the same
   cluster as the first did;
4. prints the raw figures for both and the ratios ours / theirs.

Converge means every object has its Deployment and a status for its generation: pods cannot run on fake
nodes, and the fake kubelet reports them Running and Ready so both controllers see the same rollouts.
Figures, not asserts: the load is printed with them (`uptime`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import (  # noqa: E402 - bench/ is not a package: its sibling is imported by path
    OPERATOR_USER,
    REPO,
    Audit,
    Operator,
    after_convergence,
    audited_cluster,
    free_port,
    operator_kubeconfig,
    percentile,
    process_cpu_s,
    start_with_nodes,
    untainted,
    verbs,
    wait,
)

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION  # noqa: E402
from modeldeploy_dev import build  # noqa: E402
from modeldeploy_dev.addon_crds import install as install_crds  # noqa: E402
from modeldeploy_dev.addon_crds import load_crds  # noqa: E402
from modeldeploy_dev.certs import CertificateAuthority  # noqa: E402
from modeldeploy_dev.dev import install_crd  # noqa: E402
from modeldeploy_dev.nodes import FakeKubelet  # noqa: E402

KSERVE_USER = "kserve-controller"
KSERVE_NS = "kserve"
OUR_EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
# KServe's CRDs: the kinds its manager watches (InferenceService, TrainedModel, InferenceGraph, the two
# serving-runtime kinds) and the storage containers its pod mutator lists.
KSERVE_CRDS = (
    "config/crd/full/serving.kserve.io_inferenceservices.yaml",
    "config/crd/full/serving.kserve.io_trainedmodels.yaml",
    "config/crd/full/serving.kserve.io_inferencegraphs.yaml",
    "config/crd/full/serving.kserve.io_servingruntimes.yaml",
    "config/crd/full/serving.kserve.io_clusterservingruntimes.yaml",
    "config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml",
    "config/crd/full/localmodel/serving.kserve.io_localmodelcaches.yaml",
    "config/crd/full/localmodel/serving.kserve.io_localmodelnodegroups.yaml",
    "config/crd/full/localmodel/serving.kserve.io_localmodelnodes.yaml",
)
# The figures compared, and which way is better (for reading the ratio, not for judging it).
COMPARED = (
    "converge_s",
    "create_to_deployment_p50_ms",
    "create_to_deployment_p99_ms",
    "create_to_status_p50_ms",
    "create_to_status_p99_ms",
    "cpu_ms_per_object",
    "apiserver_cpu_ms_per_object",
    "etcd_cpu_ms_per_object",
    "requests_per_object",
    "writes_per_object",
    "quiet_after_burst_start_s",
    "cpu_ms_per_object_until_quiet",
    "requests_per_object_until_quiet",
    "writes_per_object_until_quiet",
    "apiserver_cpu_ms_per_object_until_quiet",
    "etcd_cpu_ms_per_object_until_quiet",
    "rss_mib_idle",
    "rss_peak_mib",
    "rss_mib_end",
    "cpu_s_after_converge_0_10s",
    "cpu_s_after_converge_10_30s",
    "node_change_requests",
    "node_change_cpu_ms",
    "idle_cpu_percent_after",
    "idle_requests_per_min_after",
)
WRITE_VERBS = ("create", "update", "patch", "delete", "apply")


def say(message: str) -> None:
    print(f"[peer] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# --- pure arithmetic (tests/unit/bench/test_peer.py) --------------------------------------------------------


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None where it means nothing (a figure missing, or theirs is zero)."""
    if ours is None or theirs is None or not math.isfinite(ours) or not math.isfinite(theirs) or theirs == 0:
        return None
    return round(ours / theirs, 2)


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    return {key: ratio(ours.get(key), theirs.get(key)) for key in COMPARED if key in ours or key in theirs}


def latency_figures(created: dict[str, float], seen: dict[str, float], prefix: str) -> dict[str, Any]:
    """p50/p99 in ms from each object's creation to when `seen` recorded it (objects never seen are counted)."""
    values = [seen[n] - created[n] for n in created if n in seen]
    return {
        f"{prefix}_p50_ms": round(1000 * percentile(values, 0.5)) if values else None,
        f"{prefix}_p99_ms": round(1000 * percentile(values, 0.99)) if values else None,
        f"{prefix}_missing": len(created) - len(values),
    }


def writes(counts: dict[str, int]) -> int:
    return sum(n for key, n in counts.items() if key.split(" ")[0] in WRITE_VERBS)


# --- the objects ---------------------------------------------------------------------------------------------


def our_objects(ns: str, count: int) -> list[dict[str, Any]]:
    template = yaml.safe_load(OUR_EXAMPLE.read_text())
    out = []
    for i in range(count):
        doc = copy.deepcopy(template)
        doc["metadata"] = {"name": f"smollm2-{i:04d}", "namespace": ns}
        out.append(doc)
    return out


def kserve_objects(ns: str, count: int) -> list[dict[str, Any]]:
    """The same model for KServe: its Hugging Face runtime, picked by model format (as ours picks an engine),
    fetched by its storage initializer from the same repository's safetensors (KServe's runtime serves no
    GGUF), with the runtime's default CPU and memory."""
    spec = {
        "predictor": {
            "model": {
                "modelFormat": {"name": "huggingface"},
                "storageUri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
                "args": ["--max_model_len=2048"],
            }
        }
    }
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": f"smollm2-{i:04d}", "namespace": ns},
            "spec": copy.deepcopy(spec),
        }
        for i in range(count)
    ]


# --- the two controllers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One controller as the phase sees it: how to start it, what it is given, and when an object is done."""

    name: str
    user: str
    kind: tuple[str, str, str]  # group, version, plural
    namespace: str
    objects: Callable[[str, int], list[dict[str, Any]]]
    start: Callable[[Path], Operator]
    owner_kind: str  # the kind named in its Deployments' ownerReferences


def status_written(obj: dict[str, Any]) -> bool:
    """The controller has written a status for this generation: ours names the engine (or why none),
    KServe's has its conditions (it writes observedGeneration with them)."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    if status.get("observedGeneration") not in (None, generation):
        return False
    if obj.get("kind") == "InferenceService":
        return bool(status.get("conditions"))
    return status.get("observedGeneration") == generation and bool(status.get("engine") or status.get("reason"))


class Recorder:
    """When each object got its Deployment (by ownerReference) and when its status was first written."""

    def __init__(self, api: client.ApiClient, peer: Peer) -> None:
        self.api = api
        self.peer = peer
        self.created: dict[str, float] = {}
        self.deployment_at: dict[str, float] = {}
        self.status_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(self._deployments,), daemon=True),
            threading.Thread(target=self._loop, args=(self._objects,), daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, stream: Callable[[str | None], str | None]) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                version = stream(version)
            except ApiException as exc:
                version = None if exc.status == 410 else version
            except Exception:  # noqa: BLE001 - a dropped connection: resume
                time.sleep(0.2)

    def _deployments(self, version: str | None) -> str | None:
        apps = client.AppsV1Api(self.api)
        for event in watch.Watch().stream(
            apps.list_namespaced_deployment,
            self.peer.namespace,
            timeout_seconds=30,
            _request_timeout=60,
            resource_version=version,
        ):
            meta = event["object"].metadata
            version = meta.resource_version
            for ref in meta.owner_references or ():
                if ref.kind == self.peer.owner_kind:
                    with self.lock:
                        self.deployment_at.setdefault(ref.name, time.time())
            if self._stop.is_set():
                break
        return version

    def _objects(self, version: str | None) -> str | None:
        crs = client.CustomObjectsApi(self.api)
        group, ver, plural = self.peer.kind
        for event in watch.Watch().stream(
            crs.list_namespaced_custom_object,
            group,
            ver,
            self.peer.namespace,
            plural,
            timeout_seconds=30,
            _request_timeout=60,
            resource_version=version,
        ):
            obj = event["object"]
            version = obj["metadata"].get("resourceVersion") or version
            if status_written(obj):
                with self.lock:
                    self.status_at.setdefault(obj["metadata"]["name"], time.time())
            if self._stop.is_set():
                break
        return version

    def missing(self, names: list[str]) -> list[str]:
        with self.lock:
            return [n for n in names if n not in self.deployment_at or n not in self.status_at]


def start_ours(workdir: Path, server: str, src: Path | None) -> Callable[[Path], Operator]:
    def start(log: Path) -> Operator:
        return Operator(operator_kubeconfig(workdir, server), log, src)

    return start


class KServe(Operator):
    """KServe's controller manager as a process, with Operator's CPU, memory and stop."""

    def __init__(self, binary: Path, kubeconfig: Path, tmpdir: Path, log: Path) -> None:
        self.metrics_port, self.health_port, self.webhook_port = free_port(), free_port(), free_port()
        # POD_NAMESPACE: where it reads inferenceservice-config; TMPDIR: controller-runtime's webhook server
        # reads its serving certificate from $TMPDIR/k8s-webhook-server/serving-certs.
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": KSERVE_NS, "TMPDIR": str(tmpdir)}
        cmd = [
            str(binary),
            f"-metrics-addr=127.0.0.1:{self.metrics_port}",
            f"-health-probe-addr=127.0.0.1:{self.health_port}",
            f"-webhook-port={self.webhook_port}",
            "-zap-log-level=error",  # as quiet as ours runs (--quiet): its per-object INFO lines are not the job
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def kserve_config(source: Path) -> dict[str, Any]:
    """The release's inferenceservice-config, in Standard (raw Deployment) mode: no Knative here."""
    doc = yaml.safe_load((source / "config/configmap/inferenceservice.yaml").read_text())
    doc["metadata"] = {"name": "inferenceservice-config", "namespace": KSERVE_NS}
    doc["data"]["deploy"] = json.dumps({"defaultDeploymentMode": "Standard"})
    # No Istio here: as its warning Event (posted on every reconcile otherwise) tells such a user to.
    ingress = json.loads(doc["data"]["ingress"])
    doc["data"]["ingress"] = json.dumps({**ingress, "disableIstioVirtualHost": True})
    return doc


def kserve_runtime(source: Path) -> dict[str, Any]:
    """The Hugging Face ClusterServingRuntime, with the image its kustomization gives it at this release."""
    doc = yaml.safe_load((source / "config/runtimes/kserve-huggingfaceserver.yaml").read_text())
    images = yaml.safe_load((source / "config/runtimes/kustomization.yaml").read_text()).get("images") or []
    mapped = {i["name"]: f"{i.get('newName', i['name'])}:{i.get('newTag', 'latest')}" for i in images}
    for container in doc["spec"]["containers"]:
        name = container["image"].split(":")[0]
        container["image"] = mapped.get(name, f"kserve/huggingfaceserver:{build.KSERVE_VERSION}")
    return doc


def kserve_webhooks(source: Path, port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """The release's webhook configurations for InferenceServices and pods, pointed at the manager's
    loopback port instead of its in-cluster Service."""
    out = []
    wanted = (
        "/mutate-serving-kserve-io-v1beta1-inferenceservice",
        "/validate-serving-kserve-io-v1beta1-inferenceservice",
    )
    for doc in yaml.safe_load_all((source / "config/webhook/manifests.yaml").read_text()):
        if not doc:
            continue
        hooks = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if path not in (*wanted, "/mutate-pods"):
                continue
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            hooks.append(hook)
        if hooks:
            doc["metadata"] = {"name": f"bench-{doc['metadata']['name']}"}
            doc["webhooks"] = hooks
            out.append(doc)
    return out


class KServeSetup:
    """KServe's cluster-side pieces, installed once; `start` runs its manager and registers its webhooks."""

    def __init__(self, api: client.ApiClient, workdir: Path, server: str) -> None:
        self.api = api
        self.workdir = workdir
        self.server = server
        self.binary = build.ensure(build.KSERVE, say)["manager"]
        self.source = build.module_source(build.KSERVE)
        install_crds(api, load_crds([self.source / f for f in KSERVE_CRDS]))
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": KSERVE_NS}})
        core.create_namespaced_config_map(KSERVE_NS, kserve_config(self.source))
        client.CustomObjectsApi(api).create_cluster_custom_object(
            "serving.kserve.io", "v1alpha1", "clusterservingruntimes", kserve_runtime(self.source)
        )
        self.tmpdir = workdir / "kserve-tmp"
        certs = self.tmpdir / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True)
        CertificateAuthority(certs).issue("tls", "kserve-webhook", server=True)
        self.kubeconfig = operator_kubeconfig(workdir, server, KSERVE_USER)

    def start(self, log: Path) -> Operator:
        import base64

        manager = KServe(self.binary, self.kubeconfig, self.tmpdir, log)
        ca = base64.b64encode((self.tmpdir / "k8s-webhook-server/serving-certs/ca.crt").read_bytes()).decode()
        adm = client.AdmissionregistrationV1Api(self.api)
        for doc in kserve_webhooks(self.source, manager.webhook_port, ca):
            create = (
                adm.create_mutating_webhook_configuration
                if doc["kind"] == "MutatingWebhookConfiguration"
                else adm.create_validating_webhook_configuration
            )
            create(doc)
        return manager


# --- one phase ---------------------------------------------------------------------------------------------------


def went_quiet(audit: Audit, seconds: float, limit: float) -> bool:
    """Wait until the controller makes no request for `seconds` (at most `limit`); False if it never did."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        audit.mark()
        time.sleep(seconds)
        if not audit.since_mark():
            return True
    return False


def phase(
    api: client.ApiClient,
    peer: Peer,
    audit_log: Path,
    workdir: Path,
    node: str,
    control_plane: dict[str, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One controller's run; `control_plane` (name -> pid) is billed too: what a controller asks of the
    apiserver and etcd (applies, creates, GETs, validation) is part of what it costs."""
    core = client.CoreV1Api(api)
    crs = client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": peer.namespace}})
    audit = Audit(audit_log, peer.user)
    result: dict[str, Any] = {"controller": peer.name, "load_before": loadavg()}
    say(f"{peer.name}: starting the controller")
    proc = peer.start(workdir / f"{peer.name}.log")
    recorder: Recorder | None = None
    try:
        wait(f"{peer.name}'s health endpoint", proc.healthy, 120)
        time.sleep(args.settle)
        cpu0, t0 = proc.cpu_s(), time.monotonic()
        audit.mark()
        time.sleep(args.idle)
        result["idle_cpu_percent_before"] = round(100 * (proc.cpu_s() - cpu0) / (time.monotonic() - t0), 2)
        result["idle_requests_before"] = sum(audit.since_mark().values())
        result["rss_mib_idle"] = round(proc.memory_mib()[0], 1)

        recorder = Recorder(api, peer)
        recorder.start()
        time.sleep(1)
        docs = peer.objects(peer.namespace, args.objects)
        group, version, plural = peer.kind
        audit.mark()
        whole = Audit(audit_log, peer.user)  # the burst and everything it set going, until quiet
        whole.mark()
        cpu0 = proc.cpu_s()
        cp0 = {name: process_cpu_s(pid) for name, pid in control_plane.items()}
        t0 = time.time()
        say(f"{peer.name}: creating {len(docs)} objects at {args.rate}/s")
        for i, doc in enumerate(docs):
            if (delay := t0 + i / args.rate - time.time()) > 0:
                time.sleep(delay)
            crs.create_namespaced_custom_object(group, version, peer.namespace, plural, doc)
            recorder.created[doc["metadata"]["name"]] = time.time()
        result["burst_s"] = round(time.time() - t0, 1)
        names = [d["metadata"]["name"] for d in docs]
        try:
            wait("convergence", lambda: not recorder.missing(names), args.timeout)  # type: ignore[union-attr]
        except SystemExit:
            missing = recorder.missing(names)
            say(f"{peer.name}: not converged: {len(missing)} objects, e.g. {missing[:5]}")
            result["not_converged"] = len(missing)
        with recorder.lock:
            seen = [recorder.deployment_at.get(n, t0) for n in names] + [recorder.status_at.get(n, t0) for n in names]
        t_done = max(seen)
        cpu_burst = proc.cpu_s() - cpu0
        for name, pid in control_plane.items():
            result[f"{name}_cpu_ms_per_object"] = round(1000 * (process_cpu_s(pid) - cp0[name]) / args.objects, 1)
        counts = audit.since_mark()
        behind = [
            recorder.status_at[n] - recorder.deployment_at[n]
            for n in names
            if n in recorder.status_at and n in recorder.deployment_at
        ]
        result |= {
            "converge_s": round(t_done - t0, 1),
            **latency_figures(recorder.created, recorder.deployment_at, "create_to_deployment"),
            **latency_figures(recorder.created, recorder.status_at, "create_to_status"),
            "status_after_deployment_p99_ms": round(1000 * percentile(behind, 0.99)) if behind else None,
            "cpu_ms_per_object": round(1000 * cpu_burst / args.objects, 1),
            "requests_per_object": round(sum(counts.values()) / args.objects, 2),
            "writes_per_object": round(writes(counts) / args.objects, 2),
            "requests_per_object_by_verb": {k: round(v / args.objects, 2) for k, v in sorted(verbs(counts).items())},
            "requests_per_object_by_resource": {k: round(v / args.objects, 2) for k, v in sorted(counts.items())},
        }
        result |= after_convergence(proc, t_done)

        # What the burst cost in all: a controller may still be working through it after convergence (its
        # rollouts' status, a queue held back by client-side rate limits). Quiet: no request for `settle` s.
        quiet = went_quiet(audit, args.settle, args.quiet_timeout)
        total = whole.since_mark()
        result |= {
            "quiet_after_burst_start_s": round(time.time() - args.settle - t0, 1) if quiet else None,
            "cpu_ms_per_object_until_quiet": round(1000 * (proc.cpu_s() - cpu0) / args.objects, 1),
            "requests_per_object_until_quiet": round(sum(total.values()) / args.objects, 2),
            "writes_per_object_until_quiet": round(writes(total) / args.objects, 2),
            **{
                f"{name}_cpu_ms_per_object_until_quiet": round(
                    1000 * (process_cpu_s(pid) - cp0[name]) / args.objects, 1
                )
                for name, pid in control_plane.items()
            },
            "requests_until_quiet_by_resource": {k: round(v / args.objects, 2) for k, v in sorted(total.items())},
        }
        # Node churn that changes no decision: a label no rule reads, twice. Ours re-judges what it must (a
        # decision may read any label); a controller that does not read nodes does nothing.
        audit.mark()
        cpu0 = proc.cpu_s()
        for round_ in (1, 2):
            core.patch_node(node, {"metadata": {"labels": {"bench.modeldeploy.io/round": f"{peer.name}-{round_}"}}})
            time.sleep(args.steady)
        steady = audit.since_mark()
        result["node_change_requests"] = sum(steady.values())
        result["node_change_writes"] = writes(steady)
        result["node_change_cpu_ms"] = round(1000 * (proc.cpu_s() - cpu0))
        cpu0, t0m = proc.cpu_s(), time.monotonic()
        audit.mark()
        time.sleep(args.idle)
        elapsed = time.monotonic() - t0m
        result["idle_cpu_percent_after"] = round(100 * (proc.cpu_s() - cpu0) / elapsed, 2)
        result["idle_requests_per_min_after"] = round(60 * sum(audit.since_mark().values()) / elapsed, 1)
        result["rss_mib_end"] = round(proc.memory_mib()[0], 1)
        result["load_after"] = loadavg()
        if args.clean:
            clean(api, peer.namespace, args.timeout)
        return result
    finally:
        if recorder is not None:
            recorder.stop()
        proc.stop()


def clean(api: client.ApiClient, ns: str, timeout: float) -> None:
    """Delete the phase's namespace while its controller still runs (it may hold finalizers) and wait until
    it is gone, so the next controller starts on the cluster the first one had."""
    core = client.CoreV1Api(api)
    say(f"deleting namespace {ns}")
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    with contextlib.suppress(SystemExit):
        wait(f"namespace {ns} to go", gone, timeout, interval=2)


# --- the run ---------------------------------------------------------------------------------------------------


def audit_policy(users: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": users}, {"level": "None"}],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="md-peer-"))
    cluster, audit_log = audited_cluster(workdir, audit_policy([OPERATOR_USER, KSERVE_USER]))
    kubelet: FakeKubelet | None = None
    out: dict[str, Any] = {"nodes": args.nodes, "objects": args.objects, "rate": args.rate, "cpus": os.cpu_count()}
    out["uptime_before"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    try:
        api, core, kubelet, names = start_with_nodes(cluster, args.nodes)
        wait("the nodes' not-ready taints to go", lambda: untainted(core), 300, interval=2)
        install_crd(api)
        kserve = KServeSetup(api, cluster.workdir, cluster.server)
        peers = {
            "ours": Peer(
                "ours",
                OPERATOR_USER,
                (GROUP, VERSION, PLURAL),
                "peer-ours",
                our_objects,
                start_ours(cluster.workdir, cluster.server, args.operator_src),
                "ModelDeployment",
            ),
            "kserve": Peer(
                "kserve", KSERVE_USER, ISVC, "peer-kserve", kserve_objects, kserve.start, "InferenceService"
            ),
        }
        for name in args.order.split(","):
            control_plane = {c: cluster.procs[c].pid for c in ("apiserver", "etcd")}
            out[name] = phase(api, peers[name], audit_log, workdir, names[0], control_plane, args)
        if "ours" in out and "kserve" in out:
            out["ratios_ours_over_kserve"] = ratios(out["ours"], out["kserve"])
        out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        out["kserve_version"] = build.KSERVE_VERSION
        return out
    finally:
        if kubelet is not None:
            kubelet.stop()
        cluster.stop()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def table(out: dict[str, Any]) -> str:
    rows = [f"{'figure':36} {'ours':>12} {'kserve':>12} {'ours/kserve':>12}"]
    ours, theirs = out.get("ours", {}), out.get("kserve", {})
    keys = [k for k in ours if k in theirs and not isinstance(ours[k], dict)]
    for key in keys:
        r = (
            ratio(ours[key], theirs[key])
            if isinstance(ours[key], (int, float)) and not isinstance(ours[key], bool)
            else None
        )
        rows.append(f"{key:36} {ours[key]!s:>12} {theirs[key]!s:>12} {'' if r is None else r:>12}")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--rate", type=float, default=25.0, help="objects created per second, for each controller")
    p.add_argument("--order", default="ours,kserve", help="the phases, in order: ours,kserve or kserve,ours")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for convergence")
    p.add_argument("--settle", type=float, default=10, help="seconds of quiet between phases")
    p.add_argument("--idle", type=float, default=15, help="seconds of idle CPU measurement")
    p.add_argument("--steady", type=float, default=10, help="seconds after each node change")
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=600,
        help="seconds to wait, after convergence, for a controller to go quiet",
    )
    p.add_argument("--no-clean", dest="clean", action="store_false", help="keep each phase's namespace")
    p.add_argument("--operator-src", type=Path, default=None, help="run the operator of another checkout")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(table(out))
        for name in ("ours", "kserve"):
            for key in ("requests_per_object_by_resource",):
                print(f"{name} {key}: {out.get(name, {}).get(key)}")
        for key in ("uptime_before", "uptime_after"):
            print(f"{key}: {out[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
