"""The cluster's binaries, built with `go build` from published Go modules and cached by version.

Two wrapper modules, one `go build` each, so shared packages compile once per module:

- gomod/: the Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd at
  the version Kubernetes requires) and the real node's kubelet and kube-proxy. k8s.io/kubernetes is not
  meant to be imported: its go.mod points each k8s.io staging module at ./staging/..., which is absent
  from the published zip, so the wrapper replaces each one with its published v0.X.Y.
- gomod-containerd/: containerd 2.x, its runc shim and `ctr` (Kubernetes 1.37 refuses containerd 1.x,
  which is what Debian 12 ships).

The results live outside the repository (cache_root()), keyed by version, so only the first run on a
machine pays for the builds (minutes on two cores; docs/development.md has the figures).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

K8S_VERSION = "v1.36.3"
CONTAINERD_VERSION = "v2.4.2"
GOMOD_DIR = Path(__file__).parent / "gomod"
CONTAINERD_GOMOD_DIR = Path(__file__).parent / "gomod-containerd"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class BuildError(RuntimeError):
    """The binaries are missing and could not be built; the message says what to fix."""


def cache_root() -> Path:
    """MODELDEPLOY_CACHE, else XDG_CACHE_HOME/modeldeploy, else ~/.cache/modeldeploy."""
    if root := os.environ.get("MODELDEPLOY_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modeldeploy"


@dataclass(frozen=True)
class GoBuild:
    """One wrapper module's commands: what `go build` makes, where it is cached, how it is stamped."""

    name: str  # the cache folder: cache_root()/name/version/bin
    version: str
    module_dir: Path
    commands: dict[str, str]  # binary name -> package path
    override_env: str  # a folder of prebuilt binaries with the same names
    ldflags: str = "-s -w"
    tags: tuple[str, ...] = ()
    what: str = field(default="", compare=False)
    # Set for a release built as its own main module (module@version from the Go module proxy, built in
    # its read-only module-cache folder with its own go.mod, replace directives included); commands are
    # then paths relative to it. Unset: module_dir is a wrapper module of ours.
    main_module: str | None = None

    def bin_dir(self) -> Path:
        if override := os.environ.get(self.override_env):
            return Path(override)
        return cache_root() / self.name / self.version / "bin"

    def complete(self, directory: Path) -> bool:
        return all(os.access(directory / name, os.X_OK) for name in self.commands)


