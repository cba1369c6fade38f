"""`modeldeploy dev up|demo|down|status`: the whole loop on a machine with no cluster.

`up` starts a LocalCluster in its own directory, creates the bundled fake nodes (GPU, CPU-only, Apple
silicon), installs the CRD from crds/ and starts the operator and the fake kubelet as background
processes. `demo` does the same, applies the bundled example ModelDeployments, waits until the
operator has decided each one, prints them as `kubectl get modeldeployments` would, and tears it all
down unless `--keep`. Fake nodes only ever go into a cluster this command started (its directory
holds the cluster's state file); on a real cluster use `modeldeploy run` or the chart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.config import CONFIG_ENV
from modeldeploy.status_table import format_table
from modeldeploy_dev import autoscaling, devchat, helm, images, nodeconfig, realnode, testmodel
from modeldeploy_dev.build import BuildError, cache_root
from modeldeploy_dev.cluster import SERVICE_CIDR, ClusterError, LocalCluster, free_port, is_alive
from modeldeploy_dev.nodes import create_node, is_ready, load_node_set
from modeldeploy_dev.realnode import NodeError, RealNode

PROG = "modeldeploy dev"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_NODES = REPO / "examples" / "nodes" / "demo-cluster.yaml"
DEFAULT_EXAMPLES = REPO / "examples" / "modeldeployments"
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
CHART = REPO / "charts" / "modeldeploy"
HELPERS_FILE = "dev.json"  # pids of the fake kubelet, the provisioner, the Hub server (and a process operator)
NODE_DIR = "node"
OPERATOR_RELEASE, OPERATOR_NAMESPACE = "modeldeploy", "modeldeploy-system"
OPERATOR_CONFIG = "operator-config.yaml"
DEMO_QUESTION = "What is the capital of France?"


def default_dir() -> Path:
    return cache_root() / "dev-cluster"


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="the cluster's directory (default: the cache's dev-cluster)")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start the cluster, fake nodes and the operator, and leave them running")
    demo = sub.add_parser("demo", help="up, apply the examples, print the decisions, then down (unless --keep)")
    for q in (up, demo):
        q.add_argument("--nodes", type=Path, default=DEFAULT_NODES, help="`kubectl get nodes -o yaml` to fake")
    demo.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES, help="ModelDeployment YAML files to apply")
    demo.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    demo.add_argument("--timeout", type=float, default=120, help="seconds to wait for the operator's decisions")
    sub.add_parser("down", help="stop what `up` or `demo --keep` left running and remove its directory")
    sub.add_parser("status", help="whether the dev cluster runs, and its ModelDeployments")
    chat = sub.add_parser("chat", help="send one chat completion to a ModelDeployment running in the dev cluster")
    chat.add_argument("name", help="the ModelDeployment")
    chat.add_argument("prompt", help="what to ask")
    chat.add_argument("-n", "--namespace", default="default")
    chat.add_argument("--max-tokens", type=int, default=96)
    chat.add_argument("--system", default=devchat.SYSTEM_PROMPT, help="system prompt ('' for none)")
    return p


# --- pieces ---------------------------------------------------------------------------------------------


def _api(workdir: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(workdir / "kubeconfig"))


def install_crd(api: client.ApiClient, timeout: float = 60) -> None:
    """Create (or update) the CRD from crds/ and wait until it is Established."""
    ext = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(CRD_FILE.read_text())
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ext.read_custom_resource_definition(crd["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in got.status.conditions or ()):
            return
        time.sleep(0.3)
    raise ClusterError("the ModelDeployment CRD was not Established in time")


def _spawn(workdir: Path, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> int:
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    log = (workdir / "logs" / f"{name}.log").open("ab")
    env = {**os.environ, "KUBECONFIG": str(workdir / "kubeconfig"), **(extra_env or {})}
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    log.close()
    return proc.pid


def _hub(address: str) -> tuple[list[str], int]:
    """The local Hub server's command line (serving the real test model) and its port, on `address`."""
    repo_dir = testmodel.ensure_hub_repo(log=_say) / testmodel.HUB_REPO
    port = free_port(address)
    argv = [
        sys.executable,
        "-m",
        "modeldeploy_dev.hubserver",
        "--repo",
        f"{testmodel.HUB_REPO}={repo_dir}",
        "--host",
        address,
        "--port",
        str(port),
    ]
    return argv, port


