"""Bad input to the CLI: one sentence naming the file and the field, exit code != 0, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy.cli import main

REPO = Path(__file__).resolve().parents[3]
GOOD_MD = """apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {name: m}
spec:
  model: {name: qwen2.5-instruct, format: pytorch, quantization: none, uri: "hf://Qwen/Qwen2.5-7B-Instruct"}
"""
NODES = REPO / "examples" / "nodes" / "gpu-cluster.yaml"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "md.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_MD.replace("format: pytorch", "format: safetensors"), "spec.model.format: input should be"),
        (GOOD_MD.replace(', uri: "hf://Qwen/Qwen2.5-7B-Instruct"', ""), "spec.model.uri: is required"),
        (GOOD_MD + "  resources: {gpus: -2}\n", "spec.resources.gpus: input should be greater than or equal to 0"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "not a ModelDeployment (kind 'ConfigMap'"),
        ("spec: [unclosed\n", "malformed YAML at line"),
        ("", "holds no YAML document"),
    ],
)
def test_bad_model_deployment(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str) -> None:
    md = write(tmp_path, text)
    for command in ("select", "render"):
        code, out, err = run_cli(capsys, command, "-f", md, "--nodes", str(NODES))
        assert code == 2
        assert out == ""
        assert err.startswith(f"modeldeploy {command}: {md}")
        assert expected in err
        assert "Traceback" not in err
        assert err.count("\n") == 1  # one sentence, one line


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "select", "-f", str(tmp_path / "nope.yaml"), "--nodes", str(NODES))
    assert code == 2 and "cannot read the file" in err


def test_nodes_file_that_is_not_nodes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    md = write(tmp_path, GOOD_MD)
    nodes = write(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "nodes.yaml")
    code, out, err = run_cli(capsys, "select", "-f", md, "--nodes", nodes)
    assert code == 2 and out == ""
    assert err.startswith(f"modeldeploy select: {nodes}: ") and "Pod" in err


def test_no_traceback_from_a_real_process(tmp_path: Path) -> None:
    md = write(tmp_path, GOOD_MD.replace("format: pytorch", "format: nope"))
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy", "select", "-f", md, "--nodes", str(NODES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "spec.model.format" in proc.stderr


def test_an_engine_argument_only_the_renderer_refuses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`engine.args` keys that are not flag names pass the schema; selection refuses every engine for them
    (it asks what `render` would refuse), and `render` says so in one sentence."""
    md = write(tmp_path, GOOD_MD + '  engine:\n    args: {"--trust-remote-code; rm -rf /": true}\n')
    code, out, err = run_cli(capsys, "render", "-f", md, "--nodes", str(NODES))
    assert code == 2 and out == ""
    assert err.startswith("modeldeploy render: m: nothing to render: no engine can run")
    assert "not a command-line flag name" in err and err.count("\n") == 1
    proc = subprocess.run(
        [sys.executable, "-m", "modeldeploy", "render", "-f", md, "--nodes", str(NODES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("images: [1\n", "malformed YAML at line"),
        ("images: 3\n", "images: input should be a valid dictionary"),
        (None, "cannot read the file"),
    ],
)
def test_a_bad_config_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str | None, expected: str
) -> None:
    md = write(tmp_path, GOOD_MD)
    path = write(tmp_path, config, "config.yaml") if config is not None else str(tmp_path / "missing.yaml")
    for command in ("select", "render"):
        code, out, err = run_cli(capsys, command, "-f", md, "--nodes", str(NODES), "--config", path)
        assert code == 2 and out == ""
        assert err.startswith(f"modeldeploy {command}: --config {path}") and expected in err, err
        assert err.count("\n") == 1
