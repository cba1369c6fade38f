"""The shared model cache of one ModelDeployment, as objects: pure, deterministic, no I/O.

A model is downloaded once per namespace (docs/model-cache.md): every ModelDeployment that names the
same weights — the same `model.uri` (revision included), `model.file`, `multimodalProjector` and
`sha256` — and fetches them the same way — the same `images.fetch` override, `credentialsSecret`,
`nodeSelector` and `tolerations` — computes the same cache name, so they find and share one
PersistentVolumeClaim and one download Job instead of each fetching its own copy. The name is a hash of
exactly those fields: everything of a spec that reaches the download Job, so a ModelDeployment never
loads bytes written by a fetcher another spec chose (docs/security.md "Shared model cache"); engine,
replicas, resources or anything else may differ. The claim is mounted read-only by the engine pods at
the directory `model_paths.locate(uri)` gives, so the engine reads the same paths as with a per-pod cache.

Objects per cache, all named after it: the claim, the download Job (the fetch image, writing into the
claim's root), and a ServiceAccount, Role and RoleBinding that let that Job patch that one claim (its
progress annotation; fetch/report.py) and nothing else. An object of that name is used only when it is
ours (`not_ours`): the managed-by and cache labels, and for all but the claim the claim as owner.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, SharedCache
from modeldeploy.config import OperatorConfig
from modeldeploy.fetch.credentials import secret_env
from modeldeploy.model_paths import locate, redact_uri

CACHE_LABEL = "modeldeploy.io/model-cache"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modeldeploy"}
URI_ANNOTATION = "modeldeploy.io/model-uri"
FILES_ANNOTATION = "modeldeploy.io/model-files"
# Which ModelDeployment (and generation of it) the download Job was made for: a failed Job is made
# again when that ModelDeployment is edited (a fixed credentialsSecret, sha256 or file).
REQUESTED_BY = "modeldeploy.io/requested-by"
REQUESTED_GENERATION = "modeldeploy.io/requested-generation"
JOB_MOUNT = "/cache"
FETCH_UID = 1000


@dataclass(frozen=True)
class CachePlan:
    """Names, settings and objects of one shared cache."""

    name: str  # the claim, Job, Role and RoleBinding
    namespace: str
    uri: str
    files: tuple[str, ...]
    mount_path: str  # where engine pods mount the claim (read-only)
    settings: dict[str, Any] = field(default_factory=dict)  # storageClassName, size, accessMode, retention
    # False: spec.cache.shared.size was not given, so the claim is sized from the model's listing
    # (modelcache/listing.py); settings["size"] is then only the fallback for a source that lists no sizes.
    size_given: bool = True

    @property
    def retention(self) -> str:
        return str(self.settings["retention"])


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_UNITS.update({f"{u}i": 1024 ** (i + 1) for i, u in enumerate(("K", "M", "G", "T", "P", "E"))})


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes storage quantity (20Gi, 500M, 1.5Ti) in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", quantity.strip())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"not a storage quantity: {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _slug(uri: str) -> str:
    tail = uri.split("://", 1)[-1].split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:30].strip("-") or "model"


def cache_key(
    uri: str, files: tuple[str, ...], sha256: str | None = None, fetched_by: dict[str, Any] | None = None
) -> str:
    """What makes two ModelDeployments share a cache, hashed: uri with revision, file, projector, the
    declared checksum (a cache is verified against the checksum it was downloaded with, so a ModelDeployment
    declaring another one gets its own, verified, download), and `fetched_by`: what of the spec decides how
    the bytes are fetched (`fetch_inputs`). Those enter only when set, so a cache made before they counted
    keeps its name."""
    material: dict[str, Any] = {"uri": uri.strip(), "files": list(files), "sha256": (sha256 or "").lower()}
    material.update({k: v for k, v in (fetched_by or {}).items() if v})
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:10]


def fetch_inputs(md: ModelDeployment) -> dict[str, Any]:
    """Everything of a spec the download Job takes besides the model's name: the fetch image override, the
    credentials Secret (its tokens and AWS_ENDPOINT_URL), and where the Job runs. The operator's own fetch
    image and fetchEnv are not here: they are the cluster admin's, the same for every ModelDeployment."""
    spec = md.spec
    return {
        "fetchImage": (spec.images or {}).get("fetch"),
        "credentialsSecret": spec.model.credentials_secret,
        "nodeSelector": dict(spec.node_selector or {}),
        "tolerations": list(spec.tolerations or ()),
    }


