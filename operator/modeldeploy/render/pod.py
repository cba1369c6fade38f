"""The pod template: volumes, init containers, the engine container, probes and security.

The engine's part comes from its module (engines/): command, image key, health path, and the facts
that switch shared parts on or off (`runs_as_non_root`, `read_only_root`, `needs_shm`, `uses_hf_home`,
`cuda_image`, its init command); each engine module says why it sets them as it does. What every pod
shares is applied here, after the engine's part: the security context, volumes and mounts, resources,
scheduling and labels. A read-only root gets HOME=/tmp, so caches stay off the root filesystem.

The fetch and auto-NGL init containers are our images: always non-root, read-only root. Every container
gets no privilege escalation, all capabilities dropped and seccomp RuntimeDefault.
"""

from __future__ import annotations

import posixpath
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import registry
from modeldeploy.engines.base import Engine, Launch
from modeldeploy.fetch.credentials import secret_env
from modeldeploy.model_paths import CACHE_MOUNT, NGL_DIR, PVC_MOUNT_ROOT, ModelLocation, ModelUriError, locate
from modeldeploy.modelcache.plan import mount_shared, plan_cache
from modeldeploy.render import containers as c
from modeldeploy.render.containers import RenderError
from modeldeploy.render.labels import METRICS_PORT_LABEL, pod_annotations, pod_labels
from modeldeploy.render.scheduling import canonical, scheduling_fields
from modeldeploy.selection.types import Placement

ENGINE_CONTAINER = "engine"
FETCH_CONTAINER = "fetch"
NGL_CONTAINER = "auto-ngl"

CACHE_VOLUME = "model-cache"
SOURCE_VOLUME = "model-source"  # a pvc:// claim, read-only
TMP_VOLUME = "tmp"
SHM_VOLUME = "dshm"
NGL_VOLUME = "ngl"

NON_ROOT_UID = 1000  # the user our images (llamacpp, ngl, fetch, transformers) are built with
HF_HOME = f"{CACHE_MOUNT}/hf-home"  # tokenizer/hub caches land on the cache volume, not the image

# Probes: the startup probe gives a model up to 30 minutes to load (weights are already fetched by the
# init container, so this is load time only); after it passes, readiness drops a stuck pod from the
# Service within 30 s and liveness restarts it after 2 minutes of failed health checks.
# The startup probe asks every second: a model that loads in 0.2 s is Ready a second later, not up to a
# period of 10 s later, which a request held at zero replicas would wait for (docs/autoscaling.md). The
# kubelet runs the readiness probe at once when the startup probe passes, so its period adds nothing.
STARTUP_PERIOD_S = 1
STARTUP_FAILURES = 1800
# A Deployment reports ProgressDeadlineExceeded (which kstatus, Argo CD and Flux read as failed) after
# this long without progress; the default 600 s is shorter than a large download plus a 30-minute load.
PROGRESS_DEADLINE_S = 3600


