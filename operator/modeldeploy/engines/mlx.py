"""MLX (`mlx_lm.server`): MLX-format weights on Apple silicon, through a virtual-kubelet macOS provider.

The pod still meets Pod Security "restricted" (uid 1000 as in images/mlx, no escalation, no capabilities),
so it is admitted in a restricted namespace; the root filesystem stays writable, since the macOS provider
runs a venv, not a container root filesystem to make read-only. NVIDIA_VISIBLE_DEVICES is never set: there
is no CUDA image. It serves no Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import FlagEngine, flag_args
from modeldeploy.engines.base import HOST, PORT, Launch, ModelView, NodeNeed, RuleResult, Tier
from modeldeploy.engines.rules import format_rule
from modeldeploy.formats import ModelFormat


class MLX(FlagEngine):
    name = "mlx"
    label = "MLX"
    image_key = "mlx"
    formats = frozenset({ModelFormat.MLX})
    auto_rank = 2
    runs_as_non_root = True
    read_only_root = False
    uses_hf_home = True
    cuda_image = False
    reserved_args = frozenset({"model", "host", "port"})
    bool_style = "store_true"
    # Lets a model repository run its own code in the server (docs/security.md, "Engine arguments").
    trust_remote_code_arg = "trust-remote-code"
    api_key_unsupported = "mlx_lm.server has no API key option"

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        gpus = model.gpus
        no_cuda = (
            RuleResult(False, f"MLX runs on Apple silicon and cannot use nvidia.com/gpu; resources.gpus is {gpus}")
            if gpus
            else None
        )
        return [format_rule(self, model.format), no_cuda]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        return (NodeNeed(Tier.APPLE),)

    def command(self, launch: Launch) -> list[str]:
        """`mlx_lm.server --model <path>` on an Apple-silicon node."""
        return [
            "mlx_lm.server",
            "--model",
            launch.model_path,
            "--host",
            HOST,
            "--port",
            str(PORT),
            *flag_args(self, launch.args, allow_trust_remote_code=launch.allow_trust_remote_code),
        ]
