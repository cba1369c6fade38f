"""The operator at scale: N fake nodes x M ModelDeployments on the local control plane.

    .venv/bin/python bench/scale.py --nodes 500 --objects 1000 [--rate 25] [--operator-src DIR] [--json]

What it does, in order:
1. starts the local control plane (etcd, kube-apiserver, controller-manager, scheduler) in a temporary
   directory, with an apiserver audit log that records the operator's requests only (the operator runs
   under a client certificate of its own, `modeldeploy-operator`; the apiserver's /metrics carry no user
   label, its audit log does);
2. creates N nodes copied round-robin from the usable (Ready, schedulable) nodes of
   examples/nodes/demo-cluster.yaml, starts the fake kubelet (leases every 10 s, like a kubelet) and
   waits until the node lifecycle controller has taken every node's not-ready taint off (a cluster whose
   nodes are still becoming schedulable is node churn, a different measurement: `--during-node-churn`);
3. starts `modeldeploy run` as a process (from this checkout, or `--operator-src` for another one),
   waits until it is idle and measures its idle CPU;
4. one client creates M ModelDeployments copied round-robin from examples/modeldeployments/ at `--rate`
   per second, while two watches record when each object's Deployment appears and when its status
   shows a decision for its generation;
5. prints: converge time (burst start until every object is decided and, where an engine was chosen,
   its Deployment exists), create -> Deployment p50/p99, create -> status p50/p99 (the status naming the
   engine) and how far it trails its Deployment, operator CPU per ModelDeployment (the burst until
   convergence) and in the 30 s after it, how many rollouts ended in those 30 s and how far each Ready
   status trailed its Deployment's available replicas, API requests per ModelDeployment by verb, RSS,
   the operator's CPU in the 10 s after every status says Ready, how many of its Events were stored after
   convergence (by reason) and the last one that is not a rollout's Ready, and then, once the operator has made
   no request for `--settle` seconds, a steady-state round:
   one node relabelled (every ModelDeployment is re-evaluated, nothing changes) and the requests and
   writes that cost per object.

Figures, not asserts: the machine's load is printed next to them (`uptime`), since a shared machine moves
absolute numbers; compare runs of the same size on the same machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config, watch

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy_dev import LocalCluster
from modeldeploy_dev.dev import install_crd
from modeldeploy_dev.nodes import FakeKubelet, create_node, is_ready, load_node_set

REPO = Path(__file__).resolve().parents[1]
NODES_FILE = REPO / "examples" / "nodes" / "demo-cluster.yaml"
EXAMPLES = sorted((REPO / "examples" / "modeldeployments").glob("*.yaml"))
NS = "scale"
OPERATOR_USER = "modeldeploy-operator"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the operator's own identity ---------------------------------------------------------------------------


def operator_kubeconfig(workdir: Path, server: str, user: str = OPERATOR_USER) -> Path:
    """A client certificate for `user` (system:masters), signed by the cluster's CA, and its kubeconfig.

    The audit log tells controllers apart by this user (bench/peer.py runs a peer's controller as another)."""
    pki = workdir / "pki"
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, user),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    stem = "operator" if user == OPERATOR_USER else user
    (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [
            {
                "name": "op",
                "user": {"client-certificate": str(pki / f"{stem}.crt"), "client-key": str(pki / f"{stem}.key")},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "op"}}],
        "current-context": "local",
    }
    path = workdir / f"{stem}.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the operator process ------------------------------------------------------------------------------------


