"""The local container runtime: a root of the host's files, volumes at their mount paths, nothing on the host.

These start real processes in mount and network namespaces (root only; skipped elsewhere, failed in CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy_dev import sandbox
from modeldeploy_dev.containers import IMAGE_PATH, expand
from modeldeploy_dev.localpods import image_name, runnable
from tests.support.tools import unavailable


@pytest.fixture
def can_run() -> None:
    why = sandbox.available()
    if why:
        unavailable(f"local containers cannot run here: {why}")


def run(
    tmp_path: Path, argv: list[str], mounts: list[dict], read_only: bool = True, image: list[str] | None = None
) -> subprocess.CompletedProcess:
    spec = {
        "imagePaths": image or [],
        "root": str(tmp_path / "root"),
        "netns": None,
        "mounts": mounts,
        "readOnlyRoot": read_only,
        "env": {"PATH": IMAGE_PATH, "HOME": "/tmp"},
        "argv": argv,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "modeldeploy_dev.sandbox", "run", str(tmp_path / "spec.json")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


PROGRAM = """
import os, pathlib
print(open('/models/hf/file').read())
pathlib.Path('/var/run/modeldeploy/ngl.json').write_text('{}')
pathlib.Path('/dev/termination-log').write_text('done')
for path in ('/usr/new-file', '/models/new-file'):
    try:
        open(path, 'w')
        print('wrote', path)
    except OSError as exc:
        print('refused', path, exc.errno)
print(os.environ['HOME'], sorted(set(os.environ) - {'LC_CTYPE'}))  # Python's own C-locale coercion
"""


def test_volumes_appear_at_their_mount_paths_and_the_root_is_read_only(can_run: None, tmp_path: Path) -> None:
    models, ngl, tmp = tmp_path / "models", tmp_path / "ngl", tmp_path / "tmp"
    for d in (models / "hf", ngl, tmp):
        d.mkdir(parents=True)
    (models / "hf" / "file").write_text("weights")
    termination = tmp_path / "termination-log"
    termination.write_text("")
    mounts = [
        {"source": str(models), "target": "/models", "readOnly": True},
        {"source": str(tmp), "target": "/tmp"},
        {"source": str(ngl), "target": "/var/run/modeldeploy"},
        {"source": str(termination), "target": "/dev/termination-log"},
    ]
    got = run(tmp_path, ["python", "-c", PROGRAM], mounts)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[0] == "weights"
    assert lines[1].startswith("refused /usr/new-file 30")  # EROFS: readOnlyRootFilesystem holds
    assert lines[2].startswith("refused /models/new-file 30")  # a readOnly mount holds
    assert lines[3] == "/tmp ['HOME', 'PATH']"  # exactly the container's environment
    assert (ngl / "ngl.json").read_text() == "{}" and termination.read_text() == "done"
    assert not Path("/models").exists() and not Path("/run/modeldeploy").exists()  # nothing made on the host


def test_the_image_stays_visible_under_a_volume_that_covers_it(can_run: None, tmp_path: Path) -> None:
    """A checkout under /tmp (this test's tmp_path) while the pod mounts an emptyDir at /tmp."""
    image = tmp_path / "image"
    image.mkdir()
    tool = image / "entrypoint"
    tool.write_text("#!/bin/sh\necho from the image; touch /tmp/written\n")
    tool.chmod(0o755)
    pod_tmp = tmp_path / "pod-tmp"
    pod_tmp.mkdir()
    mounts = [{"source": str(pod_tmp), "target": "/tmp"}]
    hidden = run(tmp_path, [str(tool)], mounts)
    assert hidden.returncode != 0  # the emptyDir hides it, as a volume hides an image's files
    shown = run(tmp_path, [str(tool)], mounts, image=[str(image)])
    assert shown.returncode == 0 and shown.stdout == "from the image\n", shown.stderr
    assert (pod_tmp / "written").exists()  # /tmp is still the pod's volume


def test_a_missing_command_fails_to_start_like_a_runtime(can_run: None, tmp_path: Path) -> None:
    got = run(tmp_path, ["no-such-entrypoint"], [])
    assert got.returncode == sandbox.EXIT_START_FAILED
    assert 'exec: "no-such-entrypoint": executable file not found in $PATH' in got.stderr


def test_the_pause_process_holds_an_isolated_network_namespace(can_run: None) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "modeldeploy_dev.sandbox", "pause"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        links = Path(f"/proc/{proc.pid}/net/dev").read_text()
        assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] == ["lo"]
        assert Path(f"/proc/{proc.pid}/ns/net").resolve() != Path("/proc/self/ns/net").resolve()
    finally:
        proc.terminate()
        proc.wait(5)


def test_which_images_run_here() -> None:
    assert image_name("ghcr.io/modeldeploy/llamacpp:0.1.0") == "llamacpp"
    assert image_name("registry:5000/team/fetch@sha256:abc") == "fetch"
    assert runnable(["ghcr.io/modeldeploy/fetch:1", "ghcr.io/modeldeploy/ngl:1", "my/llamacpp:cuda"])
    assert not runnable(["ghcr.io/modeldeploy/fetch:1", "vllm/vllm-openai:v0.8.5"])
    assert not runnable([])


def test_variable_expansion_is_kubernetes_own() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)/$(B)/$(C)/$$(A)", env) == "x/y/$(C)/$(A)"
