"""TCP forwarding between the host's loopback and a local pod's network namespace.

Each local pod has a network namespace of its own (only loopback), so two pods can both listen on
their containerPort 8000 like real pods. Two directions are bridged, both on 127.0.0.1 only:

- into the pod: a host port (picked free) forwards to the pod's containerPort; the kubelet's probes
  and clients (`modeldeploy dev chat`, curl) use it. The kubelet records it on the pod (see
  localpods.PORTS_ANNOTATION).
- out of the pod: the node's host services (the dev cluster's Hub server) are reachable inside every
  pod at the same 127.0.0.1:PORT as on the host, so `HF_ENDPOINT=http://127.0.0.1:PORT` works in both.

A listening socket belongs to the network namespace its thread was in when it was created, and so
does a connecting one: one thread per forward enters the listen side's namespace, binds, then enters
the connect side's namespace for its outgoing connections.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading

from modeldeploy_dev.sandbox import CLONE_NEWNET, setns

HOST_NETNS = f"/proc/{os.getpid()}/ns/net"


class Forward:
    """127.0.0.1:listen_port in `listen_ns` → 127.0.0.1:connect_port in `connect_ns` (None: the host's)."""

    def __init__(self, listen_ns: str | None, listen_port: int, connect_ns: str | None, connect_port: int) -> None:
        self.listen_ns, self.connect_ns = listen_ns, connect_ns
        self.connect_port = connect_port
        self.port = listen_port
        self._bound = threading.Event()
        self._stop = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._serve, name=f"forward-{connect_port}", daemon=True)

    def start(self) -> Forward:
        self._thread.start()
        self._bound.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            setns(self.listen_ns or HOST_NETNS, CLONE_NEWNET)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen(64)
            self.port = server.getsockname()[1]
            setns(self.connect_ns or HOST_NETNS, CLONE_NEWNET)
        except OSError as exc:
            self._error = exc
            self._bound.set()
            return
        self._bound.set()
        with server:
            while not self._stop.is_set():
                ready, _, _ = select.select([server], [], [], 0.25)
                if not ready:
                    continue
                client, _ = server.accept()
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.connect_port), timeout=5)
                except OSError:
                    client.close()  # nothing listens in there yet: the caller sees the connection end
                    continue
                upstream.settimeout(None)
                done = threading.Semaphore(0)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b, done), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
    """Copy until EOF, then pass the EOF on; the second pump to finish closes both sockets."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    if done.acquire(blocking=False):  # the other direction finished first
        src.close()
        dst.close()
    else:
        done.release()
