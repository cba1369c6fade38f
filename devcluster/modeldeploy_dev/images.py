"""Our images, built on this machine from their own Dockerfiles with buildah, exported as docker-archives.

A real node imports images, it does not pull them: no registry is reachable from a sandbox, and the
project's images are only pushed on a release. So the dev harness builds operator, fetch, ngl, llamacpp
and the pause image here, from the same Dockerfiles the release builds, choosing the base by build
arguments: where python:3.12.8-slim-bookworm or a CUDA image cannot be pulled, the bases are built from
Debian's own packages (debootstrap, then Debian's python3 as a venv at /usr/local: Python 3.11, not
3.12.8). Each image is tagged with the name the operator renders by default (DEFAULT_REGISTRY and the
package version), so a pod with imagePullPolicy IfNotPresent finds it once imported into containerd.

The archives are cached under `<cache>/images/<image>/<key>.tar`, keyed by a hash of what the build reads
(the Dockerfile, the build arguments, the files its COPY lines take, the local bases' recipes), so an
unchanged tree costs nothing and a changed source rebuilds only the images that copy it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from modeldeploy import __version__
from modeldeploy.config import DEFAULT_REGISTRY
from modeldeploy_dev.build import cache_root

Log = Callable[[str], None]

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "images"
PYTHON_BASE_DOCKERFILE = IMAGES_DIR / "bases" / "python" / "Dockerfile"

# The local bases live only in this machine's buildah storage; nothing is pushed anywhere.
DEBIAN_BASE = "localhost/modeldeploy/debian:bookworm-local"
PYTHON_BASE = "localhost/modeldeploy/python:3.11-bookworm-local"
DEBIAN_SUITE = "bookworm"

# Kubernetes' pause (the pod sandbox's first process), compiled from the kubernetes module's source: the
# runtime needs it for every pod and registry.k8s.io cannot be reached either.
PAUSE_VERSION = "3.10.1"
PAUSE_IMAGE = f"localhost/modeldeploy/pause:{PAUSE_VERSION}"
PAUSE_MODULE = "k8s.io/kubernetes@v1.36.3"
PAUSE_SOURCE = "build/pause/linux/pause.c"
PAUSE_CFLAGS = ("-Os", "-static", f"-DVERSION=v{PAUSE_VERSION}")
PAUSE_USER = "65535:65535"

# What ensure_images knows how to build here (the GPU engines' bases are out of reach without a registry).
DOCKERFILE_IMAGES = ("operator", "fetch", "ngl", "llamacpp")
NAMES = (*DOCKERFILE_IMAGES, "pause")
PYTHON_IMAGES = ("operator", "fetch", "ngl")

# Folded into every key: bump it when the debootstrap recipe below changes, so images rebuild on it.
DEBIAN_RECIPE = f"debootstrap --variant=minbase {DEBIAN_SUITE} +updates +security; Check-Valid-Until false; v1"
DEFAULT_INDEX = "https://pypi.org/simple"
_EXCLUDED = ("__pycache__", ".egg-info", ".pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")


class ImageBuildError(RuntimeError):
    """An image could not be built here; the message says what is missing or what failed."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def images_dir() -> Path:
    return cache_root() / "images"


def image_tag(name: str) -> str:
    """The name the operator renders by default, so an imported archive satisfies IfNotPresent."""
    return PAUSE_IMAGE if name == "pause" else f"{DEFAULT_REGISTRY}/{name}:{__version__}"


def dockerfile(name: str) -> Path:
    return IMAGES_DIR / name / "Dockerfile"


# --- the host's pip settings, carried into the builds ------------------------------------------------


