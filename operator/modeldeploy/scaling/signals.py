"""Each engine's load signal: the Prometheus gauges of requests running and waiting, on its serving port.

Checked against the engines' code: vLLM (`vllm:num_requests_running`, `vllm:num_requests_waiting`) and
SGLang (`sglang:num_running_reqs`, `sglang:num_queue_reqs`, only with `--enable-metrics`) as the Gateway API
Inference Extension's model-server protocol lists them; llama.cpp's server (`llamacpp:requests_processing`,
`llamacpp:requests_deferred`, with `endpoint_metrics`, which our entrypoint turns on) as measured with
the xllamacpp wheel in tests/engine. transformers serve and mlx_lm.server export no such metric.
"""

from __future__ import annotations

from modeldeploy.engines import Engine

METRICS_PATH = "/metrics"

LOAD_METRICS: dict[Engine, tuple[str, ...]] = {
    Engine.VLLM: ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    Engine.SGLANG: ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    Engine.LLAMA_CPP: ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
}


def load_metrics(engine: Engine) -> tuple[str, ...]:
    """The gauges to sum for `engine`, empty when it exports none."""
    return LOAD_METRICS.get(engine, ())