class Operator:
    def __init__(self, kubeconfig: Path, log: Path, src: Path | None, quiet: bool = True) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        if src is not None:
            env["PYTHONPATH"] = str(src / "operator")
        cmd = [
            sys.executable,
            "-m",
            "modeldeploy.controller.run",
            "--standalone",
            "--all-namespaces",
            *(["--quiet"] if quiet else []),
            f"--metrics-port={self.metrics_port}",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB: now and the peak."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the audit log -------------------------------------------------------------------------------------------


class Audit:
    """The operator's requests, counted from the apiserver's audit log (JSON lines); `user` keeps one
    client's requests where the policy logs several."""

    def __init__(self, path: Path, user: str | None = None) -> None:
        self.path = path
        self.user = user
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        if not self.path.exists():
            return counts
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    verb = event.get("verb", "?")
                    # A watch is logged when it starts and when it ends; count its start, the rest at completion.
                    stage = event.get("stage")
                    if (verb == "watch" and stage != "ResponseStarted") or (
                        verb != "watch" and stage != "ResponseComplete"
                    ):
                        continue
                    if self.user is not None and (event.get("user") or {}).get("username") != self.user:
                        continue
                    ref = event.get("objectRef") or {}
                    resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                    counts[f"{verb} {resource}"] += 1
        return counts


def verbs(counts: collections.Counter[str]) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for key, n in counts.items():
        verb, _, resource = key.partition(" ")
        # SSA of children is a patch with the apply content type; the audit log keeps the verb "patch".
        out[verb] += n
    return out


# --- watching the burst -----------------------------------------------------------------------------------------


class Recorder:
    """When each ModelDeployment got its Deployment, and when its status first showed a decision."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.created: dict[str, float] = {}
        self.deployment_at: dict[str, float] = {}
        self.available_at: dict[str, float] = {}  # when the Deployment first had all its replicas available
        self.ready_at: dict[str, float] = {}  # when the status first said every replica is ready
        self.decided_at: dict[str, float] = {}
        self.engine_at: dict[str, float] = {}  # when the status first named the engine it chose
        self.engine: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch_deployments, daemon=True),
            threading.Thread(target=self._watch_mds, daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch_deployments(self) -> None:
        apps = client.AppsV1Api(self.api)
        version: str | None = None
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                # Resumed from the last version seen: a reconnect that listed every object again would
                # hold the next events back behind a replay of them all (and time them late).
                for event in w.stream(
                    apps.list_namespaced_deployment,
                    NS,
                    timeout_seconds=30,
                    _request_timeout=60,
                    resource_version=version,
                ):
                    obj = event["object"]
                    name, version = obj.metadata.name, obj.metadata.resource_version
                    wanted = obj.spec.replicas if obj.spec.replicas is not None else 1
                    with self.lock:
                        self.deployment_at.setdefault(name, time.time())
                        if wanted and (obj.status.available_replicas or 0) >= wanted:
                            self.available_at.setdefault(name, time.time())
                    if self._stop.is_set():
                        break
            except client.ApiException as exc:
                version = None if exc.status == 410 else version
            except Exception:  # noqa: BLE001 - a dropped connection: resume
                pass

    def _watch_mds(self) -> None:
        crs = client.CustomObjectsApi(self.api)
        version: str | None = None
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    crs.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    NS,
                    PLURAL,
                    timeout_seconds=30,
                    _request_timeout=60,
                    resource_version=version,
                ):
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    version = obj["metadata"].get("resourceVersion") or version
                    status = obj.get("status") or {}
                    decided = status.get("observedGeneration") == obj["metadata"].get("generation") and (
                        status.get("engine") or status.get("reason")
                    )
                    ready = str(status.get("ready") or "").split("/")
                    if len(ready) == 2 and ready[1] not in ("", "0") and ready[0] == ready[1]:
                        with self.lock:
                            self.ready_at.setdefault(name, time.time())
                    if decided:
                        conditions = {c.get("type"): c for c in status.get("conditions") or ()}
                        chosen = (conditions.get("EngineSelected") or {}).get("status") == "True"
                        with self.lock:
                            self.decided_at.setdefault(name, time.time())
                            if status.get("engine"):
                                self.engine_at.setdefault(name, time.time())
                            # An engine was chosen: converged only once its Deployment exists (an apply
                            # the apiserver refused for now is decided, not converged).
                            self.engine[name] = status.get("engine") or ("chosen" if chosen else None)
                    if self._stop.is_set():
                        break
            except client.ApiException as exc:
                version = None if exc.status == 410 else version
            except Exception:  # noqa: BLE001 - a dropped connection: resume
                pass

    def converged(self, names: list[str]) -> bool:
        with self.lock:
            for name in names:
                if name not in self.decided_at:
                    return False
                if self.engine.get(name) and name not in self.deployment_at:
                    return False
        return True

    def missing(self, names: list[str]) -> list[str]:
        with self.lock:
            return [
                n for n in names if n not in self.decided_at or (self.engine.get(n) and n not in self.deployment_at)
            ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- the run ---------------------------------------------------------------------------------------------------


def make_nodes(core: client.CoreV1Api, count: int) -> list[str]:
    usable = [n for n in load_node_set(NODES_FILE) if is_ready(n) and not (n.get("spec") or {}).get("unschedulable")]
    docs = []
    for i in range(count):
        node = copy.deepcopy(usable[i % len(usable)])
        name = f"{node['metadata']['name']}-{i:04d}"
        node["metadata"]["name"] = name
        labels = node["metadata"].setdefault("labels", {})
        labels["kubernetes.io/hostname"] = name
        docs.append(node)
    names: list[str] = []
    lock = threading.Lock()

    def work(chunk: list[dict[str, Any]]) -> None:
        for doc in chunk:
            got = create_node(core, doc)
            with lock:
                names.append(got)

    threads = [threading.Thread(target=work, args=(docs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(names)


def untainted(core: client.CoreV1Api) -> bool:
    return not any(
        t.key == "node.kubernetes.io/not-ready" for n in core.list_node().items for t in (n.spec.taints or ())
    )


def tainted(core: client.CoreV1Api) -> int:
    """How many nodes still carry the not-ready taint."""
    return sum(
        any(t.key == "node.kubernetes.io/not-ready" for t in (n.spec.taints or ())) for n in core.list_node().items
    )


def model_deployments(count: int) -> list[dict[str, Any]]:
    templates = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    out = []
    for i in range(count):
        doc = copy.deepcopy(templates[i % len(templates)])
        stem = EXAMPLES[i % len(EXAMPLES)].stem.replace(".", "-").replace("_", "-")[:40]
        doc["metadata"] = {"name": f"{stem}-{i:04d}", "namespace": NS}
        out.append(doc)
    return out


def wait(what: str, fn: Any, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(interval)
    raise SystemExit(f"scale: timed out after {timeout:.0f} s waiting for {what}")


def after_convergence(proc: Any, t_done: float) -> dict[str, float]:
    """RSS at convergence (and its peak), then the controller's CPU in the next 10 s and in the 20 s after
    those, and its RSS 30 s after: the rollouts of the fake kubelet's pods go on meanwhile, and their status
    writes are work, not idling. `proc` has cpu_s() and memory_mib() (Operator here; bench/peer.py's too)."""
    rss, peak = proc.memory_mib()
    cpu_converged = proc.cpu_s()
    time.sleep(max(0.0, t_done + 10 - time.time()))
    cpu_10 = proc.cpu_s()
    time.sleep(20)
    return {
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(peak, 1),
        "cpu_s_after_converge_0_10s": round(cpu_10 - cpu_converged, 2),
        "cpu_s_after_converge_10_30s": round(proc.cpu_s() - cpu_10, 2),
        "rss_mib_after_converge_30s": round(proc.memory_mib()[0], 1),
    }


def rollouts_after(recorder: Recorder, names: list[str], t_done: float) -> dict[str, Any]:
    """How far the rollouts ran past convergence (every object decided and its Deployment created), once
    they are over: the operator's work after convergence (`after_convergence`) is mostly following them,
    one status write per Deployment whose replicas became available, and the watch events of their pods.
    And how far each Ready status trailed its Deployment's available replicas."""
    with recorder.lock:
        available = {n: recorder.available_at[n] for n in names if n in recorder.available_at}
        behind = [recorder.ready_at[n] - t for n, t in available.items() if n in recorder.ready_at]
    late = [t - t_done for t in available.values() if t > t_done]
    return {
        "rollouts_after_convergence": len(late),
        "rollouts_in_30s_after_convergence": sum(1 for t in late if t <= 30),
        "last_rollout_s_after_convergence": round(max(late), 1) if late else 0.0,
        "ready_status_after_available_p50_ms": round(1000 * percentile(behind, 0.5)) if behind else None,
        "ready_status_after_available_p99_ms": round(1000 * percentile(behind, 0.99)) if behind else None,
    }


def events_after(core: client.CoreV1Api, t_done: float) -> dict[str, Any]:
    """The operator's Events about the ModelDeployments, by when the apiserver stored them: how many came
    after convergence, and the last one (its Ready Events follow the rollouts; the rest should not trail)."""
    stored = [
        (e.reason, e.metadata.creation_timestamp.timestamp())
        for e in core.list_namespaced_event(NS).items
        if e.involved_object.kind == "ModelDeployment"
    ]
    late = [(reason, t - t_done) for reason, t in stored if t > t_done + 1]  # creation times are whole seconds
    others = [after for reason, after in late if reason != "Ready"]
    return {
        "events": len(stored),
        "events_after_convergence": dict(sorted(collections.Counter(reason for reason, _ in late).items())),
        "last_event_not_ready_s_after_convergence": round(max(others), 1) if others else 0.0,
    }


def audited_cluster(workdir: Path, policy: dict[str, Any]) -> tuple[LocalCluster, Path]:
    """A local control plane (not started) whose apiserver writes an audit log by `policy`: the request
    counts come from there. Returns the cluster and the log's path."""
    policy_file = workdir / "audit-policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    audit_log = workdir / "audit.log"
    args = [f"--audit-policy-file={policy_file}", f"--audit-log-path={audit_log}", "--audit-log-maxsize=0"]
    return LocalCluster(workdir / "cluster", log=say, apiserver_args=args), audit_log


def start_with_nodes(
    cluster: LocalCluster, count: int
) -> tuple[client.ApiClient, client.CoreV1Api, FakeKubelet, list[str]]:
    """Start the cluster, create `count` fake nodes and the kubelet that keeps them Ready; the nodes' names."""
    cluster.start()
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
    api.configuration.connection_pool_maxsize = 8
    core = client.CoreV1Api(api)
    say(f"creating {count} nodes")
    names = make_nodes(core, count)
    return api, core, FakeKubelet(api, names).start(), names


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="md-scale-"))
    rules = [{**AUDIT_POLICY["rules"][0], "level": args.audit_level}, *AUDIT_POLICY["rules"][1:]]
    cluster, audit_log = audited_cluster(workdir, {**AUDIT_POLICY, "rules": rules})
    operator: Operator | None = None
    kubelet: FakeKubelet | None = None
    recorder: Recorder | None = None
    result: dict[str, Any] = {"nodes": args.nodes, "objects": args.objects, "rate": args.rate}
    result["load_before"] = Path("/proc/loadavg").read_text().split()[:3]
    try:
        api, core, kubelet, names = start_with_nodes(cluster, args.nodes)
        # A new node carries the not-ready taint until the node lifecycle controller has seen it Ready, which
        # it does a few nodes a second; a burst into nodes still losing it measures node churn instead
        # (every ModelDeployment re-evaluated as each node becomes schedulable).
        if not args.during_node_churn:
            wait("the nodes' not-ready taints to go", lambda: untainted(core), 300, interval=2)
        tainted_at_burst: int | None = None
        install_crd(api)
        core.create_namespace({"metadata": {"name": NS}})
        audit = Audit(audit_log)
        operator = Operator(
            operator_kubeconfig(cluster.workdir, cluster.server),
            workdir / "operator.log",
            args.operator_src,
            quiet=not args.operator_info,
        )
        wait("the operator's liveness endpoint", operator.healthy, 120)
        time.sleep(args.settle)
        idle_cpu0, idle_t0 = operator.cpu_s(), time.monotonic()
        audit.mark()
        time.sleep(args.idle)
        idle_cpu = (operator.cpu_s() - idle_cpu0) / (time.monotonic() - idle_t0)
        idle_requests = sum(audit.since_mark().values())
        result["idle_cpu_percent_before"] = round(100 * idle_cpu, 2)
        result["idle_requests_before"] = idle_requests
        result["rss_mib_idle"] = round(operator.memory_mib()[0], 1)

        recorder = Recorder(api)
        recorder.start()
        time.sleep(1)
        docs = model_deployments(args.objects)
        crs = client.CustomObjectsApi(api)
        audit.mark()
        cpu0 = operator.cpu_s()
        # The rest of the machine over the same span: on 2 cores the apiserver's share bounds convergence.
        others = {name: proc.pid for name, proc in cluster.procs.items()}
        others["bench (client, watches, kubelet)"] = os.getpid()
        others0 = {name: process_cpu_s(pid) for name, pid in others.items()}
        t0 = time.time()
        if args.during_node_churn:
            tainted_at_burst = tainted(core)  # still to lose the taint as the burst starts
            say(f"{tainted_at_burst} of {args.nodes} nodes still carry the not-ready taint")
        say(f"creating {len(docs)} ModelDeployments at {args.rate}/s")
        for i, doc in enumerate(docs):
            due = t0 + i / args.rate
            if (delay := due - time.time()) > 0:
                time.sleep(delay)
            crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)
            recorder.created[doc["metadata"]["name"]] = time.time()
        result["burst_s"] = round(time.time() - t0, 1)
        md_names = [d["metadata"]["name"] for d in docs]
        try:
            wait("convergence", lambda: recorder.converged(md_names), args.timeout)  # type: ignore[union-attr]
        except SystemExit:
            missing = recorder.missing(md_names)
            say(f"not converged: {len(missing)} objects, e.g. {missing[:5]}")
            result["not_converged"] = len(missing)
        t_done = max(
            [recorder.decided_at.get(n, t0) for n in md_names]
            + [recorder.deployment_at.get(n, t0) for n in md_names if recorder.engine.get(n)]
        )
        cpu_burst = operator.cpu_s() - cpu0
        result["cpu_s_to_convergence"] = {
            "operator": round(cpu_burst, 1),
            **{name: round(process_cpu_s(pid) - others0[name], 1) for name, pid in others.items()},
            "span": round(t_done - t0, 1),
        }
        burst_counts = audit.since_mark()
        latencies = [recorder.deployment_at[n] - recorder.created[n] for n in md_names if n in recorder.deployment_at]
        # The status that names the engine, against its own Deployment (the same object's): how far the status
        # a user reads trails what the operator did.
        with_engine = [n for n in md_names if n in recorder.engine_at and n in recorder.deployment_at]
        to_status = [recorder.engine_at[n] - recorder.created[n] for n in with_engine]
        behind = [recorder.engine_at[n] - recorder.deployment_at[n] for n in with_engine]
        result |= {
            "converge_s": round(t_done - t0, 1),
            "deployments": len(latencies),
            "create_to_deployment_p50_ms": round(1000 * percentile(latencies, 0.5)),
            "create_to_deployment_p99_ms": round(1000 * percentile(latencies, 0.99)),
            "create_to_status_p50_ms": round(1000 * percentile(to_status, 0.5)),
            "create_to_status_p99_ms": round(1000 * percentile(to_status, 0.99)),
            "status_after_deployment_p50_ms": round(1000 * percentile(behind, 0.5)),
            "status_after_deployment_p99_ms": round(1000 * percentile(behind, 0.99)),
            "operator_cpu_ms_per_object": round(1000 * cpu_burst / args.objects, 1),
            "requests_per_object": {k: round(v / args.objects, 2) for k, v in sorted(verbs(burst_counts).items())},
            "requests_per_object_by_resource": {k: round(v / args.objects, 2) for k, v in sorted(burst_counts.items())},
        }
        result |= after_convergence(operator, t_done)

        # Steady state: let rollouts finish, then node changes that change no decision: a label no rule
        # reads. The operator re-evaluates every ModelDeployment (any decision may depend on any label).
        def rolled_out() -> bool:
            """Every object Ready, or held back for a reason the cluster gives (no room for its pods)."""
            items = crs.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
            for item in items:
                status = item.get("status") or {}
                ready = str(status.get("ready", "")).split("/")
                if status.get("engine") and ready[0] != ready[-1] and status.get("reason") != "Unschedulable":
                    return False
            return True

        with contextlib.suppress(SystemExit):
            wait("every rollout", rolled_out, 300, interval=3)
        result |= rollouts_after(recorder, md_names, t_done)
        result |= events_after(core, t_done)
        # The operator once the last rollout is in every status: what is left of the burst's work.
        cpu_rolled = operator.cpu_s()
        time.sleep(10)
        result["cpu_s_10s_after_rollouts"] = round(operator.cpu_s() - cpu_rolled, 2)

        def operator_quiet() -> bool:
            """No request from the operator for `settle` seconds (the burst's Events are posted by then)."""
            audit.mark()
            time.sleep(args.settle)
            return not audit.since_mark()

        with contextlib.suppress(SystemExit):
            wait("the operator to go quiet", operator_quiet, 180, interval=0)
        audit.mark()
        cpu0 = operator.cpu_s()
        for round_ in (1, 2):
            core.patch_node(names[0], {"metadata": {"labels": {"bench.modeldeploy.io/round": str(round_)}}})
            time.sleep(args.steady)
        steady = audit.since_mark()
        result["steady_requests"] = dict(sorted(steady.items()))
        writes = sum(n for key, n in steady.items() if key.split(" ")[0] in ("apply", "patch", "update", "create"))
        result["steady_rounds"] = 2
        result["steady_requests_per_reconcile"] = round(sum(steady.values()) / (2 * args.objects), 3)
        result["steady_writes"] = writes
        result["steady_cpu_ms_per_reconcile"] = round(1000 * (operator.cpu_s() - cpu0) / (2 * args.objects), 2)
        idle_cpu0, idle_t0 = operator.cpu_s(), time.monotonic()
        audit.mark()
        time.sleep(args.idle)
        result["idle_cpu_percent_after"] = round(100 * (operator.cpu_s() - idle_cpu0) / (time.monotonic() - idle_t0), 2)
        result["idle_requests_after"] = sum(audit.since_mark().values())
        result["rss_mib_end"] = round(operator.memory_mib()[0], 1)
        result["load"] = Path("/proc/loadavg").read_text().split()[:3]
        result["tainted_at_burst_start"] = tainted_at_burst
        result["cpus"] = os.cpu_count()
        return result
    finally:
        if recorder is not None:
            recorder.stop()
        if operator is not None:
            operator.stop()
        if kubelet is not None:
            kubelet.stop()
        cluster.stop()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--rate", type=float, default=25.0, help="ModelDeployments created per second")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for convergence")
    p.add_argument("--settle", type=float, default=10, help="seconds to let things settle between phases")
    p.add_argument("--idle", type=float, default=15, help="seconds of idle CPU measurement")
    p.add_argument("--steady", type=float, default=10, help="seconds per steady-state round")
    p.add_argument("--operator-src", type=Path, default=None, help="run the operator of another checkout")
    p.add_argument(
        "--audit-level", default="Metadata", choices=("Metadata", "Request"), help="Request: status bodies too"
    )
    p.add_argument(
        "--during-node-churn",
        action="store_true",
        help="start the burst at once, while the new nodes are still losing their not-ready taints",
    )
    p.add_argument("--operator-info", action="store_true", help="the operator logs at INFO (not --quiet)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