def _pip_config() -> dict[str, str]:
    """`pip config list` as {key: value}: the host's pip settings, files and PIP_* variables alike."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = re.findall(r"^([^=\s]+)='(.*)'$", proc.stdout, flags=re.M)
    return {key.rsplit(".", 1)[-1]: value for key, value in found}


def pip_index_url(config: Mapping[str, str] | None = None) -> str:
    """The simple index pip uses on this machine (a mirror, or PyPI), for the llama.cpp CPU wheel."""
    config = _pip_config() if config is None else config
    return os.environ.get("PIP_INDEX_URL") or config.get("index-url") or DEFAULT_INDEX


def pip_cert(config: Mapping[str, str] | None = None) -> Path | None:
    """The CA bundle the host's pip is told to trust, if any: a TLS-intercepting proxy's CA in a sandbox.

    Only then do the builds get it, so a normal machine builds exactly as the release does.
    """
    config = _pip_config() if config is None else config
    cert = os.environ.get("PIP_CERT") or config.get("cert")
    return Path(cert).resolve() if cert and Path(cert).is_file() else None


# --- build inputs and their key -----------------------------------------------------------------------


def build_args(name: str, index_url: str) -> dict[str, str]:
    """The build arguments that put an image on the local bases; the release passes the same names."""
    if name in PYTHON_IMAGES:
        return {"PYTHON_BASE": PYTHON_BASE}
    if name == "llamacpp":
        return {"BASE_IMAGE": DEBIAN_BASE, "XLLAMACPP_INDEX": index_url}
    raise ImageBuildError(f"no local build for image {name!r}; these can be built here: {', '.join(NAMES)}")


def _walk(path: Path) -> Iterator[Path]:
    """The files under a COPY source, less the build debris of an editable install (not part of a build)."""
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and not any(part.endswith(_EXCLUDED) for part in child.relative_to(path).parts):
            yield child


def copied_files(text: str, context: Path = REPO) -> list[Path]:
    """The files a Dockerfile's COPY lines take from the build context (not from other stages)."""
    files: list[Path] = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M):
        *sources, _dest = line.split()
        for src in sources:
            files.extend(_walk(context / src))
    return sorted(set(files))


def cache_key(name: str, args: Mapping[str, str], context: Path = REPO) -> str:
    """A hash of everything the image's build reads, so it changes exactly when a rebuild is due."""
    digest = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    feed("tag", image_tag(name).encode())
    if name == "pause":
        feed("pause", _pause_source().read_bytes())
        feed("cflags", " ".join(PAUSE_CFLAGS).encode())
        return digest.hexdigest()[:16]
    text = (context / "images" / name / "Dockerfile").read_text()
    feed("dockerfile", text.encode())
    for key in sorted(args):
        feed(f"arg:{key}", args[key].encode())
    feed("debian", DEBIAN_RECIPE.encode())
    if PYTHON_BASE in args.values():
        feed("python-base", (context / PYTHON_BASE_DOCKERFILE.relative_to(REPO)).read_bytes())
    for path in copied_files(text, context):
        feed(f"file:{path.relative_to(context)}", path.read_bytes())
    return digest.hexdigest()[:16]


