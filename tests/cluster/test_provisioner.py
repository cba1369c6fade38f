"""The local storage provisioner on the real control plane: claims bind (through kube-controller-manager's
binder), an unknown StorageClass stays Pending, a deleted claim's directory goes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeldeploy_dev.provisioner import STORAGE_CLASS, LocalPathProvisioner
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster


def _claim(core: client.CoreV1Api, ns: str, name: str, storage_class: str | None) -> None:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": name}, "spec": spec})


def test_claims_bind_to_directories_and_unknown_classes_stay_pending(
    kube_api: client.ApiClient, local_provisioner: LocalPathProvisioner
) -> None:
    core = client.CoreV1Api(kube_api)
    ns = f"prov-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    _claim(core, ns, "explicit", STORAGE_CLASS)
    _claim(core, ns, "defaulted", None)  # the DefaultStorageClass admission plugin names local-path
    _claim(core, ns, "unknown", "fast-ssd")

    def bound(name: str) -> Any:
        pvc = core.read_namespaced_persistent_volume_claim(name, ns)
        return pvc if pvc.status.phase == "Bound" else None

    for name in ("explicit", "defaulted"):
        pvc = eventually(lambda n=name: bound(n), f"claim {name} Bound")
        pv = core.read_persistent_volume(pvc.spec.volume_name)
        path = Path(pv.spec.host_path.path)
        assert path.is_dir() and path.parent == local_provisioner.root
        assert pv.spec.access_modes == ["ReadWriteMany"] and pv.spec.capacity["storage"] == "1Gi"
    time.sleep(2)
    assert core.read_namespaced_persistent_volume_claim("unknown", ns).status.phase == "Pending"

    pvc = bound("explicit")
    path = Path(core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path)
    core.delete_namespaced_persistent_volume_claim("explicit", ns)
    eventually(lambda: not path.exists(), "the released volume's directory removed")
    core.delete_namespace(ns)
