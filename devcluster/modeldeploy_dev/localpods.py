"""Local pods: the kubelet's work for pods whose images are ModelDeploy's own, done for real, as processes.

A pod bound to one of the local cluster's nodes whose every container uses one of our images (`fetch`,
`ngl`, `llamacpp`, built from images/) runs here: volumes become directories, each container runs
through `sandbox.py` (its own root with the volumes at their mount paths, the pod's network
namespace) with exactly the command, args and env of the pod spec; init containers first, each to
completion; then the engine. The pod's status is what happened: container states, exit codes,
termination messages, restarts per restartPolicy (with the kubelet's back-off), readiness from the
pod's own startup/readiness/liveness probes. Pods of other images (vLLM, SGLang, transformers, MLX)
are left to the fake path in nodes.py, which says so in the pod's status message.

An image here is this machine's Python environment: `python` on the container's PATH is the
interpreter running the kubelet, whose environment has the `modeldeploy` package the images install.
The containers run as root (the interpreter may live in root's home); `runAsUser` is not applied.
See docs/local-pods.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy_dev.containers import ContainerRun, resolve_env
from modeldeploy_dev.portforward import Forward
from modeldeploy_dev.volumes import VolumeError, prepare_volumes

RUNNABLE_IMAGES = frozenset({"fetch", "ngl", "llamacpp"})
# The host ports that reach the pod's container ports: {"8000": "127.0.0.1:41234"}.
PORTS_ANNOTATION = "dev.modeldeploy.io/host-ports"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_name(image: str) -> str:
    """`ghcr.io/modeldeploy/llamacpp:0.1.0` → `llamacpp` (registry, tag and digest dropped)."""
    return image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]


def runnable(images: Iterable[str]) -> bool:
    """Whether a pod of these images runs here for real."""
    names = [image_name(i) for i in images]
    return bool(names) and all(n in RUNNABLE_IMAGES for n in names)


def pod_images(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    return [c.get("image", "") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]


class PodRunner:
    """One pod: its directory, its network namespace, its containers' processes, and its status."""

    def __init__(
        self,
        core: client.CoreV1Api,
        pod: dict[str, Any],
        root: Path,
        host_ports: Sequence[int],
        api_port: int | None = None,
    ) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        self.core = core
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.spec = spec
        self.dir = root / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.host_services = list(host_ports) + ([api_port] if api_port else [])
        self.api_port = api_port
        policy = spec.get("restartPolicy") or "Always"
        self.init = [ContainerRun(c, self.dir, policy, init=True) for c in spec.get("initContainers") or []]
        self.main = [ContainerRun(c, self.dir, policy, init=False) for c in spec["containers"]]
        self.policy = policy
        self.phase = "Pending"
        self.message: str | None = None
        self.reason: str | None = None
        self.volumes: dict[str, Path] | None = None
        self.pause: subprocess.Popen[bytes] | None = None
        self.forwards: list[Forward] = []
        self.netns: str | None = None
        self.ports: dict[int, int] = {}  # containerPort → host port
        self.start_time = now()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.sent: dict[str, Any] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def _prepare(self) -> bool:
        """Volumes, network namespace and forwards, once; False (with a message) while it cannot."""
        if self.volumes is not None:
            return True
        try:
            volumes = prepare_volumes(
                self.core,
                self.namespace,
                self.spec.get("volumes") or [],
                self.dir / "volumes",
                self.spec.get("serviceAccountName") or "default",
            )
        except VolumeError as exc:
            self.reason, self.message = "FailedMount", str(exc)
            return False
        self.pause = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_dev.sandbox", "pause"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.pause.stdout is not None
        if self.pause.stdout.readline().strip() != b"ready":
            self.reason, self.message = "FailedCreatePodSandBox", "the pod's network namespace could not be made"
            self.pause.wait()
            self.pause = None
            return False
        netns = f"/proc/{self.pause.pid}/ns/net"
        for port in self.host_services:
            self.forwards.append(Forward(netns, port, None, port).start())
        self.netns = netns
        for container in self.spec["containers"]:
            for p in container.get("ports") or ():
                self.port_for(int(p["containerPort"]))
        self.volumes = volumes
        self.reason = self.message = None
        with contextlib.suppress(ApiException):
            ports = {str(k): f"127.0.0.1:{v}" for k, v in sorted(self.ports.items())}
            body = {"metadata": {"annotations": {PORTS_ANNOTATION: json.dumps(ports)}}}
            self.core.patch_namespaced_pod(self.name, self.namespace, body)
        return True

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = resolve_env(self.core, self.pod, container)
        if self.api_port:  # what a kubelet injects for the `kubernetes` Service: the API, forwarded in
            env.setdefault("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            env.setdefault("KUBERNETES_SERVICE_PORT", str(self.api_port))
        return env

    def port_for(self, container_port: int) -> int | None:
        """The host port forwarding to `container_port` in the pod (made on first use, as probes may name
        a port the spec does not list); None before the pod has its network namespace."""
        if container_port not in self.ports and self.netns:
            fwd = Forward(None, 0, self.netns, container_port).start()
            self.forwards.append(fwd)
            self.ports[container_port] = fwd.port
        return self.ports.get(container_port)

    def step(self) -> None:
        """Advance the pod one round: start, reap, probe, restart."""
        if self.phase in ("Succeeded", "Failed") or not self._prepare():
            return
        assert self.volumes is not None and self.pause is not None
        netns = f"/proc/{self.pause.pid}/ns/net"
        for c in self.init:
            if c.succeeded:
                continue
            c.step(self.volumes, netns, self._env, self.port_for)
            if c.failed_for_good:
                self.phase = "Failed"
            return
        self.phase = "Running"
        for c in self.main:
            c.step(self.volumes, netns, self._env, self.port_for)
        if all(c.failed_for_good or c.succeeded for c in self.main):
            self.phase = "Succeeded" if all(c.succeeded for c in self.main) else "Failed"

    def kill(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after the grace period, at most 10 s) and clean up."""
        grace = min(10, int(self.spec.get("terminationGracePeriodSeconds") or 30))
        for c in self.init + self.main:
            c.kill(grace)
        for fwd in self.forwards:
            fwd.stop()
        if self.pause is not None:
            self.pause.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.pause.wait(5)
            if self.pause.poll() is None:
                self.pause.kill()
                self.pause.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- status ------------------------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
        status = "True" if ok else "False"
        before = self.transitions.get(kind)
        if before is None or before[0] != status:
            self.transitions[kind] = (status, now())
        cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": self.transitions[kind][1]}
        if not ok and reason:
            cond.update({"reason": reason, "message": message})
        return cond

    def status(self) -> dict[str, Any]:
        initialized = all(c.succeeded for c in self.init)
        pending_init = [c.name for c in self.init if not c.succeeded]
        unready = [c.name for c in self.main if not c.ready]
        sandbox = self.volumes is not None
        unready_text = f"containers with unready status: [{' '.join(unready)}]"
        status: dict[str, Any] = {
            "phase": self.phase,
            "startTime": self.start_time,
            "hostIP": "127.0.0.1",
            "conditions": [
                self._condition("PodReadyToStartContainers", sandbox),
                self._condition(
                    "Initialized",
                    initialized,
                    "ContainersNotInitialized",
                    f"containers with incomplete status: [{' '.join(pending_init)}]",
                ),
                self._condition("ContainersReady", not unready, "ContainersNotReady", unready_text),
                self._condition("Ready", not unready, "ContainersNotReady", unready_text),
                self._condition("PodScheduled", True),
            ],
            "containerStatuses": [c.status(initialized) for c in self.main],
            "message": self.message,
            "reason": self.reason,
        }
        if self.init:
            status["initContainerStatuses"] = [c.status(True) for c in self.init]
        return status


class LocalPods:
    """The thread that runs the runnable pods of `nodes` and reports their status."""

    def __init__(
        self,
        api: client.ApiClient,
        nodes: Iterable[str],
        state_dir: Path,
        host_ports: Sequence[int] = (),
        api_port: int | None = None,
        interval: float = 0.5,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.nodes = set(nodes)
        self.root = Path(state_dir) / "pods"
        self.host_ports = list(host_ports)
        self.api_port = api_port  # the apiserver's port on 127.0.0.1: pods get it as the `kubernetes` Service
        self.interval = interval
        self.runners: dict[str, PodRunner] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-pods", daemon=True)

    @staticmethod
    def owns(images: Iterable[str]) -> bool:
        return runnable(images)

    def start(self) -> LocalPods:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        # Processes are started from this thread only: they are tied to it (they die with it, see sandbox).
        try:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(Exception):  # a transient apiserver error must not end the thread
                    self.tick()
        finally:
            for runner in list(self.runners.values()):
                runner.kill()
            self.runners.clear()

    def tick(self) -> None:
        seen: set[str] = set()
        for obj in self.core.list_pod_for_all_namespaces().items:
            pod = self.api.sanitize_for_serialization(obj)
            if (pod["spec"].get("nodeName") not in self.nodes) or not runnable(pod_images(pod)):
                continue
            meta = pod["metadata"]
            uid = meta["uid"]
            if meta.get("deletionTimestamp"):
                runner = self.runners.pop(uid, None)
                if runner:
                    runner.kill()
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0)
                continue
            seen.add(uid)
            runner = self.runners.get(uid)
            if runner is None:
                runner = self.runners[uid] = PodRunner(self.core, pod, self.root, self.host_ports, self.api_port)
            runner.step()
            self._events(runner)
            status = runner.status()
            if status != runner.sent:
                with contextlib.suppress(ApiException):
                    self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
                    runner.sent = status
        for uid in set(self.runners) - seen:
            self.runners.pop(uid).kill()

    def _events(self, runner: PodRunner) -> None:
        """Post what the containers reported (probe failures, back-offs) as the pod's Warning events."""
        for c in runner.init + runner.main:
            while c.events:
                reason, message = c.events.pop(0)
                stamp = now()
                body = {
                    "metadata": {"generateName": f"{runner.name}.", "namespace": runner.namespace},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": runner.namespace,
                        "name": runner.name,
                        "uid": runner.uid,
                        "fieldPath": f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}",
                    },
                    "reason": reason,
                    "message": message,
                    "type": "Warning",
                    "source": {"component": "kubelet", "host": runner.pod["spec"].get("nodeName", "")},
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "count": 1,
                }
                with contextlib.suppress(ApiException):
                    self.core.create_namespaced_event(runner.namespace, body)
