"""The control-plane binaries, built with `go build` from the published Kubernetes modules.

k8s.io/kubernetes is not meant to be imported: its go.mod points each k8s.io staging module at
./staging/..., which is absent from the published zip. The wrapper module in gomod/ replaces each one
with its published v0.X.Y and builds the three commands plus etcd (at the version Kubernetes requires)
in one `go build`, so shared packages compile once. The result is cached outside the repository,
keyed by version, so only the first run on a machine pays for the build (minutes on two cores).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

K8S_VERSION = "v1.36.3"
GOMOD_DIR = Path(__file__).parent / "gomod"
COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "etcd": "./etcd",
}


class BuildError(RuntimeError):
    """The binaries are missing and could not be built; the message says what to fix."""


def cache_root() -> Path:
    """MODELDEPLOY_CACHE, else XDG_CACHE_HOME/modeldeploy, else ~/.cache/modeldeploy."""
    if root := os.environ.get("MODELDEPLOY_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modeldeploy"


def bin_dir(version: str = K8S_VERSION) -> Path:
    """MODELDEPLOY_K8S_BIN overrides the cache (binaries built elsewhere, same names)."""
    if override := os.environ.get("MODELDEPLOY_K8S_BIN"):
        return Path(override)
    return cache_root() / "k8s" / version / "bin"


def _complete(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in COMMANDS)


def _ldflags(version: str) -> str:
    """Stamp the release so /version and the components' compatibility checks see it."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/client-go/pkg/version.gitVersion": version,
    }
    return " ".join(["-s", "-w", *(f"-X {k}={v}" for k, v in stamps.items())])


def ensure_binaries(
    version: str = K8S_VERSION, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
) -> dict[str, Path]:
    """Paths of the four binaries, building them first when the cache lacks them.

    A file lock serialises concurrent callers (two pytest sessions, `dev up` beside a test run): the
    second waits and then finds the cache filled.
    """
    directory = bin_dir(version)
    if not _complete(directory):
        if os.environ.get("MODELDEPLOY_K8S_BIN"):
            raise BuildError(f"MODELDEPLOY_K8S_BIN={directory} lacks one of {', '.join(COMMANDS)}")
        _build(directory, version, log)
    return {name: directory / name for name in COMMANDS}


def _build(directory: Path, version: str, log: Callable[[str], None]) -> None:
    if version != K8S_VERSION:
        raise BuildError(f"gomod/ pins Kubernetes {K8S_VERSION}; cannot build {version}")
    go = shutil.which("go")
    if go is None:
        raise BuildError("the local control plane is built with Go (>= 1.26), and `go` is not on PATH")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(directory):
            return
        staging = directory.parent / "bin.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        cmd = [go, "build", "-mod=readonly", "-trimpath", "-ldflags", _ldflags(version), "-o", f"{staging}/"]
        cmd += list(COMMANDS.values())
        log(f"building the Kubernetes {version} control plane with Go (first run only; minutes) into {directory}")
        started = time.monotonic()
        env = {**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0"}
        proc = subprocess.run(cmd, cwd=GOMOD_DIR, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"go build failed in {GOMOD_DIR} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        log(f"built in {time.monotonic() - started:.0f} s")
