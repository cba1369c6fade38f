"""helm, built from its Go module on first use and cached: the dev cluster installs the operator with the
chart (as a user does), and the chart tests render and install it.

No PyPI wheel ships a Linux helm binary; `go install helm.sh/helm/v3/cmd/helm@HELM_VERSION` takes about
3 minutes on 2 cores with a cold Go module cache, once. It lands under
`${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/tools/helm-<version>/`; $MODELDEPLOY_HELM names another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from modeldeploy_dev.build import BuildError, cache_root

HELM_VERSION = "v3.21.4"
HELM_MODULE = "helm.sh/helm/v3"
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`): its Makefile derives
# it from the client-go it builds with (v0.36 for helm v3.21) and sets it by -ldflags; `go install` must too,
# else helm claims Kubernetes 1.20.
HELM_KUBE_MAJOR, HELM_KUBE_MINOR = "1", "36"
_BUILD_TIMEOUT_S = 1800


def _build(dest: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "helm is not cached and there is no Go toolchain to build it (go install helm.sh/helm/v3/cmd/helm)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="helm-", dir=dest.parent))
    env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
            *(
                f"-X {HELM_MODULE}/pkg/{pkg}.k8sVersion{part}={value}"
                for pkg in ("chartutil", "lint/rules")
                for part, value in (("Major", HELM_KUBE_MAJOR), ("Minor", HELM_KUBE_MINOR))
            ),
        ]
    )
    cmd = [go, "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"building helm {HELM_VERSION} took over {_BUILD_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not (tmp / "helm").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"building helm {HELM_VERSION} failed: {proc.stderr.strip()[-2000:]}")
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "helm", dest / "helm")  # atomic: a concurrent run sees the whole binary or none
    shutil.rmtree(tmp, ignore_errors=True)


def ensure_helm() -> Path:
    """The helm binary ($MODELDEPLOY_HELM, else the cached build, built on first use); BuildError."""
    if override := os.environ.get("MODELDEPLOY_HELM"):
        return Path(override)
    binary = cache_root() / "tools" / f"helm-{HELM_VERSION}" / "helm"
    if not binary.exists():
        _build(binary.parent)
    return binary
