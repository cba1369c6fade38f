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
from modeldeploy_dev import devchat, sandbox, testmodel
from modeldeploy_dev.build import BuildError, cache_root
from modeldeploy_dev.cluster import ClusterError, LocalCluster, free_port, is_alive
from modeldeploy_dev.nodes import create_node, is_ready, load_node_set

PROG = "modeldeploy dev"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_NODES = REPO / "examples" / "nodes" / "demo-cluster.yaml"
DEFAULT_EXAMPLES = REPO / "examples" / "modeldeployments"
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
HELPERS_FILE = "dev.json"  # pids of the operator, the kubelet and the Hub server
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


def _hub(workdir: Path) -> tuple[list[str], int]:
    """The local Hub server's command line (serving the real test model) and its port."""
    repo_dir = testmodel.ensure_hub_repo(log=_say) / testmodel.HUB_REPO
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "modeldeploy_dev.hubserver",
        "--repo",
        f"{testmodel.HUB_REPO}={repo_dir}",
        "--port",
        str(port),
    ]
    return argv, port


def up(workdir: Path, nodes_file: Path) -> LocalCluster:
    """Cluster, nodes, CRD, Hub server, kubelet, storage provisioner and operator; all detached, their pids
    in the directory.

    The operator's config points the fetch init container at the local Hub server (`fetchEnv`, the
    setting a cluster with a Hub mirror uses); the kubelet runs our images' pods for real when this
    machine allows it (sandbox.available) and reaches the Hub server from inside every pod.
    """
    if LocalCluster.alive_pids(workdir):
        raise ClusterError(f"a dev cluster already runs in {workdir}; `{PROG} down` first")
    nodes = load_node_set(nodes_file)
    if not nodes:
        raise ClusterError(f"{nodes_file}: no Node objects in it")
    shutil.rmtree(workdir, ignore_errors=True)
    hub_argv, hub_port = _hub(workdir)
    cluster = LocalCluster(workdir, log=_say).start(detach=True)
    api = _api(workdir)
    core = client.CoreV1Api(api)
    names = [create_node(core, n) for n in nodes]
    install_crd(api)
    ready = [n["metadata"]["name"] for n in nodes if is_ready(n)]
    config_file = workdir / OPERATOR_CONFIG
    hub_url = f"http://127.0.0.1:{hub_port}"
    config_file.write_text(yaml.safe_dump({"fetchEnv": [{"name": "HF_ENDPOINT", "value": hub_url}]}))
    python = sys.executable
    kubelet = [python, "-m", "modeldeploy_dev.kubelet", *ready]
    why_not = sandbox.available()
    if why_not is None:
        kubelet += ["--pods-dir", str(workdir / "kubelet"), "--host-port", str(hub_port)]
    else:
        _say(f"pods are only reported Running, nothing runs: {why_not}")
    pids = {
        "hub": _spawn(workdir, "hub", hub_argv),
        "kubelet": _spawn(workdir, "kubelet", kubelet),
        # PersistentVolumeClaims of the default `local-path` class become directories (the model cache)
        "provisioner": _spawn(
            workdir, "provisioner", [python, "-m", "modeldeploy_dev.provisioner", str(workdir / "volumes")]
        ),
        "operator": _spawn(
            workdir,
            "operator",
            [python, "-m", "modeldeploy.controller.run", "--standalone", "--all-namespaces", "--metrics-port=0"],
            {CONFIG_ENV: str(config_file)},
        ),
    }
    (workdir / HELPERS_FILE).write_text(json.dumps(pids))
    _say(f"{len(names)} fake nodes ({len(ready)} Ready), CRD installed, operator running, Hub server at {hub_url}")
    return cluster


def down(workdir: Path) -> bool:
    """Stop the operator, the kubelet (and the pods it runs), the Hub server and the cluster; remove the
    directory. False when nothing ran."""
    ran = False
    pids: list[int] = []
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        for pid in json.loads((workdir / HELPERS_FILE).read_text()).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
                ran = True
                pids.append(int(pid))
    deadline = time.monotonic() + 30  # the kubelet stops its pods first (their grace period)
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    ran = bool(LocalCluster.stop_detached(workdir)) or ran
    if workdir.exists() and (workdir / "kubeconfig").exists():
        shutil.rmtree(workdir, ignore_errors=True)
    return ran


def apply_examples(api: client.ApiClient, directory: Path, namespace: str = "default") -> list[str]:
    """Create every ModelDeployment of the YAML files in `directory`; their names."""
    crs = client.CustomObjectsApi(api)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ModelDeployment":
                continue
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
        names = apply_examples(api, args.examples)
        applied = time.monotonic()
        _say(f"applied {len(names)} ModelDeployments from {args.examples}; waiting for the operator")
        objs = wait_settled(api, names, args.timeout, rollout=args.timeout)
        sys.stdout.write(format_table(objs))
        print("\nWhy (the EngineSelected and Ready conditions; every candidate's reasons are in status.selection):")
        for obj in sorted(objs, key=lambda o: o["metadata"]["name"]):
            print(f"  {obj['metadata']['name']}: {why(obj)}")
        decided = len(objs) == len(names) and all(settled(o) for o in objs)
        talked = conversation(api, objs, applied)
        _say(f"done in {time.monotonic() - started:.0f} s")
        if args.keep:
            print(f"\nThe cluster keeps running. export KUBECONFIG={workdir / 'kubeconfig'}")
            print(f"Chat with: modeldeploy dev --dir {workdir} chat NAME 'PROMPT'")
            print(f"Stop it with: modeldeploy dev --dir {workdir} down")
        return 0 if decided and talked else 1
    finally:
        if not args.keep:
            down(workdir)


def conversation(api: client.ApiClient, objs: list[dict[str, Any]], applied: float) -> bool:
    """Ask the example that serves the real test model a question; False when it cannot answer."""
    served = [o for o in objs if ((o.get("spec") or {}).get("model") or {}).get("uri") == testmodel.URI]
    if not served:
        return True  # other examples: nothing here runs a real model
    obj = served[0]
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    print(f"\nA real conversation with {name} ({testmodel.FILE}, llama.cpp on this machine's CPU, in the pod the")
    print("operator rendered: fetched from the local Hub server, auto-NGL, then the server; see docs/local-pods.md):")
    print(f"  you:   {DEMO_QUESTION}")
    try:
        reply = devchat.chat(devchat.endpoint(api, name, ns), name, DEMO_QUESTION)
    except devchat.ChatError as exc:
        print(f"  (no answer: {exc})")
        return sandbox.available() is not None  # only a failure where pods can really run
    first_token = time.monotonic() - applied - (reply.total_s - reply.first_token_s)
    print(f"  model: {reply.text}")
    ngl = (obj.get("status") or {}).get("nGpuLayers")
    print(
        f"  apply → first token {first_token:.1f} s ({devchat.timeline(api, name, ns)}; the reply took "
        f"{reply.total_s:.1f} s); auto-NGL decided n_gpu_layers={ngl} (no GPU here)"
    )
    return True


def chat_action(args: argparse.Namespace, workdir: Path) -> int:
    if "apiserver" not in LocalCluster.alive_pids(workdir):
        print(f"{PROG} chat: no dev cluster runs in {workdir} (start one with `{PROG} up`)", file=sys.stderr)
        return 1
    try:
        reply = devchat.chat(
            devchat.endpoint(_api(workdir), args.name, args.namespace),
            args.name,
            args.prompt,
            max_tokens=args.max_tokens,
            system=args.system,
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
    except (BuildError, ClusterError) as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"{PROG} {args.action}: {exc.filename}: no such file", file=sys.stderr)
        return 2
