"""`python -m modeldeploy.localcluster.kubelet NODE...`: the fake kubelet as a process (for `dev up`).

Uses $KUBECONFIG; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading

from kubernetes import config

from modeldeploy.localcluster.nodes import FakeKubelet


def main(argv: list[str]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    kubelet = FakeKubelet(config.new_client_from_config(), argv).start()
    stop.wait()
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
