"""One container of a local pod: start it through the sandbox, reap it, probe it, restart it, report it.

The rules are the kubelet's, as far as our pods use them: init containers run once to completion and
are restarted on failure unless restartPolicy is Never; the app container is restarted per
restartPolicy with a back-off of 10 s doubling to 5 minutes (reset after 10 minutes of running); the
startup probe gates readiness and liveness; readiness needs `successThreshold` passes and is lost after
`failureThreshold` failures; liveness failures kill the container. Exit codes are reported as a runtime
does (128 + signal for a killed process); the termination message is the file at
`terminationMessagePath`, or the log's tail under FallbackToLogsOnError when the container failed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

MAX_MESSAGE = 4096  # the kubelet's limit for a termination message
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # FallbackToLogsOnError: the log's tail, at most this much
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
BACKOFF_START_S, BACKOFF_MAX_S, BACKOFF_RESET_S = 10, 300, 600
# What the image would set: its PATH finds this environment's `python` first (see localpods.py).
IMAGE_PATH = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_paths() -> list[str]:
    """The host directories that make up the "image": the environment, its base interpreter and the
    package's source (an editable install points there). The sandbox keeps them visible under volumes."""
    import modeldeploy

    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(modeldeploy.__file__).resolve().parents[1])}
    found |= {str(Path(p).resolve()) for p in found}
    return sorted(p for p in found if p != "/")


PortFor = Callable[[int], int | None]  # containerPort → a host port reaching it (None: cannot)
EnvFor = Callable[[dict[str, Any]], dict[str, str]]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigError(RuntimeError):
    """The container cannot be created as specified (CreateContainerConfigError); the message says why."""


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values (`$$` is a literal `$`)."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def _lookup(core: client.CoreV1Api, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str]:
    """The data of a ConfigMap or Secret (decoded); {} when optional and missing."""
    try:
        if kind == "secret":
            obj = core.read_namespaced_secret(name, namespace)
            return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}
        return dict(core.read_namespaced_config_map(name, namespace).data or {})
    except ApiException as exc:
        if exc.status == 404 and optional:
            return {}
        if exc.status == 404:
            raise ConfigError(f'{kind} "{name}" not found') from None
        raise


def resolve_env(core: client.CoreV1Api, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: the image's, then envFrom, then env (later wins), `$(VAR)` expanded."""
    meta = pod["metadata"]
    ns = meta["namespace"]
    env = {"PATH": IMAGE_PATH, "HOSTNAME": meta["name"]}
    for src in container.get("envFrom") or ():
        prefix = src.get("prefix") or ""
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in src:
                ref = src[key]
                for k, v in _lookup(core, kind, ns, ref["name"], bool(ref.get("optional"))).items():
                    env[prefix + k] = v
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": ns,
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
    }
    for item in container.get("env") or ():
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = fields.get(source["fieldRef"]["fieldPath"], "")
        for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            if key in source:
                ref = source[key]
                data = _lookup(core, kind, ns, ref["name"], bool(ref.get("optional")))
                if ref["key"] in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
    return env


