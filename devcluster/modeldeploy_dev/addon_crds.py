"""The CRDs of the ecosystem components ModelDeploy renders objects for, from their own Go modules.

KEDA (ScaledObject), its HTTP add-on (HTTPScaledObject), Gateway API (HTTPRoute, Gateway), the Gateway
API Inference Extension (InferencePool) and the Prometheus operator (PodMonitor) each publish their CRD
YAML inside their Go module (`config/crd/...`). The Go module proxy serves those sources, so
`go mod download` of a pinned version gives the exact schemas a user's cluster validates against, with
no Helm repository or web download. Installing them into the local control plane makes the real
kube-apiserver validate every object we render (docs/autoscaling.md, docs/gateway.md).

The YAML files are copied into `${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/crds/<module>@<version>/`;
a second call reads only that cache. Measured on the 2-core machine: about 2 s for all five modules
with an empty Go module cache (the zips are 3-10 MB each), nothing afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from modeldeploy_dev.build import cache_root


@dataclass(frozen=True)
class AddonModule:
    """One Go module and the CRD files we take from it (paths inside the module)."""

    module: str
    version: str
    files: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.module.replace('/', '_')}@{self.version}"


# Pinned releases. Inference Extension v1.6.0 serves InferencePool as inference.networking.k8s.io/v1
# (the GA group; the older inference.networking.x-k8s.io/v1alpha2 is not in this release). Gateway API
# v1.6.3 is the newest that builds with Go 1.26 (v1.7 requires Go 1.27).
KEDA = AddonModule(
    "github.com/kedacore/keda/v2",
    "v2.21.0",
    # All of KEDA's kinds: its operator watches each one and does not start without their CRDs.
    tuple(
        f"config/crd/bases/{f}.yaml"
        for f in (
            "keda.sh_scaledobjects",
            "keda.sh_triggerauthentications",
            "keda.sh_scaledjobs",
            "keda.sh_clustertriggerauthentications",
            "eventing.keda.sh_cloudeventsources",
            "eventing.keda.sh_clustercloudeventsources",
        )
    ),
)
KEDA_HTTP = AddonModule(
    "github.com/kedacore/http-add-on", "v0.12.0", ("config/crd/bases/http.keda.sh_httpscaledobjects.yaml",)
)
GATEWAY_API = AddonModule(
    "sigs.k8s.io/gateway-api",
    "v1.6.3",
    tuple(
        f"config/crd/standard/gateway.networking.k8s.io_{kind}.yaml"
        for kind in ("gatewayclasses", "gateways", "httproutes", "referencegrants")
    ),
)
INFERENCE_EXTENSION = AddonModule(
    "sigs.k8s.io/gateway-api-inference-extension",
    "v1.6.0",
    ("config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",),
)
PROMETHEUS_OPERATOR = AddonModule(
    "github.com/prometheus-operator/prometheus-operator",
    "v0.89.0",
    ("example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",),
)
ALL: tuple[AddonModule, ...] = (KEDA, KEDA_HTTP, GATEWAY_API, INFERENCE_EXTENSION, PROMETHEUS_OPERATOR)


class AddonCrdError(RuntimeError):
    """The CRDs are not cached and cannot be downloaded here; the message says why."""


def crd_dir() -> Path:
    return cache_root() / "crds"


def _download(mod: AddonModule) -> Path:
    """`go mod download -json module@version` and return the module's source directory."""
    go = shutil.which("go")
    if go is None:
        raise AddonCrdError(f"`go` is not on PATH: the CRDs of {mod.module} come from its Go module")
    with tempfile.TemporaryDirectory() as scratch:  # outside any module, so no go.mod is touched
        proc = subprocess.run(
            [go, "mod", "download", "-json", f"{mod.module}@{mod.version}"],
            cwd=scratch,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
            timeout=600,
        )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "Dir" not in info:
        why = info.get("Error") or proc.stderr.strip()[-500:]
        raise AddonCrdError(f"go mod download {mod.module}@{mod.version} failed: {why}")
    return Path(info["Dir"])


def ensure_module(mod: AddonModule) -> list[Path]:
    """The module's CRD files in the cache, downloading them on the first call."""
    target = crd_dir() / mod.key
    paths = [target / Path(f).name for f in mod.files]
    if all(p.is_file() for p in paths):
        return paths
    crd_dir().mkdir(parents=True, exist_ok=True)
    with open(crd_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p.is_file() for p in paths):
            return paths
        source = _download(mod)
        staging = Path(tempfile.mkdtemp(dir=crd_dir(), prefix=f".{mod.key}."))
        for f in mod.files:
            shutil.copyfile(source / f, staging / Path(f).name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return paths


def ensure_addon_crds(modules: tuple[AddonModule, ...] = ALL) -> list[Path]:
    """Every pinned CRD file, from the cache or freshly downloaded."""
    return [p for mod in modules for p in ensure_module(mod)]


def load_crds(paths: list[Path]) -> list[dict[str, object]]:
    """The CustomResourceDefinition documents in the files (skipping empty documents)."""
    docs: list[dict[str, object]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def install(api: object, docs: list[dict[str, object]], timeout: float = 60) -> list[str]:
    """Create the CRDs (replace those already there) and wait until each is Established; return their names."""
    import time

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api)
    names: list[str] = []
    for crd in docs:
        name = str(crd["metadata"]["name"])  # type: ignore[index]
        names.append(name)
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise AddonCrdError(f"the apiserver refused the CRD {name}: {exc.reason}: {exc.body}") from exc
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            got = ext.read_custom_resource_definition(name)
            if any(c.type == "Established" and c.status == "True" for c in got.status.conditions or ()):
                pending.discard(name)
        if pending:
            time.sleep(0.3)
    if pending:
        raise AddonCrdError(f"CRDs not Established within {timeout:.0f} s: {', '.join(sorted(pending))}")
    return names
