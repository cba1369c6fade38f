"""A toy engine, written the way a new engine module would be: proof that one module is enough.

It serves plain pytorch weights of models up to 3B parameters on Linux CPUs, from the `toy` image,
with its own health path. Nothing in the operator names it: tests register it with
`engines.registry.register` and every part (selection, rendering, the CRD, the CLI) picks it up.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import flag_args
from modeldeploy.engines.base import PORT, Engine, Launch, ModelView, NodeNeed, RuleResult, Tier
from modeldeploy.engines.rules import format_rule
from modeldeploy.formats import ModelFormat

MAX_BILLIONS = 3.0


def size_rule(model: ModelView) -> RuleResult:
    """Small models only: the toy server keeps the whole model in one process's memory."""
    size = model.size_in_billions
    if size is None:
        return RuleResult(False, "Toy needs model.sizeInBillions to know the model fits")
    billions = float(size.replace("_", "."))
    if billions <= MAX_BILLIONS:
        return RuleResult(True, f"{size}B parameters fit Toy's limit of {MAX_BILLIONS:g}B")
    return RuleResult(False, f"{size}B parameters exceed Toy's limit of {MAX_BILLIONS:g}B")


class Toy(Engine):
    name = "toy"
    label = "Toy"
    image_key = "toy"
    formats = frozenset({ModelFormat.PYTORCH})
    auto_rank = None  # only when named or listed in engine.preference
    health_path = "/ready"
    reserved_args = frozenset({"model", "port"})
    bool_style = "negatable"

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        return [format_rule(self, model.format), size_rule(model)]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        return (NodeNeed(Tier.CPU),)

    def command(self, launch: Launch) -> list[str]:
        return ["toy-server", "--model", launch.model_path, "--port", str(PORT), *flag_args(self, launch.args)]
