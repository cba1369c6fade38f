"""Every engine answers to the served model name and exports its load gauges (docs/gateway.md, docs/autoscaling.md)."""

from __future__ import annotations

import pytest

from modeldeploy.engines import registry
from modeldeploy.engines.base import Launch, RenderError


def _launch(**args: object) -> Launch:
    return Launch(
        model_path="/models/m",
        mmproj_path=None,
        served_name="qwen2.5-instruct",
        gpus=1,
        n_gpu_layers=0,
        args=args,  # type: ignore[arg-type]
    )


def test_llamacpp_is_given_the_served_name_as_alias() -> None:
    cmd = registry.get("llama.cpp").command(_launch())
    assert cmd[cmd.index("--alias") + 1] == "qwen2.5-instruct"


def test_llamacpp_alias_cannot_be_overridden_by_engine_args() -> None:
    with pytest.raises(RenderError, match="model_alias"):
        registry.get("llama.cpp").command(_launch(model_alias="other"))


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_vllm_and_sglang_get_served_model_name(engine: str) -> None:
    cmd = registry.get(engine).command(_launch())
    assert cmd[cmd.index("--served-model-name") + 1] == "qwen2.5-instruct"


def test_sglang_metrics_on_by_default_and_the_users_choice_wins() -> None:
    sglang = registry.get("sglang")
    assert sglang.command(_launch()).count("--enable-metrics") == 1
    assert sglang.command(_launch(**{"enable-metrics": True})).count("--enable-metrics") == 1
    assert "--enable-metrics" not in sglang.command(_launch(enable_metrics=False))


def test_engines_with_a_load_signal() -> None:
    loads = {e.name: (e.metrics.load if e.metrics else ()) for e in registry.engines()}
    assert loads["vllm"] == ("vllm:num_requests_running", "vllm:num_requests_waiting")
    assert loads["sglang"] == ("sglang:num_running_reqs", "sglang:num_queue_reqs")
    assert loads["llama.cpp"] == ("llamacpp:requests_processing", "llamacpp:requests_deferred")
    assert not loads["transformers"] and not loads["mlx"]
