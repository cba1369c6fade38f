"""spec.auth: the API key reaches the engine from its Secret by environment, never argv, status or logs.

docs/security.md, "API keys". The key's value is never known to the operator: the renderer writes a
secretKeyRef and the kubelet reads the Secret. These tests check that per engine, and that engines which
cannot take a key that way are refused by select and render alike.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from render_cases import (
    CONFIG,
    LLAMACPP_CPU_SPEC,
    LLAMACPP_SPEC,
    MLX_SPEC,
    SGLANG_SPEC,
    TRANSFORMERS_SPEC,
    VLLM_SPEC,
    apple_placement,
    cpu_placement,
    decision,
    gpu_placement,
    md,
    with_spec,
)

from modeldeploy.api.v1alpha1 import ModelDeploymentSpec
from modeldeploy.config.scaling import GatewaySettings
from modeldeploy.engines import registry
from modeldeploy.render import RenderError, render
from modeldeploy.render.pod import probes
from modeldeploy.scaling.attach import with_scaling
from modeldeploy.scaling.plan import HTTP_ROUTE, INFERENCE_POOL
from modeldeploy.selection.engine import judge

AUTH = {"apiKeySecret": {"name": "model-keys", "key": "api-key"}}
SECRET_REF = {"secretKeyRef": {"key": "api-key", "name": "model-keys", "optional": False}}

# engine -> (spec, placement, the variable its server reads the key from)
SUPPORTED = {
    "vllm": (VLLM_SPEC, gpu_placement(1), "VLLM_API_KEY"),
    "llama.cpp": (LLAMACPP_SPEC, gpu_placement(1), "LLAMA_API_KEY"),
    "llama.cpp-cpu": (LLAMACPP_CPU_SPEC, cpu_placement(), "LLAMA_API_KEY"),
}
UNSUPPORTED = {
    "sglang": (SGLANG_SPEC, gpu_placement(1), "command line"),
    "transformers": (TRANSFORMERS_SPEC, cpu_placement(), "no API key"),
    "mlx": (MLX_SPEC, apple_placement(), "no API key"),
}


def _engine(case: str) -> str:
    return case.removesuffix("-cpu")


def _deployment(spec: dict, case: str, placement) -> dict:
    return render(md(with_spec(spec, auth=AUTH)), decision(_engine(case), placement), CONFIG)[0]


@pytest.mark.parametrize("case", sorted(SUPPORTED))
def test_the_key_is_the_engines_variable_from_the_secret(case: str) -> None:
    spec, placement, variable = SUPPORTED[case]
    container = _deployment(spec, case, placement)["spec"]["template"]["spec"]["containers"][0]
    keyed = [e for e in container["env"] if e["name"] == variable]
    assert keyed == [{"name": variable, "valueFrom": SECRET_REF}]
    # Neither the Secret's name nor any key-like flag is on the command line.
    argv = " ".join(container["command"])
    assert "model-keys" not in argv and "api-key" not in argv and "api_key" not in argv


@pytest.mark.parametrize("case", sorted(SUPPORTED))
def test_without_auth_nothing_changes(case: str) -> None:
    spec, placement, variable = SUPPORTED[case]
    plain = render(md(spec), decision(_engine(case), placement), CONFIG)
    text = json.dumps(plain)
    # The fetch container may read credentialsSecret's keys; no container reads the key's Secret.
    assert variable not in text and SECRET_REF["secretKeyRef"]["name"] not in text


@pytest.mark.parametrize("case", sorted(SUPPORTED))
def test_the_probes_stay_on_an_endpoint_the_server_leaves_open(case: str) -> None:
    """vLLM asks for the key on /v1 routes only; llama.cpp leaves its health endpoints open. The probes use
    /health, so a pod with a key still becomes Ready (the cluster test shows it for llama.cpp)."""
    spec, placement, _ = SUPPORTED[case]
    container = _deployment(spec, case, placement)["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert "httpHeaders" not in container[probe]["httpGet"]
    assert probes(registry.get(_engine(case)))["readinessProbe"]["httpGet"]["path"] == "/health"


def _auto(spec: dict) -> dict:
    """The spec under engine.name auto: the API then leaves the choice (and the refusal) to selection."""
    return with_spec(spec, auth=AUTH, engine={**spec["engine"], "name": "auto"})


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_the_api_refuses_a_named_engine_that_cannot_take_a_key(case: str) -> None:
    spec, _, why = UNSUPPORTED[case]
    with pytest.raises(ValidationError, match=f"spec.auth needs an API key, and .* cannot take one: .*{why}"):
        ModelDeploymentSpec.model_validate(with_spec(spec, auth=AUTH))


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_render_refuses_an_engine_that_cannot_take_a_key(case: str) -> None:
    spec, placement, why = UNSUPPORTED[case]
    with pytest.raises(RenderError, match=f"spec.auth needs an API key, and .* cannot take one: .*{why}"):
        render(md(_auto(spec)), decision(case, placement), CONFIG)


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_select_refuses_what_render_refuses(case: str) -> None:
    spec, _, why = UNSUPPORTED[case]
    verdict = judge(case, ModelDeploymentSpec.model_validate(_auto(spec)), (), CONFIG)
    assert any("spec.auth needs an API key" in f and why in f for f in verdict.failures)


def test_a_user_variable_of_the_same_name_is_refused() -> None:
    spec = with_spec(VLLM_SPEC, env=[{"name": "VLLM_API_KEY", "value": "in-the-deployment"}])
    with pytest.raises(RenderError, match="spec.env must not set VLLM_API_KEY when spec.auth is set"):
        _deployment(spec, "vllm", gpu_placement(1))


@pytest.mark.parametrize(
    "auth",
    [
        {"apiKeySecret": {"name": "Keys", "key": "k"}},
        {"apiKeySecret": {"name": "keys", "key": "a/b"}},
        {"apiKeySecret": {"name": "keys"}},
        {"apiKeySecret": {"name": "keys", "key": "k", "value": "sk-1"}},
        {},
    ],
)
def test_the_api_refuses_a_malformed_reference(auth: dict) -> None:
    with pytest.raises(ValidationError, match="auth"):
        ModelDeploymentSpec.model_validate(with_spec(VLLM_SPEC, auth=auth))


def test_api_key_args_stay_refused_and_point_at_spec_auth() -> None:
    for spec, args in ((VLLM_SPEC, {"api-key": "sk-1"}), (LLAMACPP_SPEC, {"api_keys": "sk-1"})):
        with pytest.raises(ValidationError, match="set spec.auth instead"):
            ModelDeploymentSpec.model_validate(with_spec(spec, engine={**spec.get("engine", {}), "args": args}))


def test_llamacpp_with_a_key_relays_metrics_on_a_port_of_its_own() -> None:
    """llama.cpp asks for the key on /metrics too; the entrypoint relays it on 8001 (named `metrics`), the
    pod is labelled so the chart's PodMonitor scrapes that port, and the picker is pointed at it."""
    dep = _deployment(LLAMACPP_CPU_SPEC, "llama.cpp", cpu_placement())
    template = dep["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert "--metrics-relay-port" in container["command"]
    assert container["command"][container["command"].index("--metrics-relay-port") + 1] == "8001"
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8001, "protocol": "TCP"},
    ]
    assert template["metadata"]["labels"]["modeldeploy.io/metrics-port"] == "metrics"
    plain = render(md(LLAMACPP_CPU_SPEC), decision("llama.cpp", cpu_placement()), CONFIG)[0]["spec"]["template"]
    assert "--metrics-relay-port" not in plain["spec"]["containers"][0]["command"]
    assert len(plain["spec"]["containers"][0]["ports"]) == 1
    assert "modeldeploy.io/metrics-port" not in plain["metadata"]["labels"]


