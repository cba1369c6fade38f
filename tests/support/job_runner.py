"""Plays the kubelet for the model cache's download Job pods in cluster tests, for real.

The local control plane's fake kubelet only marks pods Running. A download Job's pod must really run:
this runs its container's command (the fetcher, `python -m modeldeploy.fetch`) as a process on this
machine with the pod's environment (its env, its Secret keys and envFrom Secrets), its claim mounted where the pod
mounts it (the bound PersistentVolume's hostPath stands in for `/cache`), the in-cluster credentials
of the pod's ServiceAccount (a TokenRequest token, the cluster's CA and address — so the claim patch is
authorised by the real RBAC the operator created), and then writes the pod's final status with the
termination message, as a kubelet does. The Job controller takes it from there.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.modelcache.listing import LISTING_LABEL
from modeldeploy.modelcache.plan import CACHE_LABEL, JOB_MOUNT


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobPodRunner:
    def __init__(self, api: client.ApiClient, namespace: str, workdir: Path, interval: float = 0.3) -> None:
        self.api, self.core = api, client.CoreV1Api(api)
        self.namespace, self.workdir, self.interval = namespace, workdir, interval
        self.started: set[str] = set()
        self.runs = 0  # download Job pods run
        self.listings = 0  # listing Job pods run (they size a claim; no volume, no token)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop_thread = threading.Thread(target=self._loop, name="job-pod-runner", daemon=True)

    def __enter__(self) -> JobPodRunner:
        self._loop_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._loop_thread.join(timeout=10)
        for t in self._threads:
            t.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(ApiException):
                pods = [
                    *self.core.list_namespaced_pod(self.namespace, label_selector=CACHE_LABEL).items,
                    *self.core.list_namespaced_pod(self.namespace, label_selector=LISTING_LABEL).items,
                ]
                for pod in pods:
                    if pod.metadata.uid in self.started or not pod.spec.node_name:
                        continue
                    if pod.status.phase in ("Succeeded", "Failed") or pod.metadata.deletion_timestamp:
                        continue
                    self.started.add(pod.metadata.uid)
                    thread = threading.Thread(target=self._run, args=(pod,), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _claim_dir(self, pod: Any) -> Path:
        claim = next(
            (v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim), None
        )
        if claim is None:  # the listing Job: nothing mounted but its /tmp
            return self.workdir / f"{pod.metadata.name}.tmp"
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, self.namespace)
        return Path(self.core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path)

    def _env(self, pod: Any, container: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.env_from or ():
            if source.secret_ref:
                data = self.core.read_namespaced_secret(source.secret_ref.name, self.namespace).data or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        for item in container.env or ():
            ref = item.value_from.secret_key_ref if item.value_from else None
            if ref is None:
                env[item.name] = item.value or ""
                continue
            try:  # as the kubelet does: an optional key or Secret that is absent sets nothing
                data = self.core.read_namespaced_secret(ref.name, self.namespace).data or {}
            except ApiException as exc:
                if exc.status != 404 or not ref.optional:
                    raise
                data = {}
            if ref.key in data:
                env[item.name] = base64.b64decode(data[ref.key]).decode()
        if pod.spec.automount_service_account_token is not False:
            token = self.core.create_namespaced_service_account_token(
                pod.spec.service_account_name, self.namespace, {"spec": {"expirationSeconds": 3600}}
            ).status.token
            token_file = self.workdir / f"{pod.metadata.name}.token"
            token_file.write_text(token)
            cfg = self.api.configuration
            env.update(
                MODELDEPLOY_KUBE_API=cfg.host,
                MODELDEPLOY_KUBE_TOKEN_FILE=str(token_file),
                MODELDEPLOY_KUBE_CA=str(cfg.ssl_ca_cert),
            )
        env.update(
            MODELDEPLOY_TERMINATION_LOG=str(self.workdir / f"{pod.metadata.name}.termination"),
            PATH=os.environ.get("PATH", ""),
            PYTHONPATH=os.pathsep.join(sys.path),
        )
        return env

    def _run(self, pod: Any) -> None:
        if LISTING_LABEL in (pod.metadata.labels or {}):
            self.listings += 1
        else:
            self.runs += 1
        container = pod.spec.containers[0]
        started = _now()
        try:
            cache = self._claim_dir(pod)
            argv = [sys.executable if a == "python" else a for a in container.command]
            argv = [str(cache) + a[len(JOB_MOUNT) :] if a.startswith(JOB_MOUNT) else a for a in argv]
            env = self._env(pod, container)
            with (self.workdir / f"{pod.metadata.name}.log").open("ab") as log:
                code = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode
            message = Path(env["MODELDEPLOY_TERMINATION_LOG"]).read_text() if code is not None else ""
        except Exception as exc:  # noqa: BLE001 - reported in the pod, as a kubelet would
            code, message = 128, f"job runner: {exc}"
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message[:4096],
            "startedAt": started,
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})
