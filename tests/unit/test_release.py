"""The release workflow builds every image the chart and the renderer reference, at the version they use.

`.github/workflows/release.yaml` is linted with actionlint (built from its Go module, tests/support/tools.py),
and its matrix, registry and tag are compared with what `helm install` and the operator would pull: the
renderer's default images, the chart's operator image (values.yaml, the plain manifests in deploy/) and the
chart's appVersion.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from modeldeploy import __version__
from modeldeploy.config import DEFAULT_REGISTRY, default_images
from modeldeploy.engines import registry as engines
from tests.support.tools import ensure_actionlint

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yaml"
CHART = REPO / "charts" / "modeldeploy"


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _built() -> set[str]:
    """The images the workflow builds (its matrix)."""
    return set(_workflow()["jobs"]["images"]["strategy"]["matrix"]["image"])


def _build_step() -> dict:
    return next(s for s in _workflow()["jobs"]["images"]["steps"] if s.get("uses", "").startswith("docker/build-push"))


def _ref(image: str) -> tuple[str, str, str]:
    """`ghcr.io/modeldeploy/vllm:0.1.0` → (registry, name, tag)."""
    repo, _, tag = image.rpartition(":")
    registry, _, name = repo.rpartition("/")
    return registry, name, tag


def test_actionlint_passes_on_every_workflow() -> None:
    actionlint = ensure_actionlint()
    files = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.y*ml"))
    proc = subprocess.run([str(actionlint), "-no-color", *files], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """So that the pass above means something: a misspelt job in an expression is reported."""
    actionlint = ensure_actionlint()
    broken = tmp_path / ".github" / "workflows" / "release.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("needs.version.outputs.version", "needs.versoin.outputs.version"))
    proc = subprocess.run([str(actionlint), "-no-color", str(broken)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "versoin" in proc.stdout, proc.stdout + proc.stderr


def test_every_image_directory_is_built_for_both_platforms() -> None:
    directories = {p.parent.name for p in (REPO / "images").glob("*/Dockerfile")}
    assert _built() == directories
    step = _build_step()["with"]
    assert set(step["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert step["file"] == "images/${{ matrix.image }}/Dockerfile" and step["context"] == "."
    assert step["push"] is True
    assert _workflow()[True]["push"]["tags"] == ["v*.*.*"]  # YAML reads the `on` key as True


def test_the_renderers_images_are_the_ones_the_workflow_pushes() -> None:
    registry = _workflow()["env"]["REGISTRY"]
    assert registry == DEFAULT_REGISTRY
    assert (
        _build_step()["with"]["tags"] == "${{ env.REGISTRY }}/${{ matrix.image }}:${{ needs.version.outputs.version }}"
    )
    for key, image in default_images(engines.image_keys()).items():
        got_registry, name, tag = _ref(image)
        assert (got_registry, tag) == (registry, __version__), (key, image)
        assert name in _built(), f"the renderer's {key} image {image} is not built by the release workflow"


def test_the_charts_operator_image_is_the_one_the_workflow_pushes() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert str(chart["appVersion"]) == __version__  # image.tag defaults to appVersion
    registry, name = values["image"]["repository"].rsplit("/", 1)
    assert registry == DEFAULT_REGISTRY and name in _built()
    assert all(v == "" for v in values["config"]["images"].values())  # the renderer's defaults above apply
    for manifest in (REPO / "deploy").glob("*.yaml"):
        for image in re.findall(r'image: "?([^"\s]+)', manifest.read_text()):
            got_registry, name, tag = _ref(image)
            assert (got_registry, tag) == (DEFAULT_REGISTRY, __version__) and name in _built(), (manifest, image)


def test_a_release_whose_tag_disagrees_with_the_versions_is_refused() -> None:
    script = [sys.executable, str(REPO / "scripts" / "release_versions.py")]
    assert subprocess.run([*script, __version__], capture_output=True, text=True).returncode == 0
    wrong = subprocess.run([*script, "9.9.9"], capture_output=True, text=True)
    assert wrong.returncode == 1
    assert "charts/modeldeploy/Chart.yaml appVersion is" in wrong.stderr and "pyproject.toml" in wrong.stderr


def _dockerfile_arg_defaults(image: str) -> dict[str, str]:
    text = (REPO / "images" / image / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))


def _release_build_args() -> dict[str, dict[str, str]]:
    """{image: {ARG: value}} from the matrix's include entries."""
    include = _workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]
    return {
        entry["image"]: dict(line.split("=", 1) for line in entry["build-args"].splitlines() if line.strip())
        for entry in include
    }


def test_the_release_passes_each_images_base_explicitly_as_the_dockerfiles_default() -> None:
    """The same Dockerfiles everywhere: the release names the upstream bases through the build arguments a
    machine without a registry overrides (modeldeploy_dev.images), and they are the Dockerfiles' defaults."""
    assert _build_step()["with"]["build-args"] == "${{ matrix.build-args }}"
    args = _release_build_args()
    assert set(args) == _built()
    for image, given in args.items():
        defaults = _dockerfile_arg_defaults(image)
        assert given == {k: defaults[k] for k in given}, image
        base_args = {k for k in defaults if k in ("PYTHON_BASE", "BASE_IMAGE", "SGLANG_IMAGE", "XLLAMACPP_INDEX")}
        assert set(given) == base_args, image


def test_the_local_builds_override_only_arguments_the_release_passes() -> None:
    from modeldeploy_dev import images

    release = _release_build_args()
    for image in images.DOCKERFILE_IMAGES:
        assert set(images.build_args(image, "https://pypi.example/simple")) == set(release[image]), image
