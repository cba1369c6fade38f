"""`make images` (scripts/build_images.sh): docker or podman, whichever is present and works, else buildah
through modeldeploy_dev.images, and plain words when none is there. The engines are stand-ins that record
their command lines; what is checked is the script's choice of engine, its messages and the tags it builds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from modeldeploy import __version__
from modeldeploy.config import DEFAULT_REGISTRY

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "build_images.sh"
IMAGES = sorted(p.parent.name for p in (REPO / "images").glob("*/Dockerfile"))


def _path(tmp_path: Path, engines: dict[str, int]) -> str:
    """A PATH with only the tools the script uses, plus stand-in engines whose `info` exits as given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sed", "basename", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    for engine, info_rc in engines.items():
        stub = bin_dir / engine
        stub.write_text(
            f'#!/bin/sh\necho "{engine} $*" >> {tmp_path}/calls\n[ "$1" = info ] && exit {info_rc}\nexit 0\n'
        )
        stub.chmod(0o755)
    return str(bin_dir)


def _run(
    tmp_path: Path, engines: dict[str, int], *args: str, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": _path(tmp_path, engines), "HOME": str(tmp_path)}
    if python:
        env["PYTHON"] = python
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_neither_engine_is_said_plainly(tmp_path: Path) -> None:
    got = _run(tmp_path, {})
    assert got.returncode == 1
    assert got.stderr.strip() == (
        "make images: neither docker nor podman works here and buildah is not installed; install one of them"
        " to build the images"
    )


def test_an_engine_that_is_not_running_is_said_plainly(tmp_path: Path) -> None:
    got = _run(tmp_path, {"docker": 1})
    assert got.returncode == 1 and "docker is installed but cannot reach its engine" in got.stderr
    assert _calls(tmp_path) == ["docker info"]


def test_podman_when_docker_does_not_work(tmp_path: Path) -> None:
    got = _run(tmp_path, {"docker": 1, "podman": 0}, "fetch")
    assert got.returncode == 0, got.stderr
    assert _calls(tmp_path) == [
        "docker info",
        "podman info",
        f"podman build -f images/fetch/Dockerfile -t {DEFAULT_REGISTRY}/fetch:{__version__} .",
    ]


def test_buildah_through_the_dev_harness_when_no_engine_works(tmp_path: Path) -> None:
    """The machine without an engine or a registry: modeldeploy_dev.images builds on the local bases."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "python $*" >> {tmp_path}/calls\n')
    python.chmod(0o755)
    got = _run(tmp_path, {"docker": 1, "buildah": 0}, "operator", "llamacpp", python=str(python))
    assert got.returncode == 0, got.stderr
    assert _calls(tmp_path) == ["docker info", "python -m modeldeploy_dev.images operator llamacpp"]
    assert "building with buildah on local Debian bases" in got.stderr


def test_buildah_without_the_dev_harness_says_to_run_setup(tmp_path: Path) -> None:
    got = _run(tmp_path, {"buildah": 0}, python=str(tmp_path / "missing"))
    assert got.returncode == 1 and "run 'make setup' first" in got.stderr


def test_docker_builds_every_image_with_the_tags_the_chart_pulls(tmp_path: Path) -> None:
    got = _run(tmp_path, {"docker": 0, "podman": 0})
    assert got.returncode == 0, got.stderr
    assert _calls(tmp_path) == ["docker info"] + [
        f"docker build -f images/{name}/Dockerfile -t {DEFAULT_REGISTRY}/{name}:{__version__} ." for name in IMAGES
    ]


def test_podman_when_there_is_no_docker_and_one_image_by_name(tmp_path: Path) -> None:
    got = _run(tmp_path, {"podman": 0}, "llamacpp")
    assert got.returncode == 0, got.stderr
    assert _calls(tmp_path) == [
        "podman info",
        f"podman build -f images/llamacpp/Dockerfile -t {DEFAULT_REGISTRY}/llamacpp:{__version__} .",
    ]
    assert os.access(SCRIPT, os.X_OK)  # `make images` runs it directly


def test_an_unknown_image_is_refused(tmp_path: Path) -> None:
    got = _run(tmp_path, {"podman": 0}, "nope")
    assert got.returncode == 2 and "there is no images/nope/Dockerfile" in got.stderr