def _start_node(workdir: Path) -> tuple[RealNode | None, list[Path]]:
    """The real node prepared (before the control plane: it must listen on the node's bridge) and the image
    archives it will import; (None, []) where this host cannot run one, said once."""
    why_not = realnode.available()
    if why_not is not None:
        _say(f"no real node, so no pod runs (they are only reported Running on fake nodes): {why_not}")
        return None, []
    archives = images.ensure_images(images.NAMES, log=_say)
    node = RealNode(workdir / NODE_DIR, images.PAUSE_IMAGE, log=_say).prepare(SERVICE_CIDR)
    return node, list(archives.values())


def up(workdir: Path, nodes_file: Path) -> LocalCluster:
    """Cluster, real node, fake nodes, CRD, Hub server, fake kubelet, storage provisioner and operator; all
    detached, their pids in the directory.

    With a real node the operator is installed by the Helm chart and runs from its image on that node (as
    a user installs it), and the Hub server listens on the node's address; without one the operator runs
    as a process. Either way its config points the fetch init container at the local Hub server
    (`fetchEnv`, the setting a cluster with a Hub mirror uses).
    """
    if LocalCluster.alive_pids(workdir) or realnode.detached_pids(workdir / NODE_DIR):
        raise ClusterError(f"a dev cluster already runs in {workdir}; `{PROG} down` first")
    nodes = load_node_set(nodes_file)
    if not nodes:
        raise ClusterError(f"{nodes_file}: no Node objects in it")
    shutil.rmtree(workdir, ignore_errors=True)
    node, archives = _start_node(workdir)
    address = node.address if node else "127.0.0.1"
    python = sys.executable
    try:
        hub_argv, hub_port = _hub(address)
        cluster = LocalCluster(workdir, log=_say, address=address).start(detach=True)
        api = _api(workdir)
        core = client.CoreV1Api(api)
        names = [create_node(core, n) for n in nodes]
        ready = [n["metadata"]["name"] for n in nodes if is_ready(n)]
        # The fake nodes' leases from now on: the node lifecycle controller marks a node whose lease is
        # 40 s old not Ready, and the real node's image import alone takes longer.
        pids = {
            "hub": _spawn(workdir, "hub", hub_argv),
            "kubelet": _spawn(workdir, "kubelet", [python, "-m", "modeldeploy_dev.kubelet", *ready]),
            # PersistentVolumeClaims of the default `local-path` class become directories (the model cache)
            "provisioner": _spawn(
                workdir, "provisioner", [python, "-m", "modeldeploy_dev.provisioner", str(workdir / "volumes")]
            ),
        }
        (workdir / HELPERS_FILE).write_text(json.dumps(pids))
        install_crd(api)
        if node is not None:
            assert cluster.ca is not None
            node.join(cluster.ca, cluster.server, archives)
            node.wait_ready(core)
    except BaseException:
        if node is not None:
            node.stop()
        down(workdir)
        raise
    hub_url = f"http://{address}:{hub_port}"
    fetch_env = [{"name": "HF_ENDPOINT", "value": hub_url}]
    if node is None:
        config_file = workdir / OPERATOR_CONFIG
        config_file.write_text(yaml.safe_dump({"fetchEnv": fetch_env}))
        pids["operator"] = _spawn(
            workdir,
            "operator",
            [python, "-m", "modeldeploy.controller.run", "--standalone", "--all-namespaces", "--metrics-port=0"],
            {CONFIG_ENV: str(config_file)},
        )
    (workdir / HELPERS_FILE).write_text(json.dumps(pids))
    config: dict[str, Any] = {"fetchEnv": fetch_env}
    if node is not None:
        # KEDA, its HTTP add-on and Prometheus beside the cluster: models may scale to zero and back
        # (docs/autoscaling.md). The operator only writes their addresses into the ScaledObjects.
        assert cluster.ca is not None
        stack = autoscaling.Stack(workdir / "autoscaling", workdir / "kubeconfig", cluster.ca, address, _say)
        try:
            stack.start(api)
            config["autoscaling"] = {
                "prometheusAddress": stack.prometheus_url,
                "httpAddon": {"enabled": True, "scalerAddress": stack.scaler_address},
            }
        except (BuildError, autoscaling.StackError) as exc:
            stack.stop()
            _say(f"no KEDA here, so no scale from zero (minReplicas 0 is raised to 1): {exc}")
        pids.update({f"autoscaling-{k}": v for k, v in stack.pids().items()})
        (workdir / HELPERS_FILE).write_text(json.dumps(pids))
        install_operator(workdir, api, config)
    where = f"on {node.name} from its image (Helm chart)" if node else "as a process"
    real = f", real node {node.name} Ready" if node else ""
    _say(
        f"{len(names)} fake nodes ({len(ready)} Ready){real}, CRD installed, operator running {where}, Hub at {hub_url}"
    )
    return cluster


