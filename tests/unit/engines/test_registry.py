"""The registry is the one table of engines: its orders, image keys and per-engine facts."""

from __future__ import annotations

import pytest

from modeldeploy.engines import registry
from modeldeploy.engines.base import PORT, Engine
from modeldeploy.scaling.signals import load_metrics


def test_orders() -> None:
    assert registry.names() == ("vllm", "sglang", "llama.cpp", "transformers", "mlx")
    # Xinference's order under auto; SGLang has no automatic rule, so it is listed after, never tried.
    assert registry.default_preference() == ("vllm", "llama.cpp", "mlx", "transformers")
    assert registry.listing_order() == ("vllm", "llama.cpp", "mlx", "transformers", "sglang")
    assert registry.image_keys() == ("vllm", "sglang", "llamacpp", "transformers", "mlx", "ngl", "fetch")


@pytest.mark.parametrize("engine", registry.engines(), ids=registry.names())
def test_every_engine_states_its_facts(engine: Engine) -> None:
    assert engine.name and engine.label and engine.image_key and engine.formats
    assert engine.health_path.startswith("/")
    assert engine.node_needs(None), "an engine must run somewhere"
    assert engine is registry.get(engine.name)


def test_metrics_and_load_gauges() -> None:
    served = {e.name: e.metrics for e in registry.engines() if e.metrics is not None}
    assert set(served) == {"vllm", "sglang", "llama.cpp"}
    assert {m.port for m in served.values()} == {PORT}  # on the API port: one container port to scrape
    assert served["sglang"].enable_arg == "enable-metrics"
    assert load_metrics("vllm") == ("vllm:num_requests_running", "vllm:num_requests_waiting")
    assert load_metrics("llama.cpp") == ("llamacpp:requests_processing", "llamacpp:requests_deferred")
    assert load_metrics("transformers") == load_metrics("mlx") == ()


def test_unknown_and_clashing_names() -> None:
    with pytest.raises(registry.UnknownEngine):
        registry.get("tgi")
    registry.unregister("tgi")  # removing what is not there is not an error
    clash = type("Clash", (type(registry.get("mlx")),), {"name": "mlx-2"})()
    with pytest.raises(ValueError, match="image key 'mlx'"):
        registry.register(clash)
    assert "mlx-2" not in registry.names()
