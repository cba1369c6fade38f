"""Engine arguments that open files, run tools, proxy other hosts or put secrets in argv are refused.

Each engine's table lives in its own module (`Engine.refused_args`); the API, the CRD's CEL rule, `select`
and `render` all read it, so none of them accepts what another refuses (docs/security.md, "Engine
arguments").
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from modeldeploy.api.crd import build_crd
from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config import OperatorConfig
from modeldeploy.engines import registry
from modeldeploy.engines.base import Launch, RenderError
from modeldeploy.engines.llamacpp.params import apply_params
from modeldeploy.selection.engine import judge

REFUSED = [
    ("llama.cpp", key)
    for key in (
        "public_path",
        "slot_save_path",
        "media_path",
        "server_tools",
        "webui_mcp_proxy",
        "ui_mcp_proxy",
        "models_dir",
        "ssl_file_key",
        "ssl_file_cert",
        "api_keys",
    )
] + [("vllm", "allowed-local-media-path"), ("vllm", "allowed_local_media_path"), ("vllm", "--api-key")]
MODELS = {
    "llama.cpp": {"name": "m", "format": "ggufv2", "quantization": "Q4_K_M", "uri": "hf://o/r", "file": "m.gguf"},
    "vllm": {"name": "llama-3.1-instruct", "format": "pytorch", "uri": "hf://o/r"},
    "sglang": {"name": "m", "format": "pytorch", "uri": "hf://o/r"},
    "transformers": {"name": "m", "format": "pytorch", "uri": "hf://o/r"},
    "mlx": {"name": "m", "format": "mlx", "quantization": "4bit", "uri": "hf://o/r"},
}


def launch(args: dict, allow: bool = False) -> Launch:
    return Launch("/models/m", None, "m", 1, 0, args, allow_trust_remote_code=allow)


@pytest.mark.parametrize(("engine", "key"), REFUSED)
def test_render_refuses(engine: str, key: str) -> None:
    with pytest.raises(RenderError, match=f"engine.args must not set {re.escape(key)} for "):
        registry.get(engine).command(launch({key: "/etc"}))


@pytest.mark.parametrize(("engine", "key"), REFUSED)
def test_the_api_refuses_naming_the_field(engine: str, key: str) -> None:
    for name in (engine, "auto"):
        with pytest.raises(ValidationError, match=f"engine.args must not set {re.escape(key)}"):
            ModelDeploymentSpec.model_validate({"model": MODELS[engine], "engine": {"name": name, "args": {key: "x"}}})


def test_no_crd_rule_reads_engine_args() -> None:
    """engine.args keeps unknown fields (free-form values), which CEL cannot type: a rule reading it fails to
    compile in the apiserver and the CRD is refused whole. The operator refuses those keys instead."""
    crd = build_crd(registry)
    rules = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            rules.extend(r["rule"] for r in node.get("x-kubernetes-validations") or ())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd)
    assert rules and not [r for r in rules if "engine.args" in r]


def test_llamacpp_dotted_keys_are_judged_by_their_head() -> None:
    with pytest.raises(RenderError, match="serves a directory"):
        registry.get("llama.cpp").command(launch({"public_path.x": "/"}))
    assert registry.get("llama.cpp").args_problem({"sampling.top_k": 40}) is None


@pytest.mark.parametrize("engine", ["vllm", "sglang", "transformers", "mlx"])
def test_trust_remote_code_only_where_the_operator_config_allows_it(engine: str) -> None:
    e = registry.get(engine)
    with pytest.raises(RenderError, match="allowTrustRemoteCode"):
        e.command(launch({"trust_remote_code": True}))
    assert "--trust-remote-code" in e.command(launch({"trust-remote-code": True}, allow=True))
    assert "--trust-remote-code" not in e.command(launch({"trust-remote-code": False}))  # false asks for the default
    # Not in the API: whether it is allowed is the operator's config, which the API does not see.
    ModelDeploymentSpec.model_validate(
        {"model": MODELS[engine], "engine": {"name": engine, "args": {"trust-remote-code": True}}}
    )


def test_the_operator_config_key_defaults_to_false() -> None:
    assert OperatorConfig().allow_trust_remote_code is False
    assert OperatorConfig.model_validate({"allowTrustRemoteCode": True}).allow_trust_remote_code is True


@pytest.mark.parametrize(
    ("engine", "args", "why"),
    [
        ("vllm", {"port": 9000}, "ModelDeploy sets it"),  # reserved: select used to accept it
        ("vllm", {"trust-remote-code": True}, "allowTrustRemoteCode"),
        ("llama.cpp", {"n-ctx": 4096}, "not a llama.cpp common_params name"),
    ],
)
def test_select_refuses_what_render_refuses(engine: str, args: dict, why: str) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": MODELS[engine], "engine": {"name": engine, "args": args}})
    judgement = judge(engine, spec, [], OperatorConfig())
    assert any(why in f for f in judgement.failures), judgement.failures
    allowed = judge(engine, spec, [], OperatorConfig(allowTrustRemoteCode=True))
    assert any(why in f for f in allowed.failures) == (why != "allowTrustRemoteCode")


def test_the_llamacpp_entrypoint_refuses_them_too() -> None:
    import xllamacpp

    from modeldeploy.engines.llamacpp.params import ParamError

    with pytest.raises(ParamError, match="public_path cannot be set in engine.args"):
        apply_params(xllamacpp.CommonParams(), [("public_path", "/etc")])


def test_the_llamacpp_web_ui_and_slots_are_off_unless_asked(tmp_path) -> None:
    from modeldeploy.engines.llamacpp.__main__ import build_parser, configure

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    params, _ = configure(build_parser().parse_args(["--model", str(model), "--n-gpu-layers", "0"]))
    assert params.ui is False and params.endpoint_slots is False
    params, _ = configure(
        build_parser().parse_args(
            ["--model", str(model), "--n-gpu-layers", "0", "--param", "ui=true", "--param", "endpoint_slots=1"]
        )
    )
    assert params.ui is True and params.endpoint_slots is True
