"""A local pod's volumes as directories on this machine.

- emptyDir (either medium): a directory of the pod's own, removed with the pod.
- persistentVolumeClaim: the directory of the PersistentVolume the claim is bound to (`hostPath.path`
  or `local.path`, what a local provisioner makes); an unbound claim keeps the pod waiting, as a
  kubelet does, with the reason in the pod's status.
- hostPath: the path itself (DirectoryOrCreate / empty type create it).
- configMap and secret: their keys written as files in a directory of the pod's own.
- projected (what the ServiceAccount admission adds to every pod that mounts a token): a
  serviceAccountToken from the TokenRequest API for the pod's ServiceAccount, configMap keys and the
  pod's namespace from the downward API, as files in a directory of the pod's own.

Anything else is refused with one sentence naming the volume, and the pod waits.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


class VolumeError(RuntimeError):
    """The volume cannot be set up (yet); the message is the pod's status message."""


def _claim_path(core: client.CoreV1Api, namespace: str, claim: str) -> Path:
    try:
        pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found') from None
        raise
    if (pvc.status.phase if pvc.status else None) != "Bound" or not pvc.spec.volume_name:
        raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound yet')
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    source = pv.spec.host_path or pv.spec.local
    if source is None or not source.path:
        raise VolumeError(
            f'persistentvolume "{pv.metadata.name}" (claim "{claim}") is neither hostPath nor local: '
            "the local kubelet can mount only a directory of this machine"
        )
    path = Path(source.path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _keys(core: client.CoreV1Api, namespace: str, volume: dict[str, Any], kind: str, dest: Path) -> Path:
    ref = volume[kind]
    name = ref.get("name") or ref.get("secretName")
    try:
        if kind == "secret":
            obj = core.read_namespaced_secret(name, namespace)
            data = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        else:
            data = {k: v.encode() for k, v in (core.read_namespaced_config_map(name, namespace).data or {}).items()}
    except ApiException as exc:
        if exc.status == 404 and ref.get("optional"):
            data = {}
        elif exc.status == 404:
            raise VolumeError(f'{kind} "{name}" not found (volume "{volume["name"]}")') from None
        else:
            raise
    dest.mkdir(parents=True, exist_ok=True)
    items = ref.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] in data:
            target = dest / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
    return dest


def _projected(
    core: client.CoreV1Api, namespace: str, volume: dict[str, Any], dest: Path, service_account: str
) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for source in volume["projected"].get("sources") or ():
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            body = {"spec": {"expirationSeconds": int(spec.get("expirationSeconds") or 3607)}}
            if spec.get("audience"):
                body["spec"]["audiences"] = [spec["audience"]]
            token = core.create_namespaced_service_account_token(service_account, namespace, body).status.token
            (dest / spec["path"]).write_text(token)
        elif "configMap" in source:
            _keys(core, namespace, {"name": volume["name"], "configMap": source["configMap"]}, "configMap", dest)
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or ():
                if (item.get("fieldRef") or {}).get("fieldPath") == "metadata.namespace":
                    (dest / item["path"]).write_text(namespace)
    return dest


def prepare_volumes(
    core: client.CoreV1Api,
    namespace: str,
    volumes: list[dict[str, Any]],
    root: Path,
    service_account: str = "default",
) -> dict[str, Path]:
    """Volume name → the directory (or file) that backs it."""
    out: dict[str, Path] = {}
    for volume in volumes:
        name = volume["name"]
        if "emptyDir" in volume:
            out[name] = root / name
            out[name].mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in volume:
            out[name] = _claim_path(core, namespace, volume["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in (None, "", "DirectoryOrCreate"):
                path.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise VolumeError(f'hostPath volume "{name}": {path} does not exist')
            out[name] = path
        elif "projected" in volume:
            out[name] = _projected(core, namespace, volume, root / name, service_account)
        elif "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            out[name] = _keys(core, namespace, volume, kind, root / name)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(f'volume "{name}" ({", ".join(kinds)}) is not a kind the local kubelet can mount')
    return out
