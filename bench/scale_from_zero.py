"""From zero replicas to the first token, split into its parts, on the dev cluster's real node.

    .venv/bin/modeldeploy dev up          # cluster, real node, KEDA + HTTP add-on + Prometheus, operator
    .venv/bin/python bench/scale_from_zero.py [--rounds 2] [--dir DIR]

For SmolLM2-135M (examples/modeldeployments/llamacpp-smollm2.yaml on the real node) with `minReplicas: 0`
it runs two cases, `--rounds` times each:

- cold cache: no model cache volume, so every new pod fetches the model from the local Hub server;
- warm cache: the shared model cache (`spec.cache.shared`, docs/model-cache.md: a claim the operator's
  download Job fills once, mounted read-only by every pod of the model), filled before the first round,
  so the fetch init container finds the file and only checks it.

Each round waits until KEDA has the Deployment at zero, sends one streamed chat request through the HTTP
add-on's interceptor (as `modeldeploy dev chat` does for a model at zero) and prints where the time went
(modeldeploy_dev/fromzero.py): KEDA's reaction, the Deployment controller, scheduling, fetch, auto-NGL,
the server's container start, model load + readiness, and Ready -> first token. Figures, not asserts:
the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from modeldeploy_dev import autoscaling, devchat, fromzero
from modeldeploy_dev.dev import default_dir, on_the_real_node

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "modeldeployments" / "llamacpp-smollm2.yaml"
NS = "bench-zero"
IDLE_S = 5


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _replicas(apps: client.AppsV1Api, name: str) -> int:
    try:
        return int(apps.read_namespaced_deployment(name, NS).spec.replicas or 0)
    except client.ApiException:
        return -1


def _no_pod(core: client.CoreV1Api, name: str) -> bool:
    return not core.list_namespaced_pod(NS, label_selector=f"app.kubernetes.io/instance={name}").items


def _create(api: client.ApiClient, name: str, cache: bool) -> dict[str, Any]:
    md = on_the_real_node(yaml.safe_load(EXAMPLE.read_text()))
    md["metadata"] = {"name": name, "namespace": NS}
    md["spec"]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelaySeconds": IDLE_S}
    if cache:
        # The shared cache, not a claim of the user's own: the operator's default policy refuses mounting a
        # user's claim read-write (docs/security.md, "Pod policy").
        md["spec"]["cache"] = {"shared": {}}
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "modeldeploy.io", "v1alpha1", NS, "modeldeployments", md
    )
    return md


def _round(api: client.ApiClient, interceptor: str, name: str, model: str) -> dict[str, float]:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    _wait(f"{name} at zero", lambda: _replicas(apps, name) == 0 and _no_pod(core, name), 600)
    watch = fromzero.Watch(api, NS, name).start()
    try:
        reply = devchat.chat(interceptor, model, "Say hello.", max_tokens=8, timeout=600, host=f"{name}.{NS}.svc")
    finally:
        seen = watch.stop()
    seen["first_token"] = reply.first_token_s
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_dir(), help="the dev cluster's directory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="cold,warm", help="which of cold,warm to run")
    args = parser.parse_args()
    interceptor = autoscaling.interceptor_url(args.dir / "autoscaling")
    if interceptor is None:
        print(f"no KEDA HTTP add-on runs in {args.dir}: `modeldeploy dev up` on a host with a real node first")
        return 1
    api = config.new_client_from_config(config_file=str(args.dir / "kubeconfig"))
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NS}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    for case, cache in (("cold", False), ("warm", True)):
        if case not in args.cases.split(","):
            continue
        name = f"zero-{case}"
        md = _create(api, name, cache)
        model = md["spec"]["model"]["name"]
        if cache:  # the first start waits for the download Job; not counted
            _round(api, interceptor, name, model)
        for i in range(args.rounds):
            seen = _round(api, interceptor, name, model)
            load = os.getloadavg()[0]
            print(f"{case} cache, round {i + 1} (load {load:.1f} on {os.cpu_count()} cores):")
            print(fromzero.report(seen), flush=True)
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "modeldeploy.io", "v1alpha1", NS, "modeldeployments", name
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