def http_get(url: str, timeout: float) -> int | None:
    """The status code of GET url, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the container's process group, SIGKILL what is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class ContainerRun:
    """A container's process across restarts, and the status the kubelet reports for it."""

    def __init__(self, spec: dict[str, Any], pod_dir: Path, policy: str, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.dir = pod_dir / "containers" / self.name
        self.log = pod_dir / "logs" / f"{self.name}.log"
        self.policy = policy
        self.init = init
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}
        self.last_state: dict[str, Any] | None = None
        self.last_terminated: dict[str, Any] | None = None
        self.started_at = ""
        self.started_mono = 0.0
        self.next_start = 0.0
        self.backoff_n = 0
        self.backoff_s = 0
        self.succeeded = False
        self.failed_for_good = False
        self.started = False  # the startup probe passed (or there is none)
        self.ready = False
        self.next_probe: dict[str, float] = {}
        self.fails: dict[str, int] = {}
        self.passes: dict[str, int] = {}
        self.events: list[tuple[str, str]] = []  # (reason, message) for the pod's Events, drained by the kubelet

    # --- running -----------------------------------------------------------------------------------------

    def step(self, volumes: dict[str, Path], netns: str, env_for: EnvFor, port_for: PortFor) -> None:
        t = time.monotonic()
        if self.proc is None:
            if self.succeeded or self.failed_for_good:
                return
            if t < self.next_start:
                if self.last_terminated is not None:
                    message = f"back-off {self.backoff_s}s restarting failed container={self.name}"
                    self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                    self.last_state = {"terminated": self.last_terminated}
                return
            self._start(volumes, netns, env_for)
            return
        code = self.proc.poll()
        if code is None:
            if not self.init:
                self._probe(t, port_for)
            return
        self._finished(code, t)

    def _start(self, volumes: dict[str, Path], netns: str, env_for: EnvFor) -> None:
        try:
            env = env_for(self.spec)
        except ConfigError as exc:
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.next_start = time.monotonic() + 2
            return
        argv = [expand(str(a), env) for a in (self.spec.get("command") or []) + (self.spec.get("args") or [])]
        if not argv:
            self.state = {
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": "no command: the local kubelet runs the pod's command, it cannot read an image's",
                }
            }
            self.next_start = time.monotonic() + 30
            return
        mounts = []
        for m in self.spec.get("volumeMounts") or ():
            source = volumes[m["name"]]
            if m.get("subPath"):
                source = source / m["subPath"]
                source.mkdir(parents=True, exist_ok=True)
            mounts.append({"source": str(source), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        termination = self.dir / "termination-log"
        termination.write_text("")
        target = self.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        mounts.append({"source": str(termination), "target": target, "readOnly": False})
        security = self.spec.get("securityContext") or {}
        spec = {
            "root": str(self.dir / "root"),
            "netns": netns,
            "mounts": mounts,
            "readOnlyRoot": bool(security.get("readOnlyRootFilesystem")),
            "env": env,
            "argv": argv,
            "workingDir": self.spec.get("workingDir") or "/",
            "imagePaths": image_paths(),
        }
        spec_file = self.dir / "spec.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        if self.last_terminated is not None:
            self.restart_count += 1
            self.last_state = {"terminated": self.last_terminated}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy_dev.sandbox", "run", str(spec_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = now()
        self.started_mono = time.monotonic()
        self.state = {"running": {"startedAt": self.started_at}}
        self.started = "startupProbe" not in self.spec
        self.ready = False
        self.next_probe = {
            k: self.started_mono + float(self.spec[k].get("initialDelaySeconds") or 0) for k in PROBES if k in self.spec
        }
        self.fails, self.passes = {}, {}

    def _message(self, code: int) -> str | None:
        path = self.dir / "termination-log"
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")[:MAX_MESSAGE]
            if text:
                return text
        if code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-FALLBACK_LINES:])
                return tail[-FALLBACK_BYTES:] or None
        return None

    def _finished(self, rc: int, t: float) -> None:
        code = rc if rc >= 0 else 128 - rc
        assert self.proc is not None
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": f"local://{self.proc.pid}",
        }
        message = self._message(code)
        if message:
            terminated["message"] = message
        self.proc = None
        self.ready = self.started = False
        self.last_terminated = terminated
        self.state = {"terminated": terminated}
        if self.init:
            if code == 0:
                self.succeeded = True
                return
            restart = self.policy != "Never"
        else:
            restart = self.policy == "Always" or (self.policy == "OnFailure" and code != 0)
        if not restart:
            self.succeeded, self.failed_for_good = code == 0, code != 0
            return
        if t - self.started_mono > BACKOFF_RESET_S:
            self.backoff_n = 0
        self.backoff_s = min(BACKOFF_MAX_S, BACKOFF_START_S * 2**self.backoff_n)
        self.backoff_n += 1
        self.next_start = t + self.backoff_s
        self.events.append(("BackOff", f"Back-off restarting failed container {self.name} (exit code {code})"))

    def kill(self, grace: float) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace)
            self.proc = None

    # --- probes ------------------------------------------------------------------------------------------

    def _port(self, port: int | str) -> int | None:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.spec.get("ports") or ():
            if p.get("name") == port:
                return int(p["containerPort"])
        return None

    def _check(self, probe: dict[str, Any], port_for: PortFor) -> str | None:
        """None when the probe passes, else what failed (the kubelet's event message)."""
        timeout = float(probe.get("timeoutSeconds") or 1)
        action = probe.get("httpGet") or probe.get("tcpSocket")
        if action is None:
            return "the local kubelet runs only httpGet and tcpSocket probes"
        cport = self._port(action.get("port"))
        host_port = port_for(cport) if cport else None
        if host_port is None:
            return f"no port {action.get('port')!r} in the container's ports"
        if "httpGet" in probe:
            url = f"http://127.0.0.1:{host_port}{action.get('path') or '/'}"
            code = http_get(url, timeout)
            if code is not None and 200 <= code < 400:
                return None
            shown = f"http://<pod>:{cport}{action.get('path') or '/'}"
            return f"Get {shown}: " + (f"HTTP probe failed with statuscode: {code}" if code else "connection refused")
        # The forward accepts at once and hangs up when nothing listens in the pod: EOF means refused.
        try:
            with socket.create_connection(("127.0.0.1", host_port), timeout=timeout) as conn:
                conn.settimeout(min(timeout, 0.5))
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    return f"dial tcp <pod>:{cport}: connection refused"
        except TimeoutError:
            return None  # connected, the server is simply quiet
        except OSError:
            return f"dial tcp <pod>:{cport}: connection refused"
        return None

    def _probe(self, t: float, port_for: PortFor) -> None:
        for kind in PROBES:
            probe = self.spec.get(kind)
            if not probe or (kind == "startupProbe") == self.started or t < self.next_probe.get(kind, 0):
                continue
            self.next_probe[kind] = t + float(probe.get("periodSeconds") or 10)
            failure = self._check(probe, port_for)
            ok = failure is None
            if failure:
                self.events.append(("Unhealthy", f"{kind[:-5].capitalize()} probe failed: {failure}"))
            self.passes[kind] = self.passes.get(kind, 0) + 1 if ok else 0
            self.fails[kind] = 0 if ok else self.fails.get(kind, 0) + 1
            failed = self.fails[kind] >= int(probe.get("failureThreshold") or 3)
            if kind == "startupProbe":
                if ok:
                    self.started = True
                    self.next_probe = {k: t for k in self.next_probe}  # readiness and liveness start now
                elif failed and self.proc is not None:
                    stop_process(self.proc, 5)
            elif kind == "readinessProbe":
                if ok and self.passes[kind] >= int(probe.get("successThreshold") or 1):
                    self.ready = True
                elif failed:
                    self.ready = False
            elif failed and self.proc is not None:
                stop_process(self.proc, float(self.spec.get("terminationGracePeriodSeconds") or 5))
        if self.started and "readinessProbe" not in self.spec:
            self.ready = True

    # --- status ------------------------------------------------------------------------------------------

    def status(self, pod_initialized: bool) -> dict[str, Any]:
        state = self.state if (self.init or pod_initialized) else {"waiting": {"reason": "PodInitializing"}}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "state": state,
        }
        if not self.init:
            out["started"] = self.proc is not None and self.started
        if self.proc is not None:
            out["containerID"] = f"local://{self.proc.pid}"
        if self.last_state:
            out["lastState"] = self.last_state
        return out


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
