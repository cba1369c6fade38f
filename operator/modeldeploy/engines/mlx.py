"""MLX (`mlx_lm.server`): MLX-format weights on Apple silicon, through a virtual-kubelet macOS provider.

Security fields are left unset (no Linux users to map, no container root filesystem to make read-only)
and NVIDIA_VISIBLE_DEVICES is never set: there is no CUDA image. It serves no Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import flag_args
from modeldeploy.engines.base import HOST, PORT, Engine, Launch, ModelView, NodeNeed, RuleResult, Tier
from modeldeploy.engines.rules import format_rule
from modeldeploy.formats import ModelFormat


class MLX(Engine):
    name = "mlx"
    label = "MLX"
    image_key = "mlx"
    formats = frozenset({ModelFormat.MLX})
    auto_rank = 2
    runs_as_non_root = None  # not set at all: meaningless on the macOS provider
    read_only_root = False
    uses_hf_home = True
    cuda_image = False
    reserved_args = frozenset({"model", "host", "port"})
    bool_style = "store_true"

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
            *flag_args(self, launch.args),
        ]