def install_operator(workdir: Path, api: client.ApiClient, config: dict[str, Any], timeout: float = 180) -> None:
    """`helm install` of charts/modeldeploy, its pod on the real node, and wait until the operator is Ready."""
    values = {
        "config": config,
        "nodeSelector": nodeconfig.node_labels(),
        "tolerations": [nodeconfig.toleration()],
    }
    values_file = workdir / "operator-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm_bin = helm.ensure_helm()
    proc = subprocess.run(
        [
            str(helm_bin), "install", OPERATOR_RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
            "--create-namespace", "--kubeconfig", str(workdir / "kubeconfig"), "-f", str(values_file),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ClusterError(f"helm install of the operator failed: {proc.stderr.strip()[-2000:]}")
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = apps.list_namespaced_deployment(OPERATOR_NAMESPACE).items
        if deps and all((d.status.ready_replicas or 0) >= (d.spec.replicas or 1) for d in deps):
            return
        time.sleep(1)
    raise ClusterError(
        f"the operator's pod was not Ready after {timeout:.0f} s (kubectl -n {OPERATOR_NAMESPACE} get pods)"
    )


def down(workdir: Path) -> bool:
    """Stop the operator, the fake kubelet, the Hub server, the real node (its pods with it) and the cluster;
    put the host back as found; remove the directory. False when nothing ran."""
    ran = False
    pids: list[int] = []
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        for pid in json.loads((workdir / HELPERS_FILE).read_text()).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
                ran = True
                pids.append(int(pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    node_dir = workdir / NODE_DIR
    node_pids = realnode.detached_pids(node_dir)
    if node_pids or (node_dir / realnode.HOST_STATE_FILE).exists():
        realnode.stop_node(node_dir, node_pids, None, _say)
        ran = True
    ran = bool(LocalCluster.stop_detached(workdir)) or ran
    if workdir.exists() and (workdir / "kubeconfig").exists():
        shutil.rmtree(workdir, ignore_errors=True)
    return ran


def on_the_real_node(doc: dict[str, Any]) -> dict[str, Any]:
    """The example that serves the test model, made to run on the real node: its toleration and label.
    Every other example is applied as it is."""
    spec = doc["spec"]
    if (spec.get("model") or {}).get("uri") != testmodel.URI:
        return doc
    spec["tolerations"] = [*(spec.get("tolerations") or []), nodeconfig.toleration()]
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **nodeconfig.node_labels()}
    return doc


def apply_examples(
    api: client.ApiClient, directory: Path, namespace: str = "default", real_node: bool = False
) -> list[str]:
    """Create every ModelDeployment of the YAML files in `directory` (the test model's on the real node when
    there is one); their names."""
    crs = client.CustomObjectsApi(api)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ModelDeployment":
                continue
            if real_node:
                doc = on_the_real_node(doc)
            ns = doc["metadata"].get("namespace", namespace)
            try:
                crs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
            except ApiException as exc:
                raise ClusterError(f"{path}: the apiserver refused it: {_message(exc)}") from None
            names.append(doc["metadata"]["name"])
    return names


def _message(exc: ApiException) -> str:
    with contextlib.suppress(ValueError, TypeError):
        return str(json.loads(exc.body)["message"])
    return str(exc.reason)


def list_modeldeployments(api: client.ApiClient) -> list[dict[str, Any]]:
    got = client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL)
    return list(got.get("items") or [])


def settled(obj: dict[str, Any]) -> bool:
    """The operator has looked at this generation and it is either Ready or held back for a reason."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return status.get("ready") is not None and (bool(status.get("engine")) or bool(status.get("reason")))


def why(obj: dict[str, Any]) -> str:
    """The operator's explanation: EngineSelected's message, and Ready's when the pods are not ready."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or ()}
    selected = conditions.get("EngineSelected")
    if selected is None:
        return "(not decided yet)"
    text = str(selected.get("message") or selected.get("reason") or "")
    ready = conditions.get("Ready") or {}
    if ready.get("status") == "False" and selected.get("status") == "True":
        text += f"\n      not ready ({ready.get('reason')}): {ready.get('message')}"
    return text


def rolled_out(obj: dict[str, Any]) -> bool:
    ready = str((obj.get("status") or {}).get("ready") or "")
    return "/" in ready and ready.split("/")[0] == ready.split("/")[1]


def wait_settled(
    api: client.ApiClient, names: Sequence[str], timeout: float, rollout: float = 20
) -> list[dict[str, Any]]:
    """Wait until the operator has decided every one, then up to `rollout` s more for the rollouts.

    A ModelDeployment whose pods cannot be placed (all GPUs taken) stays RollingOut: it is shown as it is.
    """
    deadline = time.monotonic() + timeout
    objs: list[dict[str, Any]] = []
    decided_at: float | None = None
    while time.monotonic() < deadline:
        objs = [o for o in list_modeldeployments(api) if o["metadata"]["name"] in names]
        if len(objs) == len(names) and all(settled(o) for o in objs):
            decided_at = decided_at or time.monotonic()
            if all(rolled_out(o) or not o["status"].get("engine") for o in objs):
                break
            if time.monotonic() - decided_at > rollout:
                break
        time.sleep(1)
    return objs


# --- actions --------------------------------------------------------------------------------------------


def demo(args: argparse.Namespace, workdir: Path) -> int:
    started = time.monotonic()
    up(workdir, args.nodes)
    try:
        api = _api(workdir)
        real_node = bool(realnode.detached_pids(workdir / NODE_DIR))
        names = apply_examples(api, args.examples, real_node=real_node)
        applied = time.monotonic()
        _say(f"applied {len(names)} ModelDeployments from {args.examples}; waiting for the operator")
        objs = wait_settled(api, names, args.timeout, rollout=args.timeout)
        sys.stdout.write(format_table(objs))
        print("\nWhy (the EngineSelected and Ready conditions; every candidate's reasons are in status.selection):")
        for obj in sorted(objs, key=lambda o: o["metadata"]["name"]):
            print(f"  {obj['metadata']['name']}: {why(obj)}")
        decided = len(objs) == len(names) and all(settled(o) for o in objs)
        talked = conversation(api, objs, applied, real_node, workdir / "kubeconfig")
        _say(f"done in {time.monotonic() - started:.0f} s")
        if args.keep:
            print(f"\nThe cluster keeps running. export KUBECONFIG={workdir / 'kubeconfig'}")
            print(f"Chat with: modeldeploy dev --dir {workdir} chat NAME 'PROMPT'")
            print(f"Stop it with: modeldeploy dev --dir {workdir} down")
        return 0 if decided and talked else 1
    finally:
        if not args.keep:
            down(workdir)


def conversation(
    api: client.ApiClient, objs: list[dict[str, Any]], applied: float, real_node: bool, kubeconfig: Path
) -> bool:
    """Ask the example that serves the real test model a question; False when it cannot answer."""
    served = [o for o in objs if ((o.get("spec") or {}).get("model") or {}).get("uri") == testmodel.URI]
    if not served:
        return True  # other examples: nothing here runs a real model
    obj = served[0]
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    print(f"\nA real conversation with {name} ({testmodel.FILE}, llama.cpp on this machine's CPU, in the pod the")
    print("operator rendered, run by containerd on the real node from our images: fetched from the local Hub")
    print("server, auto-NGL, then the server; asked through its Service, see docs/real-node.md):")
    print(f"  you:   {DEMO_QUESTION}")
    try:
        key = devchat.api_key(api, name, ns)
        reply = devchat.chat(devchat.endpoint(api, name, ns), name, DEMO_QUESTION, key=key)
    except devchat.ChatError as exc:
        print(f"  (no answer: {exc})")
        return not real_node  # only a failure where pods can really run
    first_token = time.monotonic() - applied - (reply.total_s - reply.first_token_s)
    print(f"  model: {reply.text}")
    ngl = (obj.get("status") or {}).get("nGpuLayers")
    print(
        f"  apply → first token {first_token:.1f} s ({devchat.timeline(api, name, ns)}; the reply took "
        f"{reply.total_s:.1f} s); auto-NGL decided n_gpu_layers={ngl} (no GPU here)"
    )
    if real_node:
        print(f"  {devchat.where_it_runs(api, kubeconfig, name, ns)}")
    return True


def chat_action(args: argparse.Namespace, workdir: Path) -> int:
    if "apiserver" not in LocalCluster.alive_pids(workdir):
        print(f"{PROG} chat: no dev cluster runs in {workdir} (start one with `{PROG} up`)", file=sys.stderr)
        return 1
    try:
        api = _api(workdir)
        base, host = devchat.route(api, args.name, args.namespace, autoscaling.interceptor_url(workdir))
        reply = devchat.chat(
            base,
            args.name,
            args.prompt,
            max_tokens=args.max_tokens,
            system=args.system,
            host=host,
            timeout=600,
            key=devchat.api_key(api, args.name, args.namespace),
        )
    except devchat.ChatError as exc:
        print(f"{PROG} chat: {exc}", file=sys.stderr)
        return 1
    print(reply.text)
    return 0


def status(workdir: Path) -> int:
    alive = LocalCluster.alive_pids(workdir)
    if "apiserver" not in alive:
        print(f"no dev cluster runs in {workdir}")
        return 1
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        for name, pid in json.loads((workdir / HELPERS_FILE).read_text()).items():
            if is_alive(int(pid)):
                alive[name] = int(pid)
    print(f"dev cluster in {workdir}: {', '.join(sorted(alive))} running")
    print(f"export KUBECONFIG={workdir / 'kubeconfig'}")
    sys.stdout.write(format_table(list_modeldeployments(_api(workdir))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    workdir = (args.dir or default_dir()).resolve()
    try:
        if args.action == "up":
            up(workdir, args.nodes)
            print(f"export KUBECONFIG={workdir / 'kubeconfig'}")
            return 0
        if args.action == "demo":
            return demo(args, workdir)
        if args.action == "chat":
            return chat_action(args, workdir)
        if args.action == "down":
            print("stopped" if down(workdir) else f"nothing was running in {workdir}")
            return 0
        return status(workdir)
    except (BuildError, ClusterError, NodeError, images.ImageBuildError) as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"{PROG} {args.action}: {exc.filename}: no such file", file=sys.stderr)
        return 2
