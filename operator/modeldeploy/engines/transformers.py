"""transformers (`transformers serve`): the fallback that loads plain and quantized weights, GPU or CPU.

It uses GPUs when the cluster has them (see engines/rules.py, gpu_when_available_needs). Our image is
built from the wheel: non-root and read-only root; HOME=/tmp keeps torch/triton caches off the root
filesystem and HF_HOME points at the cache volume. It serves no Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import FlagEngine, flag_args
from modeldeploy.engines.base import HOST, PORT, Launch, ModelView, NodeNeed, RuleResult
from modeldeploy.engines.rules import (
    format_rule,
    gpu_when_available_needs,
    gpu_when_available_reason,
    quantization_rule,
)
from modeldeploy.formats import ModelFormat

# pytorch plain or quantized on load through bitsandbytes. gptq, awq and bnb weights carry their
# quantization config, which transformers reads from the checkpoint: no condition on them.
QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {ModelFormat.PYTORCH: ("none", "4bit", "8bit")}


class Transformers(FlagEngine):
    name = "transformers"
    label = "transformers"
    image_key = "transformers"
    formats = frozenset({ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.BNB})
    auto_rank = 3
    runs_as_non_root = True
    read_only_root = True
    uses_hf_home = True
    reserved_args = frozenset({"host", "port", "force-model"})
    bool_style = "negatable"  # typer's --flag/--no-flag
    # Lets a model repository run its own code in the server (docs/security.md, "Engine arguments").
    trust_remote_code_arg = "trust-remote-code"
    api_key_unsupported = "transformers serve has no API key option"

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        fmt = model.format
        return [format_rule(self, fmt), quantization_rule(self, fmt, model.quantization, QUANTIZATION)]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        return gpu_when_available_needs(gpus)

    def gpu_rule_reason(self, need: NodeNeed, gpus: int | None, earlier_failed: bool) -> str | None:
        return gpu_when_available_reason(need, gpus, earlier_failed)

    def command(self, launch: Launch) -> list[str]:
        """`transformers serve <path>` (transformers >= 5.x).

        The model is the positional `force_model` argument: it is loaded before the server starts, used
        for every request whatever `model` the client names, and never unloaded for idleness. (In 4.5x it
        was the `--force-model` option and loaded lazily; the image pins 5.x.) The device is `auto`: the
        GPUs the pod was given, else CPU.
        """
        return [
            "transformers",
            "serve",
            launch.model_path,
            "--host",
            HOST,
            "--port",
            str(PORT),
            *flag_args(self, launch.args, allow_trust_remote_code=launch.allow_trust_remote_code),
        ]
