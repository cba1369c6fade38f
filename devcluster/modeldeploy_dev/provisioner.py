"""A storage provisioner for the local control plane: claims of one StorageClass become directories.

The local cluster has no storage driver, yet the shared model cache needs PersistentVolumeClaims that
bind (docs/model-cache.md). This does what a dynamic provisioner does, in the simplest form: for a
Pending claim of the `local-path` StorageClass (the cluster's default class), it creates a hostPath
PersistentVolume under `ROOT/<namespace>-<claim>-<uid>` with the claim's size and access modes and
a `claimRef` to it; kube-controller-manager's volume binder then binds the two as it does on any
cluster. A claim naming any other StorageClass is left alone and stays Pending — exactly what a
cluster without that class does, which is how the model-cache tests see a "no StorageClass" failure.
A Released volume whose reclaim policy is Delete has its directory and object removed.

The real node's kubelet mounts a claim as its volume's `spec.hostPath.path`; the directory is made
world-writable (as Rancher's local-path provisioner does), since a kubelet applies no fsGroup to hostPath.

    python -m modeldeploy_dev.provisioner ROOT    # uses $KUBECONFIG; until SIGTERM/SIGINT
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

STORAGE_CLASS = "local-path"
PROVISIONER = "modeldeploy.io/local-path"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: dict[str, Any], root: Path) -> dict[str, Any]:
    """The PersistentVolume that satisfies `claim` (a PVC as a dict, camelCase), pre-bound to it."""
    meta, spec = claim["metadata"], claim["spec"]
    name = f"pv-{meta['uid']}"
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(root / f"{meta['namespace']}-{meta['name']}-{meta['uid']}"), "type": ""},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


class LocalPathProvisioner:
    """Polls claims and volumes every `interval` seconds (a handful of objects on a local cluster)."""

    def __init__(self, api: client.ApiClient, root: Path, interval: float = 1.0) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.root = root
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-path-provisioner", daemon=True)

    def ensure_storage_class(self) -> None:
        with contextlib.suppress(ApiException):  # 409: already there
            self.storage.create_storage_class(storage_class())

    def start(self) -> LocalPathProvisioner:
        self.ensure_storage_class()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a transient apiserver error must not end the thread
                self.tick()

    def tick(self) -> int:
        """One round: provision Pending claims of our class, delete Released volumes. Objects touched."""
        touched = 0
        volumes = self.core.list_persistent_volume().items
        claimed = {(v.spec.claim_ref.namespace, v.spec.claim_ref.name) for v in volumes if v.spec.claim_ref}
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if pvc.status.phase != "Pending" or pvc.spec.volume_name or pvc.metadata.deletion_timestamp:
                continue
            if pvc.spec.storage_class_name != STORAGE_CLASS:
                continue  # another class (or none): not ours, stays Pending as on a cluster without it
            if (pvc.metadata.namespace, pvc.metadata.name) in claimed:
                continue  # provisioned; the binder will bind it
            body = self.api.sanitize_for_serialization(pvc)
            pv = volume_for(body, self.root)
            directory = Path(pv["spec"]["hostPath"]["path"])
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)
            with contextlib.suppress(ApiException):
                self.core.create_persistent_volume(pv)
                touched += 1
        for pv in volumes:
            annotations = pv.metadata.annotations or {}
            if annotations.get(PROVISIONED_BY) != PROVISIONER or pv.status.phase != "Released":
                continue
            if pv.spec.persistent_volume_reclaim_policy == "Delete":
                shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
                with contextlib.suppress(ApiException):
                    self.core.delete_persistent_volume(pv.metadata.name)
                    touched += 1
        return touched


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m modeldeploy_dev.provisioner ROOT", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    provisioner = LocalPathProvisioner(config.new_client_from_config(), Path(argv[0])).start()
    stop.wait()
    provisioner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