def bud_command(
    name: str, args: Mapping[str, str], *, runtime: str, pip_conf: Path | None = None, cert: Path | None = None
) -> list[str]:
    """`buildah bud` for one image: runc (crun refuses hybrid cgroups), host network, never pull.

    `--format docker` keeps the Dockerfile's SHELL; `--layers` keeps the steps before COPY operator/
    (the xllamacpp wheel) cached across source changes. The CA goes beside, never over, the system bundle:
    mounting over /etc/ssl/certs/ca-certificates.crt breaks the ca-certificates package's postinst.
    """
    cmd = ["buildah", "bud", "--format", "docker", "--runtime", runtime, "--network", "host", "--pull=never"]
    cmd += ["--layers", "-f", str(dockerfile(name)), "-t", image_tag(name)]
    for key in sorted(args):
        cmd += ["--build-arg", f"{key}={args[key]}"]
    if cert is not None and pip_conf is not None:
        cmd += ["-v", f"{cert}:/etc/pip-build-ca.pem:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
    cmd.append(str(REPO))
    return cmd


# --- running things -----------------------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, **kwargs: object) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _check_host(need_debootstrap: bool) -> str:
    """The runc path; refuses in one sentence when the host cannot build images."""
    if os.geteuid() != 0:
        raise ImageBuildError("building images here needs root (buildah with runc and debootstrap run as root)")
    missing = [tool for tool in ("buildah", *(["debootstrap"] if need_debootstrap else [])) if not shutil.which(tool)]
    if missing:
        raise ImageBuildError(
            f"building images here needs {' and '.join(missing)}: apt-get install {' '.join(missing)}"
        )
    runc = "/usr/sbin/runc" if os.access("/usr/sbin/runc", os.X_OK) else shutil.which("runc")
    if not runc:
        raise ImageBuildError("building images here needs runc (crun fails on hybrid cgroups): apt-get install runc")
    return runc


def _image_exists(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True).returncode == 0


def _host_apt_uris() -> tuple[str, str]:
    """The Debian and Debian-security mirrors the host's apt uses (a dated snapshot in a sandbox)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*")) if p.is_file()]
    if Path("/etc/apt/sources.list").is_file():
        texts.append(Path("/etc/apt/sources.list").read_text())
    uris = re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+)", "\n".join(texts), flags=re.M)
    main = next((u for u in uris if u.rstrip("/").endswith("/debian")), "http://deb.debian.org/debian")
    security = next(
        (u for u in uris if u.rstrip("/").endswith("/debian-security")), "http://deb.debian.org/debian-security"
    )
    return main.rstrip("/"), security.rstrip("/")


def _ensure_debian_base(log: Log) -> None:
    """bookworm minbase from the host's mirror, committed as DEBIAN_BASE (about a minute, once)."""
    if _image_exists(DEBIAN_BASE):
        return
    mirror, security = _host_apt_uris()
    log(f"building the local Debian base {DEBIAN_BASE}: debootstrap --variant=minbase {DEBIAN_SUITE} {mirror}")
    started = time.monotonic()
    ctr = _run(["buildah", "from", "scratch"], "buildah from scratch").strip()
    try:
        root = Path(_run(["buildah", "mount", ctr], "buildah mount").strip())
        _run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), mirror], "debootstrap")
        (root / "etc/apt/sources.list").write_text(
            f"deb {mirror} {DEBIAN_SUITE} main\n"
            f"deb {mirror} {DEBIAN_SUITE}-updates main\n"
            f"deb {security} {DEBIAN_SUITE}-security main\n"
        )
        # The mirror may be a dated snapshot whose Release files have expired.
        (root / "etc/apt/apt.conf.d/99modeldeploy-snapshot").write_text('Acquire::Check-Valid-Until "false";\n')
        for cache in ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log"):
            for child in (root / cache).glob("*"):
                if child.is_file() and child.name != "lock":
                    child.unlink()
                elif child.is_dir() and child.name != "partial":
                    shutil.rmtree(child, ignore_errors=True)
        _run(["buildah", "umount", ctr], "buildah umount")
        _run(["buildah", "config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", ctr], "buildah config")
        _run(["buildah", "commit", "--format", "docker", "--rm", ctr, DEBIAN_BASE], "buildah commit")
    except BaseException:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
        raise
    log(f"built {DEBIAN_BASE} in {time.monotonic() - started:.0f} s")


def _ensure_python_base(runtime: str, log: Log) -> None:
    """Debian's python3 as a venv at /usr/local, committed as PYTHON_BASE (the stand-in for python:slim)."""
    if _image_exists(PYTHON_BASE):
        return
    log(f"building the local Python base {PYTHON_BASE} (Debian's python3 3.11, not 3.12.8)")
    started = time.monotonic()
    cmd = ["buildah", "bud", "--format", "docker", "--runtime", runtime, "--network", "host", "--pull=never"]
    cmd += ["-f", str(PYTHON_BASE_DOCKERFILE), "--build-arg", f"DEBIAN_BASE={DEBIAN_BASE}", "-t", PYTHON_BASE]
    _run([*cmd, str(PYTHON_BASE_DOCKERFILE.parent)], "building the Python base")
    log(f"built {PYTHON_BASE} in {time.monotonic() - started:.0f} s")


def _pause_source() -> Path:
    """pause.c from the kubernetes module in Go's module cache, downloaded when absent."""
    go = shutil.which("go")
    if go is None:
        raise ImageBuildError("the pause image is compiled from the kubernetes Go module, and `go` is not on PATH")
    modcache = Path(_run([go, "env", "GOMODCACHE"], "go env GOMODCACHE").strip())
    source = modcache / PAUSE_MODULE / PAUSE_SOURCE
    if not source.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _run([go, "mod", "download", PAUSE_MODULE], f"go mod download {PAUSE_MODULE}", cwd=tmp)
    if not source.is_file():
        raise ImageBuildError(f"{PAUSE_MODULE} has no {PAUSE_SOURCE}")
    return source


