"""`python -m modeldeploy_dev.kubelet NODE...`: the fake nodes' kubelet chores as a process (for `dev up`).

The fake GPU and Apple nodes are Node objects only, there for the selection rules: this keeps their leases
and reports the pods bound to them Running, saying that nothing runs (nodes.FakeKubelet). Pods that run
for real go to the real node (realnode.py). Uses $KUBECONFIG; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from kubernetes import config

from modeldeploy_dev.nodes import FakeKubelet


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m modeldeploy_dev.kubelet", description=__doc__.splitlines()[0])
    p.add_argument("nodes", nargs="+")
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    kubelet = FakeKubelet(config.new_client_from_config(), args.nodes).start()
    stop.wait()
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
