"""modeldeploy_dev.images without building anything: the cache key, the build command lines, the tags and
the host's pip settings. The builds themselves take minutes and root; they are measured in images/README.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modeldeploy import __version__
from modeldeploy.config import DEFAULT_REGISTRY, default_images
from modeldeploy.engines import registry
from modeldeploy_dev import images

INDEX = "https://pypi.example/simple"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A copy of what the builds read: images/, pyproject.toml, README.md, a small operator/ tree."""
    shutil.copytree(images.IMAGES_DIR, tmp_path / "images")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(images.REPO / name, tmp_path / name)
    pkg = tmp_path / "operator" / "modeldeploy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (pkg / "fetch.py").write_text("print('fetch')\n")
    return tmp_path


def _keys(context: Path) -> dict[str, str]:
    return {n: images.cache_key(n, images.build_args(n, INDEX), context) for n in images.DOCKERFILE_IMAGES}


def test_the_key_changes_when_a_copied_file_changes(context: Path) -> None:
    before = _keys(context)
    (context / "operator" / "modeldeploy" / "fetch.py").write_text("print('fetched')\n")
    after = _keys(context)
    assert all(before[n] != after[n] for n in images.DOCKERFILE_IMAGES)


def test_the_key_ignores_unrelated_files_and_build_debris(context: Path) -> None:
    before = _keys(context)
    (context / "docs").mkdir()
    (context / "docs" / "notes.md").write_text("unrelated\n")
    (context / "images" / "vllm" / "Dockerfile").write_text("FROM scratch\n")
    for debris in ("__pycache__/fetch.cpython-311.pyc", "modeldeploy.egg-info/SOURCES.txt"):
        path = context / "operator" / "modeldeploy" / debris
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("debris\n")
    assert _keys(context) == before


def test_a_changed_dockerfile_or_argument_rebuilds_only_that_image(context: Path) -> None:
    before = _keys(context)
    dockerfile = context / "images" / "ngl" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# a comment\n")
    after = _keys(context)
    assert {n for n in before if before[n] != after[n]} == {"ngl"}
    other_index = images.cache_key("llamacpp", images.build_args("llamacpp", "https://other/simple"), context)
    assert other_index != after["llamacpp"]


def test_the_python_base_recipe_is_part_of_the_python_images_keys(context: Path) -> None:
    before = _keys(context)
    base = context / "images" / "bases" / "python" / "Dockerfile"
    base.write_text(base.read_text() + "# changed\n")
    after = _keys(context)
    assert {n for n in before if before[n] != after[n]} == set(images.PYTHON_IMAGES)


def test_the_tags_are_the_ones_the_operator_renders() -> None:
    rendered = set(default_images(registry.image_keys()).values())
    for name in images.DOCKERFILE_IMAGES:
        assert images.image_tag(name) == f"{DEFAULT_REGISTRY}/{name}:{__version__}"
        assert name == "operator" or images.image_tag(name) in rendered
    assert images.image_tag("pause") == images.PAUSE_IMAGE == "localhost/modeldeploy/pause:3.10.1"


def test_the_python_images_build_on_the_local_python_base() -> None:
    for name in ("operator", "fetch", "ngl"):
        cmd = images.bud_command(name, images.build_args(name, INDEX), runtime="/usr/sbin/runc")
        assert cmd[:2] == ["buildah", "bud"]
        assert f"PYTHON_BASE={images.PYTHON_BASE}" in cmd
        assert cmd[cmd.index("-f") + 1] == str(images.REPO / "images" / name / "Dockerfile")
        assert cmd[cmd.index("-t") + 1] == f"{DEFAULT_REGISTRY}/{name}:{__version__}"
        assert cmd[-1] == str(images.REPO)


def test_llamacpp_builds_the_cpu_variant_on_the_debian_base_from_the_hosts_index() -> None:
    cmd = images.bud_command("llamacpp", images.build_args("llamacpp", INDEX), runtime="/usr/sbin/runc")
    args = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--build-arg"]
    assert args == [f"BASE_IMAGE={images.DEBIAN_BASE}", f"XLLAMACPP_INDEX={INDEX}"]


def test_every_build_uses_runc_the_host_network_and_never_pulls() -> None:
    cmd = images.bud_command("fetch", {"PYTHON_BASE": images.PYTHON_BASE}, runtime="/usr/sbin/runc")
    assert cmd[cmd.index("--runtime") + 1] == "/usr/sbin/runc"
    assert cmd[cmd.index("--network") + 1] == "host"
    assert "--pull=never" in cmd and cmd[cmd.index("--format") + 1] == "docker"
    assert "-v" not in cmd  # no CA is mounted unless the host's pip names one


def test_the_hosts_pip_ca_is_mounted_beside_the_system_bundle(tmp_path: Path) -> None:
    ca, conf = tmp_path / "ca.pem", tmp_path / "pip.conf"
    cmd = images.bud_command("fetch", {}, runtime="runc", pip_conf=conf, cert=ca)
    mounts = [cmd[i + 1] for i, word in enumerate(cmd) if word == "-v"]
    assert mounts == [f"{ca}:/etc/pip-build-ca.pem:ro", f"{conf}:/etc/pip.conf:ro"]
    assert not any("/etc/ssl/certs" in m.split(":")[1] for m in mounts)


def test_the_hosts_pip_settings_decide_the_index_and_the_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_CERT", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    assert images.pip_index_url({}) == images.DEFAULT_INDEX
    assert images.pip_index_url({"index-url": INDEX}) == INDEX
    assert images.pip_cert({}) is None
    assert images.pip_cert({"cert": str(tmp_path / "absent.pem")}) is None
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert images.pip_cert({"cert": str(ca)}) == ca.resolve()
    monkeypatch.setenv("PIP_INDEX_URL", "https://env/simple")
    assert images.pip_index_url({"index-url": INDEX}) == "https://env/simple"


def test_the_python_images_and_the_release_agree_on_the_argument_names() -> None:
    for name in images.PYTHON_IMAGES:
        assert "ARG PYTHON_BASE=" in (images.IMAGES_DIR / name / "Dockerfile").read_text()
    assert images.build_args("operator", INDEX) == {"PYTHON_BASE": images.PYTHON_BASE}


def test_unknown_images_are_refused_in_one_sentence() -> None:
    with pytest.raises(images.ImageBuildError, match="cannot build vllm here"):
        images.ensure_images(["vllm"])


def test_the_archives_live_under_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_CACHE", str(tmp_path))
    assert images.images_dir() == tmp_path / "images"


def test_cached_archives_cost_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive already made for the current key is returned without touching buildah."""
    monkeypatch.setenv("MODELDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setattr(images, "_pip_config", lambda: {})
    monkeypatch.setattr(images, "_build_missing", lambda *a: pytest.fail("built although cached"))
    key = images.cache_key("fetch", images.build_args("fetch", images.DEFAULT_INDEX))
    archive = tmp_path / "images" / "fetch" / f"{key}.tar"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    assert images.ensure_images(["fetch"]) == {"fetch": archive}


def test_without_root_the_host_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(images.ImageBuildError, match=r"^building images here needs root"):
        images._check_host(need_debootstrap=True)


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    monkeypatch.setattr(images.shutil, "which", lambda tool: None)
    with pytest.raises(images.ImageBuildError, match="needs buildah and debootstrap: apt-get install"):
        images._check_host(need_debootstrap=True)
