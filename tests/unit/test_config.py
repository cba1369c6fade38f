"""Operator config: defaults work on a stock cluster; a partial image map keeps the other defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modeldeploy import __version__
from modeldeploy.config import OperatorConfig, load_config
from modeldeploy.engines import registry


def test_defaults() -> None:
    config = OperatorConfig()
    assert config.image_for("vllm") == f"ghcr.io/modeldeploy/vllm:{__version__}"
    assert load_config(None, registry.image_keys()).images["vllm"] == f"ghcr.io/modeldeploy/vllm:{__version__}"
    assert config.label_mappings.gpu_resource == "nvidia.com/gpu"


def test_partial_image_map_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("images: {vllm: my/vllm:1}\nvllmExtraFamilies: [my-family]\n")
    config = load_config(path, registry.image_keys())
    assert config.images["vllm"] == "my/vllm:1"
    assert config.images["llamacpp"].endswith(f"/llamacpp:{__version__}")
    assert config.vllm_extra_families == ["my-family"]
    assert config.image_for("vllm", {"vllm": "override:2"}) == "override:2"


def test_unknown_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("imagez: {}\n")
    with pytest.raises(ValidationError):
        load_config(path)