def _build_pause() -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageBuildError(
            "the pause image is compiled with gcc -static, and gcc is not on PATH: apt-get install gcc"
        )
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        _run([gcc, *PAUSE_CFLAGS, "-o", str(binary), str(_pause_source())], "compiling pause.c")
        ctr = _run(["buildah", "from", "scratch"], "buildah from scratch").strip()
        try:
            _run(["buildah", "copy", "--chmod", "0755", ctr, str(binary), "/pause"], "buildah copy")
            config = ["buildah", "config", "--entrypoint", '["/pause"]', "--user", PAUSE_USER, ctr]
            _run(config, "buildah config")
            _run(["buildah", "commit", "--format", "docker", "--rm", ctr, PAUSE_IMAGE], "buildah commit")
        except BaseException:
            subprocess.run(["buildah", "rm", ctr], capture_output=True)
            raise


def _export(name: str, archive: Path) -> None:
    """docker-archive (what `ctr images import` takes), written aside and renamed into place."""
    partial = archive.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    tag = image_tag(name)
    _run(["buildah", "push", tag, f"docker-archive:{partial}:{tag}"], f"exporting {tag}")
    partial.rename(archive)
    for old in archive.parent.glob("*.tar*"):
        if old != archive:
            old.unlink(missing_ok=True)


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.0f} MiB"


def ensure_images(names: Sequence[str], log: Log = _stderr) -> dict[str, Path]:
    """The docker-archive of each named image, building those whose inputs changed since their archive.

    A file lock serialises concurrent callers (two test sessions, `dev up` beside `make images`): the
    second waits, then finds the archives made. Builds run one at a time: they share two cores here.
    """
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ImageBuildError(f"cannot build {', '.join(unknown)} here; these can be: {', '.join(NAMES)}")
    config = _pip_config()
    index = pip_index_url(config)
    wanted: dict[str, tuple[dict[str, str], Path]] = {}
    for name in dict.fromkeys(names):
        args = {} if name == "pause" else build_args(name, index)
        wanted[name] = (args, images_dir() / name / f"{cache_key(name, args)}.tar")
    missing = {n: w for n, w in wanted.items() if not w[1].is_file()}
    if missing:
        _build_missing(missing, config, log)
    return {name: archive for name, (_args, archive) in wanted.items()}


def _build_missing(missing: Mapping[str, tuple[dict[str, str], Path]], config: Mapping[str, str], log: Log) -> None:
    runtime = _check_host(need_debootstrap=any(n != "pause" for n in missing))
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = {n: w for n, w in missing.items() if not w[1].is_file()}
        if not todo:
            return
        if any(n != "pause" for n in todo):
            _ensure_debian_base(log)
        if any(n in PYTHON_IMAGES for n in todo):
            _ensure_python_base(runtime, log)
        cert = pip_cert(config)
        pip_conf = images_dir() / "build-pip.conf"
        if cert is not None:
            pip_conf.write_text("[global]\ncert = /etc/pip-build-ca.pem\n")
        for name, (args, archive) in todo.items():
            log(f"building {image_tag(name)} ({'buildah from scratch' if name == 'pause' else dockerfile(name)})")
            started = time.monotonic()
            if name == "pause":
                _build_pause()
            else:
                cmd = bud_command(name, args, runtime=runtime, pip_conf=pip_conf, cert=cert)
                _run(cmd, f"building {image_tag(name)}", cwd=REPO)
            built = time.monotonic() - started
            archive.parent.mkdir(parents=True, exist_ok=True)
            _export(name, archive)
            log(
                f"built {image_tag(name)} in {built:.0f} s, exported in {time.monotonic() - started - built:.0f} s: "
                f"{archive} ({_mib(archive)})"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy_dev.images",
        description="Build our images here with buildah (cached) and print their docker-archive paths.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NAMES)}")
    ns = parser.parse_args(argv)
    try:
        archives = ensure_images(ns.names or NAMES)
    except ImageBuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    for path in archives.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
