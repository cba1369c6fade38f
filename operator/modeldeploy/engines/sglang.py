"""SGLang: CUDA-only like vLLM, never chosen automatically (the seed gives no automatic rule for it).

It runs when named in `engine.name` or listed in `engine.preference`. Our image (images/sglang) is
upstream lmsysorg/sglang run as uid 1000 with its caches (Triton, FlashInfer, HF) under $HOME or /tmp: as for
vLLM, HOME is the /tmp emptyDir and the root filesystem is read-only (docs/security.md). /metrics is on the
API port only with `--enable-metrics`, which the command passes unless `engine.args` sets `enable-metrics`
itself (false keeps it off): the autoscaler and the gateway's endpoint picker read its queue gauges
(docs/autoscaling.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import FlagEngine, flag_args, normalise_flag
from modeldeploy.engines.base import HOST, PORT, Launch, Metrics, ModelView, NodeNeed, RuleResult
from modeldeploy.engines.rules import format_rule, gpu_required_needs, gpu_required_rule, quantization_rule
from modeldeploy.formats import ModelFormat
from modeldeploy.memory.estimate import EngineMemory

# SGLang's memory budget and kernels (docs/memory-placement.md cites each figure): mem-fraction-static
# defaults by tensor parallel size (python/sglang/srt/server_args.py) and holds the weights and the KV
# pool; activations and CUDA graphs live in the rest. bfloat16 needs compute capability 8.0, FP8 8.0
# (Marlin weight-only below 8.9), AWQ 7.5, GPTQ 6.0. Sliding-window layers are counted at the full
# context (its separate window pool is not the default everywhere): an overestimate at worst.
MEMORY = EngineMemory(
    label="SGLang",
    fraction_arg="mem-fraction-static",
    fraction_by_tp=((16, 0.79), (8, 0.83), (4, 0.85), (2, 0.87), (1, 0.88)),
    context_arg="context-length",
    profiles_activation=False,
    min_capability={"bf16": (8, 0), "fp8": (8, 0), "awq": (7, 5), "gptq": (6, 0)},
    sliding_window_pool=False,
)

# Plain pytorch only (docs/selection.md); gptq/awq/fp8 carry their own quantization.
QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {ModelFormat.PYTORCH: ("none",)}


class SGLang(FlagEngine):
    name = "sglang"
    label = "SGLang"
    image_key = "sglang"
    formats = frozenset({ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.FP8})
    auto_rank = None
    gpu_required = True
    metrics = Metrics(port=PORT, enable_arg="enable-metrics", load=("sglang:num_running_reqs", "sglang:num_queue_reqs"))
    runs_as_non_root = True
    read_only_root = True
    needs_shm = True
    uses_hf_home = True
    reserved_args = frozenset(
        {"model-path", "model", "host", "port", "tp", "tp-size", "tensor-parallel-size", "served-model-name"}
    )
    bool_style = "store_true"
    # Lets a model repository run its own code in the server (docs/security.md, "Engine arguments").
    trust_remote_code_arg = "trust-remote-code"
    # SGLang reads its key only from --api-key, and logs every server argument (the key included) at
    # start-up, so no route keeps it out of the Deployment or the logs (docs/security.md, "API keys").
    api_key_unsupported = (
        "SGLang takes its key only on its command line and logs its server arguments, the key included, at start-up"
    )
    memory = MEMORY
    refused_args = {
        "api-key": "puts the key in the Deployment's command line, readable by everyone who can read it",
        "admin-api-key": "puts the key in the Deployment's command line, readable by everyone who can read it",
        "ssl-keyfile": "opens a key file of the pod's filesystem",
        "ssl-certfile": "opens a certificate file of the pod's filesystem",
    }

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        fmt = model.format
        return [
            format_rule(self, fmt),
            quantization_rule(self, fmt, model.quantization, QUANTIZATION),
            gpu_required_rule(self, model.gpus),
        ]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        return gpu_required_needs(gpus)

    def command(self, launch: Launch) -> list[str]:
        """`python -m sglang.launch_server`, tensor-parallel over all the pod's GPUs."""
        return [
            "python",
            "-m",
            "sglang.launch_server",
            "--model-path",
            launch.model_path,
            "--host",
            HOST,
            "--port",
            str(PORT),
            "--tp-size",
            str(launch.gpus),
            "--served-model-name",
            launch.served_name,
            *self.metrics_args(launch),
            *flag_args(self, launch.args, allow_trust_remote_code=launch.allow_trust_remote_code),
        ]

    def metrics_args(self, launch: Launch) -> list[str]:
        """`--enable-metrics`, unless the user's engine.args already says whether (then theirs is used)."""
        if any(normalise_flag(key) == "enable-metrics" for key in launch.args):
            return []
        return ["--enable-metrics"]
