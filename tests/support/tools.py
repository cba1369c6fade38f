"""External tools the chart tests need, installed from the registries on first use and cached.

- helm: built from its Go module by modeldeploy_dev.helm (the dev cluster installs the chart with it too).
- checkov: the security scanner, from PyPI, in its own virtual environment (it pins ~100 packages,
  some older than the project's; keeping it apart leaves the project's environment alone). About 45 s, once.

Everything lands under `${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/tools/<tool>-<version>/`. A tool that
cannot be had fails the test in CI (`CI=true`) and skips it elsewhere, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from modeldeploy_dev import helm
from modeldeploy_dev.build import BuildError

CHECKOV_VERSION = "3.3.30"

_BUILD_TIMEOUT_S = 1800


def cache_dir() -> Path:
    root = os.environ.get("MODELDEPLOY_CACHE") or str(Path.home() / ".cache" / "modeldeploy")
    return Path(root) / "tools"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class ToolUnavailable(RuntimeError):
    """A tool is not cached and cannot be installed here; the message says why."""


def unavailable(what: str) -> None:
    """Fail in CI (a missing tool must never hide a test there), skip on a developer's machine."""
    import pytest

    if in_ci():
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def _ensure(install: Callable[[], Path]) -> Path:
    """What tests call: the tool, or a failure in CI and a skip elsewhere, saying why."""
    try:
        return install()
    except ToolUnavailable as exc:
        unavailable(str(exc))
        raise


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False)


def install_helm() -> Path:
    """The helm binary (modeldeploy_dev.helm: $MODELDEPLOY_HELM, else the cached build); ToolUnavailable."""
    try:
        return helm.ensure_helm()
    except BuildError as exc:
        raise ToolUnavailable(str(exc)) from None


def ensure_helm() -> Path:
    """install_helm() for tests: fails in CI, skips elsewhere, when helm cannot be had."""
    return _ensure(install_helm)


def _make_venv(venv: Path, packages: list[str], what: str) -> str | None:
    """Make a venv in place (its scripts carry absolute shebangs) with `packages`; `.complete` marks it
    whole. Returns an error sentence or None."""
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = _run([sys.executable, "-m", "venv", str(venv)])
        if proc.returncode == 0:
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            proc = _run([*pip, *packages])
    except subprocess.TimeoutExpired:
        shutil.rmtree(venv, ignore_errors=True)
        return f"installing {what} took over {_BUILD_TIMEOUT_S} s"
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        return f"installing {what} from PyPI failed: {proc.stderr.strip()[-2000:]}"
    (venv / ".complete").write_text(" ".join(packages))
    return None


def _install_checkov(venv: Path) -> str | None:
    return _make_venv(venv, [f"checkov=={CHECKOV_VERSION}"], f"checkov {CHECKOV_VERSION}")


def install_checkov() -> Path:
    """The checkov executable ($MODELDEPLOY_CHECKOV, else a cached venv made on first use); ToolUnavailable."""
    override = os.environ.get("MODELDEPLOY_CHECKOV")
    if override:
        return Path(override)
    venv = cache_dir() / f"checkov-{CHECKOV_VERSION}"
    if not (venv / ".complete").exists():
        error = _install_checkov(venv)
        if error:
            raise ToolUnavailable(error)
    return venv / "bin" / "checkov"


def ensure_checkov() -> Path:
    """install_checkov() for tests: fails in CI, skips elsewhere, when checkov cannot be had."""
    return _ensure(install_checkov)


# s3:// fetching needs boto3, whose botocore pins python-dateutil < 3 while kubernetes needs >= 3: the two
# cannot share the project's environment (the fetch image has boto3 and no kubernetes). The S3 test runs the
# fetcher in its own venv, against moto's S3 server (an S3 API on loopback; no S3 is reachable from here).
S3_PACKAGES = ["boto3==1.44.5", "moto[server]==5.2.5", "httpx>=0.27", "pydantic>=2.7,<3", "pyyaml>=6"]


def install_s3_venv() -> Path:
    """The python of a cached venv with boto3 and moto's server; ToolUnavailable."""
    venv = cache_dir() / "s3-boto3-1.44.5-moto-5.2.5"
    if not (venv / ".complete").exists():
        error = _make_venv(venv, S3_PACKAGES, "boto3 and moto")
        if error:
            raise ToolUnavailable(error)
    return venv / "bin" / "python"


def ensure_s3_venv() -> Path:
    """install_s3_venv() for tests: fails in CI, skips elsewhere."""
    return _ensure(install_s3_venv)


# actionlint checks .github/workflows/ (syntax, expressions, action inputs, runner labels). Built from its
# Go module like helm: no wheel ships it. About a minute on 2 cores with a cold Go module cache, once.
ACTIONLINT_VERSION = "v1.7.12"
ACTIONLINT_PACKAGE = "github.com/rhysd/actionlint/cmd/actionlint"


def _go_install(package: str, version: str, binary: str, dest: Path) -> str | None:
    """`go install package@version` into `dest`; an error sentence or None."""
    go = shutil.which("go")
    if go is None:
        return f"{binary} is not cached and there is no Go toolchain to build it (go install {package}@{version})"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{binary}-", dir=dest.parent))
    env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    try:
        proc = _run([go, "install", "-trimpath", "-ldflags", "-s -w", f"{package}@{version}"], env)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        return f"building {binary} {version} took over {_BUILD_TIMEOUT_S} s"
    if proc.returncode != 0 or not (tmp / binary).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return f"building {binary} {version} failed: {proc.stderr.strip()[-2000:]}"
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / binary, dest / binary)  # atomic: a concurrent run sees the whole binary or none
    shutil.rmtree(tmp, ignore_errors=True)
    return None


def install_actionlint() -> Path:
    """The actionlint binary (the cached build, built on first use); ToolUnavailable."""
    binary = cache_dir() / f"actionlint-{ACTIONLINT_VERSION}" / "actionlint"
    if not binary.exists():
        error = _go_install(ACTIONLINT_PACKAGE, ACTIONLINT_VERSION, "actionlint", binary.parent)
        if error:
            raise ToolUnavailable(error)
    return binary


def ensure_actionlint() -> Path:
    """install_actionlint() for tests: fails in CI, skips elsewhere, when actionlint cannot be had."""
    return _ensure(install_actionlint)