def _container_security(non_root: bool | None, read_only_root: bool) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
    }
    if non_root:
        sc.update({"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID})
    sc["seccompProfile"] = {"type": "RuntimeDefault"}
    return sc


def _http_get(path: str) -> dict[str, Any]:
    return {"path": path, "port": c.PORT_NAME}


def probes(engine: Engine) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe on the engine's health endpoint."""
    path = engine.health_path
    return {
        "startupProbe": {
            "httpGet": _http_get(path),
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": STARTUP_FAILURES,
        },
        "readinessProbe": {"httpGet": _http_get(path), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": _http_get(path), "periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 6},
    }


def _location(md: ModelDeployment) -> ModelLocation:
    try:
        return locate(md.spec.model.uri)
    except ModelUriError as exc:
        raise RenderError(str(exc)) from None


def _projector_path(md: ModelDeployment, location: ModelLocation) -> str | None:
    """Where the separate mmproj file is: beside the model file in the same repository/directory."""
    mmproj = md.spec.model.multimodal_projector
    if not mmproj:
        return None
    if location.scheme in ("https", "http"):
        raise RenderError(
            "model.multimodalProjector needs a repository or directory URI (hf://, modelscope://, s3://, "
            "pvc:// or a path); an https:// URI names a single file"
        )
    return location.model_path(mmproj)


def volumes(md: ModelDeployment, engine: Engine, location: ModelLocation, with_ngl: bool) -> list[dict[str, Any]]:
    """The pod's volumes, in a fixed order: cache, pvc:// source, /tmp, /dev/shm, auto-NGL result."""
    cache = md.spec.cache
    if cache is not None and cache.pvc:
        cache_source: dict[str, Any] = {"persistentVolumeClaim": {"claimName": cache.pvc}}
    else:
        size = cache.empty_dir.size_limit if cache is not None and cache.empty_dir else None
        cache_source = {"emptyDir": {"sizeLimit": str(size)} if size else {}}
    vols: list[dict[str, Any]] = [{"name": CACHE_VOLUME, **cache_source}]
    if location.pvc_claim:
        vols.append(
            {"name": SOURCE_VOLUME, "persistentVolumeClaim": {"claimName": location.pvc_claim, "readOnly": True}}
        )
    vols.append({"name": TMP_VOLUME, "emptyDir": {}})
    if engine.needs_shm:
        vols.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    if with_ngl:
        vols.append({"name": NGL_VOLUME, "emptyDir": {}})
    return vols


def _mounts(
    location: ModelLocation, *, cache_ro: bool = False, shm: bool = False, ngl: str | None = None
) -> list[dict[str, Any]]:
    """Volume mounts: cache, source (read-only), /tmp, then optional shm and the NGL dir ("ro"/"rw")."""
    cache: dict[str, Any] = {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT}
    if cache_ro:
        cache["readOnly"] = True
    mounts: list[dict[str, Any]] = [cache]
    if location.pvc_claim:
        mounts.append(
            {"name": SOURCE_VOLUME, "mountPath": posixpath.join(PVC_MOUNT_ROOT, location.pvc_claim), "readOnly": True}
        )
    mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    if shm:
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    if ngl:
        mount: dict[str, Any] = {"name": NGL_VOLUME, "mountPath": NGL_DIR}
        if ngl == "ro":
            mount["readOnly"] = True
        mounts.append(mount)
    return mounts


def _gpu_resources(placement: Placement) -> dict[str, Any]:
    return {"limits": {placement.gpu_resource: str(placement.gpus)}} if placement.gpus > 0 else {}


def engine_resources(md: ModelDeployment, placement: Placement) -> dict[str, Any]:
    """The user's requests/limits (keys sorted), with the GPU limit forced to the placement's count.

    The user cannot lower or remove it: the engine's tensor-parallel size and the node choice both assume
    exactly `placement.gpus`. A GPU request, if the user wrote one, is forced to the same number
    (Kubernetes requires requests == limits for extended resources). Quantities are rendered as strings,
    the form the apiserver returns, so `cpu: 4` and `cpu: "4"` render the same bytes.
    """
    requests = {k: str(md.spec.resources.requests[k]) for k in sorted(md.spec.resources.requests)}
    limits = {k: str(md.spec.resources.limits[k]) for k in sorted(md.spec.resources.limits)}
    if placement.gpus > 0:
        limits[placement.gpu_resource] = str(placement.gpus)
        if placement.gpu_resource in requests:
            requests[placement.gpu_resource] = str(placement.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _engine_env(md: ModelDeployment, engine: Engine, placement: Placement) -> list[dict[str, Any]]:
    """Our variables, then the user's `env`; a user variable of the same name replaces ours.

    Replacing rather than appending matters: env is a list map keyed by name under server-side apply,
    so a duplicate name is an error, not "last one wins".
    """
    ours: list[dict[str, Any]] = []
    if engine.uses_hf_home:
        ours.append({"name": "HF_HOME", "value": HF_HOME})
    if engine.read_only_root:
        ours.append({"name": "HOME", "value": "/tmp"})
    if placement.gpus == 0 and engine.cuda_image:
        # CUDA base images set NVIDIA_VISIBLE_DEVICES=all, which exposes every GPU of the node to a pod
        # that was given none; `void` hides them so CPU placements really run on CPU.
        ours.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    user = [canonical(e) for e in md.spec.env]
    user_names = {e.get("name") for e in user}
    return [e for e in ours if e["name"] not in user_names] + user + _api_key_env(md, engine, user_names)


def _api_key_env(md: ModelDeployment, engine: Engine, user_names: set[Any]) -> list[dict[str, Any]]:
    """spec.auth's key as the engine's own variable, taken from the Secret by the kubelet (secretKeyRef):
    the key is in no object the operator writes, no argv and no status (docs/security.md, "API keys")."""
    auth = md.spec.auth
    if auth is None:
        return []
    refusal = engine.api_key_refusal()
    if refusal is not None or engine.api_key_env is None:
        raise RenderError(refusal or f"{engine.label} cannot take an API key")
    if engine.api_key_env in user_names:
        raise RenderError(
            f"spec.env must not set {engine.api_key_env} when spec.auth is set: the key comes from "
            "spec.auth.apiKeySecret"
        )
    ref = auth.api_key_secret
    secret = {"name": ref.name, "key": ref.key, "optional": False}
    return [canonical({"name": engine.api_key_env, "valueFrom": {"secretKeyRef": secret}})]


def launch_for(
    md: ModelDeployment, engine: Engine, placement: Placement, location: ModelLocation, config: OperatorConfig
) -> Launch:
    """What an engine needs to build its command lines: paths in the pod, GPUs, the user's args."""
    spec = md.spec
    return Launch(
        model_path=location.model_path(spec.model.file),
        mmproj_path=_projector_path(md, location) if engine.loads_projector else None,
        served_name=spec.model.name,
        gpus=placement.gpus,
        n_gpu_layers=spec.engine.n_gpu_layers,
        args=spec.engine.args,
        allow_trust_remote_code=config.allow_trust_remote_code,
        api_key=spec.auth is not None,
    )


def engine_container(
    md: ModelDeployment,
    engine: Engine,
    placement: Placement,
    launch: Launch,
    location: ModelLocation,
    config: OperatorConfig,
    *,
    with_ngl: bool,
) -> dict[str, Any]:
    """The model server container: the engine's command and facts, then the shared parts."""
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": config.image_for(engine.image_key, md.spec.images),
        "imagePullPolicy": config.image_pull_policy,
        "command": engine.command(launch),
    }
    env = _engine_env(md, engine, placement)
    if env:
        container["env"] = env
    container["ports"] = [{"name": c.PORT_NAME, "containerPort": c.PORT, "protocol": "TCP"}]
    relay = engine.metrics_port(launch.api_key)
    if relay is not None and relay != c.PORT:
        container["ports"].append({"name": c.METRICS_PORT_NAME, "containerPort": relay, "protocol": "TCP"})
    resources = engine_resources(md, placement)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = _mounts(location, shm=engine.needs_shm, ngl="ro" if with_ngl else None)
    container.update(probes(engine))
    container["securityContext"] = _container_security(engine.runs_as_non_root, engine.read_only_root)
    return container


def _fetch_env(config: OperatorConfig) -> list[dict[str, Any]]:
    """HOME=/tmp (the root filesystem is read-only), then the operator config's `fetchEnv` (a variable of
    the same name replaces ours; env is a list map keyed by name)."""
    extra = [{"name": e.name, "value": e.value} for e in config.fetch_env]
    names = {e["name"] for e in extra}
    return [e for e in [{"name": "HOME", "value": "/tmp"}] if e["name"] not in names] + extra


def fetch_container(md: ModelDeployment, location: ModelLocation, config: OperatorConfig) -> dict[str, Any] | None:
    """The init container that downloads the weights into the cache; None when they are already mounted."""
    if not location.needs_fetch:
        return None
    model = md.spec.model
    files = [f for f in (model.file, model.multimodal_projector) if f]
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": config.image_for("fetch", md.spec.images),
        "imagePullPolicy": config.image_pull_policy,
        "command": c.fetch_command(model.uri, location.directory, files, model.sha256),
        "env": _fetch_env(config),
    }
    if model.credentials_secret:  # the keys the fetcher reads, never the whole Secret (fetch/credentials.py)
        taken = [e["name"] for e in container["env"]]
        container["env"] += secret_env(model.credentials_secret, location.scheme, taken)
    container["volumeMounts"] = _mounts(location)
    container["securityContext"] = _container_security(True, True)
    return container


def ngl_container(
    md: ModelDeployment, placement: Placement, location: ModelLocation, config: OperatorConfig, command: list[str]
) -> dict[str, Any]:
    """The auto-NGL init container: same GPU limit as the engine, so it measures the GPUs it will use."""
    container: dict[str, Any] = {
        "name": NGL_CONTAINER,
        "image": config.image_for("ngl", md.spec.images),
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": _gpu_resources(placement),
        "volumeMounts": _mounts(location, cache_ro=True, ngl="rw"),  # it only reads the GGUF header
        "securityContext": _container_security(True, True),
    }
    return container


def pod_template(md: ModelDeployment, name: str, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    """The Deployment's `spec.template` for the engine called `name`."""
    engine = registry.get(name)
    if engine.gpu_required and placement.gpus < 1:
        raise RenderError(f"{engine.name} needs at least one GPU, but the placement gives {placement.gpus}")
    location = _location(md)
    launch = launch_for(md, engine, placement, location, config)
    init_command = engine.init_command(launch)
    with_ngl = init_command is not None

    init: list[dict[str, Any]] = []
    fetch = fetch_container(md, location, config)
    if fetch:
        init.append(fetch)
    if init_command is not None:
        init.append(ngl_container(md, placement, location, config, init_command))

    spec: dict[str, Any] = {}
    if md.spec.service_account_name:
        spec["serviceAccountName"] = md.spec.service_account_name
    else:
        # Model servers never call the Kubernetes API; do not hand them a token they do not need.
        spec["automountServiceAccountToken"] = False
    # Service links inject <SERVICE>_PORT variables; a Service named "vllm" yields VLLM_PORT=tcp://...,
    # which vLLM reads as its own setting and fails on. Nothing here uses service links.
    spec["enableServiceLinks"] = False
    spec["securityContext"] = {
        "fsGroup": NON_ROOT_UID,  # lets the non-root fetcher and engines write a root-owned cache PVC
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec.update(scheduling_fields(md.spec.node_selector, md.spec.tolerations, md.spec.affinity, placement))
    if init:
        spec["initContainers"] = init
    spec["containers"] = [engine_container(md, engine, placement, launch, location, config, with_ngl=with_ngl)]
    spec["volumes"] = volumes(md, engine, location, with_ngl)

    labels = pod_labels(md, name)
    relay = engine.metrics_port(launch.api_key)
    if relay is not None and relay != c.PORT:
        labels[METRICS_PORT_LABEL] = c.METRICS_PORT_NAME
    template = {
        "metadata": {"labels": labels, "annotations": pod_annotations(md, ENGINE_CONTAINER)},
        "spec": spec,
    }
    shared = plan_cache(md, config)
    if shared is not None:  # the shared model cache: the claim read-only, no per-pod download
        template = mount_shared(template, shared, CACHE_VOLUME, FETCH_CONTAINER)
    return template