def test_vllm_keeps_metrics_on_the_serving_port() -> None:
    """vLLM's key guards /v1 only: /metrics stays on `http`, no relay, no label."""
    template = _deployment(VLLM_SPEC, "vllm", gpu_placement(2))["spec"]["template"]
    assert [p["name"] for p in template["spec"]["containers"][0]["ports"]] == ["http"]
    assert "modeldeploy.io/metrics-port" not in template["metadata"]["labels"]


@pytest.mark.parametrize(("case", "port"), [("llama.cpp-cpu", "8001"), ("vllm", None)])
def test_the_endpoint_picker_scrapes_where_metrics_are(case: str, port: str | None) -> None:
    spec, placement, _ = SUPPORTED[case]
    spec = with_spec(spec, auth=AUTH)
    model = md(spec)
    engine = _engine(case)
    objects = render(model, decision(engine, placement), CONFIG)
    gateway = GatewaySettings(name="gw")
    config = CONFIG.model_copy(update={"gateway": gateway})
    with_picker, _ = with_scaling(model, engine, objects, config, frozenset({INFERENCE_POOL, HTTP_ROUTE}))
    picker = next(o for o in with_picker if o["kind"] == "Deployment" and o["metadata"]["name"] == "m-epp")
    args = picker["spec"]["template"]["spec"]["containers"][0]["args"]
    if port is None:
        assert "--model-server-metrics-port" not in args
    else:
        assert args[args.index("--model-server-metrics-port") + 1] == port
