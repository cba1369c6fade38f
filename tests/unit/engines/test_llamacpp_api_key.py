"""The llama.cpp entrypoint takes spec.auth's key from LLAMA_API_KEY and logs only that one is set.

docs/security.md, "API keys": the renderer sets the variable from the Secret (secretKeyRef), so the key is
in neither the Deployment nor argv; the entrypoint hands it to llama.cpp's `api_keys` and its start-up
record says `api_key: true`, never the key.
"""

from __future__ import annotations

import json

import pytest

from modeldeploy.engines.llamacpp.__main__ import build_parser, configure

KEY = "sk-unit-test-key-1234"


def _configure(tmp_path, monkeypatch: pytest.MonkeyPatch, key: str | None):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    if key is None:
        monkeypatch.delenv("LLAMA_API_KEY", raising=False)
    else:
        monkeypatch.setenv("LLAMA_API_KEY", key)
    return configure(build_parser().parse_args(["--model", str(model), "--n-gpu-layers", "0"]))


def test_the_key_from_the_environment_reaches_llamacpp_and_not_the_log(tmp_path, monkeypatch) -> None:
    params, record = _configure(tmp_path, monkeypatch, KEY)
    assert list(params.api_keys) == [KEY]
    assert record["api_key"] is True
    assert KEY not in json.dumps(record, default=str)


def test_without_the_variable_no_key_is_asked(tmp_path, monkeypatch) -> None:
    params, record = _configure(tmp_path, monkeypatch, None)
    assert list(params.api_keys) == []
    assert record["api_key"] is False


def test_the_command_line_has_no_key_option() -> None:
    """There is no way to pass the key in argv: argparse refuses --api-key and --api-keys."""
    for flag in ("--api-key", "--api-keys"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--model", "m.gguf", flag, KEY])