def plan_cache(md: ModelDeployment, config: OperatorConfig) -> CachePlan | None:
    """The shared cache `md` uses, or None: no `cache.shared`, or weights already on a mounted path."""
    shared: SharedCache | None = md.spec.cache.shared if md.spec.cache else None
    if shared is None:
        return None
    model = md.spec.model
    location = locate(model.uri)
    if not location.needs_fetch:
        return None
    files = tuple(f for f in (model.file, model.multimodal_projector) if f)
    name = f"mc-{_slug(model.uri)}-{cache_key(model.uri, files, model.sha256, fetch_inputs(md))}"
    single_file = location.scheme in ("https", "http")
    defaults = config.model_cache
    settings = {
        "storageClassName": shared.storage_class_name or defaults.storage_class_name,
        "size": shared.size or defaults.size,
        "accessMode": shared.access_mode or defaults.access_mode,
        "retention": shared.retention or defaults.retention,
    }
    mount = posixpath.dirname(location.directory) if single_file else location.directory
    return CachePlan(name, md.metadata.namespace, model.uri, files, mount, settings, size_given=bool(shared.size))


def not_ours(
    obj: Mapping[str, Any], kind: str, plan: CachePlan, claim_uid: str | None = None, label: str = CACHE_LABEL
) -> str | None:
    """Why an existing object with one of the cache's predictable names must not be used, as the one
    sentence status says; None when it is ours: our managed-by label, the cache's label, and (`claim_uid`
    given: the Job, ServiceAccount, Role, RoleBinding) the cache's claim among its owners. Anyone allowed
    to create a claim or a Job in the namespace could otherwise have the weights loaded from, or the
    download run by, an object of theirs (docs/security.md "Shared model cache")."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    missing = [f"{k}={v}" for k, v in {**MANAGED_BY, label: plan.name}.items() if labels.get(k) != v]
    if missing:
        why = f"it lacks the label {', '.join(missing)}"
    elif claim_uid is not None and not any(r.get("uid") == claim_uid for r in meta.get("ownerReferences") or ()):
        why = f"it is not owned by the model cache claim {plan.name}"
    else:
        return None
    name = meta.get("name") or plan.name
    return (
        f"{kind} {name} exists but ModelDeploy did not make it ({why}), so nothing was created or changed for "
        f"the shared model cache; delete that {kind} to let ModelDeploy make its own."
    )


def with_size(plan: CachePlan, size: str) -> CachePlan:
    """The plan with the claim's actual size (the listed one, or the size of a claim that already exists)."""
    return replace(plan, settings={**plan.settings, "size": size}, size_given=True)


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """A ModelDeployment as a (non-controller) owner: garbage collection deletes a Delete-retention
    cache when its last owner is gone."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": md.metadata.name, "uid": md.metadata.uid}


def _labels(plan: CachePlan) -> dict[str, str]:
    return {**MANAGED_BY, CACHE_LABEL: plan.name}


def claim(plan: CachePlan, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [plan.settings["accessMode"]],
        "resources": {"requests": {"storage": plan.settings["size"]}},
    }
    if plan.settings["storageClassName"]:
        spec["storageClassName"] = plan.settings["storageClassName"]
    meta: dict[str, Any] = {
        "name": plan.name,
        "namespace": plan.namespace,
        "labels": _labels(plan),
        "annotations": {URI_ANNOTATION: redact_uri(plan.uri), FILES_ANNOTATION: ",".join(plan.files)},
    }
    if owner and plan.retention == "Delete":
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _owned_by_claim(plan: CachePlan, claim_uid: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": plan.name, "uid": claim_uid}]


def service_account(plan: CachePlan, claim_uid: str) -> dict[str, Any]:
    """The download Job's own identity: one per cache, so a token taken from one Job's pod can patch that
    cache's claim and no other (the Role below), and goes with the claim."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": _labels(plan),
            "ownerReferences": _owned_by_claim(plan, claim_uid),
        },
    }


