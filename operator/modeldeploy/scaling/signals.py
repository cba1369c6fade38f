"""Each engine's load signal: the Prometheus gauges of requests running and waiting, on its serving port.

The gauges are each engine's `metrics.load` fact (engines/), checked against the engines' code: vLLM
and SGLang (SGLang only with `--enable-metrics`) as the Gateway API Inference Extension's model-server
protocol lists them; llama.cpp's server (with `endpoint_metrics`, which our entrypoint turns on) as
measured with the xllamacpp wheel in tests/engine. transformers serve and mlx_lm.server export none.
"""

from __future__ import annotations

from modeldeploy.engines import registry

METRICS_PATH = "/metrics"


def load_metrics(engine: str) -> tuple[str, ...]:
    """The gauges to sum for the engine called `engine`, empty when it exports none."""
    metrics = registry.get(engine).metrics
    return metrics.load if metrics is not None else ()
