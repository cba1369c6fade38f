"""The auto-NGL file the init container writes, as the engine reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldeploy.engines.llamacpp.ngl_file import NglDecision, NglFileError, hide_gpus_for_zero_layers, read_ngl_file


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ngl.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_layers_split_and_reason(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"n_gpu_layers": 20, "tensor_split": [3, 1], "estimate": {"vram": 1}, "fallback": True, "reason": "r"},
    )
    decision = read_ngl_file(path)
    assert decision.n_gpu_layers == 20 and decision.tensor_split == [3.0, 1.0]
    assert decision.fallback is True and decision.reason == "r" and decision.estimate == {"vram": 1}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"tensor_split": []}, "n_gpu_layers None"),
        ({"n_gpu_layers": True}, "n_gpu_layers True"),
        ({"n_gpu_layers": -2}, "integer >= -1"),
        ({"n_gpu_layers": 1, "tensor_split": "1,1"}, "tensor_split"),
        ({"n_gpu_layers": 1, "tensor_split": [1, -1]}, "non-negative"),
        ([1], "JSON object"),
    ],
)
def test_malformed_files_are_named(tmp_path: Path, data: object, needle: str) -> None:
    with pytest.raises(NglFileError, match=needle):
        read_ngl_file(_write(tmp_path, data))


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(NglFileError, match="does not exist"):
        read_ngl_file(tmp_path / "none.json")
    broken = tmp_path / "b.json"
    broken.write_text("{")
    with pytest.raises(NglFileError, match="not valid JSON"):
        read_ngl_file(broken)


@pytest.mark.parametrize(("layers", "hidden"), [(0, True), (1, False), (-1, False), (33, False)])
def test_zero_layers_hide_the_gpus(layers: int, hidden: bool) -> None:
    """0 layers: llama.cpp must not see the GPU (it would still take ~1.2 GiB there at -ngl 0)."""
    env = {"CUDA_VISIBLE_DEVICES": "0", "OTHER": "x"}
    assert hide_gpus_for_zero_layers(NglDecision(n_gpu_layers=layers), env) is hidden
    assert env == (
        {"CUDA_VISIBLE_DEVICES": "", "OTHER": "x"} if hidden else {"CUDA_VISIBLE_DEVICES": "0", "OTHER": "x"}
    )