def _k8s_ldflags(version: str) -> str:
    """Stamp the release so /version and the components' compatibility checks see it."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/client-go/pkg/version.gitVersion": version,
    }
    return " ".join(["-s", "-w", *(f"-X {k}={v}" for k, v in stamps.items())])


CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
KUBERNETES = GoBuild(
    name="k8s",
    version=K8S_VERSION,
    module_dir=GOMOD_DIR,
    commands={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "etcd": "./etcd",
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    },
    override_env="MODELDEPLOY_K8S_BIN",
    ldflags=_k8s_ldflags(K8S_VERSION),
    what=f"Kubernetes {K8S_VERSION} (control plane, kubelet, kube-proxy)",
)
CONTAINERD = GoBuild(
    name="containerd",
    version=CONTAINERD_VERSION,
    module_dir=CONTAINERD_GOMOD_DIR,
    commands={
        "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
        "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
    },
    override_env="MODELDEPLOY_CONTAINERD_BIN",
    ldflags=f"-s -w -X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",
    # Snapshotters that need cgo or kernel pieces this project never uses (overlayfs is the one).
    tags=("no_btrfs", "no_devmapper", "no_zfs"),
    what=f"containerd {CONTAINERD_VERSION}",
)

# The autoscaling stack (docs/autoscaling.md): the releases whose CRDs addon_crds.py installs. Each is
# built as its own main module: KEDA and Prometheus carry replace directives a wrapper module would
# drop, and the module proxy serves the exact tagged sources. No webhooks for KEDA (the dev cluster has
# no admission webhooks) and no promtool.
KEDA_VERSION = "v2.21.0"
KEDA_HTTP_VERSION = "v0.12.0"
PROMETHEUS_MODULE_VERSION = "v0.316.0"  # Prometheus 3.16.0 (its module is tagged v0.3XX.Y)
KEDA = GoBuild(
    name="keda",
    version=KEDA_VERSION,
    module_dir=GOMOD_DIR,
    main_module=f"github.com/kedacore/keda/v2@{KEDA_VERSION}",
    commands={"operator": "./cmd/operator", "adapter": "./cmd/adapter"},
    override_env="MODELDEPLOY_KEDA_BIN",
    ldflags=(
        f"-s -w -X github.com/kedacore/keda/v2/version.Version={KEDA_VERSION.lstrip('v')}"
        f" -X github.com/kedacore/keda/v2/version.GitCommit={KEDA_VERSION}"
    ),
    what=f"KEDA {KEDA_VERSION} (operator, metrics adapter)",
)
KEDA_HTTP = GoBuild(
    name="keda-http-add-on",
    version=KEDA_HTTP_VERSION,
    module_dir=GOMOD_DIR,
    main_module=f"github.com/kedacore/http-add-on@{KEDA_HTTP_VERSION}",
    commands={"operator": "./operator", "interceptor": "./interceptor", "scaler": "./scaler"},
    override_env="MODELDEPLOY_KEDA_HTTP_BIN",
    ldflags=f"-s -w -X github.com/kedacore/http-add-on/pkg/build.version={KEDA_HTTP_VERSION}",
    what=f"KEDA HTTP add-on {KEDA_HTTP_VERSION} (operator, interceptor, scaler)",
)
PROMETHEUS = GoBuild(
    name="prometheus",
    version=PROMETHEUS_MODULE_VERSION,
    module_dir=GOMOD_DIR,
    main_module=f"github.com/prometheus/prometheus@{PROMETHEUS_MODULE_VERSION}",
    commands={"prometheus": "./cmd/prometheus"},
    override_env="MODELDEPLOY_PROMETHEUS_BIN",
    ldflags="-s -w -X github.com/prometheus/common/version.Version=3.16.0",
    what="Prometheus 3.16.0 (its HTTP API; the web UI's assets are not built)",
)
AUTOSCALING = (KEDA, KEDA_HTTP, PROMETHEUS)

# A peer's controller for bench/peer.py (docs/operator-at-scale.md, "Side by side with KServe"): KServe's
# controller manager, built as its own main module like KEDA. KubeAI, the first choice, is not served by
# the Go module proxy here. v0.17.0 is the newest KServe release the proxy serves.
KSERVE_VERSION = "v0.17.0"
KSERVE = GoBuild(
    name="kserve",
    version=KSERVE_VERSION,
    module_dir=GOMOD_DIR,
    main_module=f"github.com/kserve/kserve@{KSERVE_VERSION}",
    commands={"manager": "./cmd/manager"},
    override_env="MODELDEPLOY_KSERVE_BIN",
    what=f"KServe {KSERVE_VERSION} (controller manager)",
)


def bin_dir(version: str = K8S_VERSION) -> Path:
    """Where the Kubernetes binaries are (MODELDEPLOY_K8S_BIN overrides the cache)."""
    if version != K8S_VERSION:
        raise BuildError(f"gomod/ pins Kubernetes {K8S_VERSION}; cannot build {version}")
    return KUBERNETES.bin_dir()


def ensure(build: GoBuild, log: Log = _stderr) -> dict[str, Path]:
    """Paths of the build's binaries, building them first when the cache lacks them.

    A file lock serialises concurrent callers (two pytest sessions, `dev up` beside a test run): the
    second waits and then finds the cache filled.
    """
    directory = build.bin_dir()
    if not build.complete(directory):
        if os.environ.get(build.override_env):
            raise BuildError(f"{build.override_env}={directory} lacks one of {', '.join(build.commands)}")
        _build(build, directory, log)
    return {name: directory / name for name in build.commands}


def ensure_binaries(version: str = K8S_VERSION, log: Log = _stderr) -> dict[str, Path]:
    """The Kubernetes binaries (control plane, kubelet, kube-proxy), built on first use."""
    bin_dir(version)
    return ensure(KUBERNETES, log)


def ensure_containerd(log: Log = _stderr) -> dict[str, Path]:
    """containerd, its runc shim and ctr, built on first use."""
    return ensure(CONTAINERD, log)


def _build(build: GoBuild, directory: Path, log: Log) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"{build.what} is built with Go (>= 1.26), and `go` is not on PATH")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if build.complete(directory):
            return
        staging = directory.parent / "bin.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        cwd = _module_source(go, build.main_module) if build.main_module else build.module_dir
        cmd = [go, "build", "-mod=readonly", "-trimpath", "-ldflags", build.ldflags]
        if build.tags:
            cmd += ["-tags", " ".join(build.tags)]
        cmd += ["-o", f"{staging}/", *build.commands.values()]
        log(f"building {build.what} with Go (first run only; minutes) into {directory}")
        started = time.monotonic()
        # GOWORK=off: Prometheus's zip ships a go.work naming nested modules that zips leave out.
        env = {**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0", "GOWORK": "off"}
        proc = subprocess.run(["nice", "-n", "19", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"go build failed in {cwd} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        log(f"built {build.what} in {time.monotonic() - started:.0f} s")


def module_source(build: GoBuild) -> Path:
    """A main-module build's source folder (its CRDs and config files come from there, at the pinned version)."""
    go = shutil.which("go")
    if go is None or build.main_module is None:
        raise BuildError(f"the source of {build.what} comes from the Go module proxy: needs `go` and a main module")
    return _module_source(go, build.main_module)


def _module_source(go: str, module: str) -> Path:
    """The pinned module's source folder in the Go module cache (downloaded from the proxy first)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    proc = subprocess.run(
        [go, "mod", "download", "-json", module], cwd=GOMOD_DIR, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BuildError(f"go mod download {module} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def ensure_autoscaling(log: Log = _stderr) -> dict[str, dict[str, Path]]:
    """KEDA, its HTTP add-on and Prometheus (build name -> binary name -> path), built on first use."""
    return {build.name: ensure(build, log) for build in AUTOSCALING}


if __name__ == "__main__":
    # `python -m modeldeploy_dev.build autoscaling` fills the cache ahead of a test run (CI does).
    targets = {"k8s": (KUBERNETES,), "containerd": (CONTAINERD,), "autoscaling": AUTOSCALING, "kserve": (KSERVE,)}
    for arg in sys.argv[1:] or ["k8s", "containerd", "autoscaling"]:
        for target in targets[arg]:
            ensure(target)