def role(plan: CachePlan, claim_uid: str) -> dict[str, Any]:
    """Patch this one claim (the progress annotation), nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": _labels(plan),
            "ownerReferences": _owned_by_claim(plan, claim_uid),
        },
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["persistentvolumeclaims"],
                "resourceNames": [plan.name],
                "verbs": ["get", "patch"],
            }
        ],
    }


def role_binding(plan: CachePlan, claim_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": _labels(plan),
            "ownerReferences": _owned_by_claim(plan, claim_uid),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": plan.name},
        "subjects": [{"kind": "ServiceAccount", "name": plan.name, "namespace": plan.namespace}],
    }


def job(plan: CachePlan, md: ModelDeployment, config: OperatorConfig, claim_uid: str) -> dict[str, Any]:
    """The download Job: the fetcher into the claim's root, reporting on the claim, verified, resumable."""
    model = md.spec.model
    location = locate(plan.uri)
    dest = (
        posixpath.join(JOB_MOUNT, posixpath.basename(location.directory))
        if plan.mount_path != location.directory
        else JOB_MOUNT
    )
    command = ["python", "-m", "modeldeploy.fetch", "--uri", plan.uri, "--dest", dest]
    for f in plan.files:
        command += ["--file", f]
    if model.sha256:
        command += ["--sha256", model.sha256]
    interval = f"{config.model_cache.progress_interval_seconds:g}"
    command += ["--report-claim", f"{plan.namespace}/{plan.name}", "--progress-interval", interval]
    command += ["--capacity", str(quantity_bytes(plan.settings["size"]))]
    volumes = [{"name": "cache", "persistentVolumeClaim": {"claimName": plan.name}}]
    return fetch_job(
        plan.name, _labels(plan), plan, md, config, command, volumes, _owned_by_claim(plan, claim_uid), token=True
    )


def fetch_job(
    name: str,
    labels: dict[str, str],
    plan: CachePlan,
    md: ModelDeployment,
    config: OperatorConfig,
    command: list[str],
    volumes: list[dict[str, Any]],
    owners: list[dict[str, Any]],
    *,
    token: bool,
) -> dict[str, Any]:
    """A Job running the fetch image with `command`: the download Job and the listing Job share everything
    else (the operator's fetchEnv, the credentialsSecret, nodeSelector, tolerations, security settings)."""
    model = md.spec.model
    mounts = [{"name": v["name"], "mountPath": JOB_MOUNT} for v in volumes]
    container: dict[str, Any] = {
        "name": "fetch",
        "image": config.image_for("fetch", md.spec.images),
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}, *(e.model_dump() for e in config.fetch_env)],
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if model.credentials_secret:  # the keys the fetcher reads, never the whole Secret (fetch/credentials.py)
        taken = [e["name"] for e in container["env"]]
        container["env"] += secret_env(model.credentials_secret, locate(plan.uri).scheme, taken)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": plan.namespace,
        "labels": labels,
        "annotations": {
            URI_ANNOTATION: redact_uri(plan.uri),
            REQUESTED_BY: md.metadata.name,
            REQUESTED_GENERATION: str(md.metadata.generation or 0),
        },
    }
    if owners:
        meta["ownerReferences"] = owners
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": config.model_cache.job_backoff_limit,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    # The listing Job needs no API access: the namespace's default account, no token.
                    **({"serviceAccountName": name} if token else {"automountServiceAccountToken": False}),
                    "securityContext": {
                        "runAsUser": FETCH_UID,
                        "runAsGroup": FETCH_UID,
                        "fsGroup": FETCH_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    # Where the model's own pods may run (the same node pool reaches the same storage).
                    **({"nodeSelector": dict(md.spec.node_selector)} if md.spec.node_selector else {}),
                    **({"tolerations": list(md.spec.tolerations)} if md.spec.tolerations else {}),
                    "containers": [container],
                    "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


SHARED_VOLUME = "model-shared"


def mount_shared(template: dict[str, Any], plan: CachePlan, cache_volume: str, fetch_container: str) -> dict[str, Any]:
    """The engine pod template with the cache claim mounted read-only where the weights are expected.

    The per-pod fetch init container goes (the download Job did its work); every container that mounts
    the pod's cache volume also gets the claim at `plan.mount_path`, a read-only mount nested in the
    cache volume, so engines, auto-NGL and HF_HOME keep their paths.
    """
    spec = template["spec"]
    spec["initContainers"] = [c for c in spec.get("initContainers") or [] if c.get("name") != fetch_container]
    if not spec["initContainers"]:
        del spec["initContainers"]
    spec.setdefault("volumes", []).append(
        {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": plan.name, "readOnly": True}}
    )
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        mounts = container.get("volumeMounts") or []
        for m in mounts:
            if m.get("name") == cache_volume:
                # The claim's mount point is made inside the cache volume, which a container runtime cannot
                # do in a read-only mount (auto-NGL's): the emptyDir is writable, the weights are not.
                m.pop("readOnly", None)
        if any(m.get("name") == cache_volume for m in mounts):
            mounts.append({"name": SHARED_VOLUME, "mountPath": plan.mount_path, "readOnly": True})
    return template
