"""`python -m modeldeploy_dev.kubelet NODE... [--pods-dir DIR [--host-port PORT]...]`: the local
kubelet as a process (for `dev up`).

Without `--pods-dir` it only fakes: leases, and bound pods reported Running. With it, pods of
ModelDeploy's own images run for real under DIR (localpods.py), and each `--host-port` (a service on
the host's loopback, such as the dev cluster's Hub server) is reachable inside every pod at the same
127.0.0.1 port, as is the apiserver (KUBERNETES_SERVICE_HOST/PORT, with the pod's ServiceAccount token
from its projected volume). Uses $KUBECONFIG; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from kubernetes import config

from modeldeploy_dev.localpods import LocalPods
from modeldeploy_dev.nodes import FakeKubelet


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m modeldeploy_dev.kubelet", description=__doc__.splitlines()[0])
    p.add_argument("nodes", nargs="+")
    p.add_argument("--pods-dir", type=Path, default=None, help="run the pods of our images for real, under DIR")
    p.add_argument("--host-port", type=int, action="append", default=[], help="host loopback port pods may reach")
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    api = config.new_client_from_config()
    # Pods reach the apiserver as a kubelet arranges it (the `kubernetes` Service's env, forwarded in).
    api_port = int(str(api.configuration.host).rsplit(":", 1)[1])
    local = LocalPods(api, args.nodes, args.pods_dir, args.host_port, api_port=api_port) if args.pods_dir else None
    kubelet = FakeKubelet(api, args.nodes, local_pods=local).start()
    stop.wait()
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
